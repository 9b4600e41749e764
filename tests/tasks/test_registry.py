"""The task registry: every registered task is a ``Task`` whose config round-trips through a plain dict."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fedimg.errors import ConfigError
from fedimg.tasks import TASKS, FunctionTask, Task, get_task, task_names

#: the smallest config of each task (a model that builds in well under a second)
SMALL = {
    "brats": {"model": "unet", "init_filters": 4, "roi": [32, 32, 32], "epochs": 2},
    "tiles": {"model": "resnet10", "width": 0.25, "epochs": 1},
    "toy": {"features": 4, "hidden": 3},
}


def test_names_and_unknown_task():
    assert task_names() == sorted(TASKS) == ["brats", "tiles", "toy"]
    with pytest.raises(ConfigError, match="unknown task 'nope'; choose one of brats, tiles, toy"):
        get_task("nope")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_satisfies_the_protocol_and_round_trips_its_config(name):
    task = get_task(name)
    assert isinstance(task, Task) and isinstance(task, FunctionTask)
    assert task.name == name and isinstance(task.key_metric, str) and task.key_metric
    assert get_task(name) is task  # one object per task
    cfg = task.config_from_dict(SMALL[name])
    d = cfg.to_dict()
    assert task.config_from_dict(d) == cfg
    assert task.config_from_dict(json.loads(json.dumps(d))) == cfg  # through JSON, as the federation ships it
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 99  # type: ignore[misc]
    model = task.build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    for method in ("config_from_dict", "build_model", "load_site", "train_one_round", "evaluate"):
        assert callable(getattr(task, method))


def test_a_module_without_a_task_is_refused(monkeypatch):
    monkeypatch.setitem(TASKS, "errors", "fedimg.errors")
    with pytest.raises(ConfigError, match="does not define a TASK"):
        get_task("errors")


def test_key_metrics():
    assert {n: get_task(n).key_metric for n in TASKS} == {"brats": "dice_mean", "tiles": "auc", "toy": "accuracy"}
