"""Write volumes as DICOM series: a new MR series from an array + affine, or a read series with new pixels.

:func:`write_series` writes ``data`` (``(columns, rows, slices)``, NIfTI order) with the
geometry of its RAS ``affine`` as single-frame MR Image Storage files (Explicit VR Little
Endian, int16 with a rescale when the data are not int16 integers), one new
``SeriesInstanceUID`` and one ``SOPInstanceUID`` per slice; header attributes (patient,
study) come from ``header``. :func:`write_like` writes a :class:`~fedimg.imageio.dicom.DicomVolume`
back with replaced stored voxels: every file's own header (single- or multi-frame), the same
geometry, a new series UID and new instance UIDs. Writes are atomic; files are named
``IM00001.dcm`` ... in slice order.

>>> import numpy as np
>>> row_dir, col_dir, _ = affine_to_dicom(np.diag([-2.0, -2.0, 3.0, 1.0]))[:3]
>>> row_dir.tolist(), col_dir.tolist()
([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
"""

from __future__ import annotations

import copy
import logging
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import InputError
from fedimg.io import atomic_path

from .dicom import LPS_TO_RAS, DicomVolume

__all__ = ["write_series", "write_like", "affine_to_dicom", "MR_IMAGE_STORAGE"]

log = logging.getLogger(__name__)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def affine_to_dicom(affine: np.ndarray):
    """``(row direction, column direction, pixel spacing [between rows, between columns], origin, step)`` in LPS."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    c0, c1 = lps[:3, 0], lps[:3, 1]
    n0, n1 = float(np.linalg.norm(c0)), float(np.linalg.norm(c1))
    row_dir, col_dir = c0 / n0, c1 / n1
    if abs(float(row_dir @ col_dir)) > 1e-4:
        raise ValueError("the affine's first two axes are not perpendicular; DICOM cannot store a skewed image plane")
    return row_dir, col_dir, [n1, n0], lps[:3, 3], lps[:3, 2]


def _ds_number(x: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    text = f"{x:.10g}"
    return text if len(text) <= 16 else f"{x:.6e}"


def _to_int16(data: np.ndarray) -> tuple[np.ndarray, float, float]:
    if data.dtype.kind in "iub":
        lo, hi = int(data.min()), int(data.max())
        if lo >= -32768 and hi <= 32767:
            return data.astype(np.int16), 1.0, 0.0
    lo, hi = float(data.min()), float(data.max())
    slope = (hi - lo) / 65000.0 if hi > lo else 1.0
    inter = lo + 32500.0 * slope if hi > lo else lo
    stored = np.clip(np.rint((data.astype(np.float64) - inter) / slope), -32768, 32767).astype(np.int16)
    return stored, slope, inter


def write_series(data: np.ndarray, affine: np.ndarray, out_dir: str | PathLike[str], *, header: Any = None,
                 series_description: str = "", series_number: int = 1, modality: str = "MR") -> list[Path]:
    """Write a 3-D array (``(columns, rows, slices)``) as a new single-frame DICOM series; returns the files.

    Long because every slice needs the full set of image, plane and pixel attributes.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"write_series needs a 3-D array, got shape {data.shape}")
    row_dir, col_dir, spacing, origin, step = affine_to_dicom(affine)
    stored, slope, inter = _to_int16(data)
    out_dir = Path(out_dir)
    series_uid = generate_uid()
    base = pydicom.Dataset() if header is None else header
    study_uid = str(base.get("StudyInstanceUID") or generate_uid())
    frame_uid = str(base.get("FrameOfReferenceUID") or generate_uid())
    thickness = float(np.linalg.norm(step))
    paths = []
    for k in range(data.shape[2]):
        ds = pydicom.Dataset()
        ds.update(base)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality = modality
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.InstanceNumber = k + 1
        ds.ImageType = ["DERIVED", "PRIMARY"]
        ds.ImagePositionPatient = [_ds_number(v) for v in origin + k * step]
        ds.ImageOrientationPatient = [_ds_number(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [_ds_number(v) for v in spacing]
        ds.SliceThickness = _ds_number(thickness)
        ds.SpacingBetweenSlices = _ds_number(thickness)
        ds.RescaleSlope, ds.RescaleIntercept = _ds_number(slope), _ds_number(inter)
        ds.RescaleType = "US"
        ds.set_pixel_data(np.ascontiguousarray(stored[:, :, k].T), photometric_interpretation="MONOCHROME2",
                          bits_stored=16, generate_instance_uid=False)
        target = out_dir / f"IM{k + 1:05d}.dcm"
        with atomic_path(target) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(target)
    return paths


def write_like(volume: DicomVolume, stored: np.ndarray, out_dir: str | PathLike[str], *,
               datasets: tuple[Any, ...] | None = None, new_uids: bool = True) -> list[Path]:
    """Write ``volume``'s files with ``stored`` voxels (``(columns, rows, slices)``), a new series UID and new instance UIDs.

    ``datasets``: headers to write instead of ``volume.datasets`` (e.g. their de-identified
    copies), one per file, in the same order. ``new_uids=False`` keeps the headers' series and
    instance UIDs (when a de-identification already replaced them consistently). Inputs are never modified.
    """
    from pydicom.uid import generate_uid

    if stored.shape != volume.stored.shape:
        raise ValueError(f"voxels {stored.shape} do not match the series {volume.stored.shape}")
    headers = volume.datasets if datasets is None else datasets
    if len(headers) != len(volume.datasets):
        raise ValueError("one header per file of the series is needed")
    series_uid = generate_uid() if new_uids else None
    frames_of: dict[int, dict[int, int]] = {}
    for k, (i, f) in enumerate(volume.frames):
        frames_of.setdefault(i, {})[f] = k
    out_dir = Path(out_dir)
    paths = []
    for n, (i, mapping) in enumerate(sorted(frames_of.items(), key=lambda kv: min(kv[1].values()))):
        ds = copy.deepcopy(headers[i]) if datasets is None else headers[i]
        src = volume.datasets[i].pixel_array
        if -1 in mapping:
            arr = stored[:, :, mapping[-1]].T
        else:
            arr = np.stack([stored[:, :, mapping[f]].T for f in range(len(mapping))])
        arr = np.ascontiguousarray(arr).astype(src.dtype)
        if arr.dtype not in (np.uint8, np.uint16, np.int8, np.int16):
            raise InputError(volume.series.files[i], f"pixel type {arr.dtype} cannot be written back; export 8/16-bit")
        ds.set_pixel_data(arr, photometric_interpretation=str(ds.PhotometricInterpretation),
                          bits_stored=int(ds.get("BitsStored", arr.dtype.itemsize * 8)), generate_instance_uid=new_uids)
        if series_uid is not None:
            ds.SeriesInstanceUID = series_uid
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        target = out_dir / f"IM{n + 1:05d}.dcm"
        with atomic_path(target) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(target)
    return paths
