"""The training loop: bf16 autocast where supported, cached on-device data, warm-up + cosine.

:class:`Trainer` owns the optimizer, the per-step LR schedule and the augmentation RNG
and can save/restore all of them (exact ``--resume``). :func:`train_one_round` is the
library call the federated client makes each round; it keeps one trainer per site in
``data.state`` so rounds continue the same schedule and optimizer state.

>>> # metrics, n = train_one_round(model, site_data, TrainConfig(epochs=20), epochs=1)
>>> # metrics["loss"], metrics["voxels_per_s"], n == site_data.num_train
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from fedimg.engine.augment import sample_batch

__all__ = ["Trainer", "train_one_round", "use_bf16", "make_loss", "lr_factor", "load_global_params", "ResumableTrainer"]

log = logging.getLogger(__name__)


def use_bf16(config: Any, device: Any) -> bool:
    """bf16 autocast on? ``amp="auto"`` follows :func:`fedimg.device.bf16_supported`."""
    from fedimg.device import bf16_supported

    if config.amp == "fp32":
        return False
    if config.amp == "bf16":
        return True
    return bf16_supported(device)


def make_loss(config: Any) -> Callable:
    """DiceLoss (BraTS-tutorial settings) or DiceCE, both on sigmoid outputs."""
    from monai.losses import DiceCELoss, DiceLoss

    if config.loss == "dicece":
        return DiceCELoss(sigmoid=True, smooth_nr=0.0, smooth_dr=1e-5, squared_pred=True)
    return DiceLoss(sigmoid=True, smooth_nr=0.0, smooth_dr=1e-5, squared_pred=True)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine down to ``min_ratio`` at ``total_steps`` (flat after)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def load_global_params(model: Any, params: Mapping[str, Any]) -> None:
    """Load a (possibly numpy) state dict into ``model`` in place, strictly."""
    import torch

    sd = model.state_dict()
    missing = set(sd) - set(params)
    if missing:
        raise KeyError(f"global_params lacks {len(missing)} model entries, e.g. {sorted(missing)[:3]}")
    with torch.no_grad():
        for k, v in sd.items():
            v.copy_(torch.as_tensor(params[k]).reshape(v.shape).to(v.dtype))


def _match_state_layout(optimizer) -> None:
    """Give each per-parameter optimizer tensor its parameter's memory layout.

    Saved state comes back contiguous; a channels-last parameter then meets a contiguous
    moment tensor, and fused optimizers (AdamW ``fused=True``) pair their elements differently
    from an uninterrupted run, so a resumed run would not be exact.
    """
    import torch

    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


class ResumableTrainer:
    """Exact-resume state of a trainer with ``epoch``, ``optimizer``, ``scheduler`` and
    ``generator`` attributes (shared by the 3-D and the tile trainers)."""

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, scheduler, RNG and epoch (tensors + JSON-able values)."""
        import torch

        return {
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        import torch

        self.epoch = int(state["epoch"])
        self.optimizer.load_state_dict(state["optimizer"])
        _match_state_layout(self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])


