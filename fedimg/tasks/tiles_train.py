"""The tile task's training hooks on the engine's epoch loop, its round and its evaluation.

:class:`TileTrainer` is an :class:`fedimg.engine.loop.EpochTrainer`: fused AdamW, the
engine's warm-up + cosine schedule and bf16 decision; its hooks shuffle the cached tiles
each epoch (``steps_per_epoch`` batches, wrapping around), or stream them from the store
shuffled by blocks (:class:`fedimg.pathology.tilestream.StreamEpoch`, when the site data is
streamed), and compute the cross-entropy of
augmented tiles (:func:`fedimg.pathology.augment.batch_input`, drawn from the trainer's own
generator so ``--resume`` is exact), in bf16 autocast with channels-last memory where
supported.

>>> import torch
>>> from fedimg.pathology.config import TileTrainConfig
>>> from fedimg.pathology.models import build_tile_model
>>> from fedimg.pathology.tiledata import TileSiteData, split_batches
>>> cfg = TileTrainConfig(model="resnet10", width=0.25, batch_size=4, epochs=1, amp="fp32", augment=False)
>>> x, y = torch.zeros(8, 3, 32, 32, dtype=torch.uint8), torch.arange(8) % 2
>>> data = TileSiteData(x_train=x, y_train=y, x_val=x[:4], y_val=y[:4], device=torch.device("cpu"),
...                     fingerprint="doc", classes=["0", "1"])
>>> metrics, n = train_one_round(build_tile_model(cfg), data, cfg)
>>> n, sorted(metrics)
(8, ['epoch', 'epochs', 'loss', 'lr', 'seconds', 'tiles_per_s'])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from fedimg.errors import ConfigError
from fedimg.engine.loop import EpochTrainer, adamw, local_round, use_bf16, warmup_cosine
from fedimg.pathology.augment import augment_tiles, batch_input, draw_augment, to_input
from fedimg.pathology.config import TileTrainConfig
from fedimg.pathology.tiledata import TileSiteData, split_batches

__all__ = ["channels_last_for", "TileTrainer", "train_one_round", "evaluate"]

log = logging.getLogger(__name__)


def channels_last_for(config: TileTrainConfig, bf16: bool, device: Any) -> bool:
    """Channels-last memory? ``"on"``/``"off"``, or ``"auto"``: with bf16 or on CUDA."""
    return config.channels_last == "on" or (config.channels_last == "auto" and (bf16 or device.type == "cuda"))


class TileTrainer(EpochTrainer):
    """Optimizer, warm-up + cosine LR, augmentation generator and epoch counter for one tile model."""

    rate_key = "tiles_per_s"
    loss_every = 1  # the progress bar shows the running loss after every step
    report_steps = False  # train-tiles' metrics.json rows carry no step count

    def __init__(self, model, data: TileSiteData, config: TileTrainConfig) -> None:
        import torch

        self.model, self.data, self.config, self.device = model, data, config, data.device
        self.forward = model  # DP-SGD swaps in its per-sample-gradient wrapper (EpochTrainer.make_private)
        self.bf16 = use_bf16(config, self.device)
        self.channels_last = channels_last_for(config, self.bf16, self.device)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = adamw(model.parameters(), fused=True, lr=config.lr, weight_decay=config.weight_decay)
        full = math.ceil(max(1, data.num_train) / config.batch_size)
        self.steps_per_epoch = min(full, config.steps_per_epoch or full)
        self.scheduler = warmup_cosine(self.optimizer, steps_per_epoch=self.steps_per_epoch, epochs=config.epochs,
                                       warmup_epochs=config.warmup_epochs, min_ratio=config.min_lr_ratio)
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.epoch = 0
        log.info("tile trainer: %s on %s, %s%s, %d steps/epoch", config.model, self.device,
                 "bf16" if self.bf16 else "fp32", " channels-last" if self.channels_last else "", self.steps_per_epoch)

    def _draw(self, b: int):
        """One batch of augmentation parameters from ``self.generator`` (see :func:`draw_augment`)."""
        return draw_augment(self.generator, b, sigma1=self.config.stain_sigma1, sigma2=self.config.stain_sigma2)

    def augment(self, xb):
        """Flips, 90-degree rotations and H&E stain perturbation (uint8 out), drawn from ``self.generator``."""
        return augment_tiles(xb, *self._draw(xb.shape[0]))

    def batch_input(self, idx):
        """The network input for training tiles ``idx`` (:func:`fedimg.pathology.augment.batch_input`)."""
        return batch_input(self.data.x_train, idx, self.generator, self.config, channels_last=self.channels_last)

    def epoch_batches(self) -> Any:
        """A fresh permutation of the training tiles, cut into ``steps_per_epoch`` batches (wrapping
        around); streamed data: a :class:`~fedimg.pathology.tilestream.StreamEpoch` of ``(tiles, labels)``."""
        import torch

        n = self.data.num_train
        if n == 0:
            raise ValueError("no training tiles")
        bs = self.config.batch_size
        if self.data.streamed:
            from fedimg.pathology.tilestream import StreamEpoch

            return StreamEpoch(self.data.x_train, self.data.y_train, steps=self.steps_per_epoch, batch_size=bs,
                               generator=self.generator, device=self.device, transform=self.data.transform,
                               buffer_bytes=self.config.stream_buffer_mb << 20)
        order = torch.randperm(n, generator=self.generator).to(self.device)
        return [order[(step * bs) % n:][:bs] for step in range(self.steps_per_epoch)]

    def dp_units(self) -> int:
        """Tiles DP-SGD samples from; refused on a streamed store (checked when DP is attached, before any step)."""
        if self.data.streamed:  # Poisson draws index single tiles anywhere in the store
            raise ConfigError("DP-SGD draws tiles by index and needs them held in memory: train with --stream off "
                              "(a smaller tile store, or --max-tiles) or without --dp-*")
        return int(self.data.num_train)

    def dp_batch(self, indices: list[int]):
        """DP-SGD's Poisson draw as an index tensor on the device (what ``step_loss`` takes)."""
        import torch

        return torch.as_tensor(indices, dtype=torch.long, device=self.device)

    def step_loss(self, idx) -> tuple[Any, int]:
        """Cross-entropy of the (augmented) tiles ``idx`` (streamed: of the batch ``(tiles, labels)``); units = tiles."""
        import torch
        import torch.nn.functional as F

        if isinstance(idx, tuple):
            tiles, yb = idx
            xb = batch_input(tiles, torch.arange(len(yb), device=tiles.device), self.generator, self.config,
                             channels_last=self.channels_last)
        else:
            xb, yb = self.batch_input(idx), self.data.y_train[idx]
        with self.autocast():
            logits = self.forward(xb)
        return F.cross_entropy(logits.float(), yb), int(xb.shape[0])


