"""Load and validate one case: four co-registered modalities and their label map.

Every check names the offending file and says what to do: unreadable, corrupt or
truncated NIfTI, images that are not 3-D (or, for MSD, not 4-D with 4 channels),
modalities or labels with different shapes or affines, NaN/Inf voxels, and label values
outside the layout's set. Files are only read, never written.

>>> arrays = load_case(discover("data/site-1")[0])          # doctest: +SKIP
>>> arrays.image.shape, arrays.image.dtype, arrays.regions.shape   # doctest: +SKIP
((4, 88, 128, 112), dtype('float32'), (3, 88, 128, 112))
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedimg.data.discover import MODALITIES, MSD_CHANNELS, Case
from fedimg.data.labels import LABEL_VALUES, labels_to_regions
from fedimg.errors import InputError

__all__ = ["CaseArrays", "load_case", "load_nifti_header", "MSD_TO_FEDIMG"]

log = logging.getLogger(__name__)

#: Index into the MSD channel axis for each of fedimg's t1, t1ce, t2, flair.
MSD_TO_FEDIMG: tuple[int, ...] = tuple(
    MSD_CHANNELS.index(m) for m in ("T1w", "t1gd", "T2w", "FLAIR")
)
assert len(MSD_TO_FEDIMG) == len(MODALITIES)

# Affines of co-registered modalities agree to rounding; BraTS headers differ by ~1e-6.
_AFFINE_ATOL = 1e-3


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


def load_nifti_header(path: str | Path):
    """``nibabel`` image proxy of ``path`` (header only), with a clear error if unreadable."""
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
    return img


def _why(exc: BaseException, path: Path | None = None) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if path is not None:
        text = text.replace(f'"{path}"', "it").replace(str(path), "it").replace("File it", "it")
    return text[:160]


def _read(img, path: Path, dtype) -> np.ndarray:
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


def _spatial_shape(img, path: Path, channels: int | None) -> tuple[int, int, int]:
    """Check dimensionality: 3-D (trailing size-1 axes allowed), or 4-D with ``channels``."""
    shape = tuple(int(s) for s in img.shape)
    core = list(shape)
    keep = 3 if channels is None else 4
    while len(core) > keep and core[-1] == 1:
        core.pop()
    if channels is None:
        ok = len(core) == 3
        want = "a 3-D volume"
    else:
        ok = len(core) == 4 and core[3] == channels
        want = f"a 4-D volume with {channels} channels (FLAIR, T1w, t1gd, T2w)"
    if ok and min(shape[:3]) < 2:
        raise InputError(path, f"has shape {shape}, a single slice (effectively 2-D); expected {want}")
    if not ok:
        raise InputError(path, f"is {len(shape)}-D with shape {shape}; expected {want}")
    return shape[0], shape[1], shape[2]


def _check_grid(ref_shape, ref_affine, ref_path: Path, img, path: Path, shape) -> None:
    if shape != ref_shape:
        raise InputError(
            path, f"has shape {shape} but {ref_path.name} has {ref_shape}; all files of a case must share one grid"
        )
    if not np.allclose(img.affine, ref_affine, atol=_AFFINE_ATOL, rtol=0):
        diff = float(np.abs(np.asarray(img.affine) - ref_affine).max())
        raise InputError(
            path,
            f"has a different affine from {ref_path.name} (max difference {diff:.3g}); "
            "co-register the modalities to one grid",
        )


def _finite(arr: np.ndarray, path: Path, what: str = "image") -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        n = int(bad.sum())
        raise InputError(path, f"has {n} NaN/Inf voxel(s) in the {what}; fix or replace the file")


def _load_label(case: Case, ref_shape, ref_affine, ref_path: Path) -> np.ndarray:
    assert case.label is not None
    path = case.label
    img = load_nifti_header(path)
    shape = _spatial_shape(img, path, None)
    _check_grid(ref_shape, ref_affine, ref_path, img, path, shape)
    raw = _read(img, path, None).reshape(shape)
    if raw.dtype.kind == "f":
        _finite(raw, path, "label map")
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
        path = case.images[0]
        img = load_nifti_header(path)
        shape = _spatial_shape(img, path, len(MSD_CHANNELS))
        affine = np.asarray(img.affine, dtype=np.float64)
        ref_path = path
        data = _read(img, path, np.float32).reshape(shape + (len(MSD_CHANNELS),))
        _finite(data, path)
        image = np.ascontiguousarray(np.moveaxis(data[..., list(MSD_TO_FEDIMG)], -1, 0), dtype=np.float32)
    else:
        headers = [load_nifti_header(p) for p in case.images]
        ref_path = case.images[0]
        shape = _spatial_shape(headers[0], ref_path, None)
        affine = np.asarray(headers[0].affine, dtype=np.float64)
        for img, path in zip(headers[1:], case.images[1:]):
            _check_grid(shape, affine, ref_path, img, path, _spatial_shape(img, path, None))
        if case.label is not None:  # check the label's grid before reading large arrays
            lab_hdr = load_nifti_header(case.label)
            _check_grid(shape, affine, ref_path, lab_hdr, case.label, _spatial_shape(lab_hdr, case.label, None))
        image = np.empty((len(MODALITIES), *shape), dtype=np.float32)
        for i, (img, path) in enumerate(zip(headers, case.images)):
            arr = _read(img, path, np.float32).reshape(shape)
            _finite(arr, path)
            image[i] = arr
    label = regions = None
    if case.label is not None:
        label = _load_label(case, shape, affine, ref_path)
        regions = labels_to_regions(label, case.layout)
    log.debug("loaded %s: image %s, label %s", case.case_id, image.shape, None if label is None else label.shape)
    return CaseArrays(image=image, regions=regions, label=label, affine=affine, reference=ref_path)
