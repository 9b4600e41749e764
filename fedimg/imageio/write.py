"""NIfTI writers besides :func:`fedimg.imageio.volume.save_like`: label maps on a reference
grid (``fedimg predict``) and reproducible ``.nii.gz`` bytes (``fedimg synth``).

Files are written atomically (:func:`fedimg.io.atomic_path`): a crash never leaves a
half-written output.

>>> import numpy as np, gzip
>>> data = nifti_gz_bytes(np.zeros((2, 3, 4), np.int16), np.eye(4), descrip=b"x")
>>> data[:2] == b"\\x1f\\x8b", data == nifti_gz_bytes(np.zeros((2, 3, 4), np.int16), np.eye(4), descrip=b"x")
(True, True)
"""

from __future__ import annotations

import zlib
from os import PathLike
from pathlib import Path

import numpy as np

from fedimg.io import atomic_path, write_bytes

from .nifti import open_nifti

__all__ = ["save_labels_like", "nifti_gz_bytes", "write_nifti_gz"]


def save_labels_like(target: str | PathLike[str], labels: np.ndarray, reference: str | PathLike[str], *,
                     descrip: bytes) -> Path:
    """Write ``labels`` (uint8) with the reference image's affine, qform, sform and units, atomically."""
    import nibabel as nib

    ref = open_nifti(reference)
    if tuple(ref.shape[:3]) != tuple(labels.shape):
        raise ValueError(f"label shape {labels.shape} differs from reference {ref.shape}")
    img = nib.Nifti1Image(np.asarray(labels, np.uint8), ref.affine)
    qform, qcode = ref.header.get_qform(coded=True)
    sform, scode = ref.header.get_sform(coded=True)
    img.header.set_qform(qform if qform is not None else ref.affine, code=int(qcode) if qform is not None else 0)
    img.header.set_sform(sform if sform is not None else ref.affine, code=int(scode) if sform is not None else 2)
    img.header.set_xyzt_units(*ref.header.get_xyzt_units())
    img.header.set_data_dtype(np.uint8)
    img.header["descrip"] = descrip
    target = Path(target)
    with atomic_path(target) as tmp:
        nib.save(img, str(tmp))
    return target


def nifti_gz_bytes(array: np.ndarray, affine: np.ndarray, *, descrip: bytes) -> bytes:
    """Reproducible .nii.gz bytes (gzip header without file name or time stamp), units mm, q/sform code 1."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.header["descrip"] = descrip
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    # gzip container (wbits=31) written by zlib: time stamp 0, no file name. Z_RLE is twice
    # as fast as the default strategy on noisy images for ~2 % more bytes.
    packer = zlib.compressobj(1, zlib.DEFLATED, 31, 9, zlib.Z_RLE)
    return packer.compress(img.to_bytes()) + packer.flush()


def write_nifti_gz(target: str | PathLike[str], array: np.ndarray, affine: np.ndarray, *, descrip: bytes) -> Path:
    """Atomically write :func:`nifti_gz_bytes` to ``target``; same arguments, same bytes."""
    target = Path(target)
    write_bytes(target, nifti_gz_bytes(array, affine, descrip=descrip))
    return target
