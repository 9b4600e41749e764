"""The pydeface head template, its face mask and fedimg's brain-protection mask (package data).

All three share one grid (176x256x256, 1 mm, RAS). Arrays are loaded once per process.

>>> t = load_template()
>>> t.intensity.shape, t.face.dtype, t.brain.dtype
((176, 256, 256), dtype('float32'), dtype('float32'))
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import logging
import threading
from pathlib import Path

import numpy as np

from fedimg.errors import FedimgError

__all__ = ["Template", "load_template", "template_head_mask", "asset_path", "TEMPLATE_NAME", "FACEMASK_NAME", "BRAIN_PROTECT_NAME"]

log = logging.getLogger(__name__)

TEMPLATE_NAME = "mean_reg2mean.nii.gz"
FACEMASK_NAME = "facemask.nii.gz"
BRAIN_PROTECT_NAME = "brain_protect.nii.gz"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Template:
    """Template intensities, face-removal map (1 = face) and brain-protection map, one grid."""

    intensity: np.ndarray  # float32
    face: np.ndarray  # float32, 1 inside the region pydeface removes
    brain: np.ndarray  # float32, 1 inside the protected brain (with margin)
    affine: np.ndarray  # (4, 4) voxel -> world (mm, RAS)


def asset_path(name: str) -> Path:
    """Path of a file in ``fedimg/assets`` (works for editable and wheel installs)."""
    path = Path(str(importlib.resources.files("fedimg") / "assets" / name))
    if not path.is_file():
        raise FedimgError(f"fedimg asset {name} is missing from {path.parent}; reinstall fedimg")
    return path


_LOCK = threading.RLock()  # one read per process even when two threads ask at once (fedimg.deface.pipeline)


def load_template(brain_protect: str | None = None) -> Template:
    """Load the template trio (cached). ``brain_protect`` overrides the shipped mask path."""
    with _LOCK:
        return _load_template(None if brain_protect is None else str(brain_protect))  # one cache key per mask


@functools.lru_cache(maxsize=2)
def _load_template(brain_protect: str | None) -> Template:
    from fedimg.imageio.nifti import open_nifti

    img = open_nifti(asset_path(TEMPLATE_NAME))
    face_img = open_nifti(asset_path(FACEMASK_NAME))
    brain_img = open_nifti(brain_protect or asset_path(BRAIN_PROTECT_NAME))
    for other in (face_img, brain_img):
        if other.shape != img.shape or not np.allclose(other.affine, img.affine, atol=1e-4):
            raise FedimgError(f"{other.get_filename()}: not on the template grid; rebuild it with scripts/build_brain_protect.py")
    # C order (NIfTI stores x fastest): every later use reshapes, pads or boxes these arrays in C order,
    # and each such use of a Fortran-ordered array copied it first (the values are the same either way)
    intensity = np.ascontiguousarray(_voxels(img), dtype=np.float32)
    face = np.ascontiguousarray(_voxels(face_img) < 0.5, dtype=np.float32)  # facemask: 0 = face region
    brain = np.ascontiguousarray(_voxels(brain_img) > 0, dtype=np.float32)
    log.debug("template loaded: %s, face %.0f mL, brain-protect %.0f mL", img.shape, face.sum() / 1e3, brain.sum() / 1e3)
    return Template(intensity=intensity, face=face, brain=brain, affine=np.asarray(img.affine, dtype=np.float64))


def _voxels(img) -> np.ndarray:
    """Voxel values of a template file: decoded in one call (:func:`fedimg.imageio.gz.read_unscaled`) when unscaled."""
    from fedimg.imageio.gz import read_unscaled

    if img.dataobj.slope not in (None, 1.0) or img.dataobj.inter not in (None, 0.0):
        return np.asarray(img.get_fdata(dtype=np.float64))  # pragma: no cover - the shipped files are unscaled
    return read_unscaled(img, img.get_filename())


def template_head_mask(step_mm: float = 4.0, brain_protect: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The template's head mask (see :func:`fedimg.deface.coarse.head_mask`) and its affine, cached."""
    with _LOCK:
        return _template_head_mask(float(step_mm), None if brain_protect is None else str(brain_protect))


@functools.lru_cache(maxsize=4)
def _template_head_mask(step_mm: float, brain_protect: str | None) -> tuple[np.ndarray, np.ndarray]:
    from .coarse import head_mask

    t = load_template(brain_protect)
    return head_mask(t.intensity, t.affine, step_mm=step_mm)
