"""What a site trains: a small typed :class:`Task` protocol and a registry of tasks by name.

The federation (:mod:`fedimg.fl`) and the study (:mod:`fedimg.study`) get a task object
from :func:`get_task` and call only the methods of :class:`Task`; they never import a
task's module themselves. Tasks: ``"brats"`` (3-D tumour segmentation,
:mod:`.brats`), ``"tiles"`` (H&E tile classification, :mod:`.tiles`; its training hooks
on the engine's epoch loop in :mod:`.tiles_train`, a ``fedimg train-tiles`` run in
:mod:`.tiles_fit`) and ``"toy"`` (logistic regression on tabular data, to exercise
federation in seconds, :mod:`.toy`).

>>> task = get_task("toy")
>>> task.name, task.key_metric, isinstance(task, Task)
('toy', 'accuracy', True)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fedimg.errors import ConfigError

__all__ = ["Task", "FunctionTask", "TASKS", "get_task", "task_names"]


@runtime_checkable
class Task(Protocol):
    """One federated task: its config, model, per-site data, local round and evaluation.

    ``key_metric`` names the entry of :meth:`evaluate`'s result that selects the best
    model (higher is better). ``load_site`` is called once per site process and its result
    is reused every round.
    """

    name: str
    key_metric: str

    def config_from_dict(self, d: dict[str, Any]) -> Any:
        """The task's frozen config from a plain dict (``config.to_dict()`` is the inverse)."""

    def build_model(self, config: Any) -> Any:
        """A freshly initialised ``torch.nn.Module`` on the CPU."""

    def load_site(self, data_dir: str | Path, config: Any, device: Any) -> Any:
        """Validate, split and cache one site's data on ``device``."""

    def train_one_round(self, model: Any, data: Any, config: Any, *, epochs: int | None = None,
                        global_params: dict[str, Any] | None = None,
                        prox_mu: float = 0.0) -> tuple[dict[str, float], int]:
        """Train ``model`` in place; returns ``(metrics, number of training samples)``."""

    def evaluate(self, model: Any, data: Any, config: Any) -> dict[str, float]:
        """Float metrics on the site's validation data, ``key_metric`` among them."""


@dataclass(frozen=True, kw_only=True)
class FunctionTask:
    """A :class:`Task` made of plain functions (how the tasks of this package are written)."""

    name: str
    key_metric: str
    config_from_dict: Callable[[dict[str, Any]], Any]
    build_model: Callable[[Any], Any]
    load_site: Callable[..., Any]
    train_one_round: Callable[..., tuple[dict[str, float], int]]
    evaluate: Callable[[Any, Any, Any], dict[str, float]]


#: Task name -> module that defines ``TASK`` (imported only when the task is asked for).
TASKS = {
    "brats": "fedimg.tasks.brats",
    "tiles": "fedimg.tasks.tiles",
    "toy": "fedimg.tasks.toy",
}


def task_names() -> list[str]:
    """The registered task names, sorted."""
    return sorted(TASKS)


def get_task(name: str) -> Task:
    """The task registered as ``name`` (a :class:`Task`)."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(task_names())}")
    module = importlib.import_module(TASKS[name])
    task = getattr(module, "TASK", None)
    if not isinstance(task, Task):
        raise ConfigError(f"task module {TASKS[name]} does not define a TASK implementing fedimg.tasks.Task")
    return task
