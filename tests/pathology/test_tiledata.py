"""The tile cache: labelled tiles only, a stratified seeded split, stain normalisation once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.errors import InputError
from fedimg.pathology.config import TileTrainConfig
from fedimg.pathology.store import TileSet, write_tile_set
from fedimg.pathology.tiledata import prepare_tile_data

SMALL = {"model": "resnet10", "width": 0.25, "batch_size": 16, "lr": 3e-3, "warmup_epochs": 0, "seed": 0}


def test_unlabelled_tiles_are_refused(tmp_path):
    write_tile_set(tmp_path, TileSet(x=np.zeros((4, 16, 16, 3), np.uint8), y=np.full(4, -1)))
    with pytest.raises(InputError, match="no labelled tiles"):
        prepare_tile_data(tmp_path, TileTrainConfig(**SMALL), torch.device("cpu"))


def test_split_is_stratified_seeded_and_cached_on_the_device(tmp_path):
    y = np.array([0] * 10 + [1] * 6)
    x = np.arange(16, dtype=np.uint8)[:, None, None, None] * np.ones((16, 8, 8, 3), np.uint8)
    write_tile_set(tmp_path, TileSet(x=x, y=y))
    cfg = TileTrainConfig(**SMALL, val_fraction=0.25)
    a = prepare_tile_data(tmp_path, cfg, torch.device("cpu"))
    b = prepare_tile_data(tmp_path, cfg, torch.device("cpu"))
    assert (a.num_train, a.num_val) == (12, 4) and a.x_train.shape == (12, 3, 8, 8) and a.x_train.dtype == torch.uint8
    assert sorted(a.y_val.tolist()) == [0, 0, 1, 1]  # round(10 * 0.25) = 2 and round(6 * 0.25) = 2 per class
    assert torch.equal(a.x_val, b.x_val) and a.fingerprint == b.fingerprint
    # every tile lands in exactly one split, with its own label
    seen = sorted(a.x_train[:, 0, 0, 0].tolist() + a.x_val[:, 0, 0, 0].tolist())
    assert seen == list(range(16))
    assert all(int(v) == int(y[int(t)]) for t, v in zip(a.x_train[:, 0, 0, 0], a.y_train))
