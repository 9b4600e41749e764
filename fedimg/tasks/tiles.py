"""The ``"tiles"`` federated task: H&E tile classification, one site = one tile store.

Implements the task interface of docs/INTERFACES.md for ``fedimg simulate --task tiles
--data pathology_sites/`` (each ``pathology_sites/site-*/`` is a tile store made by
``fedimg tiles`` or ``fedimg tiles --synthetic-sites N``).

>>> from fedimg.tasks import tiles as task
>>> cfg = task.config_from_dict({"model": "resnet10", "width": 0.25, "epochs": 1})
>>> type(task.build_model(cfg)).__name__, task.KEY_METRIC
('ResNet', 'auc')
>>> # data = task.load_site("pathology_sites/site-1", cfg, torch.device("cpu"))
>>> # metrics, n = task.train_one_round(model, data, cfg, epochs=1, global_params=sd)
>>> # task.evaluate(model, data, cfg)["auc"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedimg.pathology.train import TileSiteData, TileTrainConfig, build_tile_model, prepare_tile_data, train_one_round
from fedimg.pathology.train import evaluate as _evaluate

from fedimg.tasks import FunctionTask

__all__ = ["TASK", "KEY_METRIC", "build_model", "load_site", "train_one_round", "evaluate", "config_from_dict"]

KEY_METRIC = "auc"


#: keys the federation's shared options may add that mean nothing for tiles (no faces in H&E tiles)
_IGNORED = ("allow_identifiable",)


def config_from_dict(d: dict[str, Any]) -> TileTrainConfig:
    """A :class:`TileTrainConfig` from a plain dict (``config.to_dict()`` is the inverse).

    Unknown keys are an error, except ``allow_identifiable`` (a defacing gate for MRI).
    """
    return TileTrainConfig.from_dict({k: v for k, v in dict(d).items() if k not in _IGNORED})


def build_model(config: TileTrainConfig) -> Any:
    """The tile classifier named by ``config.model`` (on the CPU; training moves it)."""
    return build_tile_model(config)


def load_site(data_dir: str | Path, config: TileTrainConfig, device: Any) -> TileSiteData:
    """Read, split and cache one site's labelled tiles on ``device`` (once per site process)."""
    return prepare_tile_data(data_dir, config, device)


def evaluate(model: Any, data: TileSiteData, config: TileTrainConfig) -> dict[str, float]:
    """``auc``, ``accuracy``, ``loss`` and ``n`` on the site's validation tiles (floats only)."""
    return {k: float(v) for k, v in _evaluate(model, data, config).items()}


#: The registered task (:func:`fedimg.tasks.get_task` returns it).
TASK = FunctionTask(name="tiles", key_metric=KEY_METRIC, config_from_dict=config_from_dict, build_model=build_model,
                    load_site=load_site, train_one_round=train_one_round, evaluate=evaluate)
