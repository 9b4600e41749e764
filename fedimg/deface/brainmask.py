"""Head and brain masks estimated from the subject's own image, independent of any registration.

QC uses them to check a defacing without trusting the registration it checks: the removal
must not touch the brain estimated here, and the removed tissue must be a plausible share
of the head. The method needs no template and no contrast model, so it works on T1, T2,
FLAIR and CT alike:

1. work on a ~2 mm copy; the **head** is every voxel brighter than a small fraction of
   the bright end (Otsu on the positive voxels, capped), closed, hole-filled (also slice by
   slice, as a cropped field of view opens the skull) and its largest component;
2. the deepest part of the head (distance to the head surface) is brain in every head
   scan; its median intensity is the brain's reference ``m``;
3. the **brain** is the component holding that deep core among head voxels at least
   ``skull_mm`` deep whose intensity lies in ``[low, high] * m`` (skull, CSF, air and fat
   fall outside in MRI; bone and air in CT), after an opening that cuts the thin bridges
   (optic nerves, vessels) to the face; then hole-filled (ventricles).

>>> import numpy as np
>>> g = np.stack(np.meshgrid(*[np.arange(60.0)] * 3, indexing="ij"), -1)
>>> r = np.linalg.norm(g - 29.5, axis=-1)
>>> head = np.where(r < 28, 300.0, 0.0); head[r < 22] = 100.0; head[r < 20] = 500.0  # scalp, skull, brain
>>> est = estimate_brain(head, np.diag([2.0, 2.0, 2.0, 1.0]))
>>> round(est.brain_ml / (4 / 3 * np.pi * 40**3 / 1000), 1), est.brain_ml < est.head_ml
(1.0, True)
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np

__all__ = ["BrainEstimate", "estimate_brain", "head_mask", "midplane", "removal_metrics"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BrainEstimate:
    """Masks on a reduced grid: voxel ``(i, j, k)`` of the input lies in cell ``(i // step[0], ...)``."""

    head: np.ndarray  # bool, reduced grid
    brain: np.ndarray  # bool, reduced grid
    step: tuple[int, int, int]  # input voxels per reduced cell, per axis
    cell_ml: float  # volume of one reduced cell (mL)
    cell_spacing: np.ndarray  # (3,) mm per reduced cell
    reference: float  # intensity of the deep brain core

    @property
    def head_ml(self) -> float:
        return float(self.head.sum()) * self.cell_ml

    @property
    def brain_ml(self) -> float:
        return float(self.brain.sum()) * self.cell_ml

    @functools.cached_property
    def brain_distance(self) -> np.ndarray:
        """Distance (mm) of every cell to the brain (0 inside); computed once."""
        from scipy import ndimage as ndi

        return ndi.distance_transform_edt(~self.brain, sampling=self.cell_spacing)

    @functools.cached_property
    def midplane(self) -> tuple[np.ndarray, np.ndarray]:
        """The brain's mid-sagittal plane (:func:`midplane`); computed once."""
        return midplane(self.brain, self.cell_spacing)

    def lookup(self, mask: np.ndarray, which: str = "brain") -> np.ndarray:
        """For each ``True`` voxel of ``mask`` (input grid), whether its cell is in ``which``."""
        idx = np.nonzero(mask)
        ref = self.brain if which == "brain" else self.head
        cells = tuple(np.minimum(i // s, n - 1) for i, s, n in zip(idx, self.step, ref.shape))
        return ref[cells]


def _reduce(image: np.ndarray, spacing, step_mm: float):
    st = tuple(max(1, int(round(step_mm / float(s)))) for s in spacing)
    if st == (1, 1, 1):
        return image.astype(np.float32, copy=False), st
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return F.avg_pool3d(t, kernel_size=st, stride=st, ceil_mode=True)[0, 0].numpy(), st


def _ball(radius_mm: float, spacing) -> np.ndarray:
    radii = [max(0, int(np.floor(radius_mm / float(s)))) for s in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1) * float(s) for r, s in zip(radii, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-6


def _fill(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    out = ndi.binary_fill_holes(np.pad(mask, 1, constant_values=False))[1:-1, 1:-1, 1:-1]
    for axis in range(3):  # fill each slice too: a field of view can cut the skull open
        out |= np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(out, axis, 0)], axis=axis)
    return out


def _largest(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


def head_mask(small: np.ndarray, spacing) -> np.ndarray:
    """The head on a reduced grid: thresholded, closed, hole-filled, largest component."""
    from scipy import ndimage as ndi

    pos = small[small > 0]
    if pos.size == 0:
        return np.zeros(small.shape, bool)
    top = float(np.percentile(pos, 99))
    thr = min(_otsu(np.clip(pos, 0, top)) * 0.5, 0.15 * top)
    head = small > max(thr, 0.02 * top)
    head = ndi.binary_closing(np.pad(head, 2), structure=_ball(4.0, spacing), iterations=1)[2:-2, 2:-2, 2:-2]
    return _largest(_fill(head))


def estimate_brain(image: np.ndarray, affine: np.ndarray, *, step_mm: float = 2.0, skull_mm: float = 6.0,
                   low: float = 0.55, high: float = 1.6, open_mm: float = 8.0, grow_mm: float = 6.0) -> BrainEstimate:
    """Estimate head and brain masks of a canonical (RAS-ordered) 3-D ``image``; see the module text."""
    from scipy import ndimage as ndi

    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    small, st = _reduce(np.asarray(image), spacing, step_mm)
    sp = spacing * np.array(st)
    cell_ml = float(np.prod(sp)) / 1000.0
    head = head_mask(small, sp)
    empty = np.zeros(small.shape, bool)
    if not head.any():
        return BrainEstimate(head=head, brain=empty, step=st, cell_ml=cell_ml, cell_spacing=sp, reference=0.0)
    depth = ndi.distance_transform_edt(np.pad(head, 1), sampling=sp)[1:-1, 1:-1, 1:-1]
    deep = depth >= 0.75 * depth.max()
    m = float(np.median(small[deep]))
    cand = head & (depth >= skull_mm) & (small >= low * m) & (small <= high * m)
    # erode hard enough to cut the brain from the face and neck, keep the part holding the
    # deep core, and grow it back inside the candidates (a reconstruction by dilation)
    ball = _ball(open_mm, sp)
    core = ndi.binary_erosion(cand, structure=ball)
    lab, n = ndi.label(core)
    counts = np.bincount(lab[deep], minlength=n + 1)
    counts[0] = 0
    if n == 0 or counts.max() == 0:
        return BrainEstimate(head=head, brain=empty, step=st, cell_ml=cell_ml, cell_spacing=sp, reference=m)
    brain = ndi.binary_dilation(lab == int(np.argmax(counts)), structure=ball) & cand
    steps = int(round(grow_mm / float(sp.mean())))
    if steps:  # give back the gyri the opening cut off, a few mm along the candidates only
        brain = ndi.binary_dilation(brain, iterations=steps, mask=cand)
    brain = ndi.binary_fill_holes(np.pad(brain, 1))[1:-1, 1:-1, 1:-1]
    log.debug("brain estimate: head %.0f mL, brain %.0f mL, reference %.3g",
              head.sum() * cell_ml, brain.sum() * cell_ml, m)
    return BrainEstimate(head=head, brain=brain, step=st, cell_ml=cell_ml, cell_spacing=sp, reference=m)


def midplane(brain: np.ndarray, spacing, *, max_tilt_deg: float = 45.0, points: int = 20000):
    """Mid-sagittal plane of a brain mask: ``(centre_mm, unit normal)`` in cell-grid millimetres.

    The plane through the brain's centre whose mirror image of the brain overlaps it most,
    searched over normals within ``max_tilt_deg`` (yaw and roll) of the first (L-R) axis.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    pts = np.argwhere(brain).astype(np.float64) * sp
    if len(pts) > points:
        pts = pts[:: len(pts) // points + 1]
    centre = pts.mean(0)
    rel = pts - centre
    shape = np.array(brain.shape)

    def score(yaw: float, roll: float) -> float:
        a, b = np.radians(yaw), np.radians(roll)
        n = np.array([np.cos(a) * np.cos(b), np.sin(a), -np.cos(a) * np.sin(b)])
        mir = np.rint((centre + rel - 2.0 * (rel @ n)[:, None] * n) / sp).astype(int)
        ok = np.all((mir >= 0) & (mir < shape), axis=1)
        return float(brain[tuple(mir[ok].T)].sum()) / len(rel)

    best = max((score(y, r), y, r) for y in np.arange(-max_tilt_deg, max_tilt_deg + 1, 9.0)
               for r in np.arange(-max_tilt_deg, max_tilt_deg + 1, 9.0))
    for step in (3.0, 1.0):
        _, y0, r0 = best
        best = max((score(y0 + dy, r0 + dr), y0 + dy, r0 + dr) for dy in (-step, 0, step) for dr in (-step, 0, step))
    _, yaw, roll = best
    a, b = np.radians(yaw), np.radians(roll)
    return centre, np.array([np.cos(a) * np.cos(b), np.sin(a), -np.cos(a) * np.sin(b)])


def removal_metrics(canonical: np.ndarray, affine: np.ndarray, remove: np.ndarray, *, near_mm: tuple[float, float] = (25.0, 45.0),
                    estimate: BrainEstimate | None = None) -> dict:
    """QC numbers of a removal mask (canonical grid), from the image's own head and brain.

    - ``brain_removed_ml``: removed voxels inside the estimated brain;
    - ``removed_tissue_ml`` / ``removed_fraction``: removed voxels inside the head, and their
      share of the head volume in the field of view (air removed in front of the face is free);
    - ``face_near_removed``: share of the *near face* that is removed: head cells 25-45 mm from
      the brain and in front of its centre (world +A; eyes, nose bridge, cheeks; the forehead
      in front of the frontal lobe is nearer than 25 mm, the chin and neck farther than 45 mm).

    A registration that moves the face region into the brain fails the first; one that slides
    it into the air or the neck fails the second or third (see ``QCThresholds``).
    """
    est = estimate or estimate_brain(canonical, affine)
    voxel_ml = float(abs(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    spacing = est.cell_spacing
    removed_cells = np.zeros(est.head.shape, bool)
    idx = np.nonzero(remove)
    removed_cells[tuple(np.minimum(i // s, n - 1) for i, s, n in zip(idx, est.step, est.head.shape))] = True
    in_head = int(est.lookup(remove, "head").sum())
    out = {
        "head_ml": est.head_ml,
        "brain_estimate_ml": est.brain_ml,
        "brain_removed_ml": float(est.lookup(remove, "brain").sum()) * voxel_ml,
        "removed_tissue_ml": in_head * voxel_ml,
        "removed_fraction": in_head * voxel_ml / est.head_ml if est.head_ml > 0 else 0.0,
        "face_near_removed": 0.0,
        "removal_offset_mm": 0.0,
    }
    if est.brain.any():
        dist = est.brain_distance
        front = np.arange(est.head.shape[1])[None, :, None] > np.nonzero(est.brain)[1].mean()
        near = est.head & (dist >= near_mm[0]) & (dist < near_mm[1]) & front
        if near.any():
            out["face_near_removed"] = float((near & removed_cells).sum() / near.sum())
        tissue = removed_cells & est.head
        if tissue.any():
            centre, normal = est.midplane
            side = (np.argwhere(tissue) * spacing - centre) @ normal
            out["removal_offset_mm"] = float(abs(side.mean()))
    return out
