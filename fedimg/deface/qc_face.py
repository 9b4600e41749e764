"""QC's own face placement from the head's outline: catches a removal the MI registration got wrong.

The MI registration matches intensities against a T1 template; on PD- or T2-like contrast it
can settle a few millimetres off and remove only part of the face while every other check
passes. This check places the face region a second way that uses no intensities at all: the
coarse head-mask alignments (:mod:`.coarse`, already computed for the registration's starts), and the
best of them turned about the template's S-I axis (:data:`OWN_YAW_STARTS_DEG`: starts the registration did not
have, so a coarse stage in a wrong yaw basin does not carry the placement with it), are refined by a 12-parameter
affine fit of the template's head mask to the subject's head
mask (mutual information of the two binary masks at 8 then 4 mm, the registration used for CT). The
removal that placement gives is compared with the removal actually made
(``face_shape_dice``); QC fails the file when they overlap too little (``min_face_shape_dice``
in :class:`~fedimg.deface.qc.QCThresholds`).

The head outline places the face less precisely than a good MI registration (Dice against
the corpus reference 0.79-0.95 on the dev heads), so the bound is loose: it catches a removal
that is clearly elsewhere or clearly partial, not one a few percent off. The same placement
gives ``face_shape_recall`` (:func:`face_shape_recall`, QC's ``face_covered``): the share of its
removed head tissue that the removal also removes; a removal slid off the face keeps part of it.

>>> import numpy as np
>>> a = np.zeros((4, 4, 4), bool); a[:2] = True
>>> b = np.zeros((4, 4, 4), bool); b[1:3] = True
>>> removal_dice(a, b)
0.5
>>> face_shape_recall(a, b, lambda m: np.ones(int(m.sum()), bool))  # half of b's voxels removed by a
0.5
>>> round(turn_deg(np.diag([1.0, -1.0, -1.0, 1.0])))  # a head turned upside down about L-R
180
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

__all__ = ["acquired_part", "head_shape_pose", "shape_removal", "shape_placement", "ShapePlacement", "head_size",
           "near_band", "face_shape_dice", "face_shape_recall", "face_shape_recall_counted", "removal_dice", "upright",
           "turn_deg", "yawed_starts", "MAX_TURN_DEG", "NEAR_MM", "REFERENCE_HEAD_SIZE", "OWN_YAW_STARTS_DEG"]

log = logging.getLogger(__name__)

# Head-mask placements (subject world -> template world) of a head posed within +-45 degrees on
# each axis turn by at most about 70 degrees; the turned-over ones (the head outline fitted upside
# down or back to front) by 130-180 (40 dev cases: upright 9-68 degrees, turned over 133-180).
MAX_TURN_DEG = 100.0

# QC's near-face band (:func:`.brainmask.removal_metrics`): head 25-45 mm in front of the brain, set on the
# two real T1 heads at their own size; the head-outline placement measures them REFERENCE_HEAD_SIZE times
# the template's (ds000031 1.03, pycortex 1.05 at 2 mm in ``tests/assets/mri``). A head of another size gets the band
# scaled by its own size over that, within HEAD_SIZE_RANGE (outside it the placement is more likely wrong
# than the head that large).
NEAR_MM = (25.0, 45.0)
REFERENCE_HEAD_SIZE = 1.04
HEAD_SIZE_RANGE = (0.8, 1.25)

# The placement's own starts (eleventh wave, h11t): the best coarse alignment turned about the template head's
# S-I axis by these angles. The coarse alignments also start the MI registration; when they all sit in a wrong
# yaw basin the placement fitted from them alone agrees with a wrong removal (a dev head, 1 x 1 x 3 mm FLAIR turned
# (-24, -32, -27) degrees, its coarse alignments yawed 30 degrees: a removal yawed 30 degrees passed QC). With starts
# of its own the fit can leave that basin; the best head-mask fit of all starts is kept.
OWN_YAW_STARTS_DEG = (-45.0, -25.0, 25.0, 45.0)


@dataclasses.dataclass(frozen=True)
class ShapePlacement:
    """The head-outline placement QC compares the removal with: its removal (canonical grid), the
    head's size relative to the template (:func:`head_size` of its pose) and the pose itself (subject
    world → template world; None when not kept)."""

    remove: np.ndarray
    size: float
    pose: np.ndarray | None = None


def head_size(subject_to_template: np.ndarray) -> float:
    """Linear size of the subject's head relative to the template's: ``|det|^(-1/3)`` of the pose's linear part."""
    return float(abs(np.linalg.det(np.asarray(subject_to_template, dtype=np.float64)[:3, :3])) ** (-1.0 / 3.0))


