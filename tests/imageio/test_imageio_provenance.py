"""Provenance records: the sidecar JSON and the NIfTI ``descrip`` tag, written and read in one place."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from fedimg.imageio import provenance as pv


def _nifti(path, descrip: bytes = b""):
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.int16), np.eye(4))
    img.header["descrip"] = descrip
    nib.save(img, str(path))
    return path


def test_sidecar_path_and_stem():
    assert pv.sidecar_path("d/sub-01_T1w.nii.gz").name == "sub-01_T1w.deface.json"
    assert pv.sidecar_path("d/head.nrrd").name == "head.deface.json"


def test_defaced_descrip_fits_the_header():
    assert pv.defaced_descrip("0.1.0") == b"fedimg-defaced 0.1.0"
    assert len(pv.defaced_descrip("x" * 200)) == 80


def test_descrip_tag_marks_defaced(tmp_path):
    plain = _nifti(tmp_path / "plain.nii.gz", b"scanner says hi")
    tagged = _nifti(tmp_path / "tagged.nii", pv.defaced_descrip("0.1.0"))
    assert pv.read_descrip(plain) == "scanner says hi" and not pv.is_defaced(plain)
    assert pv.read_descrip(tagged) == "fedimg-defaced 0.1.0" and pv.is_defaced(tagged)


def test_unreadable_or_other_files_are_not_defaced(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    assert pv.read_descrip(bad) is None and not pv.is_defaced(bad)
    assert pv.read_descrip(tmp_path / "missing.nii.gz") is None and not pv.is_defaced(tmp_path / "missing.nii.gz")
    nrrd = tmp_path / "head.nrrd"
    nrrd.write_bytes(b"NRRD0004\n")
    assert pv.read_descrip(nrrd) is None and not pv.is_defaced(nrrd)


def test_sidecar_marks_defaced(tmp_path):
    img = _nifti(tmp_path / "a.nii.gz")
    side = pv.sidecar_path(img)
    side.write_text(json.dumps({"defaced": False}))
    assert not pv.is_defaced(img) and pv.read_deface_record(img) is None
    side.write_text("{broken")
    assert not pv.is_defaced(img)
    side.write_text(json.dumps({"defaced": True}))
    assert pv.is_defaced(img) and pv.read_deface_record(img) == {"defaced": True}


def test_write_deface_record(tmp_path):
    src = _nifti(tmp_path / "in_t1.nii.gz")
    out = tmp_path / "out" / "t1.nii.gz"
    side = pv.write_deface_record(out, source=src, reference="in_t1.nii.gz", version="9.9", mode="zero",
                                  qc={"passed": True}, qc_report="t1.qc.json")
    assert side == tmp_path / "out" / "t1.deface.json"
    rec = json.loads(side.read_text())
    assert list(rec) == ["defaced", "tool", "version", "method", "mode", "source", "source_sha256",
                         "reference", "qc", "qc_report"]
    assert rec["defaced"] is True and rec["tool"] == "fedimg" and rec["method"] == pv.DEFACE_METHOD
    assert rec["source"] == "in_t1.nii.gz" and len(rec["source_sha256"]) == 64
    assert pv.read_deface_record(out) == rec
    out.write_bytes(src.read_bytes())  # the image itself carries no tag; the sidecar is enough
    assert pv.is_defaced(out)
