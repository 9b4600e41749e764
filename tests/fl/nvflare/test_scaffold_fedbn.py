"""SCAFFOLD and FedBN through fedimg's aggregator (in process) and real NVFlare SimEnv runs (toy task).

The SimEnv part: two jobs of 2 sites x 2 rounds (~15-30 s each): SCAFFOLD, whose round-1 model
equals FedAvg's (all controls start at zero) and whose round-2 model does not, with non-zero
controls; FedBN-style local norms (``--local-norms`` with FedAvgM, Nesterov and the lr on plateau) on
the toy model with a BatchNorm, whose norm entries never reach the server.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

pytest.importorskip("nvflare")

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType  # noqa: E402

from fedimg.errors import ConfigError  # noqa: E402
from fedimg.fl.nvflare.aggregator import SCAFFOLD_CTRL_DIFF, SCAFFOLD_CTRL_GLOBAL, FedimgAggregator  # noqa: E402
from fedimg.fl.server.federation import FederationConfig  # noqa: E402
from fedimg.fl.server.state import load_params, read_metrics  # noqa: E402
from fedimg.fl.server.strategies import StrategyConfig  # noqa: E402

from test_aggregator import _start  # noqa: E402  (pytest puts tests/fl/nvflare on sys.path, as test_trust.py)

GLOBAL = {"w": np.array([1.0, 2.0, 3.0], np.float32), "bn": np.array([1.0, 1.0], np.float32)}


def _update(site, params, samples, meta=None):
    return FLModel(params={k: np.asarray(v, np.float32) for k, v in params.items()}, params_type=ParamsType.DIFF,
                   metrics={"val_accuracy": 0.5}, meta={"client_name": site, "site": site, "NUM_STEPS_CURRENT_ROUND": samples,
                                                        **(meta or {})})


def test_scaffold_server_folds_controls_of_accepted_updates_only(tmp_path):
    g = {"w": GLOBAL["w"]}
    agg = FedimgAggregator(strategy=StrategyConfig(name="scaffold").to_dict(), run_dir=str(tmp_path))
    _start(agg, global_=g)
    agg.accept_model(_update("site-1", {"w": [1, 1, 1]}, 10, {SCAFFOLD_CTRL_DIFF: {"w": np.ones(3, np.float32)}}))
    agg.accept_model(_update("site-2", {"w": [3, 3, 3]}, 30, {SCAFFOLD_CTRL_DIFF: {"w": np.full(3, 5, np.float32)}}))
    agg.accept_model(_update("site-3", {"w": [np.nan, 0, 0]}, 10, {SCAFFOLD_CTRL_DIFF: {"w": np.ones(3, np.float32)}}))
    agg.accept_model(_update("site-4", {"w": [1, 1, 1]}, 10, {SCAFFOLD_CTRL_DIFF: {"v": np.ones(3, np.float32)}}))
    agg.accept_model(_update("site-5", {"w": [1, 1, 1]}, 10))  # no control difference
    out = agg.aggregate_model()
    np.testing.assert_allclose(out.params["w"], 2.5)  # (10 * 1 + 30 * 3) / 40
    np.testing.assert_allclose(out.meta[SCAFFOLD_CTRL_GLOBAL]["w"], 4.0)  # (10 * 1 + 30 * 5) / 40: sites 1, 2 only
    (entry,) = read_metrics(tmp_path)
    assert entry["accepted"] == ["site-1", "site-2"]
    reasons = {r["site"]: r["reason"] for r in entry["rejected"]}
    assert "non-finite" in reasons["site-3"] and "unknown tensor" in reasons["site-4"] and "missing" in reasons["site-5"]
    assert entry["scaffold"]["control_norm"] == pytest.approx(4.0 * np.sqrt(3))
    # another strategy refuses a control difference like any unexpected metadata
    plain = FedimgAggregator(run_dir=str(tmp_path / "plain"))
    _start(plain, global_=g)
    plain.accept_model(_update("site-1", {"w": [1, 1, 1]}, 10, {SCAFFOLD_CTRL_DIFF: {"w": np.ones(3, np.float32)}}))
    plain.aggregate_model()
    assert "unexpected metadata" in read_metrics(tmp_path / "plain")[0]["rejected"][0]["reason"]


def test_fedbn_server_averages_the_shared_entries_and_keeps_the_norms(tmp_path):
    agg = FedimgAggregator(strategy=StrategyConfig(name="fedbn").to_dict(), run_dir=str(tmp_path), local_keys=["bn"])
    _start(agg, global_=GLOBAL)
    agg.accept_model(_update("site-1", {"w": [1, 1, 1]}, 10))
    agg.accept_model(_update("site-2", {"w": [3, 3, 3]}, 30))
    agg.accept_model(_update("site-3", {"w": [1, 1, 1], "bn": [5, 5]}, 10))  # a norm entry must not come
    out = agg.aggregate_model()
    assert set(out.params) == {"w"}
    np.testing.assert_allclose(out.params["w"], 2.5)
    params, _ = load_params(tmp_path / "rounds" / "round-001.safetensors")
    np.testing.assert_allclose(params["w"], GLOBAL["w"] + 2.5)
    np.testing.assert_array_equal(params["bn"], GLOBAL["bn"])  # the global model's norms never change
    (entry,) = read_metrics(tmp_path)
    assert entry["rejected"][0]["site"] == "site-3" and "unexpected tensors" in entry["rejected"][0]["reason"]


def test_refusals_when_the_options_are_read(tmp_path):
    from fedimg.fl.nvflare.job import build_recipe
    from fedimg.fl.server.federation import start_point

    fedbn = FederationConfig(task="toy", rounds=1, strategy=StrategyConfig(name="fedbn"), train={"features": 8})
    with pytest.raises(ConfigError, match="no.*normalisation|none"):
        build_recipe(fedbn, {"site-1": tmp_path}, run_dir=tmp_path)
    scaffold = FederationConfig(task="brats", rounds=2, strategy=StrategyConfig(name="scaffold"))
    with pytest.raises(ConfigError, match="scaffold"):
        build_recipe(scaffold, {"site-1": tmp_path}, run_dir=tmp_path, site_nproc={"site-1": 2})
    (tmp_path / "run" / "rounds").mkdir(parents=True)
    from fedimg.fl.server.state import save_round

    save_round(tmp_path / "run", 1, {"w": np.zeros(2, np.float32)}, {})
    with pytest.raises(ConfigError, match="cannot resume"):
        start_point(tmp_path / "run", scaffold, resume=True)


def _simulate(tmp, name, strategy, train):
    from fedimg.fl.nvflare.simulate import run_simulation

    strategy = strategy if isinstance(strategy, StrategyConfig) else StrategyConfig(name=strategy)
    cfg = FederationConfig(task="toy", rounds=2, local_epochs=1, strategy=strategy, train={"features": 8, **train})
    run_simulation(tmp / "data", tmp / name, cfg, progress=False, tracking=False)
    return tmp / name


def _in_process(tmp, rounds, scaffold):
    """FedAvg or SCAFFOLD of the toy sites in this process (2 equal sites): the global model after each round."""
    import torch

    from fedimg.fl.nvflare.persistor import initial_weights
    from fedimg.fl.server.scaffold import SiteControl
    from fedimg.tasks import get_task

    task = get_task("toy")
    cfg = task.config_from_dict({"features": 8, "epochs": rounds})
    x = initial_weights("toy", cfg.to_dict())
    sites = {s: (task.load_site(tmp / "data" / s, cfg, "cpu"), SiteControl()) for s in ("site-1", "site-2")}
    c: dict = {}
    out = []
    for _ in range(rounds):
        diffs, dcs = [], []
        for data, control in sites.values():
            model = task.build_model(cfg)
            model.load_state_dict({k: torch.as_tensor(v) for k, v in x.items()})
            control.begin(model, c)
            with control.attached(model) if scaffold else contextlib.nullcontext():
                task.train_one_round(model, data, cfg, epochs=1, global_params={k: torch.as_tensor(v) for k, v in x.items()})
            dcs.append(control.finish(model, x) if scaffold else {})
            diffs.append({k: v.numpy() - x[k] for k, v in model.state_dict().items()})
        x = {k: x[k] + (diffs[0][k] + diffs[1][k]) / 2 for k in x}
        if scaffold:
            c = {k: c.get(k, 0) + (dcs[0][k] + dcs[1][k]) / 2 for k in dcs[0]}
        out.append(x)
    return out


@pytest.mark.slow
@pytest.mark.nvflare
def test_scaffold_and_fedbn_in_simenv(tmp_path):
    from fedimg.fl.nvflare.site_strategy import norms_path
    from fedimg.tasks.toy import make_sites

    make_sites(tmp_path / "data", n_sites=2, n=64, seed=0, shift=1.0)
    run = _simulate(tmp_path, "scaffold", "scaffold", {})
    metrics = read_metrics(run)
    assert [m["accepted"] for m in metrics] == [["site-1", "site-2"]] * 2
    assert all(m["scaffold"]["control_norm"] > 1e-3 for m in metrics)  # c after rounds 1 and 2
    simenv = [load_params(run / "rounds" / f"round-00{r}.safetensors")[0] for r in (1, 2)]
    scaffold, fedavg = _in_process(tmp_path, 2, True), _in_process(tmp_path, 2, False)
    for r in range(2):  # SimEnv's SCAFFOLD is the hand-written algorithm, round by round
        for k in simenv[r]:
            np.testing.assert_allclose(simenv[r][k], scaffold[r][k], atol=1e-5)
    for k in simenv[0]:  # round 1: every control is zero, so SCAFFOLD == FedAvg
        np.testing.assert_allclose(scaffold[0][k], fedavg[0][k], atol=1e-6)
    # round 2 starts from c != 0: the corrected steps give another model than FedAvg's
    assert max(float(np.abs(scaffold[1][k] - fedavg[1][k]).max()) for k in fedavg[1]) > 1e-3
    payloads = [json.loads(x) for x in (run / "payloads.jsonl").read_text().splitlines()]
    assert all(p["meta"][SCAFFOLD_CTRL_DIFF][1] == ["0.bias", "0.weight"] for p in payloads)

    # FedBN-style local norms composed with another strategy (--local-norms): FedAvgM, Nesterov, lr on plateau
    local = StrategyConfig(name="fedavgm", nesterov=True, local_norms=True, lr_plateau=1, plateau_metric="accuracy")
    fedbn_run = _simulate(tmp_path, "fedbn", local, {"hidden": 4, "norm": True})
    bn = read_metrics(fedbn_run)
    assert [m["accepted"] for m in bn] == [["site-1", "site-2"]] * 2 and not any(m["rejected"] for m in bn)
    assert bn[0]["plateau"]["best_val"] == bn[0]["validation"]["accuracy"]  # the sites' validation reached it
    received = [json.loads(x) for x in (fedbn_run / "payloads.jsonl").read_text().splitlines()]
    assert len(received) == 4 and all(set(p["params"]) == {"0.weight", "0.bias", "3.weight", "3.bias"} for p in received)
    g0, g2 = (load_params(fedbn_run / "rounds" / f"round-00{r}.safetensors")[0] for r in (1, 2))
    own = {s: load_params(norms_path(fedbn_run / "local_models", s, 2))[0] for s in ("site-1", "site-2")}
    assert set(own["site-1"]) == {"1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert not np.allclose(own["site-1"]["1.running_mean"], own["site-2"]["1.running_mean"])  # each site's own
    np.testing.assert_array_equal(g2["1.running_mean"], g0["1.running_mean"])  # never averaged on the server
    assert not np.allclose(g2["0.weight"], g0["0.weight"])  # shared entries are
    from fedimg.fl.server.federation import discover_sites
    from fedimg.study.crossval import cross_validate

    cfg = FederationConfig(task="toy", rounds=2, strategy=local, train={"features": 8, "hidden": 4, "norm": True})
    table = cross_validate(fedbn_run, discover_sites(tmp_path / "data"), cfg)
    assert {"global", "personalised site-1", "personalised site-2"} <= set(table["results"])  # each site's own model


def test_fedavgm_local_norms_and_lr_plateau_through_the_aggregator_and_a_resume(tmp_path):
    """``--local-norms`` with FedAvgM: norm entries never reach the server; ``--server-lr-plateau``: the sites'
    validation reaches the strategy, and a restarted aggregator (``--resume``) restores from the saved state."""
    cfg = StrategyConfig(name="fedavgm", beta1=0.5, local_norms=True, lr_plateau=1).to_dict()
    agg = FedimgAggregator(strategy=cfg, run_dir=str(tmp_path), local_keys=["bn"])
    _start(agg, 0, GLOBAL)
    agg.accept_model(FLModel(params={"w": np.ones(3, np.float32)}, params_type=ParamsType.DIFF,
                             metrics={"val_dice_mean": 0.5}, meta={"client_name": "site-1", "site": "site-1", "NUM_STEPS_CURRENT_ROUND": 10}))
    agg.accept_model(FLModel(params={"w": np.ones(3, np.float32), "bn": np.ones(2, np.float32)},
                             params_type=ParamsType.DIFF, metrics={"val_dice_mean": 0.5},
                             meta={"client_name": "site-2", "site": "site-2", "NUM_STEPS_CURRENT_ROUND": 10}))  # a norm entry: refused
    out = agg.aggregate_model()
    np.testing.assert_allclose(out.params["w"], 1.0)
    assert set(out.params) == {"w"}
    (entry,) = read_metrics(tmp_path)
    assert entry["rejected"][0]["site"] == "site-2" and entry["plateau"] == {"server_lr_scale": 1.0, "restores": 0,
                                                                             "best_val": 0.5}
    g1 = load_params(tmp_path / "rounds" / "round-001.safetensors")[0]
    resumed = FedimgAggregator(strategy=cfg, run_dir=str(tmp_path), local_keys=["bn"])  # a new server process
    _start(resumed, 1, g1)
    resumed.accept_model(FLModel(params={"w": np.full(3, 2, np.float32)}, params_type=ParamsType.DIFF,
                                 metrics={"val_dice_mean": 0.4}, meta={"client_name": "site-1", "site": "site-1",
                                                                      "NUM_STEPS_CURRENT_ROUND": 10}))
    out = resumed.aggregate_model()  # 0.4 < 0.5: back to the round-0 model, lr halved
    np.testing.assert_allclose(out.params["w"], -1.0)
    g2 = load_params(tmp_path / "rounds" / "round-002.safetensors")[0]
    np.testing.assert_allclose(g2["w"], GLOBAL["w"])
    np.testing.assert_array_equal(g2["bn"], GLOBAL["bn"])
    assert read_metrics(tmp_path)[-1]["plateau"]["server_lr_scale"] == 0.5
