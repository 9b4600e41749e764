"""The one list of volume file suffixes, and file names without them.

fedimg reads NIfTI (``.nii.gz``, ``.nii``) and NRRD (``.nrrd``) volumes and writes
``.nii.gz`` unless told otherwise. Suffixes are matched without regard to case unless a
caller asks for an exact match. ``.nii.gz`` comes first in :data:`NIFTI_SUFFIXES`: where
both ``x.nii.gz`` and ``x.nii`` exist, the compressed one is found first.

>>> is_nifti("sub-01_T1w.NII.GZ"), is_nrrd("brain.nrrd"), is_volume("notes.txt")
(True, True, False)
>>> split_suffix("case-000_t1.nii.gz")
('case-000_t1', '.nii.gz')
>>> stem("data/sub-01_T1w.mha"), stem("report.pdf")
('sub-01_T1w', 'report')
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

__all__ = [
    "NIFTI_SUFFIXES",
    "NRRD_SUFFIXES",
    "VOLUME_SUFFIXES",
    "IMAGE_SUFFIXES",
    "DEFAULT_SUFFIX",
    "has_suffix",
    "is_nifti",
    "is_nrrd",
    "is_volume",
    "split_suffix",
    "stem",
]

#: NIfTI-1/2 file suffixes read by nibabel (compressed first).
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
#: NRRD with an attached header (read by :mod:`fedimg.imageio.nrrd`).
NRRD_SUFFIXES: tuple[str, ...] = (".nrrd",)
#: Every suffix fedimg reads a volume from.
VOLUME_SUFFIXES: tuple[str, ...] = NIFTI_SUFFIXES + NRRD_SUFFIXES
#: Suffixes of medical images that fedimg recognises in file names (to derive sidecar and
#: QC names); only :data:`VOLUME_SUFFIXES` can be read.
IMAGE_SUFFIXES: tuple[str, ...] = VOLUME_SUFFIXES + (".nhdr", ".mha", ".mhd", ".mgz")
#: Suffix of the volumes fedimg writes when it chooses the name.
DEFAULT_SUFFIX = ".nii.gz"


def _name(path: str | PathLike[str]) -> str:
    return Path(path).name


def has_suffix(path: str | PathLike[str], suffixes: tuple[str, ...], *, ignore_case: bool = True) -> bool:
    """Whether the file name of ``path`` ends in one of ``suffixes``."""
    name = _name(path)
    return (name.lower() if ignore_case else name).endswith(suffixes)


def is_nifti(path: str | PathLike[str]) -> bool:
    """Whether ``path`` is named like a NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
    return has_suffix(path, NIFTI_SUFFIXES)


def is_nrrd(path: str | PathLike[str]) -> bool:
    """Whether ``path`` is named like an NRRD file (``.nrrd``, any case)."""
    return has_suffix(path, NRRD_SUFFIXES)


def is_volume(path: str | PathLike[str]) -> bool:
    """Whether fedimg can read ``path`` as a volume (NIfTI or NRRD), judged by its name."""
    return has_suffix(path, VOLUME_SUFFIXES)


def split_suffix(name: str, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> tuple[str, str]:
    """``(name without the suffix, the suffix as listed)``; ``(name, "")`` when none matches."""
    low = name.lower()
    for ext in suffixes:
        if low.endswith(ext):
            return name[: -len(ext)], ext
    return name, ""


def stem(path: str | PathLike[str]) -> str:
    """File name without ``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.mha`` etc. (else without its last suffix)."""
    name = _name(path)
    base, ext = split_suffix(name, IMAGE_SUFFIXES)
    return base if ext else Path(name).stem
