"""Header-first NIfTI reading with sanity checks, for data sets of several files per case.

Open every file of a case first (:func:`open_nifti`: header only, cheap, and refused there
when the header declares a volume above the size limit or an impossible type, affine or
scaling, :mod:`.limits`), check the
dimensions (:func:`spatial_shape`) and that all files share one grid
(:func:`check_same_grid`), and only then read the voxels (:func:`read_voxels`) and check
them (:func:`check_finite`). :func:`read_volume` does all of it for one file. A command that
never needs DICOM header extensions (``fedimg deface``) first calls
:func:`import_nibabel_without_pydicom` for a leaner start. Every
problem is an :class:`~fedimg.errors.InputError` naming the file and the fix: unreadable,
corrupt or truncated files, 2-D or 5-D images, shape or affine mismatches, NaN/Inf voxels.
Files are only read, never written.

>>> import tempfile, pathlib, numpy as np, nibabel as nib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "t1.nii.gz"
>>> nib.save(nib.Nifti1Image(np.ones((8, 9, 10), np.int16), np.eye(4)), str(p))
>>> data, affine = read_volume(p)
>>> data.shape, data.dtype, affine.shape
((8, 9, 10), dtype('float32'), (4, 4))
"""

from __future__ import annotations

import zlib
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import InputError

from .limits import Limits, check_nifti_header

__all__ = [
    "AFFINE_ATOL",
    "open_nifti",
    "spatial_shape",
    "check_same_grid",
    "read_voxels",
    "check_finite",
    "read_volume",
    "import_nibabel_without_pydicom",
]

#: Affines of co-registered images agree to rounding; BraTS headers differ by ~1e-6.
AFFINE_ATOL = 1e-3


def open_nifti(path: str | PathLike[str], *, limits: Limits | None = None) -> Any:
    """``nibabel`` image proxy of ``path`` (header only), with a clear error if unreadable.

    The header is checked before anything else is read (:func:`.limits.check_nifti_header`).
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist; check the path")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad headers / bad gzip
        raise InputError(
            path, f"is not a readable NIfTI file: corrupt, truncated or another format ({_why(exc, path)}); "
            "re-copy, re-export or replace it",
        ) from None
    if not hasattr(img, "dataobj") or not hasattr(img, "affine"):
        raise InputError(path, "is not a NIfTI image; convert it to .nii.gz")
    check_nifti_header(img, path, limits)
    return img


def _why(exc: BaseException, path: Path | None = None) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if path is not None:
        text = text.replace(f'"{path}"', "it").replace(str(path), "it").replace("File it", "it")
    return text[:160]


def read_voxels(img: Any, path: str | PathLike[str], dtype=None) -> np.ndarray:
    """Voxels of an opened image: stored values (``dtype=None``) or scaled to ``dtype``."""
    path = Path(path)
    try:
        if dtype is None:
            return np.asarray(img.dataobj)
        return np.asarray(img.get_fdata(dtype=dtype, caching="unchanged"))
    except (EOFError, zlib.error, OSError, ValueError) as exc:
        raise InputError(
            path, f"is corrupt or truncated (reading its voxels failed: {_why(exc, path)}); re-copy or re-export the file"
        ) from None
    except MemoryError:
        raise InputError(path, "is too large to load into memory") from None


def spatial_shape(img: Any, path: str | PathLike[str], channels: tuple[str, ...] | None = None) -> tuple[int, int, int]:
    """Check dimensionality: 3-D (trailing size-1 axes allowed), or 4-D with the named ``channels``."""
    path = Path(path)
    shape = tuple(int(s) for s in img.shape)
    core = list(shape)
    keep = 3 if channels is None else 4
    while len(core) > keep and core[-1] == 1:
        core.pop()
    if channels is None:
        ok = len(core) == 3
        want = "a 3-D volume"
    else:
        ok = len(core) == 4 and core[3] == len(channels)
        want = f"a 4-D volume with {len(channels)} channels ({', '.join(channels)})"
    if ok and min(shape[:3]) < 2:
        raise InputError(path, f"has shape {shape}, a single slice (effectively 2-D); expected {want}")
    if not ok:
        raise InputError(path, f"is {len(shape)}-D with shape {shape}; expected {want}")
    return shape[0], shape[1], shape[2]


def check_same_grid(
    ref_shape: tuple[int, ...], ref_affine: np.ndarray, ref_path: str | PathLike[str],
    img: Any, path: str | PathLike[str], shape: tuple[int, ...],
) -> None:
    """Refuse an image whose shape or affine differs from the reference file's."""
    path, ref_path = Path(path), Path(ref_path)
    if shape != ref_shape:
        raise InputError(
            path, f"has shape {shape} but {ref_path.name} has {ref_shape}; all files of a case must share one grid"
        )
    if not np.allclose(img.affine, ref_affine, atol=AFFINE_ATOL, rtol=0):
        diff = float(np.abs(np.asarray(img.affine) - ref_affine).max())
        raise InputError(
            path,
            f"has a different affine from {ref_path.name} (max difference {diff:.3g}); "
            "co-register the modalities to one grid",
        )


def check_finite(arr: np.ndarray, path: str | PathLike[str], what: str = "image") -> None:
    """Refuse NaN/Inf voxels, counting them."""
    bad = ~np.isfinite(arr)
    if bad.any():
        n = int(bad.sum())
        raise InputError(Path(path), f"has {n} NaN/Inf voxel(s) in the {what}; fix or replace the file")


def read_volume(
    path: str | PathLike[str], *, dtype=np.float32, channels: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one NIfTI file: ``(voxels (X, Y, Z[, C]) as dtype, affine (4, 4) float64)``.

    ``channels``: the names of the channels of a 4-D image (None: a 3-D image). Floating
    voxels are checked for NaN/Inf.
    """
    path = Path(path)
    img = open_nifti(path)
    shape = spatial_shape(img, path, channels)
    affine = np.asarray(img.affine, dtype=np.float64)
    full = shape + ((len(channels),) if channels is not None else ())
    data = read_voxels(img, path, dtype).reshape(full)
    if data.dtype.kind == "f":
        check_finite(data, path)
    return data, affine


def import_nibabel_without_pydicom() -> bool:
    """Import nibabel with pydicom hidden from it; True when that happened here (nibabel was not yet imported).

    ``nibabel.nifti1`` imports pydicom eagerly (``optional_package``), about a third of nibabel's
    import (0.1-0.3 s per ``fedimg deface``), only to parse DICOM header extensions (code 2),
    which defacing drops from its outputs (:func:`fedimg.imageio.volume.save_like`). With pydicom
    hidden, such an extension reads as raw bytes instead. pydicom stays importable afterwards
    (``fedimg import`` needs it); only this process's nibabel keeps DICOM extensions unparsed.
    Where pydicom or nibabel is imported already, nothing changes.

    >>> import_nibabel_without_pydicom() in (True, False)
    True
    """
    import sys

    if "nibabel" in sys.modules or "pydicom" in sys.modules:
        return False
    sys.modules["pydicom"] = None  # type: ignore[assignment] - "import pydicom" raises ImportError meanwhile
    try:
        import nibabel  # noqa: F401
    finally:
        if sys.modules.get("pydicom", False) is None:
            del sys.modules["pydicom"]
    return True
