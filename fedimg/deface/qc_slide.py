"""QC's head-outline overlap where the outline cannot fix the face's height: a bounded S-I slide.

The head-outline placement (:mod:`.qc_face`) fits the template's head mask to the subject's. On a
full head it puts the template's nasion and nose tip within 2-4 mm of the head's own (real
ds000031, ``benchmarks/deface_anatomy.py``). Without the chin (a field of view cut 40 mm above
the head's bottom) the outline is a dome that fits nearly as well pitched by ~7 degrees, and the
face, ~100 mm in front of the pitch axis, lands 16-26 mm too high; thick slabs smear the top and
bottom (nose tip 10 mm off). A correct removal then overlaps the placement's removal too little
(``face_shape_dice`` < 0.7) or covers too little of it (``face_covered``): false alarms.

Where the placement is *weak along S-I* (:func:`weak_si`: slices >= ``WEAK_SPACING_MM`` or at
least ``WEAK_CUT_SHARE`` of the placed template face tissue outside the image's grid), QC slides
the placement's removal along its own S-I axis by up to ``SLIDE_MM`` and measures both numbers at
the slide that overlaps best (:func:`slide_metrics`). Everything else about the placement (its
L-R and A-P position, its turn, its size) is still checked; a removal slid along S-I by the MI
registration is left to the near-face, removed-volume, mid-plane and brain checks.

>>> import numpy as np
>>> a = np.zeros((8, 8, 24), bool); a[2:6, 2:6, 4:10] = True
>>> b = np.roll(a, 6, axis=2)  # the same removal placed 6 mm higher (1 mm voxels)
>>> best_slide(a, b, np.eye(4), np.array([0.0, 0.0, 1.0]))[:2]
(1.0, -6.0)
"""

from __future__ import annotations

import functools
import logging

import numpy as np

__all__ = ["weak_si", "face_tissue_cut", "si_axis", "best_slide", "slide_metrics", "WEAK_SPACING_MM",
           "WEAK_CUT_SHARE", "SLIDE_MM", "SLIDE_STEP_MM"]

log = logging.getLogger(__name__)

WEAK_SPACING_MM = 4.0  # thick 2-D slabs (5-6 mm archive slices) smear the head mask's top and bottom
WEAK_CUT_SHARE = 0.10  # share of the placed template face tissue outside the image: a chin or face crop
SLIDE_MM = 24.0  # h11q's measured slide range; a 40 mm chin cut put the real ds000031 face 16-26 mm high
SLIDE_STEP_MM = 3.0


@functools.lru_cache(maxsize=1)
def _template_face_tissue() -> np.ndarray:
    """Template-world points (N, 3) of the template's face tissue: head-mask cells (4 mm) inside the face mask."""
    from .template import load_template, template_head_mask

    tmask, taff = template_head_mask(4.0)
    t = load_template()
    pts = np.argwhere(tmask) @ taff[:3, :3].T + taff[:3, 3]
    vox = np.rint((pts - t.affine[:3, 3]) @ np.linalg.inv(t.affine[:3, :3]).T).astype(int)
    ok = np.all((vox >= 0) & (vox < np.array(t.face.shape)), axis=1)
    face = np.zeros(len(pts), bool)
    face[ok] = t.face[tuple(vox[ok].T)] > 0.5
    return pts[face]


def face_tissue_cut(pose: np.ndarray, shape, affine: np.ndarray) -> float:
    """Share of the template's face tissue that ``pose`` (subject world → template world) puts outside the grid."""
    pts = _template_face_tissue()
    if len(pts) == 0:
        return 0.0
    to_vox = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.linalg.inv(np.asarray(pose, dtype=np.float64))
    vox = pts @ to_vox[:3, :3].T + to_vox[:3, 3]
    inside = np.all((vox >= -0.5) & (vox <= np.array(shape) - 0.5), axis=1)
    return float(1.0 - inside.mean())


def weak_si(pose: np.ndarray, shape, affine: np.ndarray) -> bool:
    """Whether the head-outline placement ``pose`` is weakly constrained along S-I in this image (module docstring)."""
    spacing = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return bool(spacing.max() >= WEAK_SPACING_MM or face_tissue_cut(pose, shape, affine) >= WEAK_CUT_SHARE)


def si_axis(pose: np.ndarray) -> np.ndarray:
    """The template's superior axis (+z) in subject world (unit vector) under ``pose``."""
    d = np.linalg.solve(np.asarray(pose, dtype=np.float64)[:3, :3], np.array([0.0, 0.0, 1.0]))
    return d / np.linalg.norm(d)


