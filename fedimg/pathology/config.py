"""Options of tile-classifier training (``fedimg train-tiles``, ``--task tiles``): one frozen,
keyword-only dataclass validated on creation, JSON round-trip via ``to_dict``/``from_dict``.

>>> cfg = TileTrainConfig(model="resnet10", epochs=1, batch_size=8)
>>> TileTrainConfig.from_dict(cfg.to_dict()) == cfg, cfg.amp
(True, 'auto')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedimg.errors import ConfigError

from .models import MODELS

__all__ = ["TileTrainConfig"]


@dataclass(frozen=True, kw_only=True)
class TileTrainConfig:
    """Options of tile training (``fedimg train-tiles``), JSON round-trip via ``to_dict``/``from_dict``."""

    model: str = "densenet121"
    num_classes: int = 2
    width: float = 1.0  # channel multiplier (ResNet widen_factor; DenseNet features and growth)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    min_lr_ratio: float = 0.05
    device: str = "auto"
    threads: int | None = None  # CPU threads of a site process (read by the federated client)
    amp: str = "auto"  # auto | bf16 | fp32
    channels_last: str = "auto"  # auto (with bf16) | on | off
    seed: int = 0
    val_fraction: float = 0.2
    augment: bool = True
    stain_sigma1: float = 0.15
    stain_sigma2: float = 0.1
    stain_normalize: str = "none"  # none | macenko | reinhard
    stain_target: str | None = None
    max_tiles: int | None = None
    steps_per_epoch: int | None = None
    eval_batch_size: int = 128
    norm: str = "batch"  # batch | group (ResNet only; DP-SGD needs per-sample normalisation)
    stream: str = "auto"  # auto (stream when the labelled tiles exceed 2 GiB) | on | off (hold them on the device)
    stream_buffer_mb: int = 256  # streamed: memory for tiles read ahead (two shuffle windows)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"--model {self.model!r}: choose one of {', '.join(MODELS)}")
        if not 0 < self.width <= 4:
            raise ConfigError("--width must be in (0, 4]")
        if self.num_classes < 2:
            raise ConfigError("num_classes must be >= 2")
        if self.norm not in ("batch", "group") or (self.norm == "group" and not self.model.startswith("resnet")):
            raise ConfigError(f"norm {self.norm!r}: choose batch, or group with a resnet model")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("epochs and batch sizes must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError("lr must be > 0 and weight_decay >= 0")
        if self.amp not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"--amp {self.amp!r}: use auto, bf16 or fp32")
        if self.channels_last not in ("auto", "on", "off"):
            raise ConfigError(f"--channels-last {self.channels_last!r}: use auto, on or off")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("--val-fraction must be in [0, 1)")
        if self.stain_normalize not in ("none", "macenko", "reinhard"):
            raise ConfigError(f"--stain-normalize {self.stain_normalize!r}: use none, macenko or reinhard")
        if self.stain_normalize != "none" and not self.stain_target:
            raise ConfigError("--stain-normalize needs --target (an H&E target image)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("--threads must be >= 1")
        if self.stream not in ("auto", "on", "off"):
            raise ConfigError(f"--stream {self.stream!r}: use auto, on or off")
        if self.stream_buffer_mb < 1:
            raise ConfigError("--stream-buffer-mb must be >= 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError("--steps-per-epoch must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TileTrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown tile training config key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        try:
            return cls(**dict(d))
        except TypeError as exc:
            raise ConfigError(f"bad tile training config: {exc}") from None
