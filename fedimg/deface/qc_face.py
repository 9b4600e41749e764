"""QC's own face placement from the head's outline: catches a removal the MI registration got wrong.

The MI registration matches intensities against a T1 template; on PD- or T2-like contrast it
can settle a few millimetres off and remove only part of the face while every other check
passes. This check places the face region a second way that uses no intensities at all: the
coarse head-mask alignments (:mod:`.coarse`, already computed for the registration's starts)
are refined by a 12-parameter affine fit of the template's head mask to the subject's head
mask (mutual information of the two binary masks at 4 mm, the registration used for CT). The
removal that placement gives is compared with the removal actually made
(``face_shape_dice``); QC fails the file when they overlap too little (``min_face_shape_dice``
in :class:`~fedimg.deface.qc.QCThresholds`).

The head outline places the face less precisely than a good MI registration (Dice against
the corpus reference 0.79-0.95 on the dev heads), so the bound is loose: it catches a removal
that is clearly elsewhere or clearly partial, not one a few percent off.

>>> import numpy as np
>>> a = np.zeros((4, 4, 4), bool); a[:2] = True
>>> b = np.zeros((4, 4, 4), bool); b[1:3] = True
>>> removal_dice(a, b)
0.5
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["head_shape_pose", "shape_removal", "face_shape_dice", "removal_dice"]

log = logging.getLogger(__name__)


def removal_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = float(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def head_shape_pose(canonical: np.ndarray, affine: np.ndarray, candidates, *, step_mm: float = 4.0,
                    brain_protect: str | None = None, seed: int = 0) -> np.ndarray | None:
    """Subject-world → template-world affine from the head masks alone, refined from ``candidates``.

    ``candidates``: :class:`~fedimg.deface.coarse.Candidate` head-mask alignments, best first.
    Returns None when there are none.
    """
    from .coarse import head_mask
    from .register import RegistrationConfig, register
    from .template import template_head_mask

    mats = [np.asarray(c.matrix, dtype=np.float64) for c in candidates]
    if not mats:
        return None
    smask, saff = head_mask(canonical, affine, step_mm=step_mm)
    tmask, taff = template_head_mask(step_mm, brain_protect)
    n = len(mats)
    cfg = RegistrationConfig.preset("fast", levels_mm=(step_mm,), iterations=(40,), starts=n, keep=min(2, n),
                                    prune_to=n, seed=seed)
    reg = register(smask.astype(np.float32), saff, tmask.astype(np.float32), taff, config=cfg, initial=mats)
    return reg.subject_to_template


def shape_removal(canonical: np.ndarray, affine: np.ndarray, candidates, *,
                  brain_protect: str | None = None) -> np.ndarray | None:
    """The removal (canonical grid) that the head-shape pose gives; None without candidates.

    It depends on the image and the coarse alignments only, so it can be made beside the MI
    registration (:mod:`.pipeline`'s QC thread)."""
    from .masks import removal_mask, warp_template_maps
    from .template import load_template

    pose = head_shape_pose(canonical, affine, candidates, brain_protect=brain_protect)
    if pose is None:
        return None
    face, brain = warp_template_maps(load_template(brain_protect), canonical.shape, affine, pose)
    return removal_mask(face, brain)[0]


def face_shape_dice(canonical: np.ndarray, affine: np.ndarray, remove: np.ndarray, candidates, *,
                    brain_protect: str | None = None) -> float | None:
    """Dice of ``remove`` (canonical grid) and the removal the head-shape pose gives; None without candidates."""
    shape = shape_removal(canonical, affine, candidates, brain_protect=brain_protect)
    if shape is None:
        return None
    dice = removal_dice(remove, shape)
    log.debug("QC: removal vs head-shape placement Dice %.3f", dice)
    return dice
