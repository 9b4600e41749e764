"""DICOM in, DICOM out: headers de-identified (Annex E), pixels defaced (``fedimg deidentify``).

Each series is read (:func:`fedimg.imageio.dicom.read_series`), its voxels defaced through
the public pipeline (:func:`fedimg.deface.pipeline.deface_job` on a temporary NIfTI with the
series' own geometry), and written back file by file (:func:`fedimg.imageio.dicom_write.write_like`):
same geometry, each file's de-identified header (:func:`fedimg.imageio.deid.deidentify`,
with the 113102 code for the defaced pixels), the UIDs the profile replaced. Only voxels the
defacer removed change; they get the stored value that reads as the defaced value under each
slice's rescale. Output: ``OUT/<patient pseudonym>/series-<NNN>/IM00001.dcm ...`` and
``OUT/deid_report.json`` (tag names, counts, QC numbers; never a header value). Every series
is checked before anything is written; a series whose defacing fails QC is not written, nor
is one too thin to deface (a localiser; listed under ``skipped``).

>>> stored_for(np.array([10.0, 0.0]), np.array([1, 1], np.int16), slope=2.0, inter=-4.0).tolist()
[7, 2]
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from fedimg import __version__
from fedimg.errors import InputError, QCError
from fedimg.imageio.deid import PROFILE_TABLE, DeidConfig, deidentify, pseudonym
from fedimg.imageio.dicom import DicomVolume, check_series, find_series, read_series
from fedimg.imageio.dicom_write import write_like
from fedimg.imageio.volume import MIN_VOXELS_PER_AXIS
from fedimg.imageio.write import write_nifti_gz
from fedimg.io import write_json

from .core import DefaceConfig
from .dicom_import import match_series
from .pipeline import DefaceJob, deface_job

__all__ = ["deidentify_tree", "deface_volume", "stored_for"]

log = logging.getLogger(__name__)


def stored_for(values: np.ndarray, like: np.ndarray, *, slope: float, inter: float) -> np.ndarray:
    """Stored integers (``like``'s dtype, clipped) that read as ``values`` under ``slope``/``inter``."""
    info = np.iinfo(like.dtype)
    return np.clip(np.rint((values - inter) / slope), info.min, info.max).astype(like.dtype)


def deface_volume(volume: DicomVolume, work: Path, *, config: DefaceConfig, device=None) -> tuple[np.ndarray, dict]:
    """Deface a series' voxels; returns (new stored voxels, QC record). Raises QCError when QC fails."""
    import nibabel as nib

    scaled = volume.scaled()
    src = write_nifti_gz(work / "series.nii.gz", scaled, volume.affine, descrip=b"fedimg deidentify: temporary")
    dst = work / "series_defaced.nii.gz"
    record = deface_job(DefaceJob(reference=src, output=dst, png=False), config=config, device=device)
    defaced = np.asarray(nib.load(str(dst)).dataobj)
    changed = defaced != scaled
    stored = volume.stored.copy()
    for k in np.flatnonzero(changed.any(axis=(0, 1))):
        m = changed[:, :, k]
        stored[:, :, k][m] = stored_for(defaced[:, :, k][m].astype(np.float64), stored,
                                        slope=float(volume.slope[k]), inter=float(volume.inter[k]))
    for p in (src, dst, *work.glob("series_defaced*")):
        p.unlink(missing_ok=True)
    return stored, record


def _series_report(reports: list, name: str, files: int) -> dict[str, Any]:
    union = {key: sorted({t for r in reports for t in getattr(r, key)}) for key in ("removed", "emptied", "replaced")}
    return {"series": name, "files": files, "tags_removed": union["removed"], "tags_emptied": union["emptied"],
            "tags_replaced": union["replaced"], "private_tags_removed": sum(r.private_removed for r in reports),
            "burned_in_annotation": any(r.burned_in_annotation for r in reports),
            "date_shifted": any(r.date_shift_days is not None for r in reports), "codes": reports[0].codes}


def deidentify_tree(root: str | PathLike[str], out: str | PathLike[str], *, deid: DeidConfig | None = None,
                    deface: DefaceConfig | None = None, device=None,
                    series_map: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """De-identify (and, unless ``deface`` is None, deface) every series under ``root`` into ``out``.

    Returns the report (also ``OUT/deid_report.json``). ``deface=None`` de-identifies headers
    only and keeps the pixels (then 113102 is not claimed). ``series_map``: only the series it
    names are processed (the others are listed as skipped, not written).
    """
    import dataclasses

    root, out = Path(root), Path(out)
    deid = deid or DeidConfig()
    deid = dataclasses.replace(deid, pixels_defaced=deface is not None)
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise InputError(out, "is inside the DICOM input folder; choose an output folder outside it")
    series = find_series(root)
    skipped = []
    if series_map is not None:
        for s in series:
            if match_series(s, series_map) is None:
                skipped.append({"patient": pseudonym(deid.pseudonym_key, s.patient_id), "series_number": s.number,
                                "reason": "not in the series map; not written"})
        series = [s for s in series if match_series(s, series_map) is not None]
        if not series:
            raise InputError(root, "no series matches the series map; check the globs against the SeriesDescription values")
    if deface is not None:
        keep = []
        for s in series:  # every series is checked before anything is written
            shape = check_series(s)
            if min(shape) < MIN_VOXELS_PER_AXIS:
                skipped.append({"patient": pseudonym(deid.pseudonym_key, s.patient_id), "series_number": s.number,
                                "reason": f"fewer than {MIN_VOXELS_PER_AXIS} voxels along an axis (shape "
                                          f"{list(shape)}): cannot be defaced; not written (--no-deface "
                                          "de-identifies headers only)"})
                log.warning("series %s: too small to deface (shape %s); not written", s.number, shape)
            else:
                keep.append(s)
        series = keep
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".deid-", dir=out))
    entries, failed, used = [], [], set()
    try:
        for i, s in enumerate(series):
            who = pseudonym(deid.pseudonym_key, s.patient_id)
            name = f"series-{s.number:03d}" if s.number is not None else f"series-x{i + 1:03d}"
            while (who, name) in used:
                name += "b"
            used.add((who, name))
            entry = _one_series(s, read_series(s) if deface is not None else None, out / who / name, work, deid=deid,
                                deface=deface, device=device)
            entry["patient"] = who
            (failed if "error" in entry else entries).append(entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"tool": "fedimg", "version": __version__,
              "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
              "profile_table": f"dicom-anonymizer {PROFILE_TABLE}", "private_tags_removed": deid.remove_private,
              "pixels_defaced": deface is not None, "series": entries, "failed": failed, "skipped": skipped,
              "files": sum(e["files"] for e in entries)}
    write_json(out / "deid_report.json", report)
    return report