def near_band(placement: "ShapePlacement | None") -> tuple[float, float]:
    """QC's near-face band (mm from the brain) scaled by the head-outline placement's head size.

    The size comes from the 12-parameter head-mask fit (:func:`head_shape_pose`): the outline of
    the whole head, not the image's brain estimate (which fails on shaded or thick-slice heads,
    the cases whose band needs scaling) nor the MI registration being checked. A head 1.15x the
    reference size has its eyes and cheeks 1.15x further from the brain; a fixed band then lies on
    the forehead, which is kept (dev false alarms, near face 7-13 %). Unscaled without a placement.
    """
    if placement is None:
        return NEAR_MM
    k = float(np.clip(placement.size / REFERENCE_HEAD_SIZE, *HEAD_SIZE_RANGE))
    return NEAR_MM[0] * k, NEAR_MM[1] * k


def turn_deg(matrix: np.ndarray) -> float:
    """Rotation angle (degrees) of the linear part of a 4x4 affine (its nearest rotation)."""
    from .coarse import _angle

    return _angle(np.asarray(matrix, dtype=np.float64), np.eye(4))


def upright(candidates, max_turn_deg: float = MAX_TURN_DEG) -> list:
    """The head-mask placements turned at most ``max_turn_deg`` from the scanner's axes, best first.

    A head mask is nearly symmetric under a half turn, so placements turned over score within
    0.02 Dice of the best (30 of 40 dev cases; on 9 one ranked above every upright one) and the
    part of the brain common to the near-best placements shrank to 356-585 mL: QC's head-shape
    estimates use the upright ones. When none is upright (a header that turns the
    head over), all of them are kept.
    """
    cands = list(candidates)
    kept = [c for c in cands if turn_deg(c.matrix) <= max_turn_deg]
    return kept or cands


def removal_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty); the overlap counted in ``b``'s bounding box."""
    from .morph import bounding_box

    if a.dtype != bool or b.dtype != bool:
        total = float(a.sum() + b.sum())
        return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total
    total, box = float(np.count_nonzero(a) + np.count_nonzero(b)), bounding_box(b)
    inter = 0 if box is None else np.count_nonzero(a[box] & b[box])
    return 1.0 if total == 0 else 2.0 * float(inter) / total


def acquired_part(mask: np.ndarray | None, estimate) -> np.ndarray | None:
    """``mask`` (input grid) without the voxels outside ``estimate``'s acquired cells
    (:attr:`.brainmask.BrainEstimate.acquired`): the fill of an oblique cut is neither face nor air,
    so QC's face measures count only acquired voxels. Unchanged when the whole grid is acquired."""
    if mask is None or getattr(estimate, "acquired", None) is None:
        return mask
    out = np.zeros_like(mask)
    idx = np.nonzero(mask)
    keep = np.asarray(estimate.lookup(mask, "acquired"), bool)
    out[tuple(i[keep] for i in idx)] = True
    return out


def face_shape_recall(remove: np.ndarray, shape: np.ndarray, in_head) -> float:
    """Share of the head tissue the head-outline placement removes (``shape``) that ``remove`` removes too.

    ``in_head(mask)``: for each ``True`` voxel of a mask, whether it lies in the head
    (:meth:`.brainmask.BrainEstimate.lookup`). A removal that leaves part of the face (slid,
    tilted or shrunk) misses part of it; one that removes more (air, a wider margin) does not
    lower it, unlike the Dice. 1.0 when the placement removes no head tissue.
    """
    idx = np.nonzero(shape)
    tissue = np.asarray(in_head(shape), bool)
    n = int(tissue.sum())
    return 1.0 if n == 0 else float(remove[tuple(i[tissue] for i in idx)].sum()) / n


