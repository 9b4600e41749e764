"""Streamed tiles: every training tile once per epoch with its own label, seeded block
shuffling, capped epochs, evaluation in order, and the streamed site data matching the cached one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.errors import InputError
from fedimg.pathology.config import TileTrainConfig
from fedimg.pathology.store import TileSet, TileStoreWriter, write_tile_set
from fedimg.pathology.tiledata import prepare_tile_data, split_batches
from fedimg.pathology.tilestream import StoreRows, StreamEpoch, iter_batches

CPU = torch.device("cpu")
SMALL = {"model": "resnet10", "width": 0.25, "batch_size": 8, "lr": 3e-3, "warmup_epochs": 0, "seed": 0, "amp": "fp32"}


def _store(folder, n=120, s=4):
    """Tiles whose pixels hold their own row number (mod 256) in channel 0 and row // 256 in channel 1."""
    x = np.zeros((n, s, s, 3), np.uint8)
    x[..., 0] = (np.arange(n) % 256)[:, None, None]
    x[..., 1] = (np.arange(n) // 256)[:, None, None]
    with TileStoreWriter(folder, tile_size=s) as w:
        for a in range(0, n, 7):  # appended in uneven pieces, as tile rows arrive
            w.append(x[a : a + 7], y=np.arange(a, min(a + 7, n)) % 2)
    return folder / "tiles.h5"


def _rows_of(xb):
    return (xb[:, 0, 0, 0].long() + 256 * xb[:, 1, 0, 0].long()).tolist()


def _epoch(parts, y, seed, steps, batch=8, **kw):
    return StreamEpoch(parts, y, steps=steps, batch_size=batch, generator=torch.Generator().manual_seed(seed), device=CPU,
                       block_tiles=5, buffer_bytes=2 * 3 * 5 * 48, **kw)  # windows of 3 blocks of 5 tiles


def test_an_epoch_visits_every_tile_once_with_its_label_in_a_seeded_block_shuffle(tmp_path):
    path = _store(tmp_path)
    rows = np.setdiff1d(np.arange(120), np.arange(0, 120, 9))  # a train split: not every store row
    parts = [StoreRows(path, rows[:60]), StoreRows(path, rows[60:])]  # two parts, as pooled sites are
    y = torch.as_tensor(rows * 10)  # labels distinguishable per tile
    steps = -(-len(rows) // 8)
    batches = list(_epoch(parts, y, 0, steps))
    assert len(batches) == steps and all(len(yb) == 8 for _, yb in batches[:-1])
    seen = [r for xb, _ in batches for r in _rows_of(xb)]
    assert sorted(seen) == rows.tolist()  # every training tile exactly once
    assert all(r * 10 == int(v) for xb, yb in batches for r, v in zip(_rows_of(xb), yb))  # with its own label
    assert seen != sorted(seen)  # shuffled ...
    assert [_rows_of(xb) for xb, _ in _epoch(parts, y, 0, steps)] == [_rows_of(xb) for xb, _ in batches]  # ... by the seed
    assert [_rows_of(xb) for xb, _ in _epoch(parts, y, 1, steps)] != [_rows_of(xb) for xb, _ in batches]
    spread = [np.ptp(_rows_of(xb)) for xb, _ in batches[:-1]]
    assert max(spread) > 15  # a batch mixes tiles of several blocks of the window
    no_prefetch = _epoch(parts, y, 0, steps, prefetch=False)
    assert [_rows_of(xb) for xb, _ in no_prefetch] == [_rows_of(xb) for xb, _ in batches]


def test_a_capped_epoch_stops_and_evaluation_reads_in_order(tmp_path):
    path = _store(tmp_path, n=300)
    parts = [StoreRows(path, np.arange(0, 300, 2))]
    y = torch.arange(150)
    capped = list(_epoch(parts, y, 0, steps=3))
    assert len(capped) == 3 and len({r for xb, _ in capped for r in _rows_of(xb)}) == 24
    evals = list(iter_batches(parts, y, 64, CPU))
    assert [len(yb) for _, yb in evals] == [64, 64, 22]
    assert [r for xb, _ in evals for r in _rows_of(xb)] == list(range(0, 300, 2))
    assert torch.equal(torch.cat([yb for _, yb in evals]), y)


def test_streamed_site_data_matches_the_cached_one(tmp_path):
    from fedimg.pathology.models import build_tile_model
    from fedimg.tasks.tiles_train import evaluate

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    write_tile_set(tmp_path, TileSet(x=x, y=np.array([0, 1, -1, 1] * 10)))
    cached = prepare_tile_data(tmp_path, TileTrainConfig(**SMALL, stream="off"), CPU)
    streamed = prepare_tile_data(tmp_path, TileTrainConfig(**SMALL, stream="on"), CPU)
    assert not cached.streamed and streamed.streamed and cached.fingerprint == streamed.fingerprint
    assert (streamed.num_train, streamed.num_val) == (cached.num_train, cached.num_val) == (24, 6)
    for split in ("train", "val"):
        xs, ys = zip(*split_batches(streamed, split, 7))
        assert torch.equal(torch.cat(xs), cached.x_train if split == "train" else cached.x_val)
        assert torch.equal(torch.cat(ys), cached.y_train if split == "train" else cached.y_val)
    model = build_tile_model(TileTrainConfig(**SMALL))
    cfg = TileTrainConfig(**SMALL, eval_batch_size=5)
    assert evaluate(model, streamed, cfg) == pytest.approx(evaluate(model, cached, cfg))


def test_a_store_gone_while_streaming_names_the_file(tmp_path):
    path = _store(tmp_path)
    epoch = _epoch([StoreRows(path, np.arange(120))], torch.arange(120), 0, steps=15)
    path.unlink()
    with pytest.raises(InputError, match="tiles.h5"):
        list(epoch)
