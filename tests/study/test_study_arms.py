"""The study's arms: early stopping of a local arm, the federated arm's strategy and stopping round."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.study.protocol import ProtocolConfig, stop_point


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from fedimg.tasks import get_task
    from fedimg.tasks.toy import make_sites

    tmp = tmp_path_factory.mktemp("arms")
    make_sites(tmp / "data", n_sites=2, n=48, seed=1)
    task = get_task("toy")
    return tmp, task


def test_local_arm_stops_early_and_keeps_its_best_model(toy):
    from fedimg.study.arms import pool_sites, train_local_arm

    tmp, task = toy
    cfg = task.config_from_dict({"features": 8, "epochs": 40, "lr": 0.5})
    datas = [task.load_site(tmp / "data" / f"site-{k}", cfg) for k in (1, 2)]
    pooled = pool_sites(datas)
    assert pooled.num_train == datas[0].num_train + datas[1].num_train
    assert pooled.x_val.shape[0] == datas[0].x_val.shape[0] + datas[1].x_val.shape[0]  # validation pooled too
    proto = ProtocolConfig(max_epochs=40, check_every=2, patience=2)
    arm = train_local_arm(task, cfg, pooled, proto, seed=0)
    vals = [p["val"] for p in arm["curve"]]
    assert (arm["best_check"], arm["stop_check"]) == stop_point(vals, 2)
    assert len(vals) == arm["stop_check"] + 1 <= proto.max_checks
    assert [p["epochs_per_case"] for p in arm["curve"]] == [2 * (i + 1) for i in range(len(vals))]
    assert arm["curve"][-1]["samples"] == 2 * len(vals) * pooled.num_train
    # the kept weights are those of the best check, not the last
    model = task.build_model(cfg)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in arm["params"].items()})
    assert task.evaluate(model, pooled, cfg)["accuracy"] == pytest.approx(vals[arm["best_check"]])
    # the same seed gives the same arm
    again = train_local_arm(task, cfg, pooled, proto, seed=0)
    assert [p["val"] for p in again["curve"]] == vals


@pytest.mark.slow
def test_federated_arm_runs_the_chosen_strategy(toy):
    """A real NVFlare SimEnv run of the toy task with FedAvgM (the study's default), stopped on its validation curve."""
    from fedimg.fl.server.federation import FederationConfig
    from fedimg.fl.server.state import load_params, read_metrics, round_path
    from fedimg.fl.server.strategy_config import StrategyConfig
    from fedimg.io import read_json
    from fedimg.study.arms import federated_arm

    tmp, task = toy
    fed = FederationConfig(task="toy", rounds=3, local_epochs=1, train={"features": 8, "lr": 0.5},
                           strategy=StrategyConfig(name="fedavgm", server_lr=0.5))
    cfg = task.config_from_dict(fed.train_config())
    datas = {f"site-{k}": task.load_site(tmp / "data" / f"site-{k}", cfg) for k in (1, 2)}
    proto = ProtocolConfig(max_epochs=3, check_every=1, patience=1)
    arm = federated_arm(tmp / "data", tmp / "fl", fed, proto, task, datas)
    assert read_json(tmp / "fl" / "run_config.json")["federation"]["strategy"]["name"] == "fedavgm"
    assert {m["strategy"] for m in read_metrics(tmp / "fl")} == {"fedavgm"}
    momentum = load_params(tmp / "fl" / "server_state.safetensors")[0]["u"]  # the server momentum, kept for resume
    last, before = (load_params(round_path(tmp / "fl", r))[0] for r in (3, 2))
    order = task.build_model(cfg).state_dict()  # pack order: the model's state-dict order
    step = np.concatenate([(last[k] - before[k]).reshape(-1) for k in order])
    np.testing.assert_allclose(step, 0.5 * momentum, rtol=1e-4, atol=1e-6)
    assert [p["epochs_per_case"] for p in arm["curve"]] == [1, 2, 3]
    assert (arm["best_check"], arm["stop_check"]) == stop_point([p["val"] for p in arm["curve"]], 1)
    kept = load_params(round_path(tmp / "fl", arm["best_check"] + 1))[0]
    assert all(np.array_equal(kept[k], arm["params"][k]) for k in kept)
    assert arm["curve"][0]["samples"] == sum(d.num_train for d in datas.values())
    slowest = [p["slowest_site_seconds"] for p in arm["curve"]]  # the toy task reports no train_seconds: 0
    assert slowest == sorted(slowest) and slowest[0] >= 0


def test_cli_strategy_choice():
    import argparse

    from fedimg.cli.study import _compare, register

    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    args = sub.choices["study"].parse_args(["--data", "d", "--out", "o", "--strategy", "fedprox",
                                            "--compare", "fedavg,fedprox,fedyogi,trimmed-mean,fedadam", "--seeds", "3"])
    assert sub.choices["study"].parse_args(["--out", "o"]).strategy == "fedavgm"  # the study's default
    comp = _compare(args.compare, "fedprox")
    assert [c.name for c in comp] == ["fedavg", "fedyogi", "trimmed_mean", "fedadam"]  # the headline is not repeated
    assert [c.server_lr for c in comp] == [1.0, 0.01, 1.0, 0.01] and args.seeds == 3