def _box(masks, pad) -> tuple[slice, ...]:
    any_ = np.zeros(masks[0].shape, bool)
    for m in masks:
        any_ |= m
    idx = np.nonzero(any_)
    if not idx[0].size:
        return tuple(slice(0, 0) for _ in any_.shape)
    return tuple(slice(max(0, int(i.min()) - p), min(n, int(i.max()) + p + 1)) for i, p, n in zip(idx, pad, any_.shape))


def best_slide(remove: np.ndarray, shape: np.ndarray, affine: np.ndarray, direction: np.ndarray,
               acquired: np.ndarray | None = None, *, max_mm: float = SLIDE_MM,
               step_mm: float = SLIDE_STEP_MM) -> tuple[float, float, np.ndarray]:
    """The slide of ``shape`` along ``direction`` (subject world) that overlaps ``remove`` best.

    Returns ``(dice, mm, slid)``: the best Dice, the slide (mm; the first of equal ones nearest 0) and
    ``shape`` slid by it (full grid, nearest neighbour). ``acquired``: boolean grid of acquired voxels
    (None: all); the slid placement counts only there, as the unslid one does.
    """
    from scipy import ndimage as ndi

    from .qc_face import removal_dice

    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.sqrt((lin ** 2).sum(axis=0))
    box = _box([remove, shape], [int(np.ceil(max_mm / s)) + 1 for s in spacing])
    rem_b, shp_b = remove[box], shape[box].astype(np.uint8)
    acq_b = None if acquired is None else acquired[box]
    per_mm = np.linalg.solve(lin, np.asarray(direction, dtype=np.float64))
    n = int(round(max_mm / step_mm))
    best = (-1.0, 0.0, shp_b.astype(bool))
    for mm in sorted((k * step_mm for k in range(-n, n + 1)), key=abs):
        slid = ndi.shift(shp_b, per_mm * mm, order=0, mode="constant", cval=0).astype(bool) if mm else shp_b.astype(bool)
        if acq_b is not None:
            slid &= acq_b
        d = removal_dice(rem_b, slid)
        if d > best[0] + 1e-9:
            best = (d, float(mm), slid)
    out = np.zeros(shape.shape, bool)
    out[box] = best[2]
    return best[0], best[1], out


def _acquired_voxels(estimate, shape) -> np.ndarray | None:
    """The estimate's acquired cells on the voxel grid (as :meth:`.brainmask.BrainEstimate.lookup` maps them); None: all."""
    cells = getattr(estimate, "acquired", None)
    if cells is None or cells.all():
        return None
    idx = [np.minimum(np.arange(n) // s, c - 1) for n, s, c in zip(shape, estimate.step, cells.shape)]
    return cells[np.ix_(*idx)]


def slide_metrics(remove: np.ndarray, placement, affine: np.ndarray, estimate, dice: float, recall: float) -> dict:
    """QC's head-outline numbers with the S-I slide where the placement is weak (:func:`weak_si`).

    ``remove``: the removal (canonical grid, acquired voxels only); ``placement``: the
    :class:`.qc_face.ShapePlacement`; ``estimate``: the image's :class:`.brainmask.BrainEstimate`;
    ``dice``/``recall``: the unslid ``face_shape_dice``/``face_shape_recall``. Returns the keys to
    update: ``face_shape_weak_si``, ``face_shape_slide_mm`` (None when not weak) and, when weak, the
    slid ``face_shape_dice`` (the best), ``face_shape_recall`` (the larger of unslid and slid) and the
    unslid values as ``face_shape_dice_unslid``/``face_shape_recall_unslid``. Neither number can fall.
    """
    from .qc_face import face_shape_recall_counted

    weak = weak_si(placement.pose, remove.shape, affine)
    out: dict = {"face_shape_weak_si": weak, "face_shape_slide_mm": None}
    if not weak:
        return out
    acquired = _acquired_voxels(estimate, remove.shape)
    d, mm, slid = best_slide(remove, placement.remove, affine, si_axis(placement.pose), acquired)
    r = face_shape_recall_counted(remove, slid, estimate)
    log.debug("QC: head-outline placement weak along S-I; best slide %+.0f mm, Dice %.3f -> %.3f", mm, dice, d)
    out.update(face_shape_slide_mm=mm, face_shape_dice_unslid=dice, face_shape_recall_unslid=recall,
               face_shape_dice=max(dice, d), face_shape_recall=max(recall, r))
    return out
