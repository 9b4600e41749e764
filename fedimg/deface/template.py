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

from .template_cache import cached

__all__ = ["Template", "load_template", "template_intensity", "template_head_mask", "asset_path", "TEMPLATE_NAME", "FACEMASK_NAME", "BRAIN_PROTECT_NAME"]

log = logging.getLogger(__name__)

TEMPLATE_NAME = "mean_reg2mean.nii.gz"
FACEMASK_NAME = "facemask.nii.gz"
SHAPE = (176, 256, 256)  # the shipped files' grid
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


# One read per process even when two threads ask at once (fedimg.deface.pipeline); one lock per product, so a
# thread reading the face and brain maps does not hold up one that needs only the intensities or the head mask.
# Order when nested: _LOCK or _MASK_LOCK, then _INTENSITY_LOCK.
_LOCK, _MASK_LOCK, _INTENSITY_LOCK = threading.RLock(), threading.RLock(), threading.RLock()


def load_template(brain_protect: str | None = None) -> Template:
    """Load the template trio (cached). ``brain_protect`` overrides the shipped mask path."""
    with _LOCK:
        return _load_template(None if brain_protect is None else str(brain_protect))  # one cache key per mask


def template_intensity() -> tuple[np.ndarray, np.ndarray]:
    """The template's intensities (float32) and affine, cached: the same array as ``load_template().intensity``.

    The coarse stage and the MI registration need only these; reading them alone first lets that work
    start before the face and brain maps are read (:func:`fedimg.deface.pipeline.prefetch_template`).
    """
    with _INTENSITY_LOCK:
        return _template_intensity()


@functools.lru_cache(maxsize=1)
def _template_intensity() -> tuple[np.ndarray, np.ndarray]:
    from fedimg.imageio.nifti import open_nifti
    from fedimg.imageio.volume import c_order

    def build() -> dict[str, np.ndarray]:
        img = open_nifti(asset_path(TEMPLATE_NAME))
        # C order (NIfTI stores x fastest): every later use reshapes, pads or boxes these arrays in C order,
        # and each such use of a Fortran-ordered array copied it first (the values are the same either way)
        return {"intensity": c_order(_voxels(img), np.float32), "affine": np.asarray(img.affine, dtype=np.float64)}

    got = cached("intensity", build, {"intensity": (SHAPE, "float32"), "affine": ((4, 4), "float64")})
    return got["intensity"], got["affine"]


@functools.lru_cache(maxsize=2)
def _load_template(brain_protect: str | None) -> Template:
    from fedimg.imageio.nifti import open_nifti
    from fedimg.imageio.volume import c_order

    intensity, affine = template_intensity()

    def build() -> dict[str, np.ndarray]:
        face_img = open_nifti(asset_path(FACEMASK_NAME))
        brain_img = open_nifti(brain_protect or asset_path(BRAIN_PROTECT_NAME))
        for other in (face_img, brain_img):
            if other.shape != intensity.shape or not np.allclose(other.affine, affine, atol=1e-4):
                raise FedimgError(f"{other.get_filename()}: not on the template grid; rebuild it with scripts/build_brain_protect.py")
        face = c_order(_voxels(face_img) < 0.5, np.float32)  # facemask: 0 = face region
        return {"face": face, "brain": c_order(_voxels(brain_img) > 0, np.float32)}

    if brain_protect is None:  # the shipped maps: cached (:mod:`.template_cache`) with their corner tables
        maps = cached("maps", build, {"face": (SHAPE, "float32"), "brain": (SHAPE, "float32")})
        _cached_codes(maps)
    else:
        maps = build()
    if log.isEnabledFor(logging.DEBUG):
        log.debug("template loaded: %s, face %.0f mL, brain-protect %.0f mL", intensity.shape, maps["face"].sum() / 1e3,
                  maps["brain"].sum() / 1e3)
    return Template(intensity=intensity, face=maps["face"], brain=maps["brain"], affine=affine)


def _cached_codes(maps: dict[str, np.ndarray]) -> None:
    """With a cache folder: the maps' corner tables (:func:`.resample_masks.cube_codes`) from the cache, remembered
    for these arrays (without one they are made when first asked for, as before)."""
    from .resample_masks import make_codes, remember_codes
    from .template_cache import cache_dir

    if cache_dir() is None:
        return
    shape = tuple(n + 3 for n in SHAPE)
    codes = cached("codes", lambda: {k: make_codes(v) for k, v in maps.items()}, {k: (shape, "uint8") for k in maps})
    for k, v in maps.items():
        remember_codes(v, codes[k])


def _voxels(img) -> np.ndarray:
    """Voxel values of a template file: decoded in one call (:func:`fedimg.imageio.gz.read_unscaled`) when unscaled."""
    from fedimg.imageio.gz import read_unscaled

    if img.dataobj.slope not in (None, 1.0) or img.dataobj.inter not in (None, 0.0):
        return np.asarray(img.get_fdata(dtype=np.float64))  # pragma: no cover - the shipped files are unscaled
    return read_unscaled(img, img.get_filename(), writable=False)  # only read: cast (and copied) by the callers


def template_head_mask(step_mm: float = 4.0, brain_protect: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The template's head mask (see :func:`fedimg.deface.coarse.head_mask`) and its affine, cached."""
    with _MASK_LOCK:
        return _template_head_mask(float(step_mm), None if brain_protect is None else str(brain_protect))


@functools.lru_cache(maxsize=4)
def _template_head_mask(step_mm: float, brain_protect: str | None) -> tuple[np.ndarray, np.ndarray]:
    from .coarse import head_mask

    def build() -> dict[str, np.ndarray]:
        mask, affine = head_mask(*template_intensity(), step_mm=step_mm)  # the intensities: the same whatever brain mask
        return {"mask": mask, "affine": affine}

    got = cached(f"head_mask_{step_mm:g}mm", build, {"mask": (None, "bool"), "affine": ((4, 4), "float64")})
    return got["mask"], got["affine"]
