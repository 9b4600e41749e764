"""Tile stores: PatchCamelyon-style HDF5 input, refused bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fedimg.errors import InputError
from fedimg.pathology.store import load_tile_set


def test_reads_patchcamelyon_style_hdf5(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 96, 96, 3), dtype=np.uint8)
    y = rng.integers(0, 2, (10, 1, 1, 1)).astype(np.uint8)
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_x.h5", "w") as f:
        f.create_dataset("x", data=x)
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_y.h5", "w") as f:
        f.create_dataset("y", data=y)
    ts = load_tile_set(tmp_path / "camelyonpatch_level_2_split_valid_x.h5")
    np.testing.assert_array_equal(ts.x, x)
    np.testing.assert_array_equal(ts.y, y.reshape(-1))
    with h5py.File(tmp_path / "combined.h5", "w") as f:
        f.create_dataset("x", data=x)
        f.create_dataset("y", data=y[:7])
    with pytest.raises(InputError, match="10 tiles but 7 labels"):
        load_tile_set(tmp_path / "combined.h5")
    with h5py.File(tmp_path / "float.h5", "w") as f:
        f.create_dataset("x", data=x.astype(np.float32))
    with pytest.raises(InputError, match="uint8"):
        load_tile_set(tmp_path / "float.h5")
    (tmp_path / "trunc.h5").write_bytes((tmp_path / "combined.h5").read_bytes()[:3000])
    with pytest.raises(InputError, match="corrupt|truncated|HDF5"):
        load_tile_set(tmp_path / "trunc.h5")
