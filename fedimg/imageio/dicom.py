"""Read DICOM image series (pydicom 3): discovery, grouping, slice order, geometry, rescale.

:func:`find_series` walks a folder and groups the image files by ``SeriesInstanceUID``
(files that are not DICOM, and DICOM files without pixels such as ``DICOMDIR``, are
skipped). :func:`read_series` turns one series into a :class:`DicomVolume`: voxels in NIfTI
order ``(columns, rows, slices)`` and the NIfTI (RAS) affine built from
``ImagePositionPatient`` / ``ImageOrientationPatient`` / ``PixelSpacing``. Single-frame
series and multi-frame (enhanced MR, per-frame functional groups) are both read. Slices are
ordered along the slice normal; ``RescaleSlope`` / ``RescaleIntercept`` are applied per
slice. :func:`check_series` runs the same checks from the headers alone (no pixels). Refused with one line naming the series folder: mixed series (orientations, sizes,
patients), missing slices (uneven spacing) and repeated positions (echoes, phases). Gantry
tilt (``GantryDetectorTilt``, or slice positions off the normal) is refused by default; with
``allow_tilt=True`` the volume keeps the true, sheared geometry of its slice positions
(``DicomVolume.tilt_deg`` says how far off the normal) and
:func:`fedimg.imageio.dicom_tilt.orthogonal_grid` resamples it onto an orthogonal grid.

>>> lps = dicom_affine([1, 0, 0, 0, 1, 0], [0.5, 0.8], [10.0, 20.0, 30.0], [0, 0, 2.0])
>>> lps.round(2).tolist()[0], lps.round(2).tolist()[1]
([-0.8, 0.0, 0.0, -10.0], [0.0, -0.5, 0.0, -20.0])
"""

from __future__ import annotations

import dataclasses
import logging
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import InputError

__all__ = ["DicomSeries", "DicomVolume", "find_series", "check_series", "header_grid", "read_series", "dicom_affine",
           "LPS_TO_RAS", "MAX_TILT_DEG"]

log = logging.getLogger(__name__)

#: NIfTI's world is RAS, DICOM's is LPS: flip x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Largest angle (degrees) between the slice step and the slice normal that still counts as untilted.
MAX_TILT_DEG = 0.5
_ORIENT_TOL = 1e-4


