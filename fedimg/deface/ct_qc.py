"""QC of a CT defacing: the intracranial volume from the image itself, independent of the registration.

The MR brain estimate (:mod:`.brainmask`) looks for a brain-intensity band around the head's
deep core; in CT the face and neck muscles share the brain's band (0-80 HU), so it leaks.
Bone separates them: the brain is the soft tissue the skull encloses. :func:`ct_brain_estimate`

1. reads the image in HU (:func:`to_hu`: a file without the HU offset, air near 0, is taken
   as HU + 1024, the usual unsigned storage; otherwise its own air level is -1000 HU);
2. on ~2 mm cells finds the **bone** (any voxel of the cell at least ``bone_hu``, 300 HU) and
   closes small gaps in it (foramina, thin bone averaged away); a cell is **enclosed** when,
   along each of the six axis directions, it meets bone before air (a ray that leaves the
   field of view inside the head counts as bone: a field of view that ends at the brow cuts
   the vault open, and the skull base has holes, so plain hole filling finds nothing there);
3. the **intracranial** volume is the enclosed soft tissue (cell mean ``soft_hu``, -15 to
   100 HU: brain, CSF, blood) opened by ``open_mm`` (cuts thin bridges to enclosed non-brain
   soft tissue off), its largest component, grown back ``grow_cells`` cells inside the
   enclosed soft tissue and hole-filled.

The result is a :class:`~.brainmask.BrainEstimate` (``source="ct"``), so the MR checks
(``protected_untouched``, ``face_removed``, ``face_centred``) run on it unchanged. What differs
for CT (:func:`ct_metrics`): ``brain_in_head`` is the share of the intracranial estimate
inside the template brain placed by the registration, dilated by ``bih_margin_mm`` (the brain
mask must cover the image's own brain: a shift or turn into the face fails it), and the
removed share of the head is judged against ``QCThresholds.ct_removed_fraction_range``
(CT fields of view include the neck). ``fill_is_air``: the value removed voxels get is the
image's air (at most ``air_tolerance_hu`` above its 0.5th percentile in HU, or -1000 HU).

Where the numbers come from (dev cases of ``benchmarks/deface_ct.py --no-run --seed 0``: the one
real CT posed, resampled and cropped, with its TRUE registrations): the removed share of the
head was 0.103-0.121, so ``ct_removed_fraction_range`` is (0.035, 0.19) by the MR rule (a
third of the smallest, 1.6x the largest). ``open_mm`` 5 mm cut the anterior cranial fossa
between the orbits off the estimate, and a registration moved 20 mm up passed 2 of 10 dev
cases; with 3 mm every true registration passed and every wrong one failed (10/10 each). The
margin is thin: that wrong registration removes 1.2-1.4 mL of the estimate, against the
1 mL limit. That limit (the MR one) let wrong CT removals through (0.16-0.96 mL of the
estimate removed, ``benchmarks/deface_ct.py`` at ``b46f90d``), so CT has its own,
``QCThresholds.ct_max_brain_removed_ml`` = 0: on the same 10 dev cases' TRUE registrations
QC's estimate lost 0.000 mL in every case and the closest removed voxel lay 4.1-9.1 mm
(median 6.0 mm) from it, so the estimate would have to reach more than 4 mm into a correct
removal before this fails one (set on the true registrations only; every deliberately wrong
one is still caught, 40/40). Only one real CT exists here (a small head, field of view from the orbital
roofs to the shoulders), so these bounds are checked on variants of one head only.

>>> import numpy as np
>>> g = np.stack(np.meshgrid(*[np.arange(64.0)] * 3, indexing="ij"), -1)
>>> r = np.linalg.norm(g - 31.5, axis=-1)
>>> ct = np.where(r < 30, 40.0, -1000.0); ct[(r >= 24) & (r < 27)] = 1200.0  # scalp, skull, brain
>>> est = ct_brain_estimate(ct, np.diag([2.0, 2.0, 2.0, 1.0]))
>>> est.source, round(est.brain_ml / (4 / 3 * np.pi * 48**3 / 1000), 1)
('ct', 1.0)
>>> float(to_hu(np.array([0.0, 1064.0]), air=0.0)[1])
40.0
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from .brainmask import BrainEstimate, removal_metrics
from .masks import placed_brain as _placed_brain

__all__ = ["HU_OFFSET", "to_hu", "ct_brain_estimate", "ct_metrics", "ct_evaluate"]

log = logging.getLogger(__name__)

HU_OFFSET = 1024.0  # unsigned CT storage: stored = HU + 1024 (DICOM RescaleIntercept -1024)


def to_hu(image: np.ndarray, *, air: float) -> np.ndarray:
    """``image`` in Hounsfield units given its air level (``ct.air_value``): HU as is, else HU + 1024 or air = -1000."""
    image = np.asarray(image, dtype=np.float32)
    if air <= -850.0:  # already HU
        return image
    if abs(air) <= 100.0:  # air near 0: the common HU + 1024 storage
        return image - np.float32(HU_OFFSET)
    return image - np.float32(air + 1000.0)


def _pool(image: np.ndarray, st, how: str) -> np.ndarray:
    """Mean or maximum of ``st``-sized blocks (float32); a block cut by the edge pools the voxels it holds, as
    ``avg_pool3d``/``max_pool3d`` with ``ceil_mode=True`` did (the maximum exactly, the mean to float32 rounding:
    :func:`.resample_np.block_mean` sums in float64). numpy only: the CPU CT path imports no torch."""
    from .resample_np import block_mean

    if how != "max":
        return block_mean(image, st)
    img = np.asarray(image, dtype=np.float32)
    st = tuple(int(k) for k in st)
    out_shape = tuple(-(-n // k) for n, k in zip(img.shape, st))
    pad = [(0, o * k - n) for o, k, n in zip(out_shape, st, img.shape)]
    if any(p for _, p in pad):
        img = np.pad(img, pad, constant_values=-np.inf)  # never the maximum of a block that holds a voxel
    return img.reshape(out_shape[0], st[0], out_shape[1], st[1], out_shape[2], st[2]).max(axis=(1, 3, 5))


def _ball(radius_mm: float, spacing) -> np.ndarray:
    radii = [max(0, int(np.floor(radius_mm / float(s)))) for s in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1) * float(s) for r, s in zip(radii, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-6


def _enclosed(bone: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Cells that meet bone before air along all six axis directions (a ray leaving the field of
    view inside the head counts as bone: the head goes on beyond it); bone cells excluded."""
    out = ~bone & head
    for axis in range(3):
        b, h = np.moveaxis(bone, axis, 0), np.moveaxis(head, axis, 0)
        for order in (range(b.shape[0]), range(b.shape[0] - 1, -1, -1)):
            state = np.ones(b.shape[1:], bool)  # what lies beyond: True = bone (or the border)
            hit = np.empty(b.shape, bool)
            for i in order:
                hit[i] = state
                state = np.where(b[i], True, np.where(h[i], state, False))
            out &= np.moveaxis(hit, 0, axis)
    return out


