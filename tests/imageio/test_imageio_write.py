"""NIfTI writers: label maps on a reference grid and reproducible ``.nii.gz`` bytes; all atomic."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from fedimg.imageio.nifti import read_volume
from fedimg.imageio.write import nifti_gz_bytes, save_labels_like, write_nifti_gz


def test_nifti_gz_bytes_reproducible_and_readable(tmp_path):
    data = (np.arange(6 * 7 * 8) % 50).reshape(6, 7, 8).astype(np.int16)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    a = nifti_gz_bytes(data, aff, descrip=b"synthetic")
    assert a == nifti_gz_bytes(data, aff, descrip=b"synthetic")
    assert a[4:8] == b"\0\0\0\0"  # gzip time stamp 0: same bytes whenever written
    p = write_nifti_gz(tmp_path / "sub" / "x.nii.gz", data, aff, descrip=b"synthetic")
    assert p.read_bytes() == a and gzip.decompress(a)[:4] == (348).to_bytes(4, "little")
    back = nib.load(str(p))
    assert back.get_data_dtype() == np.int16 and np.array_equal(np.asarray(back.dataobj), data)
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 1
    assert back.header.get_xyzt_units()[0] == "mm"
    assert bytes(back.header["descrip"]).rstrip(b"\0") == b"synthetic"
    assert [f.name for f in p.parent.iterdir()] == ["x.nii.gz"]  # no temp file left behind


def test_save_labels_like_copies_the_reference_grid(tmp_path):
    aff = np.array([[-1.2, 0, 0, 10], [0, 1.2, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1.0]])
    ref_img = nib.Nifti1Image(np.zeros((9, 10, 11), np.float32), aff)
    ref_img.header.set_qform(aff, code=1)
    ref_img.header.set_sform(aff, code=4)
    ref_img.header.set_xyzt_units("mm", "sec")
    ref = tmp_path / "t1.nii.gz"
    nib.save(ref_img, str(ref))
    labels = np.zeros((9, 10, 11), np.uint8)
    labels[2:4, 3:5, 4:6] = 4
    out = save_labels_like(tmp_path / "pred.nii.gz", labels, ref, descrip=b"fedimg predict: BraTS labels")
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.uint8 and np.array_equal(np.asarray(back.dataobj), labels)
    np.testing.assert_allclose(back.affine, aff, atol=1e-6)
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 4
    assert back.header.get_xyzt_units() == ("mm", "sec")
    assert bytes(back.header["descrip"]).rstrip(b"\0") == b"fedimg predict: BraTS labels"
    arr, _ = read_volume(out, dtype=None)
    assert set(np.unique(arr).tolist()) == {0, 4}


def test_save_labels_like_refuses_another_grid(tmp_path):
    ref = tmp_path / "t1.nii"
    nib.save(nib.Nifti1Image(np.zeros((9, 10, 11), np.float32), np.eye(4)), str(ref))
    with pytest.raises(ValueError, match="differs from reference"):
        save_labels_like(tmp_path / "pred.nii.gz", np.zeros((9, 10, 12), np.uint8), ref, descrip=b"x")
    assert not (tmp_path / "pred.nii.gz").exists()
