"""The "tiles" task: learns the synthetic label above chance, exact resume of a train-tiles
run, the federated task interface, the trainer's hooks on the engine's epoch loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedimg.errors import ConfigError, InputError
from fedimg.tasks import tiles as task
from fedimg.tasks.tiles import TileTrainConfig, build_tile_model, prepare_tile_data, train_one_round
from fedimg.tasks.tiles_train import evaluate

SMALL = {"model": "resnet10", "width": 0.25, "batch_size": 16, "lr": 3e-3, "warmup_epochs": 0, "seed": 0}


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


@pytest.mark.parametrize("stream", ["off", "on"])
def test_fit_resume_is_exact(tmp_path, synth_sites, stream):
    from fedimg.tasks.tiles_fit import fit_tiles, load_tile_model

    cfg = TileTrainConfig(epochs=3, max_tiles=48, steps_per_epoch=2, stream=stream, **SMALL)
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


@pytest.mark.parametrize("stream", ["auto", "on"])
def test_federated_task_interface(synth_sites, stream):
    cfg = task.config_from_dict({**SMALL, "epochs": 1, "max_tiles": 32, "stream": stream})
    assert task.config_from_dict(cfg.to_dict()) == cfg and task.KEY_METRIC == "auc"
    model = task.build_model(cfg)
    data = task.load_site(synth_sites[0], cfg, torch.device("cpu"))
    assert data.streamed == (stream == "on")  # auto: a small store is cached
    global_sd = {k: v.clone().numpy() for k, v in model.state_dict().items()}
    metrics, n = task.train_one_round(model, data, cfg, epochs=1, global_params=global_sd, prox_mu=0.01)
    assert n == data.num_train > 0 and np.isfinite(metrics["loss"])
    moved = any(not np.allclose(v.numpy(), global_sd[k]) for k, v in model.state_dict().items() if v.is_floating_point())
    assert moved
    res = task.evaluate(model, data, cfg)
    assert set(res) >= {"auc", "accuracy", "loss"} and all(isinstance(v, float) for v in res.values())
    with pytest.raises(ConfigError, match="unknown"):
        task.config_from_dict({"modle": "resnet18"})


def test_trainer_hooks_on_the_engine_loop(synth_sites):
    """Every step reports the running loss; the epoch's rows keep train-tiles' keys; the step
    batches are one shuffle of the training tiles; no training tiles is an error."""
    import math

    from fedimg.engine.loop import EpochTrainer
    from fedimg.tasks.tiles import TileSiteData, TileTrainer

    cfg = TileTrainConfig(epochs=2, max_tiles=40, steps_per_epoch=3, amp="fp32", **SMALL)
    data = prepare_tile_data(synth_sites[0], cfg, torch.device("cpu"))
    torch.manual_seed(0)
    trainer = TileTrainer(build_tile_model(cfg), data, cfg)
    assert isinstance(trainer, EpochTrainer) and trainer.steps_per_epoch == min(3, math.ceil(data.num_train / 16))
    start = trainer.generator.get_state()
    batches = trainer.epoch_batches()
    assert len(batches) == trainer.steps_per_epoch
    assert sorted(torch.cat(batches).tolist()) == list(range(data.num_train))
    trainer.generator.set_state(start)
    steps: list = []
    stats = trainer.train_epoch(on_step=steps.append)
    assert list(stats) == ["loss", "lr", "tiles_per_s", "seconds"]
    assert [s["step"] for s in steps] == list(range(1, len(batches) + 1))
    assert all(s["loss"] is not None and s["tiles_per_s"] > 0 for s in steps)
    assert steps[-1]["loss"] == pytest.approx(stats["loss"], rel=1e-12)
    x, y = data.x_train[:0], data.y_train[:0]
    empty = TileSiteData(x_train=x, y_train=y, x_val=x, y_val=y, device=data.device, fingerprint="e", classes=["0", "1"])
    with pytest.raises(ValueError, match="no training tiles"):
        TileTrainer(build_tile_model(cfg), empty, cfg).train_epoch()


@pytest.mark.gpu
def test_tile_training_on_cuda_bf16_channels_last(synth_sites):
    cfg = TileTrainConfig(model="densenet121", epochs=2, batch_size=32, warmup_epochs=0, seed=0)
    data = prepare_tile_data(synth_sites[0], cfg, torch.device("cuda"))
    assert data.x_train.is_cuda
    model = build_tile_model(cfg)
    metrics, n = train_one_round(model, data, cfg)
    trainer = data.state["trainer"]
    assert trainer.bf16 and trainer.channels_last and np.isfinite(metrics["loss"])
    assert next(model.parameters()).is_cuda
    res = evaluate(model, data, cfg)
    assert 0.0 <= res["accuracy"] <= 1.0
