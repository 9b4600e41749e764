"""TrainConfig validation/round trip and the model registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedimg.engine.config import TrainConfig
from fedimg.errors import ConfigError
from fedimg.engine.models import MODELS, build_model


def test_config_round_trip_and_frozen():
    cfg = TrainConfig(epochs=3, roi=(32, 48, 64), model="unet", init_filters=4, lr=1e-3)
    d = cfg.to_dict()
    assert d["roi"] == [32, 48, 64]
    assert TrainConfig.from_dict(d) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        TrainConfig(3)  # type: ignore[misc]  # keyword-only


@pytest.mark.parametrize("bad", [
    {"roi": (30, 32, 32)}, {"roi": (32, 32)}, {"epochs": 0}, {"batch_size": -1}, {"optimizer": "rmsprop"},
    {"loss": "focal"}, {"amp": "fp16"}, {"lr": 0.0}, {"val_fraction": 1.0}, {"flip_prob": 1.5}, {"model": "vnet"},
    {"init_filters": 12}, {"threads": 0}, {"sw_overlap": 1.0},
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="epoch"):
        TrainConfig.from_dict({"epoch": 3})


def test_config_of_earlier_versions_with_an_empty_extra_still_loads():
    """``extra`` (always empty, used nowhere) is gone; config.json / checkpoints that carry it still load."""
    cfg = TrainConfig(epochs=3)
    assert "extra" not in cfg.to_dict() and not hasattr(cfg, "extra")
    assert TrainConfig.from_dict({**cfg.to_dict(), "extra": {}}) == cfg
    with pytest.raises(ConfigError, match="extra"):
        TrainConfig.from_dict({**cfg.to_dict(), "extra": {"x": 1}})


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_map_4_channels_to_3(name):
    net = build_model(name, init_filters=8)
    out = net(torch.randn(1, 4, 32, 32, 32))
    assert out.shape == (1, 3, 32, 32, 32)
    assert torch.isfinite(out).all()


def test_build_model_errors_and_width():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("resnet")
    with pytest.raises(ConfigError, match="multiple of 8"):
        build_model("segresnet", init_filters=12)
    small = sum(p.numel() for p in build_model("segresnet", init_filters=8).parameters())
    big = sum(p.numel() for p in build_model("segresnet", init_filters=16).parameters())
    assert big > 3 * small
