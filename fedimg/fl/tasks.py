"""Federated task registry: a name -> the module implementing the task protocol.

A task module exposes ``build_model(config)``, ``load_site(data_dir, config, device)``,
``train_one_round(model, data, config, *, epochs, global_params, prox_mu)``,
``evaluate(model, data, config)``, ``KEY_METRIC`` and ``config_from_dict(d)``
(docs/INTERFACES.md).

>>> get_task("toy").KEY_METRIC
'accuracy'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fedimg.errors import ConfigError

__all__ = ["TASKS", "get_task"]

#: Task name -> module path.
TASKS = {
    "brats": "fedimg.engine.task",
    "tiles": "fedimg.pathology.task",
    "toy": "fedimg.fl.toytask",
}

_REQUIRED = ("build_model", "load_site", "train_one_round", "evaluate", "KEY_METRIC", "config_from_dict")


def get_task(name: str) -> ModuleType:
    """Import the task module registered as ``name``."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    try:
        module = importlib.import_module(TASKS[name])
    except ModuleNotFoundError as exc:
        raise ConfigError(f"task {name!r} needs module {TASKS[name]}, which is not available ({exc})") from None
    missing = [a for a in _REQUIRED if not hasattr(module, a)]
    if missing:
        raise ConfigError(f"task module {TASKS[name]} lacks {', '.join(missing)}")
    return module
