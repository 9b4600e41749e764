"""Quality control of one defacing: numbers (JSON) and a picture (PNG, matplotlib Agg).

Checks (a failed check fails the file, never silently passes it):

- ``mutual_information`` of the best start at least ``min_mi`` nats;
- the two best starts agree (``agreement_mm``) unless the runner-up is clearly worse;
- ``protected_changed_ml`` (changed voxels inside the protected mask) is exactly 0;
- ``brain_in_head``: the warped template brain lies inside the subject's head.

>>> thresholds = QCThresholds()
>>> evaluate_qc(dict(mutual_information=0.6, agreement_mm=0.5, loss_gap=0.0,
...                  protected_changed_ml=0.0, brain_in_head=0.98, removed_ml=300.0), thresholds)["passed"]
True
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from fedimg.errors import ConfigError

__all__ = ["QCThresholds", "evaluate_qc", "brain_in_head", "render_qc_png", "face_render"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QCThresholds:
    """Pass/fail limits for :func:`evaluate_qc`."""

    min_mi: float = 0.3
    max_agreement_mm: float = 5.0
    ambiguous_gap: float = 0.02  # runner-up within this MI of the best counts as a rival
    min_brain_in_head: float = 0.85

    def __post_init__(self) -> None:
        if self.min_mi < 0 or self.max_agreement_mm <= 0 or not 0 <= self.min_brain_in_head <= 1:
            raise ConfigError("QC thresholds: min_mi >= 0, max_agreement_mm > 0, 0 <= min_brain_in_head <= 1")


def evaluate_qc(metrics: dict, thresholds: QCThresholds) -> dict:
    """Add ``checks`` (name → bool), ``failures`` (messages) and ``passed`` to a copy of ``metrics``."""
    t = thresholds
    checks = {
        "mutual_information": metrics["mutual_information"] >= t.min_mi,
        "start_agreement": metrics["agreement_mm"] <= t.max_agreement_mm or metrics["loss_gap"] > t.ambiguous_gap,
        "protected_untouched": metrics["protected_changed_ml"] == 0.0,
        "brain_in_head": metrics["brain_in_head"] >= t.min_brain_in_head,
    }
    messages = {
        "mutual_information": f"registration too weak (MI {metrics['mutual_information']:.3f} < {t.min_mi})",
        "start_agreement": f"two best starts disagree by {metrics['agreement_mm']:.1f} mm with near-equal loss",
        "protected_untouched": f"{metrics['protected_changed_ml']:.3f} mL of protected (brain/label) voxels changed",
        "brain_in_head": f"only {metrics['brain_in_head']:.0%} of the template brain maps inside the head",
    }
    out = dict(metrics)
    out["checks"] = checks
    out["failures"] = [messages[k] for k, ok in checks.items() if not ok]
    out["passed"] = all(checks.values())
    if metrics.get("removed_ml", 0.0) == 0.0:
        out.setdefault("warnings", []).append("no face voxels inside the field of view; nothing removed")
    return out


def brain_in_head(canonical: np.ndarray, affine: np.ndarray, template, subject_to_template: np.ndarray, *, step_mm: float = 4.0) -> float:
    """Fraction of the template brain (warped, inside the field of view) that lies in the head."""
    from scipy import ndimage as ndi

    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    st = [max(1, int(round(step_mm / s))) for s in spacing]
    small = canonical[:: st[0], :: st[1], :: st[2]].astype(np.float32)
    small_aff = affine @ np.diag([*st, 1.0])
    pos = small[small > 0]
    if pos.size == 0:
        return 0.0
    head = small > 0.08 * np.percentile(pos, 99)
    head = ndi.binary_closing(head, iterations=2)
    head = ndi.binary_fill_holes(np.pad(head, 1, constant_values=False))[1:-1, 1:-1, 1:-1]
    for axis in range(3):  # fill each slice too: a field of view can cut the skull open
        head |= np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(head, axis, 0)], axis=axis)
    core = _warp_core(template, small.shape, small_aff, subject_to_template)
    n = core.sum()
    return float((core & head).sum() / n) if n else 0.0


def _warp_core(template, shape, affine, subject_to_template) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    m = np.linalg.inv(template.affine) @ subject_to_template @ affine
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), -1)
    tv = idx @ m[:3, :3].T.astype(np.float32) + m[:3, 3].astype(np.float32)
    size = np.array(template.brain.shape, np.float32)
    grid = torch.as_tensor((tv * 2.0 / (size - 1) - 1.0)[..., ::-1].copy())
    out = F.grid_sample(torch.as_tensor(template.brain)[None, None], grid[None], align_corners=True)
    return out[0, 0].numpy() > 0.5


def face_render(canonical: np.ndarray, spacing, *, threshold: float | None = None) -> np.ndarray:
    """Depth-shaded surface render of the head seen from the front (+A), shape (S, R→L)."""
    vol = canonical.astype(np.float32)
    if threshold is None:
        pos = vol[vol > 0]
        threshold = 0.15 * float(np.percentile(pos, 99)) if pos.size else 0.5
    solid = vol > threshold  # (x, y, z); look along -y from the front
    hit = solid[:, ::-1, :]
    any_hit = hit.any(axis=1)
    first = np.argmax(hit, axis=1).astype(np.float32)  # voxels from the front face
    depth_mm = first * float(spacing[1])
    gx = np.gradient(depth_mm, float(spacing[0]), axis=0)
    gz = np.gradient(depth_mm, float(spacing[2]), axis=1)
    normal_z = 1.0 / np.sqrt(1.0 + gx**2 + gz**2)  # Lambert shading with light from the viewer
    near = 1.0 - np.clip((depth_mm - depth_mm[any_hit].min(initial=0.0)) / 120.0, 0.0, 1.0)
    shade = np.where(any_hit, 0.25 + 0.75 * normal_z * near, 0.0)
    return shade[::-1, :].T  # rows: superior at top after origin="lower"; columns: subject right on the left


def render_qc_png(path: Path, before: np.ndarray, after: np.ndarray, removed: np.ndarray, protected: np.ndarray,
                  spacing, title: str) -> None:
    """Write the QC picture: front renders before/after and three orthogonal slices with outlines."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from fedimg.io import atomic_path

    st = [max(1, int(round(2.0 / s))) for s in spacing]
    sl = (slice(None, None, st[0]), slice(None, None, st[1]), slice(None, None, st[2]))
    b, a, r, p = before[sl], after[sl], removed[sl], protected[sl]
    sp = [float(s) * k for s, k in zip(spacing, st)]
    fig = Figure(figsize=(15, 4.5), dpi=72)
    axes = fig.subplots(1, 5)
    thr = None
    pos = b[b > 0]
    if pos.size:
        thr = 0.15 * float(np.percentile(pos, 99))
    for ax, vol, name in ((axes[0], b, "front, before"), (axes[1], a, "front, after")):
        ax.imshow(face_render(vol, sp, threshold=thr), cmap="gray", origin="lower", vmin=0, vmax=1,
                  aspect=sp[2] / sp[0])
        ax.set_title(name)
    if r.any():
        centre = [int(np.median(ix)) for ix in np.nonzero(r)]
    else:
        centre = [s // 2 for s in b.shape]
    views = (
        (axes[2], (slice(None), slice(None), centre[2]), "axial", sp[1] / sp[0]),
        (axes[3], (centre[0], slice(None), slice(None)), "sagittal", sp[2] / sp[1]),
        (axes[4], (slice(None), centre[1], slice(None)), "coronal", sp[2] / sp[0]),
    )
    vmax = float(np.percentile(pos, 99.5)) if pos.size else 1.0
    for ax, index, name, aspect in views:
        ax.imshow(b[index].T, cmap="gray", origin="lower", vmin=0, vmax=vmax, aspect=aspect)
        if r[index].any():
            ax.contour(r[index].T.astype(float), [0.5], colors="red", linewidths=1.0)
        if p[index].any():
            ax.contour(p[index].T.astype(float), [0.5], colors="yellow", linewidths=0.6)
        ax.set_title(f"{name} (red removed, yellow protected)", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
