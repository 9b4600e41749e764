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
    from fedimg.cli.study import study_federation_config

    parse = sub.choices["study"].parse_args  # the study's fedavgm steps with Nesterov momentum unless told not to
    assert study_federation_config(parse(["--out", "o"])).strategy.nesterov is True
    assert study_federation_config(parse(["--out", "o"])).strategy.beta1 == 0.8  # the fifth wave's default
    assert study_federation_config(parse(["--out", "o", "--server-momentum", "0.9"])).strategy.beta1 == 0.9
    assert study_federation_config(parse(["--out", "o", "--strategy", "fedadam"])).strategy.beta1 == 0.9  # FedOpt's own
    assert study_federation_config(parse(["--out", "o", "--no-nesterov"])).strategy.nesterov is False
    assert study_federation_config(parse(["--out", "o", "--strategy", "fedavg"])).strategy.nesterov is False
    comp = _compare(args.compare, "fedprox")
    assert [c.name for c in comp] == ["fedavg", "fedyogi", "trimmed_mean", "fedadam"]  # the headline is not repeated
    assert [c.server_lr for c in comp] == [1.0, 0.01, 1.0, 0.01] and args.seeds == 3


def test_personalised_arm_tests_each_site_with_its_own_norm_layers(tmp_path):
    """FedBN: a site's test cases are scored with the kept round's shared layers + that site's norms."""
    from fedimg.data import discover
    from fedimg.data.synth import synthesize
    from fedimg.fl.nvflare.site_strategy import norms_path
    from fedimg.fl.server.scaffold import norm_keys
    from fedimg.fl.server.state import save_params
    from fedimg.study.arms import evaluate_cases, site_params, tested_arm
    from fedimg.study.runner import load_test_data
    from fedimg.tasks import get_task

    torch.set_num_threads(1)  # four small sliding-window evaluations; a busy 2-core machine spins with 2 threads
    synthesize(tmp_path / "data", sites=1, cases_per_site=1, seed=0, spacing=4.0)  # the same case at both sites
    task = get_task("brats")
    cfg = task.config_from_dict({"roi": [32, 32, 32], "init_filters": 8, "allow_identifiable": True, "device": "cpu"})
    model = task.build_model(cfg)
    params = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    keys = norm_keys(model)
    modules = dict(model.named_modules())
    assert keys and all(isinstance(modules[k.rsplit(".", 1)[0]], torch.nn.GroupNorm) for k in keys)
    run = tmp_path / "run"
    own = {"site-1": {k: params[k] for k in keys}, "site-2": {k: params[k] + 0.5 for k in keys}}
    for site, norms in own.items():
        save_params(norms_path(run / "local_models", site, 3), norms)
    case = load_test_data(discover(tmp_path / "data" / "site-1", allow_identifiable=True), cfg, torch.device("cpu"), "s")
    tests = {"site-1": case, "site-2": case}
    rec = tested_arm({"params": params, "best_check": 2, "run": str(run), "personalised": True}, task, cfg, tests)
    assert rec["personalised"] and "params" not in rec
    for site in tests:
        mine = site_params(run, site, 3, params, True)
        np.testing.assert_array_equal(mine[keys[0]], own[site][keys[0]])
        assert rec["test"][site] == evaluate_cases(task, cfg, mine, {site: tests[site]})[site]  # its own model
    assert site_params(run, "site-2", 3, params, False) is params


def test_cli_reads_scaffold_and_fedbn_and_refuses_them_with_dp():
    import argparse

    from fedimg.cli._federation import add_federation_arguments, federation_config_from_args
    from fedimg.cli.study import _compare
    from fedimg.errors import ConfigError

    comp = _compare("fedavg,scaffold,fedbn", "fedavg")
    assert [(c.name, c.server_lr, c.scaffold, c.local_norm) for c in comp] == [
        ("scaffold", 1.0, True, False), ("fedbn", 1.0, False, True)]
    p = argparse.ArgumentParser()
    add_federation_arguments(p)
    assert federation_config_from_args(p.parse_args(["--strategy", "scaffold"])).strategy.scaffold
    mine = federation_config_from_args(p.parse_args(["--strategy", "fedavgm", "--local-norms", "--server-lr-plateau",
                                                     "3", "--task", "tiles"])).strategy
    assert (mine.name, mine.local_norm, mine.lr_plateau, mine.plateau_metric) == ("fedavgm", True, 3, "auc")
    for argv in (["--strategy", "fedavgm", "--local-norms", "--client-dp"],
                 ["--strategy", "fedavgm", "--server-lr-plateau", "2", "--client-dp"]):
        with pytest.raises(ConfigError, match="DP|client-dp"):
            federation_config_from_args(p.parse_args(argv))
    for argv in (["--strategy", "scaffold", "--dp-epsilon", "1"], ["--strategy", "fedbn", "--client-dp"],
                 ["--strategy", "scaffold", "--prox-mu", "0.1"]):
        with pytest.raises(ConfigError, match="scaffold|fedbn"):
            federation_config_from_args(p.parse_args(argv))
