"""Label import: a DICOM SEG written by highdicom and NIfTI labels, mapped to BraTS codes and resampled onto the case."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

import _dicom_factory as F
from fedimg.cli import main
from fedimg.data.discover import discover
from fedimg.deface.dicom_import import load_series_map, plan_cases
from fedimg.deface.dicom_labels import load_label_map, read_label
from fedimg.errors import InputError
from fedimg.imageio.deid import DeidConfig
from fedimg.imageio.dicom import find_series, read_series
from fedimg.imageio.dicom_seg import label_onto_grid, read_label_nifti


def _hashes(root) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _bad(capsys, argv, *words) -> None:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and err.startswith("fedimg: error: "), err
    assert all(w in err for w in words), err


@pytest.fixture(scope="module")
def t1_grid():
    """The real head as a DICOM series (3.75 mm) and a synthetic tumour on its read grid."""
    data, affine = F.head(4)
    return data, affine, F.tumour(data.shape, centre=(24, 36, 34), radius=6)


def test_import_with_dicom_seg_gives_a_training_ready_case(tmp_path, capsys, t1_grid):
    root = tmp_path / "dicom"
    fakes = F.write_exam(root, patient="L", localizer=False)
    exam = root / "DOE_LZQXJ"
    vol = read_series(find_series(exam / "s1")[0])
    label = F.tumour(vol.stored.shape, centre=(24, 36, 30), radius=6)
    F.write_seg(exam / "s1", label, exam / "seg")
    smap = tmp_path / "series.yml"
    smap.write_text(F.SERIES_MAP + "seg: '*SEG*'\n")
    before = _hashes(root)
    rc = main(["import", str(root), "-o", str(tmp_path / "site"), "--layout", "brats", "--series-map", str(smap),
               "--no-png", "--threads", "1"])
    assert rc == 0 and _hashes(root) == before
    (case,) = discover(tmp_path / "site", require_labels=True, allow_identifiable=False)  # training-ready
    seg = nib.load(str(case.label))
    t1 = nib.load(str(case.images[0]))
    np.testing.assert_array_equal(seg.affine, t1.affine)
    np.testing.assert_array_equal(np.asarray(seg.dataobj), label)  # same grid: nearest neighbour is exact
    record = json.loads((case.label.parent / f"{case.case_id}.dicom.json").read_text())["label"]
    assert record["source"] == "dicom-seg" and record["mapped"] == {"1": 1, "2": 2, "3": 4}
    assert record["values"] == [0, 1, 2, 4] and record["inside_share"] == 1.0
    blob = b"".join(p.read_bytes() for p in (tmp_path / "site").rglob("*") if p.is_file())
    assert not [f for f in fakes if f.encode() in blob]
    summary = json.loads((tmp_path / "site" / "import_summary.json").read_text())
    assert summary["without_label"] == [] and not summary["skipped_series"]


def test_nifti_label_on_another_grid_resampled_and_recoded(tmp_path, t1_grid):
    data, affine, label = t1_grid
    F.write_case(tmp_path / "dicom" / "s1", data=data, affine=affine, patient="N")
    vol = read_series(find_series(tmp_path / "dicom" / "s1")[0])
    truth = F.tumour(vol.stored.shape, centre=(20, 30, 36), radius=5)
    # drawn at twice the resolution, in the MSD convention (1 oedema, 2 non-enhancing core, 3 enhancing)
    msd = np.select([truth == 2, truth == 1, truth == 4], [1, 2, 3], 0).astype(np.int16)
    fine = msd.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    fine_affine = vol.affine @ np.diag([0.5, 0.5, 0.5, 1.0])
    fine_affine[:3, 3] = vol.affine[:3, 3] - vol.affine[:3, :3] @ [0.25, 0.25, 0.25]
    nib.save(nib.Nifti1Image(fine, fine_affine), str(tmp_path / "lab.nii.gz"))
    smap = tmp_path / "series.yml"
    smap.write_text("t1: '*MPRAGE*'\nseg: {files: {FAKEID-N-7731: lab.nii.gz}, codes: {1: 2, 2: 1, 3: 4}}\n")
    labels = load_label_map(smap)
    cases, _ = plan_cases(tmp_path / "dicom", series_map=load_series_map(smap), layout="series", deid=DeidConfig(),
                          labels=labels)
    (named,) = cases.values()
    assert named["seg"] == tmp_path / "lab.nii.gz"
    out, info = label_onto_grid(read_label(named["seg"], labels), vol.stored.shape, vol.affine, where="lab")
    np.testing.assert_array_equal(out, truth)
    assert info["inside_share"] == 1.0 and info["label_ml"] == pytest.approx(info["label_ml_on_grid"])
    with pytest.raises(InputError, match="value 3"):  # without the map, MSD's 3 has no BraTS code
        read_label_nifti(tmp_path / "lab.nii.gz")


def test_label_off_the_image_refused_one_line_nothing_written(tmp_path, capsys, t1_grid):
    data, affine, label = t1_grid
    F.write_case(tmp_path / "dicom" / "s1", data=data, affine=affine, patient="N")
    far = affine.copy()
    far[:3, 3] += 500.0  # drawn on another image: 500 mm away
    nib.save(nib.Nifti1Image(label, far), str(tmp_path / "lab.nii.gz"))
    smap = tmp_path / "series.yml"
    smap.write_text("t1: '*MPRAGE*'\nseg: {files: {FAKEID-N-7731: lab.nii.gz}}\n")
    before = _hashes(tmp_path)
    _bad(capsys, ["import", str(tmp_path / "dicom"), "-o", str(tmp_path / "site"), "--layout", "series",
                  "--series-map", str(smap)], "lab.nii.gz", "does not overlap")
    assert not (tmp_path / "site").exists() and _hashes(tmp_path) == before
    smap.write_text("t1: '*MPRAGE*'\nseg: {files: {NOT-A-PATIENT: lab.nii.gz}}\n")
    _bad(capsys, ["import", str(tmp_path / "dicom"), "-o", str(tmp_path / "site"), "--layout", "series",
                  "--series-map", str(smap)], "lab.nii.gz", "matches no imported case")
    smap.write_text("t1: '*MPRAGE*'\nseg: {files: [lab.nii.gz]}\n")
    _bad(capsys, ["import", str(tmp_path / "dicom"), "-o", str(tmp_path / "site"), "--layout", "series",
                  "--series-map", str(smap)], "series.yml", "seg")
    assert not (tmp_path / "site").exists()