class Trainer(ResumableTrainer):
    """Optimizer, LR schedule, loss and augmentation RNG for one model on one site."""

    def __init__(self, model: Any, data: Any, config: Any) -> None:
        import torch

        self.model = model
        self.data = data
        self.config = config
        self.device = data.device
        self.bf16 = use_bf16(config, self.device)
        model.to(self.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last_3d)
        self.forward = torch.compile(model) if config.compile else model
        params = [p for p in model.parameters() if p.requires_grad]
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                             weight_decay=config.weight_decay, nesterov=config.momentum > 0)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.samples_per_epoch = max(1, data.num_train) * config.samples_per_case
        self.steps_per_epoch = math.ceil(self.samples_per_epoch / config.batch_size)
        total = config.epochs * self.steps_per_epoch
        warm = min(config.warmup_epochs * self.steps_per_epoch, max(0, total - 1))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup_steps=warm, total_steps=total, min_ratio=config.min_lr_ratio)
        )
        self.loss_fn = make_loss(config)
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.epoch = 0  # epochs completed
        log.info("trainer: %s on %s, %s, %d steps/epoch", type(model).__name__, self.device,
                 "bf16 autocast" if self.bf16 else "fp32", self.steps_per_epoch)

    def _autocast(self) -> Any:
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def train_epoch(self, *, prox_mu: float = 0.0, prox_ref: list | None = None,
                    on_step: Callable[[dict], None] | None = None) -> dict[str, float]:
        """One pass over the training cases; returns loss, lr, voxels/s and seconds."""
        import torch

        if self.data.num_train == 0:
            raise ValueError("no training cases")
        cfg = self.config
        self.model.train()
        order = (torch.randperm(self.samples_per_epoch, generator=self.generator) % self.data.num_train).tolist()
        # the loss is summed on the device: no host sync per step (only every 10th for progress)
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        n_batches, voxels = 0, 0
        n_steps = math.ceil(len(order) / cfg.batch_size)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for b in range(0, len(order), cfg.batch_size):
            idx = order[b:b + cfg.batch_size]
            x, y = sample_batch(self.data.train_images, self.data.train_regions, self.data.train_fg, idx, cfg,
                                self.generator)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with self._autocast():
                logits = self.forward(x)
            loss = self.loss_fn(logits.float(), y)
            if prox_mu > 0 and prox_ref is not None:
                prox = sum(((p - r) ** 2).sum() for p, r in zip(self.model.parameters(), prox_ref))
                loss = loss + 0.5 * prox_mu * prox
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total_loss += loss.detach().double()
            n_batches += 1
            voxels += x.shape[0] * math.prod(x.shape[2:])
            if on_step is not None:
                show = n_batches % 10 == 0 or n_batches == n_steps or n_batches == 1
                on_step({"step": n_batches, "loss": float(total_loss) / n_batches if show else None,
                         "voxels_per_s": voxels / max(1e-9, time.perf_counter() - t0)})
        sync()
        seconds = time.perf_counter() - t0
        self.epoch += 1
        return {
            "loss": float(total_loss) / max(1, n_batches),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "voxels_per_s": voxels / max(seconds, 1e-9),
            "seconds": seconds,
            "steps": n_batches,
        }

    # ---- exact resume -------------------------------------------------------------------


def local_round(model: Any, data: Any, config: Any, make_trainer: Callable[[Any, Any, Any], Any], rate_key: str, *,
                epochs: int | None = None, global_params: Mapping[str, Any] | None = None, prox_mu: float = 0.0,
                on_epoch: Callable[[int, dict], None] | None = None) -> dict[str, float]:
    """One site's local training for a round, shared by the 3-D and the tile tasks.

    Loads ``global_params``, reuses the trainer kept in ``data.state`` (same model and
    config) or builds one with ``make_trainer(model, data, config)``, runs ``epochs``
    epochs (FedProx reference taken now when ``prox_mu > 0``) and returns the round's
    metrics; ``rate_key`` names the trainer's throughput statistic (time-weighted mean).
    """
    if global_params is not None:
        load_global_params(model, global_params)
    trainer = data.state.get("trainer")
    if trainer is None or trainer.model is not model or trainer.config != config:
        trainer = data.state["trainer"] = make_trainer(model, data, config)
    prox_ref = [p.detach().clone() for p in model.parameters()] if prox_mu > 0 else None
    n_epochs = config.epochs if epochs is None else int(epochs)
    history = []
    for _ in range(n_epochs):
        stats = trainer.train_epoch(prox_mu=prox_mu, prox_ref=prox_ref)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(trainer.epoch, stats)
    metrics: dict[str, float] = {"epochs": float(n_epochs), "epoch": float(trainer.epoch)}
    if history:
        seconds = sum(h["seconds"] for h in history)
        metrics.update(loss=history[-1]["loss"], lr=history[-1]["lr"], seconds=seconds,
                       **{rate_key: sum(h[rate_key] * h["seconds"] for h in history) / max(seconds, 1e-9)})
    return metrics


def train_one_round(model: Any, data: Any, config: Any, *, epochs: int | None = None,
                    global_params: Mapping[str, Any] | None = None, prox_mu: float = 0.0,
                    on_epoch: Callable[[int, dict], None] | None = None) -> tuple[dict[str, float], int]:
    """Train ``model`` on a site's cached data for ``epochs`` (default ``config.epochs``).

    ``global_params`` (state dict of tensors or numpy arrays) is loaded first; with
    ``prox_mu > 0`` a FedProx term ``mu/2 * ||w - w_global||²`` is added to the loss.
    The model is moved to ``data.device`` and stays there. Returns ``(metrics,
    num_samples)`` with ``num_samples`` = number of training cases (the FedAvg weight).
    """
    metrics = local_round(model, data, config, Trainer, "voxels_per_s", epochs=epochs, global_params=global_params,
                          prox_mu=prox_mu, on_epoch=on_epoch)
    return metrics, data.num_train
