"""The ``"tiles"`` federated task: H&E tile classification, one site = one tile store.

Implements the task interface of docs/INTERFACES.md for ``fedimg simulate --task tiles
--data pathology_sites/`` (each ``pathology_sites/site-*/`` is a tile store made by
``fedimg tiles`` or ``fedimg tiles --synthetic-sites N``).

Where things live: the config, models, tile cache and augmentation in :mod:`fedimg.pathology`
(:mod:`~fedimg.pathology.config`, :mod:`~fedimg.pathology.models`,
:mod:`~fedimg.pathology.tiledata`, :mod:`~fedimg.pathology.augment`); the training hooks on
the engine's epoch loop, the round and the evaluation in :mod:`fedimg.tasks.tiles_train`; a
whole ``fedimg train-tiles`` run in :mod:`fedimg.tasks.tiles_fit`. Their public names are
importable from here too.

>>> from fedimg.tasks import tiles as task
>>> cfg = task.config_from_dict({"model": "resnet10", "width": 0.25, "epochs": 1})
>>> type(task.build_model(cfg)).__name__, task.KEY_METRIC, task.TASK.key_metric
('ResNet', 'auc', 'auc')
>>> task.config_from_dict({**cfg.to_dict(), "allow_identifiable": True}) == cfg
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedimg.pathology.config import TileTrainConfig
from fedimg.pathology.models import build_tile_model
from fedimg.pathology.tiledata import TileSiteData, prepare_tile_data
from fedimg.tasks import FunctionTask
from fedimg.tasks.tiles_fit import fit_tiles, load_tile_model
from fedimg.tasks.tiles_train import TileTrainer, train_one_round
from fedimg.tasks.tiles_train import evaluate as _evaluate

__all__ = ["TASK", "KEY_METRIC", "build_model", "load_site", "train_one_round", "evaluate", "config_from_dict",
           "TileTrainConfig", "TileSiteData", "TileTrainer", "build_tile_model", "prepare_tile_data", "fit_tiles",
           "load_tile_model"]

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


def evaluate(model: Any, data: TileSiteData, config: TileTrainConfig, *, split: str = "val") -> dict[str, float]:
    """``auc``, ``accuracy``, ``loss`` and ``n`` on the site's validation tiles (``split="train"``:
    its training tiles), floats only."""
    return {k: float(v) for k, v in _evaluate(model, data, config, split=split).items()}


#: The registered task (:func:`fedimg.tasks.get_task` returns it).
TASK = FunctionTask(name="tiles", key_metric=KEY_METRIC, config_from_dict=config_from_dict, build_model=build_model,
                    load_site=load_site, train_one_round=train_one_round, evaluate=evaluate)
