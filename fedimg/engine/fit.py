"""A whole per-site training run: epochs, validation, checkpoints, metrics, TensorBoard, telemetry.

``fit`` writes into the run folder ``RUN``::

    RUN/config.json            the TrainConfig (TrainConfig.from_dict reads it back)
    RUN/model.safetensors/.json  best checkpoint by validation dice_mean
    RUN/last.safetensors/.json   last epoch; RUN/last.state.safetensors/.json: optimizer,
                                 LR schedule, RNG, epoch (``resume=True`` continues exactly)
    RUN/metrics.json           per epoch: loss, lr, Dice TC/WT/ET/mean, voxels/s, seconds
    RUN/telemetry.json         GPU utilisation / memory / power samples (empty on a CPU)
    RUN/tb/                    TensorBoard event files

Usage: ``fit(cases, TrainConfig(epochs=20), Path("runs/site-1"), device=torch.device("cpu"))``
returns the driver's summary (``summary["best"]["dice_mean"]``, ``summary["epochs_run"]``, ...).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from pathlib import Path
from typing import Any

__all__ = ["fit", "checkpoint_meta"]

log = logging.getLogger(__name__)

_DICE = ("dice_tc", "dice_wt", "dice_et", "dice_mean")


def checkpoint_meta(config: Any, data: Any, epoch: int, metrics: dict) -> dict[str, Any]:
    """The JSON metadata stored beside every checkpoint."""
    import fedimg
    from fedimg.engine.models import model_kwargs

    return {
        "model": config.model,
        "model_kwargs": model_kwargs(config),
        "config": config.to_dict(),
        "epoch": epoch,
        "metrics": metrics,
        "data_fingerprint": data.fingerprint,
        "data": data.source,
        "train_cases": data.train_ids,
        "val_cases": data.val_ids,
        "fedimg_version": fedimg.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def fit(cases: list, config: Any, out: str | Path, *, device: Any, resume: bool = False,
        stop_after: int | None = None, progress: bool | None = None, source: str | Path = "",
        privacy: Any = None, dist: Any = None) -> dict[str, Any]:
    """Train on ``cases`` (split train/val by the config) and write the run folder ``out``.

    ``stop_after`` limits the epochs run in this call (continue later with ``resume``).
    ``progress=None`` shows a progress bar only on a terminal. ``source`` (the data folder)
    is recorded in the checkpoint metadata. ``privacy`` (e.g. :class:`fedimg.privacy.PatientDP`)
    trains with DP-SGD (:meth:`fedimg.engine.loop.EpochTrainer.make_private`); its ``dp_*``
    metrics join every epoch's row. The epoch loop is :class:`fedimg.engine.driver.EpochDriver`.
    ``dist`` (a :class:`fedimg.engine.distributed.DistContext`) trains this process's rank of a
    DDP group (:class:`fedimg.engine.distributed.DistributedTrainer`); only rank 0 writes the run folder.
    """
    from fedimg.engine.cache import prepare_site_data
    from fedimg.engine.driver import EpochDriver, EpochHooks
    from fedimg.engine.evaluate import evaluate
    from fedimg.engine.loop import Trainer
    from fedimg.engine.models import build_model, model_kwargs

    run = EpochDriver(out, resume=resume) if dist is None or dist.is_main else None
    data = prepare_site_data(cases, config, device, source=str(source))
    model = build_model(config.model, **model_kwargs(config))
    if dist is None:
        trainer = Trainer(model, data, config)
    else:
        from fedimg.engine.distributed import DistributedTrainer

        trainer = DistributedTrainer(model, data, config, dist)
    if privacy is not None:
        trainer.make_private(privacy)
    if run is None:  # a rank other than 0: train in step with rank 0, write nothing
        from fedimg.engine.distributed import follow

        return follow(model, trainer, out, resume=resume, fingerprint=data.fingerprint, epochs=config.epochs,
                      stop_after=stop_after)

    def validate(epoch: int) -> dict[str, float]:
        if not data.num_val or (epoch % config.val_every != 0 and epoch != config.epochs):
            return {}
        res = evaluate(model, data, config, device=device)
        return {k: res[k] for k in _DICE}

    def score(row: dict) -> float | None:
        if not data.num_val:
            return math.nan  # nothing to validate on: the last epoch is the best
        value = row.get("dice_mean", math.nan)
        return value if math.isfinite(value) else None

    def step_postfix(s: dict) -> dict | None:
        return None if s["loss"] is None else {"loss": f"{s['loss']:.4f}", "vox_s": f"{s['voxels_per_s']:.3g}"}

    def epoch_postfix(row: dict) -> dict | None:
        if "dice_mean" not in row:
            return None
        return {"loss": f"{row['loss']:.4f}", "dice": f"{row['dice_mean']:.3f}", "vox_s": f"{row['voxels_per_s']:.3g}"}

    def log_epoch(row: dict) -> None:
        value = row.get("dice_mean", math.nan)
        log.info("epoch %d/%d loss %.4f dice_mean %s %.3g vox/s", row["epoch"], config.epochs, row["loss"],
                 f"{value:.3f}" if math.isfinite(value) else "-", row["voxels_per_s"])

    hooks = EpochHooks(key="dice_mean", evaluate=validate, score=score,
                       meta=lambda epoch, row: checkpoint_meta(config, data, epoch, row),
                       info={"train_cases": data.num_train, "val_cases": data.num_val,
                             **({} if dist is None else {"processes": dist.world_size})},
                       step_postfix=step_postfix, epoch_postfix=epoch_postfix, log_epoch=log_epoch)
    return run.fit(model, trainer, hooks, config=config.to_dict(), fingerprint=data.fingerprint, epochs=config.epochs,
                   device=device, stop_after=stop_after, progress=progress)

