"""One-call gzip for .nii.gz (``fedimg.imageio.gz``): same voxels and header bytes as nibabel, ISA-L when installed."""

from __future__ import annotations

import gzip
import importlib.util

import nibabel as nib
import numpy as np
import pytest

from fedimg.errors import InputError
from fedimg.imageio import gz
from fedimg.imageio.volume import load_volume, save_like


def test_isal_runs_when_installed():
    assert gz.BACKEND == ("isal" if importlib.util.find_spec("isal") else "zlib")


@pytest.mark.parametrize("dtype", ["<i2", ">i2", "<f4", "u1"])
def test_read_matches_nibabel_and_write_matches_its_uncompressed_bytes(tmp_path, dtype):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 200, (17, 19, 21)).astype(dtype)
    img = nib.Nifti1Image(data, np.diag([0.9, 1.0, 1.2, 1.0]))
    if dtype == "<i2":
        img.header.set_slope_inter(2.0, -3.0)
    src = tmp_path / "in.nii.gz"
    nib.save(img, str(src))
    vol = load_volume(src)
    ref = np.asanyarray(nib.load(str(src)).dataobj.get_unscaled())
    assert vol.raw.dtype == ref.dtype and np.array_equal(vol.raw, ref) and vol.raw.flags.f_contiguous
    assert vol.raw.flags.writeable and (vol.slope, vol.inter) == ((2.0, -3.0) if dtype == "<i2" else (1.0, 0.0))
    out = save_like(vol, vol.raw, tmp_path / "out.nii.gz", descrip=b"t")
    plain = save_like(vol, vol.raw, tmp_path / "out.nii", descrip=b"t")  # nibabel's own writer
    assert gzip.decompress(out.read_bytes()) == plain.read_bytes()


def test_truncated_gzip_is_one_clear_input_error(tmp_path):
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(4000, dtype=np.int16).reshape(10, 20, 20), np.eye(4)), str(src))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(src.read_bytes()[:-200])
    with pytest.raises(InputError, match="cut.nii.gz.*corrupt or truncated"):
        load_volume(cut)


def test_multi_member_gzip_reads_like_nibabel(tmp_path):
    """A .nii.gz of several gzip members (as ``bgzip`` writes them, zero padding between) reads whole."""
    data = np.arange(6000, dtype=np.int16).reshape(10, 20, 30)
    src = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(src))
    raw = gzip.decompress(src.read_bytes())
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(b"".join(gzip.compress(raw[i:i + 5000]) + b"\0" * 8 for i in range(0, len(raw), 5000)))
    assert np.array_equal(load_volume(multi).raw, np.asanyarray(nib.load(str(multi)).dataobj)) and \
        np.array_equal(load_volume(multi).raw, data)


def test_settle_vector_state_changes_no_value_and_is_called_after_isal():
    import numpy as np

    from fedimg.imageio import gz

    data = np.arange(1000, dtype=np.int16).tobytes()
    assert gz.decompress(gz.compress(data)) == data
    before = np.random.default_rng(0).random((8, 4, 8, 4), dtype=np.float32)
    expect = before.mean((1, 3))
    gz.settle_vector_state()
    assert np.array_equal(before.mean((1, 3)), expect) and gz._SETTLE.max() == 0.0  # nothing changed, no state kept


@pytest.mark.parametrize("dtype", ["<f4", "u1"])
def test_read_only_view_holds_the_same_voxels(tmp_path, dtype):
    """``writable=False`` (the defacing template): the same voxels as nibabel and the writable read, not copied."""
    data = np.random.default_rng(2).integers(0, 200, (13, 11, 9)).astype(dtype)
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(src))
    img = nib.load(str(src))
    view, copy = gz.read_unscaled(img, src, writable=False), gz.read_unscaled(img, src)
    ref = np.asanyarray(img.dataobj.get_unscaled())
    assert view.dtype == copy.dtype == ref.dtype and np.array_equal(view, ref) and np.array_equal(copy, ref)
    assert not view.flags.writeable and copy.flags.writeable and view.flags.f_contiguous


def test_template_maps_equal_nibabels_read():
    """The template's three maps (read through the read-only view) are nibabel's values, cast as before."""
    from fedimg.deface.template import BRAIN_PROTECT_NAME, FACEMASK_NAME, TEMPLATE_NAME, asset_path, load_template

    t = load_template()
    read = {n: np.asanyarray(nib.load(str(asset_path(n))).dataobj.get_unscaled()) for n in
            (TEMPLATE_NAME, FACEMASK_NAME, BRAIN_PROTECT_NAME)}
    assert np.array_equal(t.intensity, read[TEMPLATE_NAME].astype(np.float32)) and t.intensity.flags.c_contiguous
    assert np.array_equal(t.face, (read[FACEMASK_NAME] < 0.5).astype(np.float32))
    assert np.array_equal(t.brain, (read[BRAIN_PROTECT_NAME] > 0).astype(np.float32))
