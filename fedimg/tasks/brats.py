"""The ``"brats"`` federated task: what the NVFlare client calls each round.

A task module exposes ``build_model``, ``load_site``, ``train_one_round``, ``evaluate``,
``KEY_METRIC`` and ``config_from_dict`` (see docs/INTERFACES.md); ``TASK`` bundles them for
:func:`fedimg.tasks.get_task`. A round: ``data = task.load_site("data/site-1", cfg, device)``
once, then ``metrics, n = task.train_one_round(model, data, cfg, epochs=1, global_params=sd)``
and ``task.evaluate(model, data, cfg)["dice_mean"]``.

>>> from fedimg.tasks import brats as task
>>> cfg = task.config_from_dict({"epochs": 2, "roi": [32, 32, 32]})
>>> type(task.build_model(cfg)).__name__, task.KEY_METRIC
('SegResNet', 'dice_mean')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedimg.engine.config import TrainConfig
from fedimg.engine.loop import train_one_round

from fedimg.tasks import FunctionTask

__all__ = ["TASK", "KEY_METRIC", "build_model", "load_site", "train_one_round", "evaluate", "config_from_dict"]

KEY_METRIC = "dice_mean"


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a plain dict (``config.to_dict()`` is the inverse)."""
    return TrainConfig.from_dict(dict(d))


def build_model(config: TrainConfig) -> Any:
    """The model ``config.model`` with the config's width (CPU; the trainer moves it)."""
    from fedimg.engine.models import build_model as _build, model_kwargs

    return _build(config.model, **model_kwargs(config))


def load_site(data_dir: str | Path, config: TrainConfig, device: Any) -> Any:
    """Discover, validate, split and cache one site's cases on ``device`` (once per process).

    Images must be defaced unless ``config.allow_identifiable`` is true.
    """
    from fedimg.data import discover
    from fedimg.engine.cache import prepare_site_data

    cases = discover(data_dir, require_labels=True, allow_identifiable=config.allow_identifiable)
    return prepare_site_data(cases, config, device, source=str(data_dir))


def evaluate(model: Any, data: Any, config: TrainConfig) -> dict[str, float]:
    """Mean Dice TC/WT/ET and ``dice_mean`` on the site's validation cases (floats only)."""
    from fedimg.engine.evaluate import evaluate as _evaluate

    res = _evaluate(model, data, config, device=data.device)
    return {k: float(v) for k, v in res.items() if k != "per_case"}


#: The registered task (:func:`fedimg.tasks.get_task` returns it).
TASK = FunctionTask(name="brats", key_metric=KEY_METRIC, config_from_dict=config_from_dict, build_model=build_model,
                    load_site=load_site, train_one_round=train_one_round, evaluate=evaluate)