def ct_brain_estimate(canonical: np.ndarray, affine: np.ndarray, *, air: float = -1000.0, step_mm: float = 2.0,
                      bone_hu: float = 300.0, soft_hu: tuple[float, float] = (-15.0, 100.0), close_mm: float = 4.0,
                      open_mm: float = 3.0, grow_cells: int = 2, head_hu: float = -400.0) -> BrainEstimate:
    """The intracranial volume and the head of a canonical (RAS-ordered) CT; see the module text."""
    from scipy import ndimage as ndi

    hu = to_hu(canonical, air=air)
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    st = tuple(max(1, int(round(step_mm / float(s)))) for s in spacing)
    mean, top = _pool(hu, st, "mean"), _pool(hu, st, "max")
    sp = spacing * np.array(st)
    cell_ml = float(np.prod(sp)) / 1000.0
    shift = np.eye(4)
    shift[:3, 3] = [(k - 1) / 2.0 for k in st]
    cell_aff = affine @ shift @ np.diag([*st, 1.0])
    head = mean > head_hu
    lab, n = ndi.label(head)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        head = lab == int(np.argmax(sizes))
    head = ndi.binary_fill_holes(np.pad(head, 1))[1:-1, 1:-1, 1:-1]
    bone = ndi.binary_closing(np.pad(top >= bone_hu, 3), structure=_ball(close_mm, sp))[3:-3, 3:-3, 3:-3]
    soft = _enclosed(bone, head) & (mean >= soft_hu[0]) & (mean <= soft_hu[1])
    ball = _ball(open_mm, sp)
    lab, n = ndi.label(ndi.binary_erosion(soft, structure=ball))
    brain = np.zeros(head.shape, bool)
    if n:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        brain = ndi.binary_dilation(lab == int(np.argmax(sizes)), structure=ball) & soft
        brain = ndi.binary_dilation(brain, iterations=grow_cells, mask=soft)
        brain = ndi.binary_fill_holes(np.pad(brain, 1))[1:-1, 1:-1, 1:-1]
    log.debug("CT brain estimate: head %.0f mL, intracranial %.0f mL", head.sum() * cell_ml, brain.sum() * cell_ml)
    return BrainEstimate(head=head, brain=brain, step=st, cell_ml=cell_ml, cell_spacing=sp, cell_affine=cell_aff,
                         reference=float(np.median(mean[brain])) if brain.any() else 0.0, source="ct")


