"""DICOM folder → training-ready site: series → NIfTI → deface → provenance (``fedimg import``).

Every image series under the input is found (:func:`fedimg.imageio.dicom.find_series`) and
named by a series map (YAML: name → glob(s) on ``SeriesDescription``, case-insensitive;
unmatched series, e.g. localisers, are skipped). Each (patient, study) becomes a case named
by a keyed pseudonym (:func:`fedimg.imageio.deid.pseudonym`), never by a header value.
Every mapped series is read and checked before anything is written, so a bad series stops
the import with one line naming its folder. Each case is then converted (NIfTI, RAS affine
from the DICOM geometry), defaced with :func:`fedimg.deface.pipeline.deface_job` (series on
the reference's grid share its registration), and gets ``<case>.dicom.json``: which series
made which file, geometry, and which identifying header tags (Annex E, by name) were not
carried over, and a SHA-256 of the source files. The NIfTI files carry voxels and geometry only.
A gantry-tilted series (slice positions off the slice normal) is resampled onto an orthogonal
grid (:func:`fedimg.imageio.dicom_tilt.orthogonal_grid`, linear), with a warning and
``tilt_corrected_deg`` in the record; ``refuse_tilt=True`` refuses it instead.

Layouts: ``brats`` (BraTS 2021 names ``<case>_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair``;
the map must name all four) and ``series`` (``<case>_<name>.nii.gz`` per mapped series).
The map's optional ``seg`` entry (:mod:`fedimg.deface.dicom_labels`) gives each case's tumour
label (DICOM SEG or NIfTI), written as ``<case>_seg.nii.gz`` on the reference grid in BraTS
2021 codes; every label is read and checked against its case's grid before anything is written.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "series.yml"
>>> _ = p.write_text("t1: ['*MPRAGE*', 'T1*']\\nflair: '*FLAIR*'\\n")
>>> load_series_map(p)
{'t1': ('*MPRAGE*', 'T1*'), 'flair': ('*FLAIR*',)}
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import logging
import shutil
import tempfile
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from fedimg import __version__
from fedimg.errors import ConfigError, InputError, QCError
from fedimg.imageio.deid import CODES, PROFILE_TABLE, DeidConfig, deidentify, pseudonym
from fedimg.imageio.dicom import (MAX_TILT_DEG, DicomSeries, DicomVolume, check_series, find_series, header_grid,
                                  read_series)
from fedimg.imageio.dicom_seg import label_onto_grid
from fedimg.imageio.dicom_tilt import orthogonal_grid
from fedimg.imageio.write import write_nifti_gz
from fedimg.io import sha256_file, write_json

from .core import DefaceConfig
from .dicom_labels import LABEL_NAME, LabelMap, label_file_for, read_label
from .pipeline import DefaceJob, deface_job

__all__ = ["load_series_map", "match_series", "plan_cases", "import_dicom", "deid_summary", "series_sha256",
           "volume_on_grid", "check_label", "LAYOUTS", "BRATS_NAMES"]

log = logging.getLogger(__name__)

LAYOUTS = ("brats", "series")
BRATS_NAMES = ("t1", "t1ce", "t2", "flair")
_RAW_DESCRIP = b"fedimg import: from DICOM, not defaced"


def load_series_map(path: str | PathLike[str]) -> dict[str, tuple[str, ...]]:
    """Read a series map: ``name: glob`` or ``name: [glob, ...]`` on SeriesDescription."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "does not exist; write a series map such as `t1: '*MPRAGE*'`") from None
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"is not valid YAML ({type(exc).__name__}); write `name: glob` lines") from None
    if not isinstance(raw, dict) or not raw:
        raise InputError(path, "must map names to SeriesDescription globs, e.g. `t1: '*MPRAGE*'`")
    out = {}
    for name, globs in raw.items():
        if name == LABEL_NAME:  # the label entry: load_label_map
            continue
        globs = [globs] if isinstance(globs, str) else globs
        if not isinstance(name, str) or not name.isidentifier() or not isinstance(globs, list) or not globs \
                or not all(isinstance(g, str) and g for g in globs):
            raise InputError(path, f"entry {name!r}: use a plain name and a glob or a list of globs")
        out[name] = tuple(globs)
    return out