def _one_series(s, volume: DicomVolume | None, target: Path, work: Path, *, deid: DeidConfig,
                deface: DefaceConfig | None, device) -> dict[str, Any]:
    import pydicom

    if volume is None:  # headers only: every file as it is
        headers = [pydicom.dcmread(f) for f in s.files]
    else:
        headers = [copy.deepcopy(d) for d in volume.datasets]
    reports = [deidentify(h, deid) for h in headers]
    entry = _series_report(reports, target.name, len(headers))
    if volume is None:
        target.mkdir(parents=True, exist_ok=True)
        for n, h in enumerate(headers):
            from fedimg.io import atomic_path

            with atomic_path(target / f"IM{n + 1:05d}.dcm") as tmp:
                h.save_as(tmp, enforce_file_format=True)
        return entry
    try:
        stored, qc = deface_volume(volume, work, config=deface, device=device)
    except QCError as exc:
        log.error("%s: defacing QC failed; series not written", target.name)
        return dict(entry, error=str(exc).replace(str(work), "<work>"))
    entry["deface_qc"] = {k: qc[k] for k in ("passed", "removed_ml", "mutual_information", "agreement_mm")}
    write_like(volume, stored, target, datasets=tuple(headers), new_uids=False)
    log.info("%s/%s: %d files de-identified, %.0f mL defaced", target.parent.name, target.name, len(headers),
             qc["removed_ml"])
    return entry
