"""Tile training: learns the synthetic label above chance, exact resume, the federated task
interface, PatchCamelyon-style HDF5 input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from fedimg.errors import ConfigError, InputError
from fedimg.tasks import tiles as task
from fedimg.pathology.store import load_tile_set
from fedimg.pathology.train import TileTrainConfig, build_tile_model, evaluate, prepare_tile_data, train_one_round

SMALL = {"model": "resnet10", "width": 0.25, "batch_size": 16, "lr": 3e-3, "warmup_epochs": 0, "seed": 0}


def test_synthetic_sites_are_marked_and_differ(synth_sites):
    readme = (synth_sites[0].parent / "README.md").read_text()
    assert "synthetic" in readme.lower()
    a, b = (load_tile_set(s) for s in synth_sites)
    assert a.meta["synthetic"] is True and set(np.unique(a.y)) == {0, 1}
    assert a.x.shape == (96, 32, 32, 3)
    assert abs(a.y.mean() - b.y.mean()) > 0.1  # different label mix per site
    assert np.abs(a.x.reshape(-1, 3).mean(0) - b.x.reshape(-1, 3).mean(0)).max() > 2  # stain shift


@pytest.mark.slow
def test_classifier_learns_synthetic_label_above_chance(synth_sites):
    torch.manual_seed(0)
    cfg = TileTrainConfig(epochs=10, val_fraction=0.25, **SMALL)
    data = prepare_tile_data(synth_sites[1], cfg, torch.device("cpu"))
    model = build_tile_model(cfg)
    before = evaluate(model, data, cfg)
    metrics, n = train_one_round(model, data, cfg)
    after = evaluate(model, data, cfg)
    train_fit = evaluate(model, data, cfg, split="train")
    print(f"val AUC {before['auc']:.3f} -> {after['auc']:.3f}, acc {after['accuracy']:.3f}, train AUC {train_fit['auc']:.3f}")
    assert n == data.num_train == 72 and metrics["tiles_per_s"] > 0
    assert after["auc"] > 0.75
    assert after["auc"] > before["auc"] + 0.1


def test_fit_resume_is_exact(tmp_path, synth_sites):
    from fedimg.pathology.fit import fit_tiles, load_tile_model

    cfg = TileTrainConfig(epochs=3, max_tiles=48, steps_per_epoch=2, **SMALL)
    dev = torch.device("cpu")
    fit_tiles(synth_sites[0], cfg, tmp_path / "a", device=dev, progress=False)
    fit_tiles(synth_sites[0], cfg, tmp_path / "b", device=dev, progress=False, stop_after=2)
    with pytest.raises(InputError, match="--resume"):
        fit_tiles(synth_sites[0], cfg, tmp_path / "b", device=dev, progress=False)
    fit_tiles(synth_sites[0], cfg, tmp_path / "b", device=dev, progress=False, resume=True)
    ea = json.loads((tmp_path / "a" / "metrics.json").read_text())["epochs"]
    eb = json.loads((tmp_path / "b" / "metrics.json").read_text())["epochs"]
    assert [e["loss"] for e in ea] == pytest.approx([e["loss"] for e in eb], rel=1e-6)
    for name in ("model.safetensors", "last.safetensors", "last.state.safetensors", "config.json", "telemetry.json"):
        assert (tmp_path / "b" / name).is_file()
    model, meta = load_tile_model(tmp_path / "b")
    assert meta["task"] == "tiles" and meta["model"] == "resnet10"


def test_federated_task_interface(synth_sites):
    cfg = task.config_from_dict({**SMALL, "epochs": 1, "max_tiles": 32})
    assert task.config_from_dict(cfg.to_dict()) == cfg and task.KEY_METRIC == "auc"
    model = task.build_model(cfg)
    data = task.load_site(synth_sites[0], cfg, torch.device("cpu"))
    global_sd = {k: v.clone().numpy() for k, v in model.state_dict().items()}
    metrics, n = task.train_one_round(model, data, cfg, epochs=1, global_params=global_sd, prox_mu=0.01)
    assert n == data.num_train > 0 and np.isfinite(metrics["loss"])
    moved = any(not np.allclose(v.numpy(), global_sd[k]) for k, v in model.state_dict().items() if v.is_floating_point())
    assert moved
    res = task.evaluate(model, data, cfg)
    assert set(res) >= {"auc", "accuracy", "loss"} and all(isinstance(v, float) for v in res.values())
    with pytest.raises(ConfigError, match="unknown"):
        task.config_from_dict({"modle": "resnet18"})


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


def test_unlabelled_tiles_are_refused(tmp_path):
    from fedimg.pathology.store import TileSet, write_tile_set

    write_tile_set(tmp_path, TileSet(x=np.zeros((4, 16, 16, 3), np.uint8), y=np.full(4, -1)))
    with pytest.raises(InputError, match="no labelled tiles"):
        prepare_tile_data(tmp_path, TileTrainConfig(**SMALL), torch.device("cpu"))