def match_series(series: DicomSeries, series_map: dict[str, tuple[str, ...]] | None) -> str | None:
    """The series map's name for ``series`` (None: not mapped); without a map, ``series<N>``."""
    if series_map is None:
        return f"series{series.number}" if series.number is not None else None
    desc = series.description.lower()
    hits = [n for n, globs in series_map.items() if any(fnmatch.fnmatchcase(desc, g.lower()) for g in globs)]
    if len(hits) > 1:
        raise InputError(series.folder, f"series {series.number} matches {' and '.join(hits)} in the series map; "
                                        "make the globs exclusive")
    return hits[0] if hits else None


def plan_cases(root: str | PathLike[str], *, series_map: dict[str, tuple[str, ...]] | None, layout: str,
               deid: DeidConfig, labels: LabelMap | None = None) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """``{case: {name: series}}`` and the skipped series (case and number only); checks the map's coverage.

    With ``labels``, a case's label source (its SEG series or NIfTI file) is under the name ``"seg"``.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if layout == "brats":
        if series_map is None or set(series_map) != set(BRATS_NAMES):
            raise ConfigError("--layout brats needs a --series-map naming exactly t1, t1ce, t2 and flair")
    found = find_series(root)
    studies: dict[str, list[tuple[str, str]]] = {}
    for s in found:
        studies.setdefault(s.patient_id, [])
        if (s.study_date, s.study_uid) not in studies[s.patient_id]:
            studies[s.patient_id].append((s.study_date, s.study_uid))
    cases: dict[str, dict[str, Any]] = {}
    skipped = []
    who: dict[str, tuple[str, str, int]] = {}
    for s in found:
        study_list = sorted(studies[s.patient_id])
        case = pseudonym(deid.pseudonym_key, s.patient_id)
        if len(study_list) > 1:
            case += f"-{study_list.index((s.study_date, s.study_uid)) + 1}"
        who[case] = (s.patient_id, s.study_date, len(study_list))
        if s.modality.upper() == "SEG":  # a label, never an image
            name = LABEL_NAME if labels is not None and labels.matches(s) else None
        else:
            name = match_series(s, series_map)
        if name is None:
            skipped.append({"case": case, "series_number": s.number})
            continue
        if name in cases.setdefault(case, {}):
            raise InputError(s.folder, f"case {case} has two series for {name!r} (series {cases[case][name].number} "
                                       f"and {s.number}); make the series map more specific or remove one")
        cases[case][name] = s
    if labels is not None:
        _assign_label_files(cases, who, labels)
    for case, named in cases.items():
        if set(named) == {LABEL_NAME}:
            raise InputError(_where(named[LABEL_NAME]),
                             f"case {case} has a label but no image series the series map names")
    if not cases:
        raise InputError(root, "no series matches the series map; check the globs against the SeriesDescription values")
    if layout == "brats":
        for case, named in cases.items():
            missing = [n for n in BRATS_NAMES if n not in named]
            if missing:
                folder = next(iter(named.values())).folder
                raise InputError(folder, f"case {case} has no series for {', '.join(missing)}; every BraTS case needs "
                                         "t1, t1ce, t2 and flair (fix the series map or use --layout series)")
    return cases, skipped


def _assign_label_files(cases: dict[str, dict[str, Any]], who: dict[str, tuple[str, str, int]], labels: LabelMap) -> None:
    """Each case's NIfTI label file (keyed by its header PatientID); a key that names no case is refused."""
    used = set()
    for case, named in cases.items():
        path = label_file_for(labels, *who[case][:2], studies=who[case][2])
        if path is None:
            continue
        if LABEL_NAME in named:
            raise InputError(path, f"case {case} has both a SEG series and a label file; keep one")
        named[LABEL_NAME] = path
        used.add(path)
    for i, path in enumerate(labels.files.values()):
        if path not in used:
            raise InputError(path, f"(seg: files, entry {i + 1}) matches no imported case; check its PatientID key "
                                   "against the headers (and that the case's series are in the series map)")


def deid_summary(volume: DicomVolume, deid: DeidConfig) -> dict[str, Any]:
    """What de-identification finds in the series' first header (names only); the header itself is a copy."""
    report = deidentify(copy.deepcopy(volume.datasets[0]), deid)
    return {"tags_removed": report.removed, "tags_emptied": report.emptied, "tags_replaced": report.replaced,
            "private_tags": report.private_removed, "burned_in_annotation": report.burned_in_annotation,
            "date_shift_days_applied": report.date_shift_days is not None}


