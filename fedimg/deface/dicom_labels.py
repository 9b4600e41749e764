"""Label import for ``fedimg import``: the series map's ``seg`` entry, and each case's label source.

The series map may name each case's tumour label, as a DICOM SEG series (SeriesDescription
globs; the SEG joins the case of its patient and study) and/or NIfTI label files keyed by
the ``PatientID`` in the headers (``PatientID:StudyDate`` when a patient has several studies;
paths relative to the map), with ``codes`` mapping segment labels (SEG, globs) or values
(NIfTI) to BraTS 2021 codes (1 necrotic / non-enhancing core, 2 oedema, 4 enhancing, 0 drop)::

    seg:
      series: "*SEG*"
      files: {"PAT-0001": labels/pat1.nii.gz}
      codes: {"*necro*": 1, "*edema*": 2, "*enhanc*": 4}     # or, for NIfTI values: {1: 1, 2: 2, 3: 4}

A bare glob (``seg: "*SEG*"``) names SEG series only. Each label is resampled nearest-neighbour
onto its case's reference grid (:func:`fedimg.imageio.dicom_seg.label_onto_grid`) and written
as ``<case>_seg.nii.gz``.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "series.yml"
>>> _ = p.write_text("t1: '*T1*'\\nseg: {series: '*SEG*', codes: {3: 4}}\\n")
>>> m = load_label_map(p)
>>> m.series, m.files, m.codes
(('*SEG*',), {}, {3: 4})
"""

from __future__ import annotations

import dataclasses
import fnmatch
from os import PathLike
from pathlib import Path
from typing import Any

from fedimg.errors import InputError
from fedimg.imageio.dicom import DicomSeries
from fedimg.imageio.dicom_seg import LabelVolume, read_label_nifti, read_seg

__all__ = ["LabelMap", "load_label_map", "label_file_for", "read_label", "LABEL_NAME"]

#: the series-map key of the label entry (not an image)
LABEL_NAME = "seg"
_CODES = (0, 1, 2, 4)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelMap:
    """``series``: SEG SeriesDescription globs; ``files``: header key -> label file; ``codes``: -> BraTS code."""

    series: tuple[str, ...] = ()
    files: dict[str, Path] = dataclasses.field(default_factory=dict)
    codes: dict[Any, int] = dataclasses.field(default_factory=dict)

    def matches(self, series: DicomSeries) -> bool:
        """A DICOM SEG series this map names."""
        desc = series.description.lower()
        return series.modality.upper() == "SEG" and any(fnmatch.fnmatchcase(desc, g.lower()) for g in self.series)


def _globs(value: Any) -> tuple[str, ...] | None:
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not value or not all(isinstance(g, str) and g for g in value):
        return None
    return tuple(value)


def load_label_map(path: str | PathLike[str]) -> LabelMap | None:
    """The series map's ``seg`` entry (None without one); bad entries are one line naming the file."""
    import yaml

    path = Path(path)
    raw = yaml.safe_load(path.read_text())
    entry = raw.get(LABEL_NAME) if isinstance(raw, dict) else None
    if entry is None:
        return None
    entry = {"series": entry} if isinstance(entry, (str, list)) else entry
    fix = "write `seg: {series: '*SEG*'}` and/or `seg: {files: {PatientID: label.nii.gz}}`"
    if not isinstance(entry, dict) or not entry or set(entry) - {"series", "files", "codes"}:
        raise InputError(path, f"entry 'seg': {fix}")
    series = _globs(entry["series"]) if "series" in entry else ()
    files, codes = entry.get("files", {}), entry.get("codes", {})
    if series is None or not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise InputError(path, f"entry 'seg': {fix}")
    if not isinstance(codes, dict) or not all(isinstance(c, int) and c in _CODES for c in codes.values()):
        raise InputError(path, "entry 'seg: codes': map segment labels or label values to BraTS codes 1, 2, 4 (0: drop)")
    if not series and not files:
        raise InputError(path, f"entry 'seg' names no label source; {fix}")
    resolved = {str(k): (path.parent / v) for k, v in files.items()}
    return LabelMap(series=series, files=resolved, codes=dict(codes))


def label_file_for(labels: LabelMap, patient_id: str, study_date: str, *, studies: int) -> Path | None:
    """The NIfTI label file of one (patient, study), or None; a patient-only key is refused for several studies."""
    exact = labels.files.get(f"{patient_id}:{study_date}")
    if exact is not None:
        return exact
    by_patient = labels.files.get(patient_id)
    if by_patient is not None and studies > 1:
        raise InputError(by_patient, "is keyed by a patient who has several studies; key it `PatientID:StudyDate` "
                                     "in the series map's seg: files")
    return by_patient


def read_label(source: DicomSeries | Path, labels: LabelMap) -> LabelVolume:
    """A case's label from its SEG series (one instance) or its NIfTI file, in BraTS codes."""
    if isinstance(source, DicomSeries):
        if len(source.files) != 1:
            raise InputError(source.folder, f"SEG series {source.number} has {len(source.files)} files; one "
                                            "Segmentation instance per series is supported")
        return read_seg(source.files[0], codes={str(k): v for k, v in labels.codes.items()})
    return read_label_nifti(source, codes={int(k): v for k, v in labels.codes.items() if str(k).lstrip("-").isdigit()})
