"""Reading volumes: ``.nii``, ``.nii.gz`` and NRRD, and damaged or 2-D files refused naming the file."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.errors import InputError
from fedimg.imageio import load_volume, read_volume
from fedimg.imageio.nrrd import read_nrrd
from fedimg.imageio.nifti import check_finite, check_same_grid, open_nifti, read_voxels, spatial_shape

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
AFFINE = np.diag([2.0, 1.5, 3.0, 1.0])


def _save(path: Path, data, affine=AFFINE) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def _ramp(shape=(9, 10, 11), dtype=np.int16) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) % 97).reshape(shape).astype(dtype)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".NII.GZ"])
def test_read_volume_nifti(tmp_path, suffix):
    data = _ramp()
    p = _save(tmp_path / f"t1{suffix}", data)
    arr, affine = read_volume(p)
    assert arr.dtype == np.float32 and arr.shape == data.shape
    np.testing.assert_array_equal(arr, data.astype(np.float32))
    np.testing.assert_allclose(affine, AFFINE)
    assert affine.dtype == np.float64
    raw, _ = read_volume(p, dtype=None)
    assert raw.dtype == np.int16 and np.array_equal(raw, data)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_load_volume_nifti(tmp_path, suffix):
    data = _ramp()
    vol = load_volume(_save(tmp_path / f"t1{suffix}", data))
    assert vol.raw.dtype == np.int16 and np.array_equal(vol.raw, data) and vol.nifti is not None
    np.testing.assert_allclose(vol.affine, AFFINE)
    np.testing.assert_allclose(vol.spacing, [2.0, 1.5, 3.0])


def test_load_volume_nrrd():
    vol = load_volume(MRI / "brain1_image.nrrd")
    assert vol.shape == (256, 256, 25) and vol.raw.dtype == np.int16
    assert vol.nifti is None and vol.nrrd_header is not None and vol.nrrd_header.startswith(b"NRRD000")
    data, affine, _ = read_nrrd(MRI / "brain1_image.nrrd")
    assert np.array_equal(vol.raw, data) and np.allclose(vol.affine, affine)


def test_read_volume_4d_channels(tmp_path):
    data = np.stack([np.full((8, 9, 10), c, np.float32) for c in range(4)], axis=-1)
    arr, _ = read_volume(_save(tmp_path / "msd.nii.gz", data), channels=("FLAIR", "T1w", "t1gd", "T2w"))
    assert arr.shape == (8, 9, 10, 4) and arr[0, 0, 0].tolist() == [0, 1, 2, 3]
    with pytest.raises(InputError, match=r"msd.nii.gz: is 4-D .*expected a 3-D volume"):
        read_volume(tmp_path / "msd.nii.gz")


def _truncated_gzip(path: Path) -> Path:
    _save(path, np.random.default_rng(0).random((40, 40, 40)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_gzip_refused_naming_the_file(tmp_path, hashed):
    p = _truncated_gzip(tmp_path / "cut.nii.gz")
    check = hashed(p)
    with pytest.raises(InputError) as err:
        read_volume(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: ") and "corrupt or truncated" in msg and "\n" not in msg, msg
    with pytest.raises(InputError, match=r"cut.nii.gz: image cannot be read .*corrupt or truncated"):
        load_volume(p)
    check.assert_unchanged()


def test_not_gzip_refused_naming_the_file(tmp_path):
    p = tmp_path / "junk.nii.gz"
    p.write_bytes(b"this is not a NIfTI file at all" * 20)
    with pytest.raises(InputError, match=r"junk.nii.gz: is not a readable NIfTI file: corrupt, truncated"):
        open_nifti(p)


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 1)])
def test_two_d_refused_naming_the_file(tmp_path, shape):
    p = _save(tmp_path / "slice.nii.gz", np.ones(shape, np.float32))
    with pytest.raises(InputError, match=r"slice.nii.gz: .*2-D.*expected a 3-D volume"):
        read_volume(p)
    with pytest.raises(InputError, match=r"slice.nii.gz: image is a 2-D slice"):
        load_volume(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.nii.gz: does not exist"):
        read_volume(tmp_path / "nope.nii.gz")


def test_nan_voxels_counted(tmp_path):
    d = np.ones((8, 9, 10), np.float32)
    d[1, 2, 3] = np.nan
    d[0, 0, 0] = np.inf
    with pytest.raises(InputError, match=r"nan.nii.gz: has 2 NaN/Inf voxel\(s\) in the image"):
        read_volume(_save(tmp_path / "nan.nii.gz", d))
    with pytest.raises(InputError, match=r"x.nii: has 1 NaN/Inf voxel\(s\) in the label map"):
        check_finite(np.array([0.0, np.nan]), tmp_path / "x.nii", "label map")


def test_grid_checks(tmp_path):
    ref = _save(tmp_path / "a_t1.nii.gz", _ramp())
    img_ref = open_nifti(ref)
    shape = spatial_shape(img_ref, ref)
    other = open_nifti(_save(tmp_path / "a_t2.nii.gz", _ramp((9, 10, 12))))
    with pytest.raises(InputError, match=r"a_t2.nii.gz: has shape \(9, 10, 12\) but a_t1.nii.gz has \(9, 10, 11\)"):
        check_same_grid(shape, img_ref.affine, ref, other, tmp_path / "a_t2.nii.gz", spatial_shape(other, "a_t2"))
    moved = AFFINE.copy()
    moved[0, 3] = 0.5
    other = open_nifti(_save(tmp_path / "a_fl.nii.gz", _ramp(), moved))
    with pytest.raises(InputError, match=r"a_fl.nii.gz: has a different affine from a_t1.nii.gz \(max difference 0.5\)"):
        check_same_grid(shape, img_ref.affine, ref, other, tmp_path / "a_fl.nii.gz", shape)
    close = AFFINE.copy()
    close[0, 3] = 1e-4  # rounding differences between modalities are accepted
    other = open_nifti(_save(tmp_path / "a_ok.nii.gz", _ramp(), close))
    check_same_grid(shape, img_ref.affine, ref, other, tmp_path / "a_ok.nii.gz", shape)
    np.testing.assert_array_equal(read_voxels(other, tmp_path / "a_ok.nii.gz"), _ramp())


def test_unsupported_suffix_refused(tmp_path):
    p = tmp_path / "scan.mha"
    p.write_bytes(b"ObjectType = Image\n")
    with pytest.raises(InputError, match=r"scan.mha: image is not NIfTI \(.nii/.nii.gz\) or NRRD"):
        load_volume(p)


def test_lean_nibabel_import_hides_pydicom_only_meanwhile():
    """nibabel imported with pydicom hidden (DICOM extensions unparsed); pydicom importable afterwards; a no-op twice."""
    from _fresh_python import run_python

    code = ("import sys; from fedimg.imageio import import_nibabel_without_pydicom as f; first = f();"
            "import nibabel.nifti1 as n1; hidden = not n1.have_dicom; import pydicom; print(first, hidden, f())")
    run = run_python(code)
    assert run.returncode == 0, run.stderr[-800:]
    assert run.stdout.split() == ["True", "True", "False"]
