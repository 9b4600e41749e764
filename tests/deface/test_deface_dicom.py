"""DICOM → defaced BraTS site (import) and DICOM → defaced DICOM (deidentify), on series made from the real head."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

import _dicom_factory as F
from fedimg.data.discover import discover
from fedimg.deface.core import DefaceConfig
from fedimg.deface.dicom_deid import deidentify_tree
from fedimg.deface.dicom_import import import_dicom, load_series_map, plan_cases, series_sha256
from fedimg.errors import ConfigError, InputError
from fedimg.imageio.deid import DeidConfig
from fedimg.imageio.dicom import find_series, read_series
from fedimg.imageio.provenance import is_defaced

KEY = b"fedimg-test-site-secret-0001"


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    fakes = F.write_exam(root, patient="A")
    smap = root.parent / "series.yml"
    smap.write_text(F.SERIES_MAP)
    return root, fakes, load_series_map(smap)


def hash_tree(root) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _all_bytes(folder) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_import_brats_site(exam, tmp_path):
    root, fakes, smap = exam
    before = hash_tree(root)
    summary = import_dicom(root, tmp_path / "site-1", series_map=smap, deid=DeidConfig(pseudonym_key=KEY), png=False)
    assert hash_tree(root) == before  # inputs untouched
    assert len(summary["cases"]) == 1 and not summary["failed"] and summary["skipped_series"][0]["series_number"] == 99
    (case,) = discover(tmp_path / "site-1", require_labels=False, allow_identifiable=False)
    assert case.case_id.startswith("anon-") and all(is_defaced(p) for p in case.images)
    record = json.loads((tmp_path / "site-1" / case.case_id / f"{case.case_id}.dicom.json").read_text())
    assert set(record["images"]) == {"t1", "t1ce", "t2", "flair"} and record["codes"] == ["113100", "113102"]
    t1 = record["images"]["t1"]
    assert t1["files"] == 64 and "PatientName" in t1["deidentification"]["tags_replaced"] + t1["deidentification"]["tags_emptied"]
    assert t1["source_sha256"] == series_sha256(next(s for s in find_series(root) if s.number == 1))
    assert record["images"]["t2"]["deface"]["reference"] == f"{case.case_id}_t1.nii.gz"  # same grid: one registration
    # the NIfTI keeps the DICOM geometry and the voxels outside the removed face
    vol = read_series(next(s for s in find_series(root) if s.number == 1))
    img = nib.load(str(case.images[0]))
    np.testing.assert_allclose(img.affine, vol.affine, atol=1e-4)
    out = np.asarray(img.dataobj)
    kept = out != 0
    assert kept.mean() > 0.2 and np.array_equal(out[kept], vol.scaled()[kept])
    assert (out != vol.scaled()).sum() > 1000  # the face is gone
    blob = _all_bytes(tmp_path / "site-1")
    assert not [f for f in fakes if f.encode() in blob]
    assert b"DOE_A" not in blob and str(root).encode() not in blob


def test_plan_refuses_incomplete_maps(exam):
    root, _, smap = exam
    with pytest.raises(ConfigError, match="t1, t1ce, t2 and flair"):
        plan_cases(root, series_map={"t1": ("*MPRAGE*",)}, layout="brats", deid=DeidConfig())
    with pytest.raises(InputError, match="matches t1 and t2"):
        plan_cases(root, series_map={"t1": ("*MPRAGE*", "T2*"), "t2": ("T2*",)}, layout="series", deid=DeidConfig())
    cases, skipped = plan_cases(root, series_map=None, layout="series", deid=DeidConfig(pseudonym_key=KEY))
    (named,) = cases.values()
    assert sorted(named) == ["series1", "series2", "series3", "series4", "series99"] and not skipped


def test_deidentify_tree_defaces_and_keeps_geometry(exam, tmp_path):
    root, fakes, _ = exam
    report = deidentify_tree(root, tmp_path / "out", deid=DeidConfig(pseudonym_key=KEY, date_shift_key=KEY),
                             deface=DefaceConfig(), series_map={"t1": ("*mprage*",)})  # just the T1 series
    assert sorted(s["series_number"] for s in report["skipped"]) == [2, 3, 4, 99]
    (entry,) = report["series"]
    assert entry["deface_qc"]["passed"] and entry["codes"] == ["113100", "113102", "113107"]
    assert entry["private_tags_removed"] == 128 and entry["date_shifted"] and report["files"] == 64
    src = read_series(next(s for s in find_series(root) if s.number == 1))
    (series,) = find_series(tmp_path / "out")
    assert series.folder.parent.name == entry["patient"] and series.uid != src.series.uid
    out = read_series(series)
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
    changed = out.stored != src.stored
    assert changed.sum() > 1000 and np.all(out.scaled()[changed] == 0)  # zeroed face, nothing else touched
    ds = pydicom.dcmread(series.files[0])
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID == entry["patient"]
    blob = _all_bytes(tmp_path / "out")
    assert not [f for f in fakes if f.encode() in blob] and b"20230115" not in blob
    assert "PatientName" not in json.dumps(report["series"][0]["patient"])


def test_deidentify_tree_refuses_output_inside_input(exam):
    root, _, _ = exam
    with pytest.raises(InputError, match="inside the DICOM input"):
        deidentify_tree(root, root / "out", deface=None)

