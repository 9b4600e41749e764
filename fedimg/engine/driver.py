"""The epoch loop shared by ``fedimg train`` (3-D) and ``fedimg train-tiles`` (tiles).

:class:`EpochDriver` owns the run folder ``RUN`` and everything that does not depend on
the task: the fresh-run / ``--resume`` checks, exact resume, ``RUN/config.json``, the
progress bar, TensorBoard (``RUN/tb``), GPU telemetry (``RUN/telemetry.json``), the
last checkpoint + training state after every epoch, the best checkpoint by the task's key
metric and ``RUN/metrics.json``. A task says the rest through :class:`EpochHooks`:
how to validate an epoch, how to score it, the checkpoint metadata and its log line.

A trainer is anything with ``epoch``, ``steps_per_epoch``, ``bf16``,
``train_epoch(on_step=...) -> dict`` and ``state_dict()``/``load_state_dict()``
(:class:`fedimg.engine.loop.ResumableTrainer`).

Usage: ``run = EpochDriver("runs/site-1", resume=False)`` (checks the folder before any
data load), then ``run.fit(model, trainer, hooks, config=cfg.to_dict(),
fingerprint=data.fingerprint, epochs=cfg.epochs, device=device)`` returns ``{"run",
"epochs_run", "epoch", "best", "last", "telemetry"}``; a task's runs are
:func:`fedimg.engine.fit.fit` and :func:`fedimg.tasks.tiles_fit.fit_tiles`.

>>> hooks = EpochHooks(key="auc", evaluate=lambda epoch: {"auc": 0.9}, meta=lambda epoch, row: {})
>>> hooks.initial_best(), hooks.score_of({"epoch": 1, "auc": 0.9})
({'epoch': 0, 'auc': -inf}, 0.9)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedimg.errors import ConfigError
from fedimg.io import write_json

__all__ = ["EpochDriver", "EpochHooks", "is_new_best"]


def _no_postfix(values: Mapping[str, Any]) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class EpochHooks:
    """What a task adds to the generic epoch loop.

    ``key``: the best-metric name in ``metrics.json["best"]``; ``mode``: ``"max"`` or ``"min"``.
    ``evaluate(epoch)``: validation entries of the row (``{}`` on an epoch without validation);
    they go to TensorBoard as ``val/<name>``, the training statistics as ``train/<name>``.
    ``score(row)``: the epoch's score; ``None`` leaves the best as it is, a non-finite score
    (no validation data) makes every epoch the best; default ``row.get(key)``.
    ``meta(epoch, row)``: the JSON metadata saved beside both checkpoints.
    ``info``: more ``metrics.json`` entries after ``epochs``, ``best``, ``device``, ``bf16``.
    ``step_postfix(step)`` / ``epoch_postfix(row)``: the progress bar's postfix after each step
    and after validation (``None``: leave it). ``log_epoch(row)``: the task's log line.
    """

    key: str
    evaluate: Callable[[int], Mapping[str, Any]]
    meta: Callable[[int, dict[str, Any]], Mapping[str, Any]]
    mode: str = "max"
    score: Callable[[dict[str, Any]], float | None] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    step_postfix: Callable[[dict[str, Any]], Mapping[str, Any] | None] = _no_postfix
    epoch_postfix: Callable[[dict[str, Any]], Mapping[str, Any] | None] = _no_postfix
    log_epoch: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ConfigError(f"EpochHooks mode must be 'max' or 'min', not {self.mode!r}")

    def score_of(self, row: dict[str, Any]) -> float | None:
        return row.get(self.key) if self.score is None else self.score(row)

    def initial_best(self) -> dict[str, Any]:
        return {"epoch": 0, self.key: -math.inf if self.mode == "max" else math.inf}


def is_new_best(score: float | None, best: Mapping[str, Any], key: str, mode: str = "max") -> bool:
    """Does an epoch scoring ``score`` replace ``best``?

    ``None``: no (the epoch was not scored). Non-finite: yes (nothing to compare; the last
    epoch stands for the run). Otherwise yes when nothing was best yet (``best["epoch"] == 0``)
    or it beats ``best[key]`` in the ``mode`` direction (never a NaN best).

    >>> is_new_best(0.7, {"epoch": 3, "auc": 0.6}, "auc"), is_new_best(None, {"epoch": 0, "auc": -1.0}, "auc")
    (True, False)
    """
    if score is None:
        return False
    if not math.isfinite(score) or best.get("epoch") == 0:
        return True
    prev = best.get(key)
    if prev is None:
        return False
    return score > prev if mode == "max" else score < prev


def _progress(total: int, desc: str, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=True, disable=(None if enabled is None else not enabled))


class EpochDriver:
    """One training run in the folder ``out``: ``EpochDriver(out, resume=...).fit(...)``.

    The constructor refuses ``resume`` without a saved state and a fresh run over an
    existing one (:func:`fedimg.engine.checkpoint.check_run_folder`), so a task calls it
    before loading its data.
    """

    def __init__(self, out: str | Path, *, resume: bool = False) -> None:
        from fedimg.engine.checkpoint import check_run_folder

        self.out = Path(out)
        self.resume = bool(resume)
        self.last_path, self.state_path = check_run_folder(self.out, resume=self.resume)

    def fit(self, model: Any, trainer: Any, hooks: EpochHooks, *, config: Mapping[str, Any], fingerprint: str,
            epochs: int, device: Any, stop_after: int | None = None, progress: bool | None = None) -> dict[str, Any]:
        """Run epochs until ``trainer.epoch == epochs`` or ``stop_after`` epochs ran in this call.

        Returns ``{"run", "epochs_run", "epoch", "best", "last", "telemetry"}``.
        """
        from torch.utils.tensorboard import SummaryWriter

        from fedimg.engine.checkpoint import restore_run, save_checkpoint, save_train_state
        from fedimg.telemetry import Telemetry

        out = self.out
        history: list[dict[str, Any]] = []
        best = hooks.initial_best()
        if self.resume:
            history, best = restore_run(out, model, trainer, fingerprint=fingerprint, best=best)
            # metrics.json holds NaN/Inf as null: read them back as NaN (never compared as better)
            best = {k: (math.nan if v is None else v) for k, v in best.items()}
        write_json(out / "config.json", dict(config))
        writer = SummaryWriter(log_dir=str(out / "tb"), purge_step=trainer.epoch + 1 if self.resume else None)
        tel = Telemetry(device_index=(device.index or 0) if device.type == "cuda" else None, interval=0.5).start()
        epochs_run = 0
        try:
            while trainer.epoch < epochs and (stop_after is None or epochs_run < stop_after):
                bar = _progress(trainer.steps_per_epoch, f"epoch {trainer.epoch + 1}/{epochs}", progress)

                def on_step(s: dict[str, Any], bar: Any = bar) -> None:
                    bar.update(1)
                    postfix = hooks.step_postfix(s)
                    if postfix is not None:
                        bar.set_postfix(**postfix)

                stats = trainer.train_epoch(on_step=on_step)
                epoch = trainer.epoch
                val = dict(hooks.evaluate(epoch))
                row: dict[str, Any] = {"epoch": epoch, **stats, **val}
                postfix = hooks.epoch_postfix(row)
                if postfix is not None:
                    bar.set_postfix(**postfix)
                bar.close()
                history.append(row)
                for k, v in row.items():
                    if k != "epoch" and isinstance(v, float) and math.isfinite(v):
                        writer.add_scalar(f"val/{k}" if k in val else f"train/{k}", v, epoch)
                meta = hooks.meta(epoch, row)
                save_checkpoint(self.last_path, model, meta)
                save_train_state(self.state_path, trainer.state_dict(), {"run": str(out)})
                score = hooks.score_of(row)
                if is_new_best(score, best, hooks.key, hooks.mode):
                    best = {"epoch": epoch, hooks.key: score}
                    save_checkpoint(out / "model.safetensors", model, meta)
                write_json(out / "metrics.json", {"epochs": history, "best": best, "device": str(device),
                                                  "bf16": trainer.bf16, **hooks.info})
                if hooks.log_epoch is not None:
                    hooks.log_epoch(row)
                epochs_run += 1
        finally:
            tel.stop()
            writer.close()
            write_json(out / "telemetry.json", tel.to_dict())
        return {"run": str(out), "epochs_run": epochs_run, "epoch": trainer.epoch, "best": best,
                "last": history[-1] if history else None, "telemetry": tel.summary()}