def face_shape_recall_counted(remove: np.ndarray, shape: np.ndarray, estimate) -> float:
    """:func:`face_shape_recall` with ``estimate.lookup(m, "head")`` as ``in_head``, counted in ``shape``'s bounding
    box against the head cells each voxel lies in: the same counts without indexing every voxel."""
    from .morph import bounding_box

    box = bounding_box(shape)  # voxel i lies in cell min(i // step, n - 1), as cell_counts and lookup place it
    if box is None:
        return 1.0
    cells = [np.minimum(np.arange(sl.start, sl.stop) // s, n - 1)
             for sl, s, n in zip(box, estimate.step, estimate.head.shape)]
    tissue = shape[box] & estimate.head[np.ix_(*cells)]
    n = int(np.count_nonzero(tissue))
    return 1.0 if n == 0 else float(np.count_nonzero(tissue & remove[box])) / n


def yawed_starts(matrix: np.ndarray, centre: np.ndarray, turns_deg) -> list[np.ndarray]:
    """``matrix`` (subject world → template world) turned about the template's S-I axis through ``centre``
    (template world, mm) by each of ``turns_deg``.

    >>> [round(float(m[0, 1]), 3) for m in yawed_starts(np.eye(4), np.zeros(3), (90.0,))]
    [-1.0]
    """
    from .coarse import rotation_matrix

    out = []
    for deg in turns_deg:
        turn = np.eye(4)
        turn[:3, :3] = rotation_matrix(0.0, 0.0, float(deg))  # about S-I (yaw)
        shift, back = np.eye(4), np.eye(4)
        shift[:3, 3], back[:3, 3] = centre, -np.asarray(centre)
        out.append(shift @ turn @ back @ np.asarray(matrix, dtype=np.float64))
    return out


def head_shape_pose(canonical: np.ndarray, affine: np.ndarray, candidates, *, step_mm: float = 4.0,
                    brain_protect: str | None = None, seed: int = 0,
                    own_turns_deg: tuple[float, ...] = OWN_YAW_STARTS_DEG) -> np.ndarray | None:
    """Subject-world → template-world affine from the head masks alone, refined from ``candidates``.

    ``candidates``: :class:`~fedimg.deface.coarse.Candidate` head-mask alignments, best first.
    ``own_turns_deg``: the best one also turned about the template's S-I axis by these angles (the placement's own
    starts, :data:`OWN_YAW_STARTS_DEG`); the best fit of all starts is returned. Returns None when there are none.
    """
    from .coarse import acquired_fov, block_mean, head_mask
    from .register import RegistrationConfig, register
    from .template import template_head_mask

    mats = [np.asarray(c.matrix, dtype=np.float64) for c in upright(candidates)]
    if not mats:
        return None
    small = block_mean(canonical, affine, step_mm)  # one pass over the image for the head mask and the field of view
    smask, saff = head_mask(*(small if _pooled_once(small, step_mm) else (canonical, affine)), step_mm=step_mm)
    tmask, taff = template_head_mask(step_mm, brain_protect)
    if own_turns_deg:
        centre = (taff @ np.r_[np.argwhere(tmask).mean(axis=0), 1.0])[:3]
        mats = mats + yawed_starts(mats[0], centre, own_turns_deg)
    n = len(mats)
    # two levels, 80 iterations each (eleventh wave): one 4 mm level of 40 stopped short of the optimum on turned
    # heads (real ds000031 turned 20-30 degrees: Dice 0.63-0.81 against the reference, face 9-24 mm off along S-I)
    cfg = RegistrationConfig.preset("fast", levels_mm=(2 * step_mm, step_mm), iterations=(80, 80), starts=n,
                                    keep=min(2, n), prune_to=n, seed=seed)
    fov = acquired_fov(small[0], step_mm)  # the fill of an oblique cut is not air
    reg = register(smask.astype(np.float32), saff, tmask.astype(np.float32), taff, config=cfg, initial=mats,
                   fov=None if fov is None else (fov, saff))
    return reg.subject_to_template


def _pooled_once(small: tuple[np.ndarray, np.ndarray], step_mm: float) -> bool:
    """Whether ``head_mask`` at ``step_mm`` takes block means ``small`` (:func:`.coarse.block_mean` at ``step_mm``) as
    they are: one voxel per block, the affine times the identity, so the same mask as from the full image
    (as :func:`.core.face_removal` gives the coarse stage). True on every grid seen; checked all the same."""
    spacing = np.sqrt((small[1][:3, :3] ** 2).sum(axis=0))
    return all(max(1, int(round(step_mm / float(s)))) == 1 for s in spacing)


def shape_placement(canonical: np.ndarray, affine: np.ndarray, candidates, *,
                    brain_protect: str | None = None) -> ShapePlacement | None:
    """The removal (canonical grid) that the head-shape pose gives, and the head's size; None without candidates.

    It depends on the image and the coarse alignments only, so it can be made beside the MI
    registration (:mod:`.pipeline`'s QC thread)."""
    from .masks import removal_mask, warp_template_masks
    from .template import load_template

    pose = head_shape_pose(canonical, affine, candidates, brain_protect=brain_protect)
    if pose is None:
        return None
    face, brain = warp_template_masks(load_template(brain_protect), canonical.shape, affine, pose)  # > 0.5, > 0.01
    return ShapePlacement(remove=removal_mask(face, brain)[0], size=head_size(pose), pose=pose)


def shape_removal(canonical: np.ndarray, affine: np.ndarray, candidates, *,
                  brain_protect: str | None = None) -> np.ndarray | None:
    """:func:`shape_placement`'s removal alone."""
    got = shape_placement(canonical, affine, candidates, brain_protect=brain_protect)
    return None if got is None else got.remove


def face_shape_dice(canonical: np.ndarray, affine: np.ndarray, remove: np.ndarray, candidates, *,
                    brain_protect: str | None = None) -> float | None:
    """Dice of ``remove`` (canonical grid) and the removal the head-shape pose gives; None without candidates."""
    shape = shape_removal(canonical, affine, candidates, brain_protect=brain_protect)
    if shape is None:
        return None
    dice = removal_dice(remove, shape)
    log.debug("QC: removal vs head-shape placement Dice %.3f", dice)
    return dice
