"""Read, validate, reorient and write head volumes (NIfTI via nibabel, NRRD via :mod:`.nrrd`).

A :class:`Volume` keeps the *stored* (unscaled) voxels and everything needed to write an
output that has the input's shape, affine, dtype, scaling and orientation. Defacing edits
only the stored voxels of the removed region. NIfTI header extensions (which often carry
DICOM metadata such as acquisition times) are dropped from outputs.

>>> import numpy as np
>>> canonical_mask = np.zeros((4, 5, 6), bool); canonical_mask[0, 0, 0] = True
>>> vol = Volume(path=None, raw=np.zeros((4, 5, 6), np.int16), affine=np.diag([-1., 1, 1, 1]))
>>> bool(from_canonical(vol, canonical_mask)[3, 0, 0])
True
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import zlib
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import InputError
from fedimg.io import atomic_path, write_bytes

from .gz import compress, read_unscaled
from .limits import Limits, check_nifti_header
from .suffixes import NIFTI_SUFFIXES, is_nifti, is_nrrd

__all__ = ["Volume", "load_volume", "nifti_scaling", "to_canonical", "from_canonical", "save_like", "encode_like", "c_order",
           "NIFTI_SUFFIXES", "MIN_VOXELS_PER_AXIS"]

log = logging.getLogger(__name__)

MIN_VOXELS_PER_AXIS = 8


@dataclasses.dataclass(frozen=True, kw_only=True)
class Volume:
    """A 3-D image as stored: ``raw`` voxels (input dtype), scaling, affine and source."""

    path: Path | None
    raw: np.ndarray
    affine: np.ndarray
    slope: float = 1.0
    inter: float = 0.0
    nifti: Any = None  # the nibabel image when read from NIfTI (for its header)
    nrrd_header: bytes | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.raw.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def scaled(self) -> np.ndarray:
        """Voxel values as float32 with the file's scaling applied."""
        data = self.raw.astype(np.float32)
        if self.slope != 1.0 or self.inter != 0.0:
            data = data * np.float32(self.slope) + np.float32(self.inter)
        return data


