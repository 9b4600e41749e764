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

from .masks import MODES, dilate_mm, removal_mask, warp_template_maps
from .qc import QCThresholds, brain_in_head
from .register import PRESETS, Registration, RegistrationConfig, register
from .template import load_template

__all__ = ["DefaceConfig", "FaceRemoval", "face_removal"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DefaceConfig:
    """How to deface. ``preset="auto"`` picks ``fast`` for inputs coarser than 1.8 mm, else ``default``."""

    preset: str = "auto"
    mode: str = "zero"
    blur_mm: float = 8.0
    protect_margin_mm: float = 2.0
    seed: int = 0
    registration: RegistrationConfig | None = None  # overrides the preset when given
    qc: QCThresholds = dataclasses.field(default_factory=QCThresholds)

    def __post_init__(self) -> None:
        if self.preset != "auto" and self.preset not in PRESETS:
            raise ConfigError(f"preset {self.preset!r}: choose auto or one of {', '.join(sorted(PRESETS))}")
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.blur_mm <= 0 or self.protect_margin_mm < 0:
            raise ConfigError("blur_mm must be > 0 and protect_margin_mm >= 0")

    def registration_for(self, spacing) -> RegistrationConfig:
        if self.registration is not None:
            return self.registration
        name = self.preset
        if name == "auto":
            name = "fast" if float(np.min(spacing)) >= 1.8 else "default"
        return RegistrationConfig.preset(name, seed=self.seed)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FaceRemoval:
    """Masks (input voxel order) and registration of one defacing, plus raw QC numbers."""

    remove: np.ndarray  # bool, voxels to remove
    protected: np.ndarray  # bool, voxels that must not change
    registration: Registration
    metrics: dict


def _canonical(data: np.ndarray, affine: np.ndarray):
    from fedimg.imageio.volume import to_canonical

    return to_canonical(data, affine)


def _back(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    import nibabel.orientations as nio

    back = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.io_orientation(affine))
    return np.ascontiguousarray(nio.apply_orientation(mask, back))


def face_removal(image: np.ndarray, affine: np.ndarray, *, protect: np.ndarray | None = None,
                 config: DefaceConfig | None = None, device=None, registration: Registration | None = None,
                 brain_protect: str | None = None) -> FaceRemoval:
    """Decide which voxels of ``image`` (3-D, any orientation) to remove.

    ``protect``: boolean/label array on the same grid (non-zero = keep, dilated by the margin).
    ``registration``: reuse an earlier result (e.g. the t1's for the other modalities).
    """
    import torch

    config = config or DefaceConfig()
    device = device or torch.device("cpu")
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"face_removal needs a 3-D image, got shape {image.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    can, can_aff = _canonical(image.astype(np.float32, copy=False), affine)
    # NIfTI stores affines in float32: round to 0.1 um so one world image stored two ways
    # (e.g. flipped axes) gives bit-identical registrations.
    can_aff = np.round(can_aff, 4)
    spacing = np.sqrt((can_aff[:3, :3] ** 2).sum(axis=0))
    template = load_template(brain_protect)
    if registration is None:
        registration = register(can, can_aff, template.intensity, template.affine,
                                config=config.registration_for(spacing), device=device)
    face, brain = warp_template_maps(template, can.shape, can_aff, registration.subject_to_template, device=device)
    user = None
    if protect is not None:
        if protect.shape != image.shape:
            raise ValueError(f"protect mask shape {protect.shape} != image shape {image.shape}")
        user, _ = _canonical(np.asarray(protect) != 0, affine)
        user = dilate_mm(user, spacing, config.protect_margin_mm)
    remove, protected = removal_mask(face, brain, user)
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    bih = brain_in_head(can, can_aff, template, registration.subject_to_template)
    metrics = {
        "mutual_information": -registration.loss,
        "runner_up_mutual_information": -registration.second_loss,
        "loss_gap": registration.second_loss - registration.loss,
        "agreement_mm": registration.agreement_mm,
        "best_start_pitch_roll_yaw_deg": list(registration.start),
        "registration_seconds": registration.seconds,
        "removed_ml": float(remove.sum()) * voxel_ml,
        "protected_near_face_ml": float(protected.sum()) * voxel_ml,
        "face_region_protected_ml": float(((face > 0.5) & protected).sum()) * voxel_ml,
        "brain_in_head": bih,
        "user_protected_ml": float(user.sum()) * voxel_ml if user is not None else 0.0,
    }
    return FaceRemoval(remove=_back(remove, affine), protected=_back(protected, affine),
                       registration=registration, metrics=metrics)