@dataclasses.dataclass(frozen=True, kw_only=True)
class DicomSeries:
    """The files of one series. ``uid``, ``patient_id``, ``study_uid``, ``study_date`` and ``description``
    can identify people: never write them out."""

    uid: str
    files: tuple[Path, ...]
    folder: Path
    description: str
    modality: str
    patient_id: str
    study_uid: str
    study_date: str
    number: int | None
    #: the headers (no pixels) :func:`find_series` already parsed, in ``files`` order; reused by :func:`check_series`
    headers: tuple[Any, ...] = dataclasses.field(default=(), repr=False, compare=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DicomVolume:
    """One series as a volume: stored voxels ``(columns, rows, slices)``, per-slice rescale, RAS affine.

    ``datasets`` are the headers with pixels, in file order; ``frames[k] = (dataset index, frame
    index)`` says where slice ``k`` came from (frame index -1 for a single-frame file).
    """

    series: DicomSeries
    stored: np.ndarray
    slope: np.ndarray
    inter: np.ndarray
    affine: np.ndarray
    datasets: tuple[Any, ...]
    frames: tuple[tuple[int, int], ...]
    #: angle (degrees) between the slice step and the slice normal: > ``MAX_TILT_DEG`` only with ``allow_tilt``
    tilt_deg: float = 0.0
    #: the largest ``GantryDetectorTilt`` in the headers (degrees; 0 when absent)
    gantry_tilt_deg: float = 0.0

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def scaled(self) -> np.ndarray:
        """Voxel values with the rescale applied: the stored integer type when the rescale is an integer identity shift, else float32."""
        if np.all(self.slope == 1.0) and np.all(self.inter == np.round(self.inter)):
            out = self.stored.astype(np.int32) + self.inter.astype(np.int32)[None, None, :]
            if out.min() >= np.iinfo(np.int16).min and out.max() <= np.iinfo(np.int16).max:
                return out.astype(np.int16)
            return out
        return (self.stored.astype(np.float32) * self.slope.astype(np.float32)[None, None, :]
                + self.inter.astype(np.float32)[None, None, :])


def find_series(root: str | PathLike[str]) -> list[DicomSeries]:
    """Every image series under ``root`` (a folder or one file), in a stable order."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(root)
    if not root.exists():
        raise InputError(root, "does not exist; pass a folder of DICOM files")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except InvalidDicomError:
            log.debug("%s: not a DICOM file, skipped", f)
            continue
        except Exception as exc:  # a DICOM preamble but a damaged header: not silently dropped
            if _has_preamble(f):
                raise InputError(f, f"is a damaged DICOM file ({type(exc).__name__}); re-export it or remove it") from None
            log.debug("%s: not a DICOM file, skipped", f)
            continue
        if "SeriesInstanceUID" not in ds or "Rows" not in ds:
            log.debug("%s: DICOM without an image series, skipped", f)
            continue
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((f, ds))
    if not groups:
        raise InputError(root, "holds no DICOM image series; pass the folder exported from the scanner or PACS")
    out = []
    for uid, members in groups.items():
        ds0 = members[0][1]
        paths = tuple(p for p, _ in members)
        headers = tuple(d for _, d in members)
        folder = Path(*_common_parts(paths)) if len(paths) > 1 else paths[0].parent
        number = ds0.get("SeriesNumber")
        out.append(DicomSeries(uid=uid, files=paths, folder=folder, description=str(ds0.get("SeriesDescription", "")),
                               modality=str(ds0.get("Modality", "")),
                               patient_id=str(ds0.get("PatientID", "") or ds0.get("PatientName", "") or ""),
                               study_uid=str(ds0.get("StudyInstanceUID", "")), study_date=str(ds0.get("StudyDate", "")),
                               number=None if number in (None, "") else int(number), headers=headers))
    return sorted(out, key=lambda s: (s.patient_id, s.number if s.number is not None else -1, str(s.folder), s.uid))


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _common_parts(paths: tuple[Path, ...]) -> list[str]:
    parts = [p.parent.parts for p in paths]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return common or ["."]


def dicom_affine(orientation, pixel_spacing, origin, step) -> np.ndarray:
    """NIfTI (RAS) affine of voxel ``(column, row, slice)`` from DICOM geometry (LPS).

    ``orientation``: ``ImageOrientationPatient`` (row direction, then column direction);
    ``pixel_spacing``: ``PixelSpacing`` (between rows, between columns); ``origin``: the first
    slice's ``ImagePositionPatient``; ``step``: LPS vector from one slice to the next.
    """
    iop = np.asarray(orientation, dtype=np.float64)
    ps = np.asarray(pixel_spacing, dtype=np.float64)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * ps[1]
    lps[:3, 1] = iop[3:] * ps[0]
    lps[:3, 2] = np.asarray(step, dtype=np.float64)
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ lps


def _first(ds, seq_name: str, attr: str, frame_item=None):
    """``attr`` from the per-frame group, then the shared group, then the top level (enhanced MR lookup order)."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    for item in (frame_item, shared[0] if shared else None):
        seq = None if item is None else item.get(seq_name)
        if seq and attr in seq[0]:
            return seq[0].get(attr)
    return ds.get(attr)


def _slices(series: DicomSeries, datasets: list) -> list[dict]:
    """One dict per 2-D slice: geometry, rescale and where its pixels are."""
    out = []
    for i, ds in enumerate(datasets):
        nframes = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
        if "Rows" in ds and "Columns" in ds:  # one file's declared pixels, before looping over its frames
            _declared(series.files[i], (int(ds.Columns), int(ds.Rows), nframes), bits)
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        for f in range(nframes):
            fg = per_frame[f] if per_frame is not None and len(per_frame) > f else None
            ipp = _first(ds, "PlanePositionSequence", "ImagePositionPatient", fg)
            iop = _first(ds, "PlaneOrientationSequence", "ImageOrientationPatient", fg)
            ps = _first(ds, "PixelMeasuresSequence", "PixelSpacing", fg)
            if ipp is None or iop is None or ps is None:
                raise InputError(series.files[i], "has no ImagePositionPatient / ImageOrientationPatient / PixelSpacing; "
                                 "only cross-sectional series with full geometry can be imported")
            slope = _first(ds, "PixelValueTransformationSequence", "RescaleSlope", fg)
            inter = _first(ds, "PixelValueTransformationSequence", "RescaleIntercept", fg)
            out.append({"file": series.files[i], "ds": i, "frame": f if nframes > 1 else -1,
                        "ipp": np.asarray(ipp, float), "iop": np.asarray(iop, float), "ps": np.asarray(ps, float),
                        "shape": (int(ds.Rows), int(ds.Columns)), "patient": str(ds.get("PatientID", "")),
                        "slope": 1.0 if slope in (None, "") else float(slope),
                        "inter": 0.0 if inter in (None, "") else float(inter),
                        "tilt": float(ds.get("GantryDetectorTilt", 0) or 0), "bits": bits})
    return out


_TILT_FIX = {False: "tilted series are not corrected here (DICOM output keeps the acquired geometry): "
                    "`fedimg import` resamples them, or reconstruct without tilt on the scanner",
             True: "it was refused by --refuse-tilt; leave the option out to resample it onto an orthogonal grid"}


def _check_one_series(series: DicomSeries, slices: list[dict], *, allow_tilt: bool, tilt_hint: bool) -> None:
    s0 = slices[0]
    for s in slices[1:]:
        what = None
        if s["shape"] != s0["shape"]:
            what = f"image sizes {s0['shape']} and {s['shape']}"
        elif not np.allclose(s["iop"], s0["iop"], atol=_ORIENT_TOL):
            what = "different slice orientations"
        elif not np.allclose(s["ps"], s0["ps"], atol=1e-4):
            what = f"pixel spacings {list(s0['ps'])} and {list(s['ps'])}"
        elif s["patient"] != s0["patient"]:
            what = "two patients"
        if what:
            raise InputError(series.folder, f"is a mixed series ({what}: {s0['file'].name} vs {s['file'].name}); "
                                            "export each acquisition as its own series (one SeriesInstanceUID each)")
    tilt = max(abs(s["tilt"]) for s in slices)
    if tilt > 1e-3 and not allow_tilt:
        raise InputError(series.folder, f"has gantry tilt {tilt:g} deg (GantryDetectorTilt); {_TILT_FIX[tilt_hint]}")


def _order(series: DicomSeries, slices: list[dict], *, allow_tilt: bool,
           tilt_hint: bool) -> tuple[list[dict], np.ndarray, float]:
    """Slices sorted along the normal; the mean slice step (LPS); its angle to the normal (degrees).

    Refuses gaps and repeats, and a step off the normal unless ``allow_tilt``.
    """
    iop = slices[0]["iop"]
    normal = np.cross(iop[:3], iop[3:])
    slices = sorted(slices, key=lambda s: float(s["ipp"] @ normal))
    if len(slices) < 2:
        raise InputError(series.folder, "has a single slice; import 3-D series only (at least 2 slices)")
    pos = np.array([s["ipp"] for s in slices])
    d = pos @ normal
    gaps = np.diff(d)
    if np.any(gaps < 1e-3):
        k = int(np.argmin(gaps))
        raise InputError(series.folder, f"has two slices at the same position ({slices[k]['file'].name}, "
                                        f"{slices[k + 1]['file'].name}): it mixes echoes, phases or repeats; split it")
    med = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - med) > max(0.05 * med, 1e-3))
    if bad.size:
        k = int(bad[0])
        missing = max(int(round(gaps[k] / med)) - 1, 0)
        raise InputError(series.folder, f"slice spacing is uneven ({gaps[k]:.3g} mm instead of {med:.3g} mm between "
                                        f"{slices[k]['file'].name} and {slices[k + 1]['file'].name}; "
                                        f"{missing or 'a'} slice(s) missing?); re-export the complete series")
    step = (pos[-1] - pos[0]) / (len(slices) - 1)
    cosang = abs(float(step @ normal)) / float(np.linalg.norm(step))
    angle = float(np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0))))
    if angle > MAX_TILT_DEG and not allow_tilt:
        raise InputError(series.folder, f"has slices {angle:.1f} deg off the slice normal (gantry tilt or sheared "
                                        f"stack); {_TILT_FIX[tilt_hint]}")
    return slices, step, angle


