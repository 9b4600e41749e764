"""Tile-classifier training: config, model registry, cached site data, one round, evaluation.

Tiles are loaded once as uint8 tensors on the device (stain-normalised once if the config
asks), augmented on the device each step (flips, 90-degree rotations, stain perturbation
drawn from the trainer's own generator so ``--resume`` is exact), and fed to a MONAI
DenseNet121 / ResNet in bf16 autocast with channels-last memory where supported.

>>> cfg = TileTrainConfig(model="resnet10", epochs=1, batch_size=8)
>>> build_tile_model(cfg)(__import__("torch").zeros(2, 3, 32, 32)).shape
torch.Size([2, 2])
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.engine.loop import ResumableTrainer
from fedimg.errors import ConfigError, InputError

__all__ = [
    "TileTrainConfig",
    "MODELS",
    "build_tile_model",
    "TileSiteData",
    "prepare_tile_data",
    "TileTrainer",
    "train_one_round",
    "evaluate",
]

log = logging.getLogger(__name__)

MODELS = ("densenet121", "resnet18", "resnet10")


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

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"--model {self.model!r}: choose one of {', '.join(MODELS)}")
        if not 0 < self.width <= 4:
            raise ConfigError("--width must be in (0, 4]")
        if self.num_classes < 2:
            raise ConfigError("num_classes must be >= 2")
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


def build_tile_model(config: TileTrainConfig):
    """MONAI ``DenseNet121`` or ``ResNet`` (2-D, 3 input channels, ``num_classes`` logits).

    torchvision is not used: its PyPI wheels do not import beside the CPU torch build here.
    """
    from monai.networks import nets

    w = config.width
    if config.model == "densenet121":
        return nets.DenseNet121(spatial_dims=2, in_channels=3, out_channels=config.num_classes,
                                init_features=max(4, round(64 * w)), growth_rate=max(2, round(32 * w)))
    factory = {"resnet18": nets.resnet18, "resnet10": nets.resnet10}[config.model]
    # torchvision-style stem: 7x7 stride-2 conv then max-pool
    return factory(spatial_dims=2, n_input_channels=3, num_classes=config.num_classes, conv1_t_size=7,
                   conv1_t_stride=2, widen_factor=w)


@dataclass
class TileSiteData:
    """A site's tiles cached on ``device``: uint8 ``(N, 3, S, S)`` images, int64 labels."""

    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    device: Any
    fingerprint: str
    classes: list[str]
    source: str = ""
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.y_val.shape[0])


def _load_target(path: str):
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise InputError(path, f"cannot be read as a target image ({exc}); pass an RGB PNG/JPEG tile") from None


def stain_normalizer(kind: str, target: str):
    """A ``MacenkoNormalize`` / ``ReinhardNormalize`` fitted to the image at ``target``."""
    from fedimg.transforms.stain import MacenkoNormalize, ReinhardNormalize

    img = _load_target(target)
    return MacenkoNormalize(img) if kind == "macenko" else ReinhardNormalize(img)


def normalize_batches(x, norm, batch: int = 64):
    """Apply a stain normaliser to uint8 ``(N, 3, S, S)`` tensors in batches (same device)."""
    import torch

    return torch.cat([norm(x[i : i + batch]) for i in range(0, x.shape[0], batch)]) if len(x) else x