def series_sha256(series: DicomSeries) -> str:
    """SHA-256 of the files' SHA-256 values, in path order: the site can later tell which export made a case."""
    h = hashlib.sha256()
    for f in sorted(series.files):
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _grid(data: np.ndarray, affine: np.ndarray) -> tuple:
    return data.shape, np.round(affine, 3).tobytes()


def volume_on_grid(volume: DicomVolume) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(voxels, affine, tilt record)`` of a read series: a tilted stack resampled onto an orthogonal grid."""
    data, affine = volume.scaled(), volume.affine
    record: dict[str, Any] = {}
    if volume.gantry_tilt_deg > 1e-3:
        record["gantry_detector_tilt_deg"] = round(volume.gantry_tilt_deg, 3)
    if volume.tilt_deg > MAX_TILT_DEG:
        acquired = list(data.shape)
        data, affine, angle = orthogonal_grid(data, affine)
        record.update(tilt_corrected_deg=round(angle, 3), acquired_shape=acquired)
        log.warning("series %s: slices %.1f deg off the slice normal (gantry tilt); resampled onto an orthogonal "
                    "grid (linear), shape %s -> %s", volume.series.number, angle, acquired, list(data.shape))
    elif volume.gantry_tilt_deg > 1e-3:
        log.warning("series %s: GantryDetectorTilt %.3g deg, but the slice positions are on the slice normal; "
                    "imported as positioned, nothing resampled", volume.series.number, volume.gantry_tilt_deg)
    return data, affine, record


def _label_source(source: DicomSeries | Path) -> dict[str, Any]:
    if isinstance(source, DicomSeries):
        return {"source": "dicom-seg", "series_number": source.number, "source_sha256": series_sha256(source)}
    return {"source": "nifti", "source_sha256": sha256_file(source)}


def _where(source: DicomSeries | Path) -> Path:
    return source.folder if isinstance(source, DicomSeries) else source


def _reference(named: dict[str, Any], layout: str) -> str:
    """The name of a case's reference image: t1 (brats), else its first image series."""
    return "t1" if layout == "brats" else next(n for n in named if n != LABEL_NAME)


def check_label(source: DicomSeries | Path, reference: DicomSeries, labels: LabelMap, *, refuse_tilt: bool) -> None:
    """Read a case's label and check it lands on its reference image's grid (headers only for the image)."""
    shape, affine = header_grid(reference, allow_tilt=not refuse_tilt, tilt_hint=refuse_tilt)
    label_onto_grid(read_label(source, labels), shape, affine, where=_where(source))


def _import_label(source: DicomSeries | Path, labels: LabelMap, shape: tuple[int, ...], affine: np.ndarray,
                  target: Path) -> dict[str, Any]:
    """Resample a case's label onto its reference grid, write it; returns its record (no header values)."""
    lab = read_label(source, labels)
    codes, info = label_onto_grid(lab, shape, affine, where=_where(source))
    write_nifti_gz(target, codes, affine, descrip=b"fedimg import: label, BraTS 2021 codes")
    return {"output": target.name, **_label_source(source), "codes": "BraTS 2021 (1 necrotic/non-enhancing core, "
            "2 oedema, 4 enhancing)", "mapped": lab.segments, "resampling": "nearest neighbour, world coordinates",
            **info, "values": sorted(int(v) for v in np.unique(codes))}