def _read_all(series: DicomSeries, *, pixels: bool) -> list:
    import pydicom

    datasets = []
    for f in series.files:
        try:
            # with pixels: PixelData is deferred (read from the file on first use), so every header
            # check and the size limit run before any pixel is loaded
            datasets.append(pydicom.dcmread(f, stop_before_pixels=True) if not pixels
                            else pydicom.dcmread(f, defer_size="64 KB"))
        except Exception as exc:  # pydicom raises assorted errors for damaged files
            raise InputError(f, f"cannot be read as DICOM ({type(exc).__name__}: {exc}); re-export it") from None
    return datasets


def check_series(series: DicomSeries, *, allow_tilt: bool = False, tilt_hint: bool = False) -> tuple[int, int, int]:
    """Every check of :func:`read_series` from the headers alone; returns the volume shape (as acquired)."""
    return header_grid(series, allow_tilt=allow_tilt, tilt_hint=tilt_hint)[0]


def header_grid(series: DicomSeries, *, allow_tilt: bool = False,
                tilt_hint: bool = False) -> tuple[tuple[int, int, int], np.ndarray]:
    """:func:`check_series`, and the RAS affine :func:`read_series` will give, from the headers alone."""
    slices = _slices(series, list(series.headers) or _read_all(series, pixels=False))
    _check_one_series(series, slices, allow_tilt=allow_tilt, tilt_hint=tilt_hint)
    slices, step, _ = _order(series, slices, allow_tilt=allow_tilt, tilt_hint=tilt_hint)
    shape = _check_size(series, slices)
    return shape, dicom_affine(slices[0]["iop"], slices[0]["ps"], slices[0]["ipp"], step)


