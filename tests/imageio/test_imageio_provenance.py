"""Provenance records: the sidecar JSON and the NIfTI ``descrip`` tag, written and read in one place."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np

from fedimg.imageio import provenance as pv
from fedimg.imageio.volume import load_volume


def _nifti(path, descrip: bytes = b"", data=None):
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.int16) if data is None else data, np.eye(4))
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
    # the tag is read, but a tag alone (no record with a content hash) is not proof of defacing
    assert pv.read_descrip(tagged) == "fedimg-defaced 0.1.0" and not pv.is_defaced(tagged)
    assert "only a header tag" in pv.defacing_problem(tagged) and "has no defacing record" in pv.defacing_problem(plain)


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
    assert pv.read_deface_record(img) == {"defaced": True}
    assert not pv.is_defaced(img) and "no content hash" in pv.defacing_problem(img)


def test_write_deface_record(tmp_path):
    src = _nifti(tmp_path / "in_t1.nii.gz")
    out = tmp_path / "out" / "t1.nii.gz"
    h = pv.voxel_sha256(load_volume(src, require_signal=False))
    side = pv.write_deface_record(out, source=src, reference="in_t1.nii.gz", version="9.9", mode="zero",
                                  qc={"passed": True}, qc_report="t1.qc.json", voxel_hash=h)
    assert side == tmp_path / "out" / "t1.deface.json"
    rec = json.loads(side.read_text())
    assert list(rec) == ["defaced", "tool", "version", "method", "mode", "source", "source_sha256",
                         "reference", "qc", "qc_report", "image", "voxel_sha256", "voxel_hash"]
    assert rec["image"] == "t1.nii.gz" and rec["voxel_sha256"] == h and len(h) == 64
    assert rec["defaced"] is True and rec["tool"] == "fedimg" and rec["method"] == pv.DEFACE_METHOD
    assert rec["source"] == "in_t1.nii.gz" and len(rec["source_sha256"]) == 64
    assert pv.read_deface_record(out) == rec
    out.write_bytes(src.read_bytes())  # the image itself carries no tag; the sidecar with its hash is enough
    assert pv.is_defaced(out) and pv.defacing_problem(out) is None


def test_voxel_hash_survives_recompression_not_edits(tmp_path):
    """The hash covers the decoded voxels, dtype, shape, affine and scaling; not the file's bytes."""
    rng = np.random.default_rng(0)
    data = rng.integers(-50, 900, size=(12, 10, 8)).astype(np.int16)
    aff = np.diag([0.9, 0.9375, 1.2, 1.0])
    aff[:3, 3] = [-40.5, 12.25, 3.0]
    img = nib.Nifti1Image(data, aff)
    img.header.set_slope_inter(2.0, -1.0)
    gz, plain, fast = tmp_path / "a.nii.gz", tmp_path / "b.nii", tmp_path / "c.nii.gz"
    nib.save(img, str(gz))
    nib.save(img, str(plain))
    with gzip.open(fast, "wb", compresslevel=1) as f:  # another compression of the same bytes
        f.write(plain.read_bytes())
    assert gz.read_bytes() != fast.read_bytes()
    h = {pv.voxel_sha256(load_volume(p)) for p in (gz, plain, fast)}
    assert len(h) == 1
    for change in ("voxel", "affine", "slope", "dtype"):
        d2, a2, edited = data.copy(), aff.copy(), tmp_path / f"{change}.nii.gz"
        if change == "voxel":
            d2[5, 5, 5] += 1
        if change == "affine":
            a2[0, 3] += 0.5
        im2 = nib.Nifti1Image(d2.astype(np.int32) if change == "dtype" else d2, a2)
        im2.header.set_slope_inter(3.0 if change == "slope" else 2.0, -1.0)
        nib.save(im2, str(edited))
        assert pv.voxel_sha256(load_volume(edited)) not in h, change


def test_gate_refuses_a_copied_or_stale_record(tmp_path):
    a = _nifti(tmp_path / "a.nii.gz", data=np.arange(512, dtype=np.int16).reshape(8, 8, 8))
    b = _nifti(tmp_path / "b.nii.gz", data=np.arange(512, dtype=np.int16).reshape(8, 8, 8)[::-1].copy())
    for p in (a, b):
        pv.write_deface_record(p, source=p, reference=p.name, version="t", mode="zero", qc={}, qc_report="q",
                               voxel_hash=pv.voxel_sha256(load_volume(p)))
    assert pv.is_defaced(a) and pv.is_defaced(b)
    pv.sidecar_path(b).write_bytes(pv.sidecar_path(a).read_bytes())
    assert not pv.is_defaced(b) and "does not match its defacing record b.deface.json" in pv.defacing_problem(b)
    assert "re-run `fedimg deface`" in pv.defacing_problem(b)
    a.write_bytes(b.read_bytes())  # image replaced after defacing, record kept
    assert not pv.is_defaced(a)


def test_written_hash_equals_a_fresh_reads_hash(tmp_path):
    """``written_voxel_sha256`` (header read back, voxels from memory) == the hash of reading the file."""
    from fedimg.imageio.volume import save_like

    rng = np.random.default_rng(1)
    aff = np.array([[-0.9375, 0.01, 0.0, 91.23456], [0.0, 0.9375, 0.02, -126.00049], [0.0, -0.03, 1.2, -72.4999], [0, 0, 0, 1]])
    cases = {  # stored dtype, scaling, output suffix
        "int16_scaled": (rng.integers(-50, 900, (9, 10, 11)).astype(">i2"), (2.5, -3.0), ".nii.gz"),
        "uint8": (rng.integers(0, 255, (9, 10, 11)).astype(np.uint8), (1.0, 0.0), ".nii"),
        "float32": (rng.normal(size=(9, 10, 11)).astype(np.float32), (1.0, 0.0), ".nii.gz"),
        "float64": (rng.normal(size=(9, 10, 11)), (1.0, 0.0), ".nii"),
    }
    for name, (data, (slope, inter), suffix) in cases.items():
        src = tmp_path / f"{name}_in.nii.gz"
        img = nib.Nifti1Image(data, aff)
        img.header.set_slope_inter(slope, inter)
        nib.save(img, str(src))
        vol = load_volume(src)
        raw = vol.raw.copy()
        raw.flat[::7] = 0  # the "defaced" voxels
        out = tmp_path / f"{name}_out{suffix}"
        save_like(vol, raw, out, descrip=b"t")
        assert pv.written_voxel_sha256(out, raw) == pv.voxel_sha256(load_volume(out, require_signal=False)), name
        assert pv.written_voxel_sha256(out, vol.raw) != pv.voxel_sha256(load_volume(out, require_signal=False)), name
