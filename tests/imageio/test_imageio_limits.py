"""Header-first refusal: a file whose header declares too much is refused before any voxel is read."""

from __future__ import annotations

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from fedimg.errors import ConfigError, InputError
from fedimg.imageio.limits import Limits, check_declared, default_limits
from fedimg.imageio.nifti import open_nifti, read_volume
from fedimg.imageio.nrrd import read_nrrd
from fedimg.imageio.volume import load_volume


def _huge_header(path, shape=(4096, 4096, 4096), dtype=np.float32, *, gz=False):
    """A valid NIfTI-1 header declaring ``shape`` followed by 4 bytes of data (a truncated file)."""
    img = nib.Nifti1Image(np.zeros((2, 2, 2), dtype), np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header.set_data_shape(shape)
    raw = img.header.binaryblock + b"\0" * 4 + b"\0" * 4
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["nii", "nii.gz"])
@pytest.mark.parametrize("reader", ["open_nifti", "read_volume", "load_volume"])
def test_enormous_declared_volume_refused_unread(tmp_path, gz, reader):
    path = _huge_header(tmp_path / ("huge.nii.gz" if gz else "huge.nii"), gz=gz)
    before = path.read_bytes()
    fn = {"open_nifti": open_nifti, "read_volume": read_volume, "load_volume": load_volume}[reader]
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as err:
            fn(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert str(path) in msg and "4096 x 4096 x 4096" in msg and "limit" in msg and "not read" in msg
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB while refusing a header"
    assert path.read_bytes() == before


def test_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((64, 64, 64), np.int16), np.eye(4)), str(path))  # 1 MiB as float32
    assert read_volume(path)[0].shape == (64, 64, 64)
    with pytest.raises(InputError, match="above the 0.5 MiB limit"):
        open_nifti(path, limits=Limits(max_mb=0.5))
    monkeypatch.setenv("FEDIMG_MAX_VOLUME_MB", "0.5")
    assert default_limits().max_mb == 0.5
    with pytest.raises(InputError, match="FEDIMG_MAX_VOLUME_MB"):
        load_volume(path)
    monkeypatch.setenv("FEDIMG_MAX_VOLUME_MB", "lots")
    with pytest.raises(ConfigError, match="FEDIMG_MAX_VOLUME_MB"):
        default_limits()
    with pytest.raises(ConfigError):
        Limits(max_mb=0)


@pytest.mark.parametrize("shape, dtype, words", [
    ((0, 10, 10), np.int16, "impossible dimensions"),
    ((100000, 2, 2), np.int16, "along one axis"),
    ((8, 8, 8), np.complex64, "complex"),
    ((8, 8, 8), np.float64, None),
])
def test_declared_dims_and_types(tmp_path, shape, dtype, words):
    if words is None:
        assert check_declared(tmp_path / "x", shape, dtype) == 512
        return
    with pytest.raises(InputError, match=words):
        check_declared(tmp_path / "x.nii", shape, dtype)


def _write(path, img):
    nib.save(img, str(path))
    return path


def test_bad_affine_and_scaling_refused_from_header(tmp_path):
    data = np.ones((8, 8, 8), np.int16)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_qform(None, code=0)
    img.header.set_sform(np.eye(4), code=1)
    img.header["srow_z"] = 0.0  # a singular sform, as a damaged header has it
    p = tmp_path / "singular.nii"
    p.write_bytes(img.header.binaryblock + b"\0" * 4 + data.tobytes())
    with pytest.raises(InputError, match="invalid .*affine"):
        open_nifti(p)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header["scl_slope"] = np.inf
    img.header["scl_inter"] = 0
    raw = img.header.binaryblock + b"\0" * 4 + data.tobytes()
    p = tmp_path / "slope.nii"
    p.write_bytes(raw)
    with pytest.raises(InputError, match="non-finite scl_slope"):
        read_volume(p)


def test_uncompressed_file_shorter_than_declared(tmp_path):
    p = _write(tmp_path / "ok.nii", nib.Nifti1Image(np.ones((16, 16, 16), np.float32), np.eye(4)))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"truncated \(2000 bytes, its header declares"):
        open_nifti(cut)


def _nrrd(path, sizes, body=b"", encoding="raw", typ="short"):
    hdr = f"NRRD0004\ntype: {typ}\ndimension: {len(sizes)}\nsizes: {' '.join(map(str, sizes))}\nencoding: {encoding}\n"
    path.write_bytes((hdr + "endian: little\n\n").encode() + body)
    return path


def test_nrrd_header_first(tmp_path):
    huge = _nrrd(tmp_path / "huge.nrrd", (5000, 5000, 5000), b"\0" * 16)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="above the .* limit; it was not read"):
            load_volume(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20
    with pytest.raises(InputError, match="truncated"):
        read_nrrd(_nrrd(tmp_path / "short.nrrd", (8, 8, 8), b"\0" * 100))
    p = tmp_path / "dims.nrrd"
    p.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 8 8\nencoding: raw\n\n" + b"\0" * 128)
    with pytest.raises(InputError, match="dimension 3 but lists 2"):
        read_nrrd(p)
    # a gzip body that inflates beyond the declared size is cut at the declared size
    body = gzip.compress(np.arange(512 * 4, dtype="<i2").tobytes())
    data, _, _ = read_nrrd(_nrrd(tmp_path / "bomb.nrrd", (8, 8, 8), body, encoding="gzip"))
    assert data.shape == (8, 8, 8) and int(data[1, 0, 0]) == 1


def test_cli_refuses_enormous_header(tmp_path, capsys):
    from fedimg.cli import main

    src = _huge_header(tmp_path / "huge.nii.gz", gz=True)
    rc = main(["deface", str(src), "-o", str(tmp_path / "out.nii.gz"), "--no-png"])
    err = capsys.readouterr().err
    assert rc == 2 and str(src) in err and "limit" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.nii.gz").exists()