def _check_size(series: DicomSeries, slices: list[dict]) -> tuple[int, int, int]:
    """Header-first refusal (``imageio.limits``): the declared volume against the size limit, before any pixel."""
    rows, cols = slices[0]["shape"]
    shape = (cols, rows, len(slices))
    _declared(series.folder, shape, max(s["bits"] for s in slices))
    return shape


def _declared(where: Path, shape: tuple[int, ...], bits: int) -> None:
    from fedimg.imageio.limits import check_declared

    check_declared(where, shape, np.uint8 if bits <= 8 else (np.uint16 if bits <= 16 else np.uint32))


def read_series(series: DicomSeries, *, allow_tilt: bool = False, tilt_hint: bool = False) -> DicomVolume:
    """Read one series with its pixels; any problem is an :class:`InputError` naming its folder.

    Every header check (and the size limit) runs on the headers alone before any pixel is read.
    ``allow_tilt``: a tilted stack is read with its sheared affine instead of refused;
    ``tilt_hint``: the refusal names ``--refuse-tilt`` (``fedimg import``) as its cause.
    """
    datasets = _read_all(series, pixels=True)
    slices = _slices(series, datasets)
    _check_one_series(series, slices, allow_tilt=allow_tilt, tilt_hint=tilt_hint)
    slices, step, angle = _order(series, slices, allow_tilt=allow_tilt, tilt_hint=tilt_hint)
    cols, rows, _ = _check_size(series, slices)
    arrays = {}
    for i, ds in enumerate(datasets):
        try:
            arr = ds.pixel_array
        except Exception as exc:
            raise InputError(series.files[i], f"pixel data cannot be decoded ({type(exc).__name__}: {exc}); "
                                              "export uncompressed or install the pydicom pixel handler") from None
        if arr.ndim not in (2, 3) or int(ds.get("SamplesPerPixel", 1)) != 1:
            raise InputError(series.files[i], "is not a grey-scale image; only MR/CT grey-scale series are supported")
        arrays[i] = arr
    dtype = np.result_type(*[a.dtype for a in arrays.values()])
    stored = np.empty((cols, rows, len(slices)), dtype=dtype)
    for k, s in enumerate(slices):
        a = arrays[s["ds"]]
        stored[:, :, k] = (a if s["frame"] < 0 else a[s["frame"]]).T
    affine = dicom_affine(slices[0]["iop"], slices[0]["ps"], slices[0]["ipp"], step)
    return DicomVolume(series=series, stored=stored, affine=affine, datasets=tuple(datasets),
                       slope=np.array([s["slope"] for s in slices]), inter=np.array([s["inter"] for s in slices]),
                       frames=tuple((s["ds"], s["frame"]) for s in slices), tilt_deg=angle,
                       gantry_tilt_deg=max(abs(s["tilt"]) for s in slices))
