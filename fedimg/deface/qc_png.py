"""QC's picture of one defacing (PNG, matplotlib Agg): front renders before/after and three slices.

:func:`render_qc_png` draws what :mod:`.qc` checked: the removed region (red) and the protected
brain (yellow) over the image; :func:`face_render` is the depth-shaded front view it uses.

>>> import numpy as np
>>> head = np.zeros((20, 20, 20), np.float32); head[5:15, 5:15, 5:15] = 1.0
>>> face_render(head, (2.0, 2.0, 2.0)).shape
(20, 20)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["face_render", "render_qc_png"]


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