def _import_case(case: str, named: dict[str, Any], out: Path, work: Path, *, layout: str, deid: DeidConfig,
                 deface: DefaceConfig, device, png: bool, refuse_tilt: bool = False,
                 labels: LabelMap | None = None) -> dict[str, Any]:
    """Convert, deface and record one case (and its label); returns its record."""
    folder = out / case
    names = [n for n in named if n != LABEL_NAME]
    ref_name = _reference(named, layout)
    vols = {n: read_series(named[n], allow_tilt=not refuse_tilt, tilt_hint=refuse_tilt) for n in names}
    grids = {n: volume_on_grid(vols[n]) for n in names}
    raw = {n: write_nifti_gz(work / f"{case}_{n}.nii.gz", grids[n][0], grids[n][1], descrip=_RAW_DESCRIP)
           for n in names}
    target = {n: folder / f"{case}_{n}.nii.gz" for n in names}
    groups: dict[tuple, list[str]] = {}
    for n in [ref_name] + [m for m in names if m != ref_name]:
        groups.setdefault(_grid(*grids[n][:2]), []).append(n)
    qc = {}
    for members in groups.values():
        lead = members[0]
        job = DefaceJob(reference=raw[lead], output=target[lead], png=png,
                        apply_to=tuple((raw[m], target[m]) for m in members[1:]))
        record = deface_job(job, config=deface, device=device)
        for m in members:
            qc[m] = {"reference": target[lead].name, "passed": record["passed"], "removed_ml": record["removed_ml"]}
    images = {}
    for n in names:
        v, (data, affine, tilt) = vols[n], grids[n]
        images[n] = {"output": target[n].name, "series_number": named[n].number, "files": len(named[n].files),
                     "source_sha256": series_sha256(named[n]),
                     "multiframe": len(v.datasets) == 1 and len(v.frames) > 1, "shape": list(data.shape),
                     "spacing_mm": np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).round(4).tolist(),
                     "affine_ras": affine.round(6).tolist(),
                     "rescale_applied": bool(np.any(v.slope != 1) or np.any(v.inter != 0)), **tilt,
                     "deface": qc[n], "deidentification": deid_summary(v, deid)}
    record = {"tool": "fedimg", "version": __version__, "source": "dicom", "case": case, "layout": layout,
              "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
              "profile_table": f"dicom-anonymizer {PROFILE_TABLE}",
              "codes": [CODES["basic"][0], CODES["features"][0]],
              "carried_from_headers": "voxels and geometry only (no names, IDs, dates or UIDs)", "images": images}
    if LABEL_NAME in named and labels is not None:
        record["label"] = _import_label(named[LABEL_NAME], labels, grids[ref_name][0].shape, grids[ref_name][1],
                                        folder / f"{case}_seg.nii.gz")
    write_json(folder / f"{case}.dicom.json", record)
    return record


def import_dicom(root: str | PathLike[str], out: str | PathLike[str], *, layout: str = "brats",
                 series_map: dict[str, tuple[str, ...]] | None = None, deid: DeidConfig | None = None,
                 deface: DefaceConfig | None = None, device=None, png: bool = True,
                 refuse_tilt: bool = False, labels: LabelMap | None = None) -> dict[str, Any]:
    """Import a DICOM folder into a site folder; returns the summary (also ``import_summary.json``).

    Raises :class:`InputError` before writing anything when a mapped series is bad; a case
    whose defacing fails QC is listed under ``failed`` (the others are still imported).
    """
    root, out = Path(root), Path(out)
    deid = deid or DeidConfig()
    deface = deface or DefaceConfig()
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise InputError(out, "is inside the DICOM input folder; choose an output folder outside it")
    cases, skipped = plan_cases(root, series_map=series_map, layout=layout, deid=deid, labels=labels)
    for named in cases.values():  # check every series (and label) before writing anything
        for n, s in named.items():
            if n != LABEL_NAME:
                check_series(s, allow_tilt=not refuse_tilt, tilt_hint=refuse_tilt)
        if LABEL_NAME in named and labels is not None:
            check_label(named[LABEL_NAME], named[_reference(named, layout)], labels, refuse_tilt=refuse_tilt)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".import-", dir=out))
    done, failed = [], []
    try:
        for case, named in sorted(cases.items()):
            try:
                _import_case(case, named, out, work, layout=layout, deid=deid, deface=deface, device=device, png=png,
                             refuse_tilt=refuse_tilt, labels=labels)
                done.append(case)
                log.info("%s: %d series imported and defaced%s", case, len(named) - (LABEL_NAME in named),
                         ", label written" if LABEL_NAME in named else "")
            except QCError as exc:
                for partial in [*(out / case).glob("*.nii.gz"), *(out / case).glob("*.deface.json")]:
                    partial.unlink()  # a case is imported whole or not at all (QC files stay for review)
                failed.append({"case": case, "error": str(exc).replace(str(work), "<work>")})
                log.error("%s: defacing QC failed; case not imported", case)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {"tool": "fedimg", "version": __version__, "layout": layout, "cases": done, "failed": failed,
               "skipped_series": skipped, "total": len(cases)}
    if labels is not None:
        summary["without_label"] = sorted(c for c in done if LABEL_NAME not in cases[c])
    write_json(out / "import_summary.json", summary)
    return summary
