"""In-memory defacing: register the template, warp its face mask, protect brain and labels.

Works on canonical (RAS-ordered) arrays; :func:`face_removal` takes any orientation and
returns masks in the input's own voxel order.

>>> cfg = DefaceConfig(preset="fast")
>>> cfg.registration_for((2.0, 2.0, 2.0)).starts
8
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from fedimg.errors import ConfigError

from .beside import collect, queue_calls
from .blas import serial_blas
from .coarse import block_mean as _block_mean
from .coarse import Candidate, acquired_fov, coarse_candidates
from .ct import MODALITIES, air_value, looks_like_hu, resolve_modality
from .masks import MODES, dilate_mm, removal_mask, warp_template_masks
from .qc import HEAD_SHAPE_KEEP, QCThresholds, brain_in_head
from .register import PRESETS, Registration, RegistrationConfig, register
from .template import load_template, template_head_mask, template_intensity

__all__ = ["DefaceConfig", "FaceRemoval", "face_removal"]

log = logging.getLogger(__name__)

RETRY_BELOW_DICE = 0.9  # start agreement (face-region Dice) under which an ambiguous registration is refined


@dataclasses.dataclass(frozen=True, kw_only=True)
class DefaceConfig:
    """How to deface. ``preset="auto"`` picks ``coarse`` for inputs of 1.8 mm or coarser, else ``default``.

    ``modality``: ``mr``, ``ct`` or ``auto`` (HU range or CT-like head histogram). ``coarse``:
    start the MI stage from the head-mask alignment (else from the fixed start rotations).
    """

    preset: str = "auto"
    modality: str = "auto"
    coarse: bool = True
    shape_weight: float | None = None  # overrides the preset's head-mask MI weight when given
    mode: str = "zero"
    blur_mm: float = 8.0
    protect_margin_mm: float = 2.0
    seed: int = 0
    registration: RegistrationConfig | None = None  # overrides the preset when given
    qc: QCThresholds = dataclasses.field(default_factory=QCThresholds)

    def __post_init__(self) -> None:
        if self.preset != "auto" and self.preset not in PRESETS:
            raise ConfigError(f"preset {self.preset!r}: choose auto or one of {', '.join(sorted(PRESETS))}")
        if self.modality not in MODALITIES:
            raise ConfigError(f"modality {self.modality!r}: choose one of {', '.join(MODALITIES)}")
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.blur_mm <= 0 or self.protect_margin_mm < 0:
            raise ConfigError("blur_mm must be > 0 and protect_margin_mm >= 0")

    def registration_for(self, spacing) -> RegistrationConfig:
        if self.registration is not None:
            return self.registration
        name = self.preset
        if name == "auto":
            name = "coarse" if float(np.min(spacing)) >= 1.8 else "default"
        extra = {} if self.shape_weight is None else {"shape_weight": self.shape_weight}
        return RegistrationConfig.preset(name, seed=self.seed, **extra)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FaceRemoval:
    """Masks (input voxel order) and registration of one defacing, plus raw QC numbers.

    ``head_shape``: the coarse head-mask alignments (best first) the registration started
    from, kept for QC (:func:`fedimg.deface.qc.check_removal` reuses them instead of aligning
    the head shape again); empty when none were computed (a given ``registration``,
    ``coarse=False``). ``brain_protect``: the brain-protection mask used (None: the shipped one).
    """

    remove: np.ndarray  # bool, voxels to remove
    protected: np.ndarray  # bool, voxels that must not change
    registration: Registration
    metrics: dict
    modality: str = "mr"
    fill_value: float = 0.0  # value (scaled units) removed voxels get: 0 for MR, air for CT
    head_shape: tuple[Candidate, ...] = ()
    brain_protect: str | None = None


def _canonical(data: np.ndarray, affine: np.ndarray):
    from fedimg.imageio.volume import to_canonical

    return to_canonical(data, affine)


def _axes(affine: np.ndarray) -> np.ndarray:
    """The canonical axis each stored voxel axis becomes."""
    import nibabel.orientations as nio

    return nio.io_orientation(affine)[:, 0].astype(int)


def _back(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    import nibabel.orientations as nio

    back = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.io_orientation(affine))
    return np.ascontiguousarray(nio.apply_orientation(mask, back))


@serial_blas
def face_removal(image: np.ndarray, affine: np.ndarray, *, protect: np.ndarray | None = None,
                 config: DefaceConfig | None = None, device=None, registration: Registration | None = None,
                 brain_protect: str | None = None, on_coarse=None, canonical=None, pool=None) -> FaceRemoval:
    """Decide which voxels of ``image`` (3-D, any orientation) to remove.

    Long because it is the whole in-memory defacing: canonical copy, modality, registration,
    warped maps, protection and the raw QC numbers.

    ``protect``: boolean/label array on the same grid (non-zero = keep, dilated by the margin).
    ``registration``: reuse an earlier result (e.g. the t1's for the other modalities).
    ``brain_protect``: path of another brain-protection mask on the template grid (QC checks it too).
    ``on_coarse``: called as ``on_coarse(modality, head_shape)`` once the head-shape alignments
    (``FaceRemoval.head_shape``, before the MI stage) are known, so QC's own work on them can
    start beside the MI registration (:func:`fedimg.deface.pipeline.deface_job`).
    ``canonical``: ``(array, affine)`` that :func:`fedimg.imageio.volume.to_canonical` gives for ``image``
    as float32, when the caller has it already (the pipeline shares one copy with QC); not copied again.
    ``pool``: an executor (the pipeline's QC threads) that may compute ``brain_in_head`` and
    ``start_agreement_dice`` beside the face-map warp; one no thread has started is run here (:func:`.beside.collect`).
    """
    config = config or DefaceConfig()
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"face_removal needs a 3-D image, got shape {image.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if canonical is None:
        can, can_aff = _canonical(image.astype(np.float32, copy=False), affine)
    else:
        can, can_aff = canonical
        if can.dtype != np.float32 or can.shape != tuple(image.shape[i] for i in np.argsort(_axes(affine))):
            raise ValueError("face_removal: canonical must be to_canonical(image as float32, affine)")
    # NIfTI stores affines in float32: round to 0.1 um so one world image stored two ways
    # (e.g. flipped axes) gives bit-identical registrations.
    can_aff = np.round(can_aff, 4)
    spacing = np.sqrt((can_aff[:3, :3] ** 2).sum(axis=0))
    small = _block_mean(can, can_aff, 4.0)  # one 4 mm copy for modality detection and the coarse stage
    modality = resolve_modality(config.modality, *small)
    fill = air_value(can, modality)
    if modality == "ct" and looks_like_hu(can):
        can = np.maximum(can, fill)  # padding outside the scanner's circle (-2048 etc.) reads as air
        small = _block_mean(can, can_aff, 4.0)
    coarse_dice, head_shape = None, ()
    if registration is None:
        keep_shape = config.registration_for(spacing).prune_to == HEAD_SHAPE_KEEP

        def coarse_done(cands):
            if on_coarse is not None:
                on_coarse(modality, cands if keep_shape else ())

        registration, cands = _register_head(can, can_aff, small, modality, config, spacing, device, brain_protect,
                                             coarse_done)
        coarse_dice = cands[0].dice if cands else None
        if keep_shape:
            head_shape = cands  # exactly the alignments QC would compute (same image, same keep)
    elif on_coarse is not None:
        on_coarse(modality, ())
    template = load_template(brain_protect)  # the face and brain maps (a second thread may be reading them)
    beside = queue_calls(pool, (brain_in_head, can, can_aff, template, registration.subject_to_template),
                    (start_agreement_dice, registration, template, can.shape, can_aff))
    face, brain = warp_template_masks(template, can.shape, can_aff, registration.subject_to_template, device=device)
    user = None
    if protect is not None:
        if protect.shape != image.shape:
            raise ValueError(f"protect mask shape {protect.shape} != image shape {image.shape}")
        user, _ = _canonical(np.asarray(protect) != 0, affine)
        user = dilate_mm(user, spacing, config.protect_margin_mm)
    remove, protected = removal_mask(face, brain, user)
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    bih, start_dice = collect(beside)
    metrics = {
        "modality": modality,
        "coarse_dice": coarse_dice,
        "start_agreement_dice": start_dice,
        "mutual_information": registration.mi if registration.mi is not None else -registration.loss,
        "runner_up_mutual_information": -registration.second_loss,
        "loss_gap": registration.second_loss - registration.loss,
        "agreement_mm": registration.agreement_mm,
        "best_start_pitch_roll_yaw_deg": list(registration.start),
        "registration_seconds": registration.seconds,
        "removed_ml": float(remove.sum()) * voxel_ml,
        "protected_near_face_ml": float(protected.sum()) * voxel_ml,
        "face_region_protected_ml": float((face & protected).sum()) * voxel_ml,
        "brain_in_head": bih,
        "user_protected_ml": float(user.sum()) * voxel_ml if user is not None else 0.0,
    }
    return FaceRemoval(remove=_back(remove, affine), protected=_back(protected, affine),
                       registration=registration, metrics=metrics, modality=modality, fill_value=fill,
                       head_shape=head_shape, brain_protect=brain_protect)


def _register_head(can, can_aff, small, modality, config, spacing, device, brain_protect, coarse_done=None):
    """Coarse head-mask alignment, then MI: intensities for MR, a CT tissue image for CT. Returns ``(reg, cands)``.

    ``cands``: the ``prune_to`` best coarse alignments that start the MI stage (QC reuses them;
    ``coarse_done(cands)`` is called with them before the MI stage).
    When the two best starts end on different face regions with near-equal loss, the MI stage
    runs once more with the ``accurate`` settings from those two (longer, more samples).
    """
    rcfg = config.registration_for(spacing)
    initial, cands = None, ()
    if config.coarse:
        tmask, tmaff = template_head_mask(4.0, brain_protect)
        cands = tuple(coarse_candidates(*small, tmask, tmaff, keep=rcfg.prune_to))
        if cands:
            initial = [c.matrix for c in cands]
    if coarse_done is not None:
        coarse_done(cands)
    if modality == "ct":  # a CT tissue image against the template, the neck trimmed (:mod:`.ct_register`)
        from .ct_register import register_ct

        reg = register_ct(can, can_aff, config=rcfg, template=load_template(brain_protect), initial=initial, device=device,
                          air=air_value(can, "ct"))
        return reg, cands
    args = (can, can_aff, *template_intensity())  # load_template's intensity array: the face/brain maps may still be read
    fov = acquired_fov(small[0])  # MI samples only acquired voxels: the fill of an oblique cut is not air
    fov = None if fov is None else (fov, small[1])
    reg = register(*args, config=rcfg, device=device, initial=initial, fov=fov)
    ambiguous = reg.second_loss - reg.loss < config.qc.ambiguous_gap
    if config.registration is None and len(reg.candidates) > 1 and ambiguous and \
            start_agreement_dice(reg, load_template(brain_protect), can.shape, can_aff) < RETRY_BELOW_DICE:
        log.info("two best starts disagree with near-equal loss: refining both with the accurate settings")
        retry = RegistrationConfig.preset("accurate", seed=config.seed, starts=2, keep=2, prune_to=2,
                                          shape_weight=rcfg.shape_weight)
        reg = register(*args, config=retry, device=device, initial=list(reg.candidates[:2]), fov=fov)
    return reg, cands


def start_agreement_dice(registration: Registration, template, shape, affine: np.ndarray, step_mm: float = 4.0) -> float:
    """Dice of the face-removal regions of the two best starts (1.0 with a single start), at ~4 mm."""
    from .coarse import _Sampler, _points

    if len(registration.candidates) < 2:
        return 1.0
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    st = [max(1, int(round(step_mm / s))) for s in spacing]
    small_shape = [len(range(0, n, k)) for n, k in zip(shape, st)]
    pts = _points(small_shape, affine @ np.diag([*st, 1.0]))
    vals = _Sampler(template.face, template.affine)(np.stack(registration.candidates[:2]), pts) > 0.5
    inter = float((vals[0] & vals[1]).sum())
    total = float(vals[0].sum() + vals[1].sum())
    return 1.0 if total == 0 else 2.0 * inter / total