def prepare_tile_data(path: str | Path, config: TileTrainConfig, device) -> TileSiteData:
    """Load a tile store (or PCam file), keep labelled tiles, split train/val, cache on ``device``."""
    import torch

    from .store import load_tile_set

    ts = load_tile_set(path, max_tiles=config.max_tiles)
    keep = np.flatnonzero(ts.y >= 0)
    if len(keep) == 0:
        raise InputError(path, "has no labelled tiles; tile with --labels (GeoJSON/CSV) or use a labelled tile set")
    y = ts.y[keep]
    if int(y.max()) >= config.num_classes:
        raise InputError(path, f"has label {int(y.max())} but the model has {config.num_classes} classes; pass --num-classes")
    rng = np.random.default_rng(config.seed)
    val_idx: list[int] = []
    for c in np.unique(y):  # stratified split
        members = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(len(members) * config.val_fraction))
        if config.val_fraction > 0 and len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_idx.extend(members[:n_val].tolist())
    val_mask = np.zeros(len(y), bool)
    val_mask[val_idx] = True
    x = torch.from_numpy(ts.x[keep]).permute(0, 3, 1, 2).contiguous().to(device)
    if config.stain_normalize != "none":
        x = normalize_batches(x, stain_normalizer(config.stain_normalize, str(config.stain_target)))
    yt = torch.from_numpy(y).to(device)
    vm = torch.from_numpy(val_mask).to(device)
    h = hashlib.sha256(np.ascontiguousarray(y).tobytes())
    h.update(str(ts.x.shape).encode())
    h.update(np.ascontiguousarray(ts.x[keep[:: max(1, len(keep) // 16)]]).tobytes())
    classes = list(ts.meta.get("classes") or [str(i) for i in range(config.num_classes)])
    log.info("%s: %d train / %d val tiles of %d px", path, int((~vm).sum()), int(vm.sum()), x.shape[-1])
    return TileSiteData(x_train=x[~vm], y_train=yt[~vm], x_val=x[vm], y_val=yt[vm], device=device,
                        fingerprint=h.hexdigest()[:16], classes=classes, source=str(path))


def _bf16(config: TileTrainConfig, device) -> bool:
    from fedimg.device import bf16_supported

    return config.amp == "bf16" or (config.amp == "auto" and bf16_supported(device))


def to_input(xb, channels_last: bool):
    """uint8 ``(B, 3, S, S)`` → float input scaled to about [-2, 2]."""
    import torch

    x = xb.float().sub_(127.5).div_(64.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _adamw(params, **kw):
    """AdamW with the fused kernel (one pass per parameter instead of a chain of elementwise
    ops), falling back to the default implementation where unsupported."""
    import torch

    params = list(params)
    try:
        return torch.optim.AdamW(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError) as exc:
        log.debug("fused AdamW unavailable (%s); using the default implementation", exc)
        return torch.optim.AdamW(params, **kw)


class TileTrainer(ResumableTrainer):
    """Optimizer, warm-up + cosine LR, augmentation generator and epoch counter for one model."""

    def __init__(self, model, data: TileSiteData, config: TileTrainConfig) -> None:
        import torch

        from fedimg.engine.loop import lr_factor

        self.model, self.data, self.config, self.device = model, data, config, data.device
        self.bf16 = _bf16(config, self.device)
        self.channels_last = config.channels_last == "on" or (config.channels_last == "auto" and (self.bf16 or self.device.type == "cuda"))
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = _adamw(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        full = math.ceil(max(1, data.num_train) / config.batch_size)
        self.steps_per_epoch = min(full, config.steps_per_epoch or full)
        total = config.epochs * self.steps_per_epoch
        warm = min(config.warmup_epochs * self.steps_per_epoch, max(0, total - 1))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup_steps=warm, total_steps=total, min_ratio=config.min_lr_ratio)
        )
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.epoch = 0
        log.info("tile trainer: %s on %s, %s%s, %d steps/epoch", config.model, self.device,
                 "bf16" if self.bf16 else "fp32", " channels-last" if self.channels_last else "", self.steps_per_epoch)

    def _draw(self, b: int):
        """One batch of augmentation parameters from ``self.generator`` (CPU tensors):
        flags ``(b, 3)`` (flip width, flip height, transpose), stain ``alpha``/``beta`` ``(b, 2)``."""
        import torch

        cfg = self.config
        r = torch.rand(b, 8, generator=self.generator)
        return r[:, :3] < 0.5, 1 + cfg.stain_sigma1 * (2 * r[:, 3:5] - 1), cfg.stain_sigma2 * (2 * r[:, 5:7] - 1)

    def augment(self, xb):
        """Flips, 90-degree rotations and H&E stain perturbation (uint8 out), drawn from ``self.generator``."""
        import torch

        from fedimg.transforms.stain import stain_augment

        flags, alpha, beta = self._draw(xb.shape[0])
        flags = flags.to(xb.device)
        x = torch.where(flags[:, 0, None, None, None], xb.flip(-1), xb)
        x = torch.where(flags[:, 1, None, None, None], x.flip(-2), x)
        x = torch.where(flags[:, 2, None, None, None], x.transpose(-1, -2), x)
        out = stain_augment(x, alpha.to(x.device), beta.to(x.device))
        return out.round_().to(torch.uint8)

    def batch_input(self, idx):
        """The network input for training tiles ``idx``: augmented when the config says so.

        On the CPU the gather, augmentation and scaling run as one numba pass
        (:mod:`fedimg.pathology._augment_cpu`); elsewhere as torch ops on the device.
        """
        if self.config.augment and self.device.type == "cpu" and self.data.x_train.shape[-1] == self.data.x_train.shape[-2]:
            from fedimg.transforms.stain import REFERENCE_HE

            from ._augment_cpu import augment_to_input

            flags, alpha, beta = self._draw(int(idx.shape[0]))
            x = augment_to_input(self.data.x_train.contiguous(), idx, flags, alpha, beta, REFERENCE_HE)
            return x if self.channels_last else x.contiguous()
        xb = self.data.x_train[idx]
        if self.config.augment:
            xb = self.augment(xb)
        return to_input(xb, self.channels_last)

    def train_epoch(self, *, prox_mu: float = 0.0, prox_ref: list | None = None, on_step: Callable[[dict], None] | None = None) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        if self.data.num_train == 0:
            raise ValueError("no training tiles")
        cfg = self.config
        self.model.train()
        order = torch.randperm(self.data.num_train, generator=self.generator).to(self.device)
        total_loss, n_batches, tiles = 0.0, 0, 0
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for step in range(self.steps_per_epoch):
            idx = order[(step * cfg.batch_size) % self.data.num_train :][: cfg.batch_size]
            xb, yb = self.batch_input(idx), self.data.y_train[idx]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            if prox_mu > 0 and prox_ref is not None:
                loss = loss + 0.5 * prox_mu * sum(((p - r) ** 2).sum() for p, r in zip(self.model.parameters(), prox_ref))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total_loss += float(loss.detach())
            n_batches += 1
            tiles += int(xb.shape[0])
            if on_step is not None:
                on_step({"loss": total_loss / n_batches, "tiles_per_s": tiles / max(1e-9, time.perf_counter() - t0)})
        sync()
        seconds = time.perf_counter() - t0
        self.epoch += 1
        return {"loss": total_loss / max(1, n_batches), "lr": float(self.optimizer.param_groups[0]["lr"]),
                "tiles_per_s": tiles / max(seconds, 1e-9), "seconds": seconds}


def train_one_round(model, data: TileSiteData, config: TileTrainConfig, *, epochs: int | None = None,
                    global_params: Mapping[str, Any] | None = None, prox_mu: float = 0.0,
                    on_epoch: Callable[[int, dict], None] | None = None) -> tuple[dict[str, float], int]:
    """Train ``model`` on a site's tiles; returns ``(metrics, num_train_tiles)`` (FedProx with ``prox_mu``)."""
    from fedimg.engine.loop import local_round

    metrics = local_round(model, data, config, TileTrainer, "tiles_per_s", epochs=epochs, global_params=global_params,
                          prox_mu=prox_mu, on_epoch=on_epoch)
    return metrics, data.num_train


def evaluate(model, data: TileSiteData, config: TileTrainConfig, *, split: str = "val") -> dict[str, float]:
    """AUC (one-vs-rest macro for > 2 classes), accuracy and loss on the site's ``split`` tiles."""
    import torch
    import torch.nn.functional as F
    from monai.metrics import compute_roc_auc

    x, y = (data.x_val, data.y_val) if split == "val" else (data.x_train, data.y_train)
    if len(y) == 0:
        return {"auc": math.nan, "accuracy": math.nan, "loss": math.nan, "n": 0.0}
    bf16 = _bf16(config, data.device)
    cl = config.channels_last == "on" or (config.channels_last == "auto" and (bf16 or data.device.type == "cuda"))
    model.to(data.device).eval()
    logits = []
    with torch.no_grad(), torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(y), config.eval_batch_size):
            logits.append(model(to_input(x[i : i + config.eval_batch_size], cl)).float())
    out = torch.cat(logits)
    prob = out.softmax(1).cpu()
    yc = y.cpu()
    auc = math.nan
    if len(torch.unique(yc)) > 1:
        if config.num_classes == 2:
            auc = float(compute_roc_auc(prob[:, 1], yc))
        else:
            auc = float(compute_roc_auc(prob, F.one_hot(yc, config.num_classes), average="macro"))
    return {"auc": auc, "accuracy": float((prob.argmax(1) == yc).float().mean()),
            "loss": float(F.cross_entropy(out.cpu(), yc)), "n": float(len(yc))}
