"""Batch mode (BIDS tree, BraTS case folders), --apply-to, --mode blur, and the training gate."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from fedimg.cli import main
from fedimg.imageio.provenance import is_defaced, sidecar_path, voxel_sha256
from fedimg.imageio.volume import load_volume


def _changed(src, dst) -> np.ndarray:
    return np.asarray(nib.load(str(src)).dataobj) != np.asarray(nib.load(str(dst)).dataobj)


def test_bids_tree_mirrored_and_orientation_independent(bids_root, tmp_path, hashed):
    checker = hashed(bids_root)
    out = tmp_path / "bids_defaced"
    assert main(["deface", str(bids_root), "-o", str(out), "--no-png"]) == 0
    checker.assert_unchanged()
    o1 = out / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    o2 = out / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T1w.nii.gz"
    assert o1.is_file() and o2.is_file() and (out / "dataset_description.json").is_file()
    assert is_defaced(o1) and is_defaced(o2)
    summary = json.loads((out / "deface_summary.json").read_text())
    assert summary["ok"] == 2 and summary["failed"] == []
    # sub-02 is sub-01 stored with its first axis flipped (same world image): same voxels removed
    c1 = _changed(bids_root / "sub-01" / "anat" / "sub-01_T1w.nii.gz", o1)
    c2 = _changed(bids_root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T1w.nii.gz", o2)
    assert c1.sum() > 1000 and np.array_equal(c1, c2[::-1])


def test_brats_site_layout(brats_site, tmp_path, hashed):
    from fedimg.data.discover import discover
    from fedimg.errors import InputError

    checker = hashed(brats_site)
    out = tmp_path / "site_defaced"
    stale = out / "case-000" / "case-000_t1.qc.png"  # an earlier run's picture
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old picture")
    assert main(["deface", str(brats_site), "-o", str(out), "--layout", "brats"]) == 0
    checker.assert_unchanged()
    case_in, case_out = brats_site / "case-000", out / "case-000"
    seg = np.asarray(nib.load(str(case_in / "case-000_seg.nii.gz")).dataobj) > 0
    ref = _changed(case_in / "case-000_t1.nii.gz", case_out / "case-000_t1.nii.gz")
    t1 = np.asarray(nib.load(str(case_in / "case-000_t1.nii.gz")).dataobj)
    assert ref.sum() > 1000
    for m in ("t1", "t1ce", "t2", "flair"):
        src, dst = case_in / f"case-000_{m}.nii.gz", case_out / f"case-000_{m}.nii.gz"
        changed = _changed(src, dst)
        out_data = np.asarray(nib.load(str(dst)).dataobj)
        # one registration for all modalities: the t1's removed voxels are zero in every output,
        # and nothing changed outside them (voxels already zero in the t1 cannot show as changed)
        assert np.all(out_data[ref] == 0), m
        assert not (changed & ~(ref | (t1 == 0))).any(), m
        assert not (changed & seg).any()  # tumour label protected
        record = json.loads(sidecar_path(dst).read_text())
        assert is_defaced(dst) and record["reference"] == "case-000_t1.nii.gz"
        # the hash recorded from the array written is the hash of a fresh read of the file
        assert record["voxel_sha256"] == voxel_sha256(load_volume(dst, require_signal=False)), m
    assert (case_out / "case-000_seg.nii.gz").read_bytes() == (case_in / "case-000_seg.nii.gz").read_bytes()
    assert not stale.exists()  # --qc-png fail (default): no picture for a pass, and no stale one left
    assert (out / "site.json").read_text() == (brats_site / "site.json").read_text()
    # the training gate: defaced output passes, the raw input is refused naming --allow-identifiable
    assert len(discover(out, allow_identifiable=False)) == 1
    # ... and it checks contents: the t1's record copied onto the t2, or a t2 voxel edited, is refused
    t2_out, t2_side = case_out / "case-000_t2.nii.gz", sidecar_path(case_out / "case-000_t2.nii.gz")
    kept_side, kept_img = t2_side.read_bytes(), t2_out.read_bytes()
    t2_side.write_bytes(sidecar_path(case_out / "case-000_t1.nii.gz").read_bytes())
    with pytest.raises(InputError, match="case-000_t2.nii.gz: does not match its defacing record"):
        discover(out, allow_identifiable=False)
    t2_side.write_bytes(kept_side)
    nii = nib.load(str(t2_out))
    edited = np.asarray(nii.dataobj).copy()
    edited[edited.shape[0] // 2, -3, edited.shape[2] // 2] += 7  # e.g. the face pasted back, one voxel of it
    nib.save(nib.Nifti1Image(edited, nii.affine, nii.header), str(t2_out))
    with pytest.raises(InputError, match="changed after defacing"):
        discover(out, allow_identifiable=False)
    t2_out.write_bytes(kept_img)
    try:
        discover(brats_site, allow_identifiable=False)
    except InputError as exc:
        assert "--allow-identifiable" in str(exc)
    else:
        raise AssertionError("identifiable input accepted by the gate")


def test_apply_to_and_blur_mode(head_2mm, tmp_path, hashed, make_blob):
    img = nib.load(str(head_2mm))
    t2 = tmp_path / "t2.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(img.dataobj) * 0.5).astype(np.float32), img.affine), str(t2))
    seg = tmp_path / "seg.nii.gz"
    blob = make_blob(img.shape, img.affine)
    nib.save(nib.Nifti1Image(blob, img.affine), str(seg))
    checker = hashed(head_2mm, t2, seg)
    out = tmp_path / "out" / "t1_defaced.nii.gz"
    rc = main(["deface", str(head_2mm), "-o", str(out), "--apply-to", str(t2), "--protect", str(seg),
               "--mode", "blur", "--no-png"])
    assert rc == 0
    checker.assert_unchanged()
    t2_out = tmp_path / "out" / "t2_defaced.nii.gz"
    assert t2_out.is_file() and is_defaced(t2_out)
    assert nib.load(str(t2_out)).get_data_dtype() == np.float32
    c1, c2 = _changed(head_2mm, out), _changed(t2, t2_out)
    assert c1.sum() > 1000 and not (c1 & (blob > 0)).any() and not (c2 & (blob > 0)).any()
    # blur replaces, it does not zero: the removed region keeps smooth non-zero values
    b = np.asarray(nib.load(str(out)).dataobj)
    assert np.count_nonzero(b[c1]) > 0.3 * c1.sum()
    qc = json.loads((tmp_path / "out" / "t1_defaced.qc.json").read_text())
    assert qc["mode"] == "blur" and qc["user_protected_ml"] > 0


def test_batch_lists_failures_and_continues(bids_root, tmp_path):
    bad_root = tmp_path / "bids_bad"
    (bad_root / "sub-01" / "anat").mkdir(parents=True)
    (bad_root / "sub-02" / "anat").mkdir(parents=True)
    (bad_root / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(b"not a nifti at all")
    (bad_root / "sub-02" / "anat" / "sub-02_T1w.nii.gz").write_bytes(
        (bids_root / "sub-01" / "anat" / "sub-01_T1w.nii.gz").read_bytes())
    out = tmp_path / "out"
    rc = main(["deface", str(bad_root), "-o", str(out), "--no-png", "--fast"])
    assert rc == 2
    summary = json.loads((out / "deface_summary.json").read_text())
    assert summary["ok"] == 1 and len(summary["failed"]) == 1
    assert "sub-01_T1w.nii.gz" in summary["failed"][0]["error"]
    assert (out / "sub-02" / "anat" / "sub-02_T1w.nii.gz").is_file()


def test_output_inside_input_tree_refused(bids_root, capsys):
    rc = main(["deface", str(bids_root), "-o", str(bids_root / "derivatives")])
    assert rc == 2 and "inside the input folder" in capsys.readouterr().err