def load_volume(path: str | PathLike[str], *, what: str = "image", require_signal: bool = True,
                limits: Limits | None = None) -> Volume:
    """Read and validate a 3-D NIfTI or NRRD file; any problem is an :class:`InputError` naming it.

    The header is checked first (:mod:`.limits`): a volume above the size limit is refused unread.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} does not exist; check the path")
    nrrd_header = None
    nifti = None
    slope, inter = 1.0, 0.0
    try:
        if is_nifti(path):
            import nibabel as nib

            nifti = nib.load(str(path))
            check_nifti_header(nifti, path, limits)
            raw = read_unscaled(nifti, path)  # .nii.gz decoded in one call (ISA-L when installed)
            affine = np.asarray(nifti.affine, dtype=np.float64)
            slope, inter = nifti_scaling(nifti)
        elif is_nrrd(path):
            from .nrrd import read_nrrd, read_nrrd_header

            raw, affine, _ = read_nrrd(path, limits=limits)
            nrrd_header = read_nrrd_header(path)[0]
        else:
            raise InputError(path, f"{what} is not NIfTI (.nii/.nii.gz) or NRRD (.nrrd); convert it first")
    except InputError:
        raise
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"{what} cannot be read ({type(exc).__name__}: {exc}); the file is corrupt or truncated") from None
    except Exception as exc:  # nibabel raises assorted errors for damaged headers
        raise InputError(path, f"{what} cannot be read ({type(exc).__name__}: {exc}); re-export the image") from None
    raw = np.asarray(raw)
    if raw.ndim == 4 and raw.shape[3] == 1:
        raw = raw[..., 0]
    if raw.ndim == 2 or (raw.ndim == 3 and min(raw.shape) == 1):
        raise InputError(path, f"{what} is a 2-D slice (shape {raw.shape}); pass a 3-D head volume")
    if raw.ndim != 3:
        raise InputError(path, f"{what} is {raw.ndim}-D (shape {raw.shape}); pass one 3-D volume (split 4-D series first)")
    if min(raw.shape) < MIN_VOXELS_PER_AXIS:
        raise InputError(path, f"{what} has only {min(raw.shape)} voxels along an axis (shape {raw.shape}); pass a 3-D head volume")
    if raw.dtype.kind not in "iufb":
        raise InputError(path, f"{what} has unsupported voxel type {raw.dtype}; convert to an integer or float type")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(path, f"{what} has an invalid (singular or non-finite) affine; fix the header")
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise InputError(path, f"{what} contains NaN or Inf voxels; clean the image first")
    if raw.dtype == bool:
        raw = raw.astype(np.uint8)
    if require_signal and (raw.size == 0 or raw.max() == raw.min()):
        raise InputError(path, f"{what} is empty (every voxel equals {raw.flat[0]!r}); pass a real scan")
    return Volume(path=path, raw=raw, affine=affine, slope=slope, inter=inter, nifti=nifti, nrrd_header=nrrd_header)


def nifti_scaling(nifti) -> tuple[float, float]:
    """``(slope, inter)`` of a nibabel image as :func:`load_volume` applies them (missing or 0 slope: 1)."""
    s, i = nifti.dataobj.slope, nifti.dataobj.inter
    slope = 1.0 if s is None or not np.isfinite(s) or s == 0 else float(s)
    inter = 0.0 if i is None or not np.isfinite(i) else float(i)
    return slope, inter


def _orientation(affine: np.ndarray):
    import nibabel.orientations as nio

    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt("RAS"))


def c_order(data: np.ndarray, dtype=None) -> np.ndarray:
    """``np.ascontiguousarray(data, dtype=dtype)``: the same values in a C-ordered array, copied one 2-D slab at a time.

    A NIfTI volume is stored x fastest (Fortran order); numpy's own copy of such a 3-D array into C
    order walks the source a whole z-stride per element and runs ~4x slower than copying one 2-D slab
    of the middle axis at a time (each fits the cache): 176 x 256 x 256 int16 -> float32, 144 -> 38 ms.
    Each element is cast as ``ascontiguousarray`` casts it (numpy's element-wise assignment).

    >>> a = np.asfortranarray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    >>> b = c_order(a, np.float32)
    >>> bool(b.flags.c_contiguous and np.array_equal(b, a)), b.dtype.name
    (True, 'float32')
    """
    data = np.asarray(data)
    dtype = data.dtype if dtype is None else np.dtype(dtype)
    if data.ndim != 3 or data.size == 0 or (data.flags.c_contiguous and data.dtype == dtype):
        return np.ascontiguousarray(data, dtype=dtype)
    fastest = int(np.argmin(np.abs(data.strides)))
    if fastest == 2:  # rows already run along the last axis: numpy's copy is cache-friendly
        return np.ascontiguousarray(data, dtype=dtype)
    loop = 1 if fastest == 0 else 0  # an axis that is neither the source's fastest nor the output's
    out = np.empty(data.shape, dtype)
    for i in range(data.shape[loop]):
        index = (slice(None),) * loop + (i,)
        out[index] = data[index]
    return out


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute voxel axes to the closest RAS order; returns ``(data, affine)`` (world unchanged)."""
    import nibabel.orientations as nio

    ornt = _orientation(affine)
    out = nio.apply_orientation(data, ornt)
    new_affine = affine @ nio.inv_ornt_aff(ornt, data.shape)
    return c_order(out), new_affine


def from_canonical(volume: Volume, canonical: np.ndarray) -> np.ndarray:
    """Map an array in ``volume``'s canonical (RAS) voxel order back to its stored order."""
    import nibabel.orientations as nio

    back = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.io_orientation(volume.affine))
    return c_order(nio.apply_orientation(canonical, back))