def train_one_round(model, data: TileSiteData, config: TileTrainConfig, *, epochs: int | None = None,
                    global_params: Mapping[str, Any] | None = None, prox_mu: float = 0.0,
                    on_epoch: Callable[[int, dict], None] | None = None) -> tuple[dict[str, float], int]:
    """Train ``model`` on a site's tiles; returns ``(metrics, num_train_tiles)`` (FedProx with ``prox_mu``)."""
    metrics = local_round(model, data, config, TileTrainer, "tiles_per_s", epochs=epochs, global_params=global_params,
                          prox_mu=prox_mu, on_epoch=on_epoch)
    return metrics, data.num_train


def evaluate(model, data: TileSiteData, config: TileTrainConfig, *, split: str = "val") -> dict[str, float]:
    """AUC (one-vs-rest macro for > 2 classes), accuracy, loss and ``n`` on the site's ``split`` tiles (floats)."""
    import torch
    import torch.nn.functional as F
    from monai.metrics import compute_roc_auc

    y = data.y_val if split == "val" else data.y_train
    if len(y) == 0:
        return {"auc": math.nan, "accuracy": math.nan, "loss": math.nan, "n": 0.0}
    bf16 = use_bf16(config, data.device)
    cl = channels_last_for(config, bf16, data.device)
    model.to(data.device).eval()
    logits = []
    with torch.no_grad(), torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=bf16):
        for xb, _ in split_batches(data, split, config.eval_batch_size):
            logits.append(model(to_input(xb, cl)).float())
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
