"""Header-first refusal: check what a volume file *declares* before reading any voxel.

A NIfTI or NRRD header states the image's dimensions and voxel type; a damaged or hostile
header can declare a volume of many gigabytes in a file of a few hundred bytes. The
checks here run on the header alone and raise an :class:`~fedimg.errors.InputError`
naming the file and the fix for: a voxel count x voxel size above the limit
(:class:`Limits`, default :data:`DEFAULT_MAX_MB` MiB of float32-decoded voxels,
``$FEDIMG_MAX_VOLUME_MB`` overrides it), impossible dimensions, unsupported voxel types
(complex, RGB, structured), a non-finite or singular affine, a non-finite scaling and an
uncompressed file shorter than its header says.

>>> import tempfile, pathlib, numpy as np, nibabel as nib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "huge.nii"
>>> img = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
>>> img.header.set_data_shape((4000, 4000, 4000))   # 64 G voxels declared ...
>>> _ = p.write_bytes(img.header.binaryblock + b"\\0" * 4)   # ... in a 352-byte file
>>> try:
...     check_nifti_header(nib.load(str(p)), p)
... except Exception as e:
...     print(type(e).__name__, "declares" in str(e))
InputError True
>>> Limits(max_mb=16).max_bytes
16777216
"""

from __future__ import annotations

import dataclasses
import math
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import ConfigError, InputError

__all__ = ["DEFAULT_MAX_MB", "Limits", "default_limits", "check_declared", "check_nifti_header", "check_affine"]

#: Default largest volume (MiB, voxels decoded as float32): 512^3 float32 is 512 MiB, a BraTS case 35 MiB.
DEFAULT_MAX_MB = 2048
_MAX_DIM = 1 << 16  # no axis of a scan has more voxels than this


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    """Largest volume a reader accepts: ``max_mb`` MiB of voxels, each counted as at least 4 bytes."""

    max_mb: float = DEFAULT_MAX_MB

    def __post_init__(self) -> None:
        if not (isinstance(self.max_mb, (int, float)) and math.isfinite(self.max_mb) and self.max_mb > 0):
            raise ConfigError(f"the volume size limit must be a positive number of MiB, got {self.max_mb!r}")

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)


def default_limits() -> Limits:
    """:class:`Limits` from ``$FEDIMG_MAX_VOLUME_MB`` (:func:`fedimg.config.max_volume_mb_from_env`) or the default."""
    from fedimg.config import max_volume_mb_from_env

    value = max_volume_mb_from_env()
    return Limits() if value is None else Limits(max_mb=value)


def check_declared(path: str | PathLike[str], shape: tuple[int, ...], dtype: Any, limits: Limits | None = None) -> int:
    """Refuse impossible dimensions, unsupported voxel types and volumes above the limit; returns the voxel count."""
    path = Path(path)
    limits = limits or default_limits()
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= 7 or any(s < 1 for s in shape):
        raise InputError(path, f"declares impossible dimensions {shape} in its header; the file is damaged, re-export it")
    if any(s > _MAX_DIM for s in shape):
        raise InputError(path, f"declares {max(shape)} voxels along one axis (shape {shape}); the header is damaged, "
                               "re-export the image")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise InputError(path, f"declares an unknown voxel type {dtype!r}; convert it to an integer or float type") from None
    if dtype.kind not in "iufb" or dtype.fields is not None:
        raise InputError(path, f"has voxel type {dtype} (complex, RGB or structured); convert it to an integer or float type")
    count = math.prod(shape)
    decoded = count * max(dtype.itemsize, 4)
    if decoded > limits.max_bytes:
        raise InputError(
            path, f"declares a {' x '.join(map(str, shape))} volume ({decoded / 2**20:,.0f} MiB as float32), above the "
                  f"{limits.max_mb:g} MiB limit; it was not read. Crop or resample it, or raise FEDIMG_MAX_VOLUME_MB",
        )
    return count


def check_affine(path: str | PathLike[str], affine: Any) -> None:
    """Refuse a non-finite or singular voxel-to-world matrix (before any voxel is read)."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)) or abs(float(np.linalg.det(a[:3, :3]))) < 1e-12:
        raise InputError(Path(path), "has an invalid (singular or non-finite) affine in its header; fix the qform/sform")


def check_nifti_header(img: Any, path: str | PathLike[str], limits: Limits | None = None) -> None:
    """Header-only sanity of a loaded (not yet read) nibabel image: size, type, affine, scaling, file length."""
    path = Path(path)
    header = img.header
    shape = tuple(int(s) for s in header.get_data_shape())
    count = check_declared(path, shape, header.get_data_dtype(), limits)
    check_affine(path, img.affine)
    for name, value in _stored_scaling(path).items():  # nibabel silently drops an infinite scaling on load
        if not math.isfinite(value) and not math.isnan(value):  # NaN (or 0) means "no scaling"
            raise InputError(path, f"has a non-finite {name} ({value}) in its header; fix or remove the scaling")
    if path.suffix.lower() == ".nii":  # uncompressed: the file length must hold every declared voxel
        try:
            offset = int(header.get_data_offset())
        except (AttributeError, TypeError, ValueError):
            return
        need = offset + count * np.dtype(header.get_data_dtype()).itemsize
        have = path.stat().st_size
        if have < need:
            raise InputError(path, f"cannot be read: it is truncated ({have} bytes, its header declares {need}); "
                                   "re-copy or re-export it")


def _stored_scaling(path: Path) -> dict[str, float]:
    """``scl_slope`` / ``scl_inter`` as stored in a NIfTI-1 header (352 bytes read, gzip or not)."""
    import gzip

    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as f:
            head = f.read(124)
    except (OSError, EOFError):
        return {}
    if len(head) < 124:
        return {}
    for order in "<>":
        if int(np.frombuffer(head[:4], order + "i4")[0]) == 348:
            slope, inter = np.frombuffer(head[112:120], order + "f4")
            return {"scl_slope": float(slope), "scl_inter": float(inter)}
    return {}
