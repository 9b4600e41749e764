"""The single-volume reader and writer: NRRD reading, reorientation, ``save_like``, ``load_volume`` checks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.imageio.nrrd import read_nrrd
from fedimg.imageio.volume import from_canonical, load_volume, save_like, to_canonical
from fedimg.errors import InputError

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"


def _write(path: Path, data, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def test_nrrd_reader_matches_simpleitk():
    sitk = pytest.importorskip("SimpleITK")
    data, affine, fields = read_nrrd(MRI / "brain1_image.nrrd")
    ref = sitk.ReadImage(str(MRI / "brain1_image.nrrd"))
    arr = sitk.GetArrayFromImage(ref).transpose(2, 1, 0)  # ITK arrays are z, y, x
    assert data.shape == arr.shape == (256, 256, 25)
    assert data.dtype == np.int16 and np.array_equal(data, arr)
    direction = np.array(ref.GetDirection()).reshape(3, 3) * np.array(ref.GetSpacing())
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = direction, ref.GetOrigin()
    assert np.allclose(np.diag([-1, -1, 1, 1]) @ lps, affine)  # LPS -> RAS
    lab, _, _ = read_nrrd(MRI / "brain1_label.nrrd")
    assert lab.dtype == np.int32 and int((lab > 0).sum()) == 4137


def test_canonical_round_trip():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 100, (9, 10, 11)).astype(np.int16)
    aff = np.array([[0, 0, -2.0, 5], [1.0, 0, 0, 3], [0, -1.5, 0, 1], [0, 0, 0, 1]])
    can, can_aff = to_canonical(data, aff)
    # world position of every voxel is unchanged
    i = np.array([3, 4, 5, 1.0])
    j = np.linalg.inv(can_aff) @ (aff @ i)
    assert can[tuple(np.rint(j[:3]).astype(int))] == data[3, 4, 5]
    from fedimg.imageio.volume import Volume

    vol = Volume(path=None, raw=data, affine=aff)
    assert np.array_equal(from_canonical(vol, can), data)


def test_save_like_keeps_header_dtype_scaling(tmp_path, scaled_nifti):
    src, data, aff = scaled_nifti
    vol = load_volume(src)
    assert vol.slope == 2.0 and vol.inter == -5.0
    raw = vol.raw.copy()
    raw[0] = 3
    out = save_like(vol, raw, tmp_path / "out.nii.gz", descrip=b"fedimg-defaced 0.1.0")
    back = nib.load(str(out))
    assert back.shape == data.shape and back.get_data_dtype() == np.int16
    assert np.allclose(back.affine, aff) and int(back.header["qform_code"]) == 1
    assert np.array_equal(np.asarray(back.dataobj.get_unscaled()), raw)
    assert back.dataobj.slope == 2.0 and back.dataobj.inter == -5.0
    assert bytes(back.header["descrip"]).startswith(b"fedimg-defaced")


def test_load_volume_errors_name_the_file(tmp_path):
    p = _write(tmp_path / "tiny.nii.gz", np.ones((4, 30, 30), np.float32))
    with pytest.raises(InputError, match="tiny.nii.gz: .*only 4 voxels"):
        load_volume(p)
