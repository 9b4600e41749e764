"""Load and validate one case: four co-registered modalities and their label map.

Every check names the offending file and says what to do: unreadable, corrupt or
truncated NIfTI, images that are not 3-D (or, for MSD, not 4-D with 4 channels),
modalities or labels with different shapes or affines, NaN/Inf voxels (those file checks
are :mod:`fedimg.imageio.nifti`), label values outside the layout's set, and images without
content (:func:`check_content`: all zero or constant, or fewer than
:data:`MIN_NONZERO_FRACTION` non-zero voxels, too few for a head). Files are only read,
never written.

>>> import pathlib, tempfile, numpy as np, nibabel as nib
>>> from fedimg.data import discover
>>> case = pathlib.Path(tempfile.mkdtemp()) / "c"; case.mkdir()
>>> for m in ("t1", "t1ce", "t2", "flair"):
...     nib.save(nib.Nifti1Image(np.arange(720.0).reshape(8, 9, 10), np.eye(4)), str(case / f"c_{m}.nii.gz"))
>>> nib.save(nib.Nifti1Image(np.zeros((8, 9, 10), np.uint8), np.eye(4)), str(case / "c_seg.nii.gz"))
>>> arrays = load_case(discover(case)[0])
>>> arrays.image.shape, arrays.image.dtype, arrays.regions.shape
((4, 8, 9, 10), dtype('float32'), (3, 8, 9, 10))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedimg.data.discover import MODALITIES, MSD_CHANNELS, Case
from fedimg.data.labels import LABEL_VALUES, labels_to_regions
from fedimg.errors import InputError
from fedimg.imageio.nifti import check_finite, check_same_grid, open_nifti, read_volume, read_voxels, spatial_shape

__all__ = ["CaseArrays", "load_case", "load_nifti_header", "check_content", "MSD_TO_FEDIMG", "MIN_NONZERO_FRACTION"]

log = logging.getLogger(__name__)

#: Index into the MSD channel axis for each of fedimg's t1, t1ce, t2, flair.
MSD_TO_FEDIMG: tuple[int, ...] = tuple(
    MSD_CHANNELS.index(m) for m in ("T1w", "t1gd", "T2w", "FLAIR")
)
assert len(MSD_TO_FEDIMG) == len(MODALITIES)

#: Fewest non-zero voxels (fraction of the volume) an image of a head has; a skull-stripped
#: BraTS brain fills about 10 % of its 240 x 240 x 155 grid.
MIN_NONZERO_FRACTION = 0.01

#: Kept for callers of the old name: the checked NIfTI header reader is
#: :func:`fedimg.imageio.nifti.open_nifti`.
load_nifti_header = open_nifti


@dataclass(frozen=True)
class CaseArrays:
    """Arrays of one case, in the voxel grid of its files (no reorientation).

    image: float32 ``(4, X, Y, Z)`` in t1, t1ce, t2, flair order; regions: uint8
    ``(3, X, Y, Z)`` TC/WT/ET or None; label: raw label values ``(X, Y, Z)`` (uint8) or
    None; affine: ``(4, 4)`` float64 of the first modality; reference: its path.
    """

    image: np.ndarray
    regions: np.ndarray | None
    label: np.ndarray | None
    affine: np.ndarray
    reference: Path


def check_content(arr: np.ndarray, path: str | Path, what: str = "image") -> None:
    """Refuse an image without content: constant (all zero included) or almost all zero.

    >>> check_content(np.zeros((4, 4, 4), np.float32), "t1.nii.gz")
    Traceback (most recent call last):
    fedimg.errors.InputError: t1.nii.gz: image is constant (every voxel is 0): an empty or blank scan; replace it or remove the case
    """
    path = Path(path)
    if arr.size == 0:
        raise InputError(path, f"{what} holds no voxels; replace it or remove the case")
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        raise InputError(path, f"{what} is constant (every voxel is {lo:g}): an empty or blank scan; "
                               "replace it or remove the case")
    nonzero = int(np.count_nonzero(arr))
    if nonzero < MIN_NONZERO_FRACTION * arr.size:
        raise InputError(path, f"{what} has only {nonzero} non-zero voxels ({100 * nonzero / arr.size:.2g} % of "
                               f"{arr.size}), too few for a head; check the file or remove the case")


def _load_label(case: Case, ref_shape, ref_affine, ref_path: Path) -> np.ndarray:
    assert case.label is not None
    path = case.label
    img = open_nifti(path)
    shape = spatial_shape(img, path)
    check_same_grid(ref_shape, ref_affine, ref_path, img, path, shape)
    raw = read_voxels(img, path).reshape(shape)
    if raw.dtype.kind == "f":
        check_finite(raw, path, "label map")
        rounded = np.rint(raw)
        if not np.array_equal(rounded, raw):
            raise InputError(path, "has non-integer label values; a label map holds whole numbers only")
        raw = rounded
    allowed = LABEL_VALUES[case.layout]
    values = np.unique(raw)
    unknown = [v for v in values.tolist() if int(v) != v or int(v) not in allowed]
    if unknown:
        shown = ", ".join(str(int(v)) if float(v).is_integer() else str(v) for v in unknown[:6])
        raise InputError(
            path,
            f"has label value(s) {shown} outside the {case.layout} set {sorted(allowed)}; "
            "check the layout (BraTS 2021 uses 0/1/2/4, BraTS 2023 and MSD 0/1/2/3)",
        )
    return raw.astype(np.uint8)


def load_case(case: Case) -> CaseArrays:
    """Read and validate ``case``; returns :class:`CaseArrays`.

    Headers are checked first (dimensions, shapes, affines) so a mismatch is reported
    before any large read. Raises :class:`InputError` naming the file on any problem.
    """
    if case.layout == "msd":
        ref_path = case.images[0]
        data, affine = read_volume(ref_path, dtype=np.float32, channels=MSD_CHANNELS)
        shape = data.shape[:3]
        image = np.ascontiguousarray(np.moveaxis(data[..., list(MSD_TO_FEDIMG)], -1, 0), dtype=np.float32)
        for i, name in enumerate(MODALITIES):
            check_content(image[i], ref_path, f"channel {MSD_CHANNELS[MSD_TO_FEDIMG[i]]} ({name})")
    else:
        headers = [open_nifti(p) for p in case.images]
        ref_path = case.images[0]
        shape = spatial_shape(headers[0], ref_path)
        affine = np.asarray(headers[0].affine, dtype=np.float64)
        for img, path in zip(headers[1:], case.images[1:]):
            check_same_grid(shape, affine, ref_path, img, path, spatial_shape(img, path))
        if case.label is not None:  # check the label's grid before reading large arrays
            lab_hdr = open_nifti(case.label)
            check_same_grid(shape, affine, ref_path, lab_hdr, case.label, spatial_shape(lab_hdr, case.label))
        image = np.empty((len(MODALITIES), *shape), dtype=np.float32)
        for i, (img, path) in enumerate(zip(headers, case.images)):
            arr = read_voxels(img, path, np.float32).reshape(shape)
            check_finite(arr, path)
            check_content(arr, path)
            image[i] = arr
    label = regions = None
    if case.label is not None:
        label = _load_label(case, shape, affine, ref_path)
        regions = labels_to_regions(label, case.layout)
    log.debug("loaded %s: image %s, label %s", case.case_id, image.shape, None if label is None else label.shape)
    return CaseArrays(image=image, regions=regions, label=label, affine=affine, reference=ref_path)