def encode_like(volume: Volume, raw: np.ndarray, target: str | PathLike[str], *, descrip: bytes) -> bytes | None:
    """The bytes :func:`save_like` writes to a ``.nii.gz`` ``target`` (None for ``.nii`` and NRRD targets,
    which it writes itself); raises as :func:`save_like` does. Writes nothing, so it can run before the
    caller decides to write (the deface pipeline encodes beside its QC)."""
    target = Path(target)
    if raw.shape != volume.raw.shape:
        raise ValueError(f"output shape {raw.shape} != input shape {volume.raw.shape}")
    if is_nrrd(target):
        if volume.nrrd_header is None:
            raise InputError(target, "NRRD output needs an NRRD input; write .nii.gz instead")
        return None
    if not is_nifti(target):
        raise InputError(target, "output must end in .nii.gz, .nii or (for NRRD inputs) .nrrd")
    if not str(target).lower().endswith(".gz"):
        return None
    return compress(_nifti_like(volume, raw.astype(volume.raw.dtype, copy=False), descrip).to_bytes())  # one-call gzip


def save_like(volume: Volume, raw: np.ndarray, target: str | PathLike[str], *, descrip: bytes,
              encoded: bytes | None = None) -> Path:
    """Atomically write ``raw`` (stored voxels) with ``volume``'s header, affine, dtype and scaling.

    ``encoded``: what :func:`encode_like` gave for these same arguments (written as it is).
    """
    target = Path(target)
    data = encoded if encoded is not None else encode_like(volume, raw, target, descrip=descrip)
    if volume.nifti is not None and len(getattr(volume.nifti.header, "extensions", ())) and is_nifti(target):
        log.info("%s: %d NIfTI header extension(s) (e.g. DICOM metadata) not copied to the output",
                 volume.path, len(volume.nifti.header.extensions))
    if data is not None:  # .nii.gz: one-call gzip (ISA-L when installed, :mod:`.gz`), written atomically
        write_bytes(target, data)
        return target
    raw = raw.astype(volume.raw.dtype, copy=False)
    if is_nrrd(target):
        _write_nrrd(volume, raw, target, descrip)
        return target
    import nibabel as nib

    with atomic_path(target) as tmp:
        nib.save(_nifti_like(volume, raw, descrip), str(tmp))
    return target


def _nifti_like(volume: Volume, raw: np.ndarray, descrip: bytes):
    """A NIfTI-1 image of ``raw`` (already in ``volume``'s dtype) with ``volume``'s header, affine and scaling."""
    import nibabel as nib

    if volume.nifti is not None and isinstance(volume.nifti, nib.Nifti1Image):
        src = volume.nifti
        hdr = src.header.copy()
        out = nib.Nifti1Image(raw, src.affine, header=hdr)
        out.header.extensions.clear()
        qcode, scode = int(src.header["qform_code"]), int(src.header["sform_code"])
        out.header.set_qform(src.header.get_qform(), code=qcode)
        out.header.set_sform(src.header.get_sform(), code=scode)
    else:
        out = nib.Nifti1Image(raw, volume.affine)
        out.header.set_qform(volume.affine, code=1)
        out.header.set_sform(volume.affine, code=1)
    out.header.set_data_dtype(raw.dtype)
    if volume.slope != 1.0 or volume.inter != 0.0:
        out.header.set_slope_inter(volume.slope, volume.inter)
    out.header["descrip"] = descrip[:79]
    return out


def _write_nrrd(volume: Volume, raw: np.ndarray, target: Path, descrip: bytes) -> None:
    lines = []
    for line in volume.nrrd_header.decode("latin-1").splitlines():  # type: ignore[union-attr]
        key = line.split(":", 1)[0].strip().lower()
        if key in ("encoding", "endian", "byte skip", "line skip"):
            continue
        lines.append(line)
    lines.insert(1, "# " + descrip.decode(errors="replace"))
    lines += ["encoding: gzip", "endian: little"]
    body = np.asarray(raw.T, dtype=raw.dtype.newbyteorder("<")).tobytes(order="C")
    data = ("\n".join(lines) + "\n\n").encode("latin-1") + gzip.compress(body, compresslevel=6)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
