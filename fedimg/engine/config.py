"""Training configuration: one frozen, keyword-only dataclass, validated on creation.

Variants are config files (``config.json`` / dicts), never subclasses.

>>> cfg = TrainConfig(epochs=3, roi=(64, 64, 64))
>>> cfg.roi, cfg.batch_size
((64, 64, 64), 2)
>>> TrainConfig.from_dict(cfg.to_dict()) == cfg
True
>>> cfg.replace(lr=1e-4).lr
0.0001
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fedimg.errors import ConfigError

__all__ = ["TrainConfig"]

_OPTIMIZERS = ("adamw", "sgd")
_LOSSES = ("dice", "dicece")
_AMP = ("auto", "bf16", "fp32")
_INTENSITY_NORMS = ("zscore", "landmark")  # fedimg.engine.cache.INTENSITY_NORMS (not imported: config stays light)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that decides how a site trains (all fields keyword-only).

    ``epochs`` is the length of the learning-rate schedule (warm-up + cosine); a
    federated client that calls :func:`fedimg.engine.loop.train_one_round` with
    ``epochs=1`` per round continues the same schedule across rounds.
    ``amp="auto"`` uses bf16 autocast where :func:`fedimg.device.bf16_supported` says so.
    ``intensity_norm``: each case's per-channel foreground normalisation, ``"zscore"`` (default) or
    ``"landmark"`` (the case's own percentile landmarks onto a fixed scale: invariant to a scanner's
    scale, offset and gamma); training, validation, ``fedimg evaluate`` and ``fedimg predict`` use it alike.
    """

    model: str = "segresnet"
    init_filters: int = 8
    dropout: float = 0.0
    epochs: int = 20
    batch_size: int = 2
    roi: tuple[int, int, int] = (64, 64, 64)
    samples_per_case: int = 1
    pos_fraction: float = 0.67
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-5
    momentum: float = 0.9
    loss: str = "dice"
    warmup_epochs: int = 1
    min_lr_ratio: float = 0.01
    flip_prob: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    contrast_gamma: float = 0.0
    contrast_bias: float = 0.0
    contrast_hist: int = 0
    contrast_prob: float = 0.5
    val_fraction: float = 0.25
    val_every: int = 1
    sw_batch_size: int = 2
    sw_overlap: float = 0.25
    amp: str = "auto"
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    allow_identifiable: bool = False
    intensity_norm: str = "zscore"

    def __post_init__(self) -> None:
        from fedimg.engine.models import MODELS

        if self.model not in MODELS:
            raise ConfigError(f"model {self.model!r} is unknown; choose one of {', '.join(sorted(MODELS))}")
        roi = tuple(int(r) for r in (self.roi if not isinstance(self.roi, int) else (self.roi,) * 3))
        if len(roi) != 3 or any(r < 16 or r % 16 for r in roi):
            raise ConfigError(f"roi {self.roi!r} must be three sizes, each a multiple of 16 (e.g. 64 64 64)")
        object.__setattr__(self, "roi", roi)
        _positive_int(self, "epochs", "batch_size", "samples_per_case", "val_every", "sw_batch_size", "init_filters")
        if self.model == "segresnet" and self.init_filters % 8:
            raise ConfigError(f"init_filters={self.init_filters}: segresnet needs a multiple of 8")
        if self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.optimizer not in _OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r}: choose one of {', '.join(_OPTIMIZERS)}")
        if self.loss not in _LOSSES:
            raise ConfigError(f"loss {self.loss!r}: choose one of {', '.join(_LOSSES)}")
        if self.amp not in _AMP:
            raise ConfigError(f"amp {self.amp!r}: choose one of {', '.join(_AMP)}")
        if self.intensity_norm not in _INTENSITY_NORMS:
            raise ConfigError(f"intensity_norm {self.intensity_norm!r}: choose one of {', '.join(_INTENSITY_NORMS)}")
        if not (self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "momentum", "intensity_scale", "intensity_shift", "contrast_gamma", "contrast_bias"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.contrast_hist, int) or isinstance(self.contrast_hist, bool) or self.contrast_hist < 0:
            raise ConfigError(f"contrast_hist must be an integer >= 0 (0: off), got {self.contrast_hist!r}")
        for name in ("pos_fraction", "flip_prob", "min_lr_ratio", "dropout", "contrast_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ConfigError(f"sw_overlap must be in [0, 1), got {self.sw_overlap}")
        if self.threads is not None and int(self.threads) < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device {self.device!r}: use auto, cpu, cuda or cuda:N")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``roi`` as a list)."""
        d = dataclasses.asdict(self)
        d["roi"] = list(self.roi)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (catches typos in config files)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a training config must be a mapping, got {type(d).__name__}")
        kw = dict(d)
        if kw.get("extra") == {}:
            # ``extra``: an always-empty field of earlier versions; their run folders and checkpoints still load
            del kw["extra"]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kw) - names)
        if unknown:
            raise ConfigError(f"unknown training config key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        if "roi" in kw and not isinstance(kw["roi"], int):
            kw["roi"] = tuple(kw["roi"])
        try:
            return cls(**kw)
        except TypeError as exc:
            raise ConfigError(f"bad training config: {exc}") from None

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _positive_int(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
