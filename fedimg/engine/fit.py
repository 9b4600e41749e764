"""A whole per-site training run: epochs, validation, checkpoints, metrics, TensorBoard, telemetry.

``fit`` writes into the run folder ``RUN``::

    RUN/config.json            the TrainConfig (TrainConfig.from_dict reads it back)
    RUN/model.safetensors/.json  best checkpoint by validation dice_mean
    RUN/last.safetensors/.json   last epoch; RUN/last.state.safetensors/.json: optimizer,
                                 LR schedule, RNG, epoch (``resume=True`` continues exactly)
    RUN/metrics.json           per epoch: loss, lr, Dice TC/WT/ET/mean, voxels/s, seconds
    RUN/telemetry.json         GPU utilisation / memory / power samples (empty on a CPU)
    RUN/tb/                    TensorBoard event files

>>> # summary = fit(cases, TrainConfig(epochs=20), Path("runs/site-1"), device=torch.device("cpu"))
>>> # summary["best"]["dice_mean"], summary["epochs_run"]
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from pathlib import Path
from typing import Any

from fedimg.io import write_json

__all__ = ["fit", "checkpoint_meta"]

log = logging.getLogger(__name__)


def checkpoint_meta(config: Any, data: Any, epoch: int, metrics: dict) -> dict[str, Any]:
    """The JSON metadata stored beside every checkpoint."""
    import fedimg
    from fedimg.models import model_kwargs

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


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=True, disable=(None if enabled is None else not enabled))


def fit(cases: list, config: Any, out: str | Path, *, device: Any, resume: bool = False,
        stop_after: int | None = None, progress: bool | None = None, source: str | Path = "") -> dict[str, Any]:
    """Train on ``cases`` (split train/val by the config) and write the run folder ``out``.

    ``stop_after`` limits the epochs run in this call (continue later with ``resume``).
    ``progress=None`` shows a progress bar only on a terminal. ``source`` (the data folder)
    is recorded in the checkpoint metadata.
    """
    from fedimg.engine.cache import prepare_site_data
    from fedimg.engine.checkpoint import check_run_folder, restore_run, save_checkpoint, save_train_state
    from fedimg.engine.evaluate import evaluate
    from fedimg.engine.loop import Trainer
    from fedimg.models import build_model, model_kwargs
    from fedimg.telemetry import Telemetry

    out = Path(out)
    last_path, state_path = check_run_folder(out, resume=resume)
    history: list[dict] = []
    best = {"epoch": 0, "dice_mean": -math.inf}

    data = prepare_site_data(cases, config, device, source=str(source))
    model = build_model(config.model, **model_kwargs(config))
    trainer = Trainer(model, data, config)
    if resume:
        history, best = restore_run(out, model, trainer, fingerprint=data.fingerprint, best=best)
    write_json(out / "config.json", config.to_dict())

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(out / "tb"), purge_step=trainer.epoch + 1 if resume else None)
    tel = Telemetry(device_index=(device.index or 0) if device.type == "cuda" else None, interval=0.5).start()
    epochs_run = 0
    try:
        while trainer.epoch < config.epochs and (stop_after is None or epochs_run < stop_after):
            bar = _progress(trainer.steps_per_epoch, f"epoch {trainer.epoch + 1}/{config.epochs}", progress)

            def on_step(s: dict, bar=bar) -> None:
                bar.update(1)
                if s["loss"] is not None:
                    bar.set_postfix(loss=f"{s['loss']:.4f}", vox_s=f"{s['voxels_per_s']:.3g}")

            stats = trainer.train_epoch(on_step=on_step)
            epoch = trainer.epoch
            row: dict[str, Any] = {"epoch": epoch, **stats}
            if data.num_val and (epoch % config.val_every == 0 or epoch == config.epochs):
                res = evaluate(model, data, config, device=device)
                row.update({k: res[k] for k in ("dice_tc", "dice_wt", "dice_et", "dice_mean")})
                bar.set_postfix(loss=f"{stats['loss']:.4f}", dice=f"{res['dice_mean']:.3f}",
                                vox_s=f"{stats['voxels_per_s']:.3g}")
            bar.close()
            history.append(row)
            for k, v in row.items():
                if k != "epoch" and isinstance(v, float) and math.isfinite(v):
                    writer.add_scalar(f"train/{k}" if not k.startswith("dice") else f"val/{k}", v, epoch)
            meta = checkpoint_meta(config, data, epoch, row)
            save_checkpoint(last_path, model, meta)
            save_train_state(state_path, trainer.state_dict(), {"run": str(out)})
            score = row.get("dice_mean", math.nan)
            if (not data.num_val) or (math.isfinite(score) and score > best["dice_mean"]):
                best = {"epoch": epoch, "dice_mean": score if data.num_val else math.nan}
                save_checkpoint(out / "model.safetensors", model, meta)
            write_json(out / "metrics.json", {"epochs": history, "best": best, "device": str(device),
                                              "bf16": trainer.bf16, "train_cases": data.num_train,
                                              "val_cases": data.num_val})
            log.info("epoch %d/%d loss %.4f dice_mean %s %.3g vox/s", epoch, config.epochs, stats["loss"],
                     f"{score:.3f}" if math.isfinite(score) else "-", stats["voxels_per_s"])
            epochs_run += 1
    finally:
        tel.stop()
        writer.close()
        write_json(out / "telemetry.json", tel.to_dict())
    return {"run": str(out), "epochs_run": epochs_run, "epoch": trainer.epoch, "best": best,
            "last": history[-1] if history else None, "telemetry": tel.summary()}
