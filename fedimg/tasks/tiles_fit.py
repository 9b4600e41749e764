"""A tile-classifier training run (``fedimg train-tiles``): the tile task's epoch hooks on the
engine's :class:`fedimg.engine.driver.EpochDriver` (run folder, best/last checkpoints, exact
resume, TensorBoard and GPU telemetry, the same as the 3-D run's, ``fedimg.engine.fit``).

``RUN/`` holds ``model.safetensors`` (best validation AUC) + ``model.json``,
``last.safetensors`` + ``last.json``, ``last.state.safetensors`` (optimizer, schedule, RNG),
``config.json``, ``metrics.json`` (per epoch: loss, AUC, accuracy, tiles/s),
``telemetry.json`` and ``tb/``. Usage: ``fit_tiles("pathology_sites/site-1",
TileTrainConfig(epochs=2), "runs/tiles-site1", device=torch.device("cpu"))`` returns the
driver's summary (``epochs_run``, ``best``, ...); ``load_tile_model("runs/tiles-site1")``
gives back ``(model, meta)``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from fedimg.engine.checkpoint import meta_path, resolve_checkpoint
from fedimg.engine.driver import EpochDriver, EpochHooks
from fedimg.engine.loop import load_global_params
from fedimg.errors import InputError
from fedimg.io import read_json
from fedimg.pathology.config import TileTrainConfig
from fedimg.pathology.models import build_tile_model
from fedimg.pathology.tiledata import prepare_tile_data
from fedimg.tasks.tiles_train import TileTrainer, evaluate

__all__ = ["fit_tiles", "load_tile_model"]

log = logging.getLogger(__name__)


def _meta(config: TileTrainConfig, data: Any, epoch: int, row: dict) -> dict[str, Any]:
    return {"task": "tiles", "model": config.model, "model_kwargs": {"num_classes": config.num_classes, "width": config.width},
            "config": config.to_dict(), "epoch": epoch, "metrics": row, "data_fingerprint": data.fingerprint,
            "data": data.source, "classes": data.classes}


def load_tile_model(path: str | Path, *, device: Any = "cpu"):
    """Rebuild a tile model from ``RUN`` or ``RUN/model.safetensors``; returns ``(model, meta)``."""
    from safetensors.torch import load_file

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
              stop_after: int | None = None, progress: bool | None = None, privacy: Any = None) -> dict[str, Any]:
    """Train on the tile store ``data_path`` and write the run folder ``out``
    (the epoch loop is :class:`fedimg.engine.driver.EpochDriver`; ``privacy``, e.g.
    :class:`fedimg.privacy.PatientDP`: DP-SGD over tiles, its ``dp_*`` metrics in every epoch's row)."""
    import torch

    run = EpochDriver(out, resume=resume)
    data = prepare_tile_data(data_path, config, device)
    torch.manual_seed(config.seed)
    model = build_tile_model(config)
    trainer = TileTrainer(model, data, config)
    if privacy is not None:
        trainer.make_private(privacy)

    def validate(epoch: int) -> dict[str, float]:
        res = evaluate(model, data, config)
        return {"auc": res["auc"], "accuracy": res["accuracy"], "val_loss": res["loss"]}

    def log_epoch(row: dict) -> None:
        log.info("epoch %d/%d loss %.4f auc %.3f acc %.3f %.3g tiles/s", row["epoch"], config.epochs, row["loss"],
                 row["auc"], row["accuracy"], row["tiles_per_s"])

    # the best epoch by validation AUC; by accuracy where the AUC is undefined (one class)
    hooks = EpochHooks(key="auc", evaluate=validate,
                       score=lambda row: row["auc"] if math.isfinite(row["auc"]) else row["accuracy"],
                       meta=lambda epoch, row: _meta(config, data, epoch, row),
                       info={"channels_last": trainer.channels_last, "train_tiles": data.num_train,
                             "val_tiles": data.num_val, "classes": data.classes},
                       step_postfix=lambda s: {"loss": f"{s['loss']:.4f}", "tiles_s": f"{s['tiles_per_s']:.3g}"},
                       log_epoch=log_epoch)
    return run.fit(model, trainer, hooks, config=config.to_dict(), fingerprint=data.fingerprint, epochs=config.epochs,
                   device=device, stop_after=stop_after, progress=progress)
