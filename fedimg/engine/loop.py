"""The one training loop of every task: bf16 autocast where supported, warm-up + cosine LR.

:class:`EpochTrainer` is the epoch loop (FedProx term, optimizer and schedule steps,
device-side loss sum, throughput, progress callbacks) and, through
:class:`ResumableTrainer`, the exact-resume state (optimizer, LR schedule, RNG, epoch). A
task's trainer subclasses it and supplies two hooks: ``epoch_batches()`` (the epoch's index
batches, drawn from the trainer's generator) and ``step_loss(batch)`` (input, forward in
:meth:`EpochTrainer.autocast`, the task's loss). :class:`Trainer` is the 3-D segmentation
trainer; the tile trainer is :class:`fedimg.tasks.tiles_train.TileTrainer`.

:func:`local_round` is one site's local training for a federated round (a trainer per site
kept in ``data.state`` so rounds continue one schedule); :func:`train_one_round` is the 3-D
task's round.

>>> [round(lr_factor(s, warmup_steps=2, total_steps=10, min_ratio=0.0), 3) for s in (0, 1, 2, 10)]
[0.5, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from fedimg.engine.augment import sample_batch
from fedimg.errors import ConfigError

__all__ = ["use_bf16", "lr_factor", "warmup_cosine", "adamw", "proximal_term", "load_global_params",
           "ResumableTrainer", "EpochTrainer", "local_round", "make_loss", "Trainer", "train_one_round"]

log = logging.getLogger(__name__)


def use_bf16(config: Any, device: Any) -> bool:
    """bf16 autocast on? ``config.amp``: ``"fp32"`` no, ``"bf16"`` yes, ``"auto"`` where
    :func:`fedimg.device.bf16_supported` says so (the one decision of every task)."""
    from fedimg.device import bf16_supported

    if config.amp == "fp32":
        return False
    if config.amp == "bf16":
        return True
    return bf16_supported(device)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine down to ``min_ratio`` at ``total_steps`` (flat after)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_cosine(optimizer: Any, *, steps_per_epoch: int, epochs: int, warmup_epochs: int, min_ratio: float) -> Any:
    """The LR schedule of every task: a per-step ``LambdaLR`` of :func:`lr_factor` over
    ``epochs * steps_per_epoch`` steps, warm-up ``warmup_epochs`` epochs (at most all but one step)."""
    import torch

    total = epochs * steps_per_epoch
    warm = min(warmup_epochs * steps_per_epoch, max(0, total - 1))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup_steps=warm, total_steps=total, min_ratio=min_ratio)
    )


def adamw(params: Any, *, fused: bool = False, **kw: Any) -> Any:
    """AdamW; ``fused=True`` asks for the fused kernel (one pass per parameter instead of a
    chain of elementwise ops) and falls back to the default implementation where unsupported."""
    import torch

    params = list(params)
    if fused:
        try:
            return torch.optim.AdamW(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError) as exc:
            log.debug("fused AdamW unavailable (%s); using the default implementation", exc)
    return torch.optim.AdamW(params, **kw)


def proximal_term(model: Any, reference: list) -> Any:
    """FedProx's ``||w - w_ref||²`` summed over ``model``'s parameters."""
    return sum(((p - r) ** 2).sum() for p, r in zip(model.parameters(), reference))


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
    ``generator`` attributes (every task's trainer, through :class:`EpochTrainer`)."""

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, scheduler, RNG and epoch (tensors + JSON-able values); DP accountant when private."""
        import torch

        state = {
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if getattr(self, "privacy", None) is not None:
            state["privacy"] = self.privacy.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        import torch

        self.epoch = int(state["epoch"])
        self.optimizer.load_state_dict(state["optimizer"])
        _match_state_layout(self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        if getattr(self, "privacy", None) is not None:
            if "privacy" not in state:
                raise ConfigError("the saved training state has no DP accountant: this run was not trained with "
                                  "DP-SGD; resume it without --dp-* options")
            self.privacy.load_state_dict(state["privacy"])


class EpochTrainer(ResumableTrainer):
    """The epoch loop shared by every task's trainer.

    A subclass sets ``model``, ``device``, ``bf16``, ``optimizer``, ``scheduler``
    (:func:`warmup_cosine`), ``generator``, ``epoch`` and ``steps_per_epoch`` and implements
    the hooks ``epoch_batches()`` (a list of index batches; raises ``ValueError`` when there
    is nothing to train on) and ``step_loss(batch) -> (loss, units)`` (``units`` counts the
    throughput statistic ``rate_key``, e.g. voxels or tiles). ``on_step`` reports the running
    loss at the first, every ``loss_every``-th and the last step (``None`` otherwise: no
    host sync); ``report_steps`` adds the step count to the epoch's statistics.
    """

    rate_key = "samples_per_s"
    loss_every = 10
    report_steps = True
    privacy: Any = None

    def dp_batch(self, indices: list[int]) -> Any:
        """A Poisson draw (unit indices) in the form ``step_loss`` takes (default: the list itself)."""
        return indices

    def dp_units(self) -> int:
        """How many units DP-SGD samples from (default: training cases; a task may override)."""
        return int(self.data.num_train)

    def make_private(self, privacy: Any) -> None:
        """Train with DP-SGD from now on (``privacy``: e.g. :class:`fedimg.privacy.PatientDP`).

        ``privacy.attach(self, units=, batch_size=)`` wraps the optimizer; ``self.forward`` becomes the per-sample-gradient wrapper of ``self.model``; each step then draws
        its batch with ``privacy.draw()`` (Poisson sampling over :meth:`dp_units`), an empty
        draw is a noise-only ``privacy.empty_step``, and training stops once
        ``privacy.exhausted()``. DP-SGD runs in fp32, uncompiled (per-sample gradient hooks).
        """
        if getattr(self.config, "compile", False):
            raise ConfigError("DP-SGD cannot run a torch.compile'd model; drop --compile")
        self.bf16 = False
        privacy.attach(self, units=self.dp_units(), batch_size=int(self.config.batch_size))
        self.optimizer = privacy.optimizer
        self.privacy = privacy

    def autocast(self) -> Any:
        """bf16 autocast on the trainer's device when ``self.bf16``, a no-op otherwise."""
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def epoch_batches(self) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def step_loss(self, batch: Any) -> tuple[Any, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def train_epoch(self, *, prox_mu: float = 0.0, prox_ref: list | None = None,
                    on_step: Callable[[dict], None] | None = None) -> dict[str, float]:
        """One epoch; returns loss, lr, ``rate_key``, seconds (and steps if ``report_steps``)."""
        import torch

        dp = self.privacy
        if dp is not None and prox_mu > 0:
            raise ConfigError("FedProx (prox_mu > 0) is not supported with DP-SGD: its term is not per-sample")
        batches = self.epoch_batches() if dp is None else [self.dp_batch(dp.draw()) for _ in range(self.steps_per_epoch)]
        self.model.train()
        # the loss is summed on the device: no host sync per step (only when on_step shows it)
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        n_batches, units, n_steps = 0, 0, len(batches)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for batch in batches:
            if dp is not None and (dp.exhausted() or not len(batch)):
                if dp.exhausted():
                    break
                self.optimizer.zero_grad(set_to_none=True)
                dp.empty_step(self)  # nobody sampled: the step is noise only, and counted
                self.scheduler.step()
                continue
            self.optimizer.zero_grad(set_to_none=True)  # before the forward: DP's per-sample gradients too
            loss, n = self.step_loss(batch)
            if prox_mu > 0 and prox_ref is not None:
                loss = loss + 0.5 * prox_mu * proximal_term(self.model, prox_ref)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total_loss += loss.detach().double()
            n_batches += 1
            units += n
            if on_step is not None:
                show = n_batches % self.loss_every == 0 or n_batches == n_steps or n_batches == 1
                on_step({"step": n_batches, "loss": float(total_loss) / n_batches if show else None,
                         self.rate_key: units / max(1e-9, time.perf_counter() - t0)})
        sync()
        seconds = time.perf_counter() - t0
        self.epoch += 1
        stats = {"loss": float(total_loss) / n_batches if n_batches else math.nan, "lr": float(self.optimizer.param_groups[0]["lr"]),
                 self.rate_key: units / max(seconds, 1e-9), "seconds": seconds}
        if self.report_steps:
            stats["steps"] = n_batches
        if dp is not None:
            stats.update(dp.metrics())
        return stats


def local_round(model: Any, data: Any, config: Any, make_trainer: Callable[[Any, Any, Any], Any], rate_key: str, *,
                epochs: int | None = None, global_params: Mapping[str, Any] | None = None, prox_mu: float = 0.0,
                on_epoch: Callable[[int, dict], None] | None = None) -> dict[str, float]:
    """One site's local training for a round, shared by every task.

    Loads ``global_params``, reuses the trainer kept in ``data.state`` (same model and
    config) or builds one with ``make_trainer(model, data, config)``, runs ``epochs``
    epochs (FedProx reference taken now when ``prox_mu > 0``) and returns the round's
    metrics; ``rate_key`` names the trainer's throughput statistic (time-weighted mean).
    """
    if global_params is not None:
        load_global_params(model, global_params)
    trainer = data.state.get("trainer")
    if trainer is None or trainer.model is not model or trainer.config != config:
        # data.state["make_trainer"]: a replacement set by the caller (the NVFlare client's DDP trainer)
        trainer = data.state["trainer"] = data.state.get("make_trainer", make_trainer)(model, data, config)
        if data.state.get("privacy") is not None:  # DP-SGD handed in by the caller (see EpochTrainer.make_private)
            trainer.make_private(data.state["privacy"])
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
        metrics.update({k: v for k, v in history[-1].items() if k.startswith("dp_")})
    return metrics


# ---- the 3-D segmentation task's trainer --------------------------------------------------


def make_loss(config: Any) -> Callable:
    """DiceLoss (BraTS-tutorial settings) or DiceCE, both on sigmoid outputs."""
    from monai.losses import DiceCELoss, DiceLoss

    if config.loss == "dicece":
        return DiceCELoss(sigmoid=True, smooth_nr=0.0, smooth_dr=1e-5, squared_pred=True)
    return DiceLoss(sigmoid=True, smooth_nr=0.0, smooth_dr=1e-5, squared_pred=True)


class Trainer(EpochTrainer):
    """3-D segmentation: optimizer, LR schedule, Dice loss and augmentation RNG for one model on one site.

    Its hooks: ``samples_per_case`` random crops per training case each epoch (foreground-biased,
    flipped, intensity-jittered on the device), Dice loss on sigmoid outputs; throughput in voxels/s.
    """

    rate_key = "voxels_per_s"

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
            self.optimizer = adamw(params, lr=config.lr, weight_decay=config.weight_decay)
        self.samples_per_epoch = max(1, data.num_train) * config.samples_per_case
        self.steps_per_epoch = math.ceil(self.samples_per_epoch / config.batch_size)
        self.scheduler = warmup_cosine(self.optimizer, steps_per_epoch=self.steps_per_epoch, epochs=config.epochs,
                                       warmup_epochs=config.warmup_epochs, min_ratio=config.min_lr_ratio)
        self.loss_fn = make_loss(config)
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.epoch = 0  # epochs completed
        log.info("trainer: %s on %s, %s, %d steps/epoch", type(model).__name__, self.device,
                 "bf16 autocast" if self.bf16 else "fp32", self.steps_per_epoch)

    def epoch_batches(self) -> list[list[int]]:
        """``samples_per_case`` draws of every training case in a random order, in batches."""
        import torch

        if self.data.num_train == 0:
            raise ValueError("no training cases")
        order = (torch.randperm(self.samples_per_epoch, generator=self.generator) % self.data.num_train).tolist()
        bs = self.config.batch_size
        return [order[b:b + bs] for b in range(0, len(order), bs)]

    def make_batch(self, batch: list[int]) -> tuple[Any, Any]:
        """The augmented crops ``(x, y)`` of the cases ``batch`` (the distributed trainer draws its own)."""
        return sample_batch(self.data.train_images, self.data.train_regions, self.data.train_fg, batch, self.config,
                            self.generator)

    def step_loss(self, batch: list[int]) -> tuple[Any, int]:
        """Augmented crops of the cases ``batch``, forward in autocast, Dice loss; units = voxels."""
        import torch

        cfg = self.config
        x, y = self.make_batch(batch)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with self.autocast():
            logits = self.forward(x)
        return self.loss_fn(logits.float(), y), x.shape[0] * math.prod(x.shape[2:])


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