def ct_metrics(canonical: np.ndarray, affine: np.ndarray, remove: np.ndarray, removal, *, estimate=None,
               bih_margin_mm: float = 10.0, air_tolerance_hu: float = 50.0) -> dict:
    """QC numbers of a CT removal (canonical grid): :func:`~.brainmask.removal_metrics` on the CT estimate,
    ``brain_in_head`` as the share of that estimate inside the placed template brain, and ``fill_is_air``.

    ``removal``: the :class:`~fedimg.deface.core.FaceRemoval` (its registration places the
    brain-protection mask; ``fill_value`` is the value removed voxels get).
    """
    from scipy import ndimage as ndi

    from .ct import air_value
    from .template import load_template

    air = air_value(canonical, "ct")  # the image's own air, not the value the removal writes
    est = estimate or ct_brain_estimate(canonical, affine, air=air)
    out = removal_metrics(canonical, affine, remove, estimate=est)
    if est.brain.any():
        t = load_template(removal.brain_protect)
        placed = _placed_brain(t, est.head.shape, est.cell_affine, removal.registration.subject_to_template)
        near = ndi.distance_transform_edt(~placed, sampling=est.cell_spacing) <= bih_margin_mm
        out["brain_in_head"] = float((est.brain & near).sum() / est.brain.sum())
    else:
        out["brain_in_head"] = 0.0
    floor = float(np.percentile(to_hu(np.asarray(canonical)[::2, ::2, ::2], air=air), 0.5))
    out["fill_hu"] = float(to_hu(np.array([removal.fill_value]), air=air)[0])
    out["fill_is_air"] = bool(out["fill_hu"] <= max(floor, -1000.0) + air_tolerance_hu)
    return out


def ct_evaluate(canonical: np.ndarray, affine: np.ndarray, remove: np.ndarray, removal, metrics: dict, thresholds, *,
                estimate=None) -> dict:
    """:func:`~fedimg.deface.qc.evaluate_qc` of a CT removal: ``metrics`` (the registration's) plus
    :func:`ct_metrics`, the CT removed-share bounds, the CT tolerance on the intracranial estimate
    (``ct_max_brain_removed_ml``, 0 by default: any cell of it removed fails), and ``fill_is_air``."""
    from .qc import evaluate_qc

    m = dict(metrics)
    m.update(ct_metrics(canonical, affine, remove, removal, estimate=estimate))
    out = evaluate_qc(m, dataclasses.replace(thresholds, removed_fraction_range=thresholds.ct_removed_fraction_range,
                                             max_brain_removed_ml=thresholds.ct_max_brain_removed_ml))
    if not out["checks"]["brain_in_head"]:
        i = [k for k, ok in out["checks"].items() if not ok].index("brain_in_head")
        out["failures"][i] = (f"only {m['brain_in_head']:.0%} of the intracranial volume estimated from the CT lies "
                              "within 10 mm of the placed template brain (the registration is off)")
    out["checks"]["fill_is_air"] = m["fill_is_air"]
    if not m["fill_is_air"]:
        out["failures"].append(f"removed voxels would be set to {m['fill_hu']:.0f} HU, not the image's air")
    out["passed"] = all(out["checks"].values())
    return out
