"""A tile-classifier training run: the run folder, best/last checkpoints, exact resume,
TensorBoard and GPU telemetry, the same as the 3-D engine's (``fedimg.engine.fit``).

``RUN/`` holds ``model.safetensors`` (best validation AUC) + ``model.json``,
``last.safetensors`` + ``last.json``, ``last.state.safetensors`` (optimizer, schedule, RNG),
``config.json``, ``metrics.json`` (per epoch: loss, AUC, accuracy, tiles/s),
``telemetry.json`` and ``tb/``.

>>> # fit_tiles("pathology_sites/site-1", TileTrainConfig(epochs=2), "runs/tiles-site1", device=torch.device("cpu"))
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from fedimg.errors import InputError
from fedimg.io import read_json, write_json

from .train import TileTrainConfig, TileTrainer, build_tile_model, evaluate, prepare_tile_data

__all__ = ["fit_tiles", "load_tile_model"]

log = logging.getLogger(__name__)


def _meta(config: TileTrainConfig, data: Any, epoch: int, row: dict) -> dict[str, Any]:
    return {"task": "tiles", "model": config.model, "model_kwargs": {"num_classes": config.num_classes, "width": config.width},
            "config": config.to_dict(), "epoch": epoch, "metrics": row, "data_fingerprint": data.fingerprint,
            "data": data.source, "classes": data.classes}


def load_tile_model(path: str | Path, *, device: Any = "cpu"):
    """Rebuild a tile model from ``RUN`` or ``RUN/model.safetensors``; returns ``(model, meta)``."""
    from safetensors.torch import load_file

    from fedimg.engine.checkpoint import meta_path, resolve_checkpoint
    from fedimg.engine.loop import load_global_params

    p = resolve_checkpoint(path)
    meta = read_json(meta_path(p))
    if not isinstance(meta, dict) or meta.get("task") != "tiles":
        raise InputError(meta_path(p), "is not a tile-classifier checkpoint (written by fedimg train-tiles)")
    config = TileTrainConfig.from_dict(meta["config"])
    model = build_tile_model(config)
    try:
        load_global_params(model, load_file(str(p)))
    except Exception as exc:
        raise InputError(p, f"weights do not fit model {config.model!r} ({str(exc).splitlines()[0]})") from None
    return model.to(device), meta


def fit_tiles(data_path: str | Path, config: TileTrainConfig, out: str | Path, *, device: Any, resume: bool = False,
              stop_after: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Train on the tile store ``data_path`` and write the run folder ``out``."""
    import torch
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from fedimg.engine.checkpoint import check_run_folder, restore_run, save_checkpoint, save_train_state
    from fedimg.telemetry import Telemetry

    out = Path(out)
    last_path, state_path = check_run_folder(out, resume=resume)
    data = prepare_tile_data(data_path, config, device)
    torch.manual_seed(config.seed)
    model = build_tile_model(config)
    trainer = TileTrainer(model, data, config)
    history: list[dict] = []
    best: dict[str, Any] = {"epoch": 0, "auc": -math.inf}
    if resume:
        history, best = restore_run(out, model, trainer, fingerprint=data.fingerprint, best=best)
    write_json(out / "config.json", config.to_dict())
    writer = SummaryWriter(log_dir=str(out / "tb"), purge_step=trainer.epoch + 1 if resume else None)
    tel = Telemetry(device_index=(device.index or 0) if device.type == "cuda" else None, interval=0.5).start()
    epochs_run = 0
    try:
        while trainer.epoch < config.epochs and (stop_after is None or epochs_run < stop_after):
            bar = tqdm(total=trainer.steps_per_epoch, desc=f"epoch {trainer.epoch + 1}/{config.epochs}", unit="step",
                       disable=None if progress is None else not progress)

            def on_step(s: dict, bar=bar) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{s['loss']:.4f}", tiles_s=f"{s['tiles_per_s']:.3g}")

            stats = trainer.train_epoch(on_step=on_step)
            bar.close()
            res = evaluate(model, data, config)
            row = {"epoch": trainer.epoch, **stats, **{k: res[k] for k in ("auc", "accuracy")}, "val_loss": res["loss"]}
            history.append(row)
            for k, v in row.items():
                if k != "epoch" and isinstance(v, float) and math.isfinite(v):
                    writer.add_scalar(f"val/{k}" if k in ("auc", "accuracy", "val_loss") else f"train/{k}", v, trainer.epoch)
            meta = _meta(config, data, trainer.epoch, row)
            save_checkpoint(last_path, model, meta)
            save_train_state(state_path, trainer.state_dict(), {"run": str(out)})
            score = row["auc"] if math.isfinite(row["auc"]) else row["accuracy"]
            if not math.isfinite(score) or score > best.get("auc", -math.inf) or best["epoch"] == 0:
                best = {"epoch": trainer.epoch, "auc": score}
                save_checkpoint(out / "model.safetensors", model, meta)
            write_json(out / "metrics.json", {"epochs": history, "best": best, "device": str(device), "bf16": trainer.bf16,
                                              "channels_last": trainer.channels_last, "train_tiles": data.num_train,
                                              "val_tiles": data.num_val, "classes": data.classes})
            log.info("epoch %d/%d loss %.4f auc %.3f acc %.3f %.3g tiles/s", trainer.epoch, config.epochs, stats["loss"],
                     row["auc"], row["accuracy"], stats["tiles_per_s"])
            epochs_run += 1
    finally:
        tel.stop()
        writer.close()
        write_json(out / "telemetry.json", tel.to_dict())
    return {"run": str(out), "epochs_run": epochs_run, "epoch": trainer.epoch, "best": best,
            "last": history[-1] if history else None, "telemetry": tel.summary()}
