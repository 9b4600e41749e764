"""``fedimg bench federation``: the round split from a run's metrics and fedimg's own server
aggregation (no NVFlare objects). Not timing tests; the SimEnv run is left to the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedimg.bench import federation


def test_round_split_from_metrics():
    site = {"metrics": {"train_seconds_train": 2.0, "train_seconds_eval": 0.5}}
    slow = {"metrics": {"train_seconds_train": 3.0, "train_seconds_eval": 1.0}}
    metrics = [{"round": 1, "sites": {"a": site, "b": slow}, "round_seconds": 5.0, "aggregation_seconds": 0.25},
               {"round": 2, "sites": {}, "round_seconds": 1.0, "aggregation_seconds": 0.1}]
    (row,) = federation.round_split(metrics)
    assert row == {"round": 1, "wall_s": 5.0, "local_train_s": 3.0, "local_eval_s": 1.0, "aggregation_s": 0.25,
                   "transfer_and_overhead_s": pytest.approx(0.75)}


def test_server_round_folds_every_update():
    params = {"w": np.zeros((30, 20), np.float32), "b": np.zeros(7, np.float32)}
    assert federation.server_round(params, 3, "cpu") > 0
    assert federation.peak_aggregator_only(federation.server_round, params, 3, "cpu") >= 0


def test_fedimg_bench_federation_aggregation_only(tmp_path, capsys):
    from fedimg.cli import main

    out = tmp_path / "fed.json"
    assert main(["-q", "bench", "federation", "--skip-round", "--ks", "2", "--repeats", "1", "--init-filters", "8",
                 "--threads", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (row,) = res["aggregation"]
    assert row["k"] == 2 and row["fedimg_s"] > 0 and row["fedimg_GBps"] > 0 and row["model_mb"] > 0
    assert "round_split" not in res and "NVFlare" not in capsys.readouterr().out
