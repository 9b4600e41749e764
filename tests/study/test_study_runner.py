"""The study's three arms and report, reusing a finished federated run (no NVFlare needed).

The federated arm is read from a run folder as ``fedimg simulate`` leaves it
(``run_config.json``, ``global_model.safetensors``, ``rounds/``, ``metrics.json``); here
that folder is written directly with the run store, so the study is tested on its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from fedimg.fl.server import state
    from fedimg.fl.server.federation import FederationConfig
    from fedimg.io import write_json
    from fedimg.tasks import get_task
    from fedimg.tasks.toy import make_sites

    tmp = tmp_path_factory.mktemp("study")
    make_sites(tmp / "data", n_sites=4, n=48, seed=1)
    cfg = FederationConfig(task="toy", rounds=2, local_epochs=1, train={"features": 8}, min_sites=2)
    task = get_task("toy")
    torch.manual_seed(0)
    model = task.build_model(task.config_from_dict(cfg.train_config()))
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    run = tmp / "run"
    write_json(run / "run_config.json", {"federation": cfg.to_dict(), "sites": {}})
    for rnd in (1, 2):
        weights = {k: v + np.float32(0.1) for k, v in weights.items()}
        state.save_round(run, rnd, weights, {"strategy": "fedavg"})
        state.append_metrics(run, {"round": rnd, "validation": {"model_round": rnd - 1, "accuracy": 0.5 + 0.1 * rnd}})
    write_json(run / "summary.json", {"seconds": 12.0})
    return tmp, cfg


def test_study_reuses_the_federated_run(finished_run):
    from fedimg.fl.server.state import load_params
    from fedimg.study.runner import pool_sites, run_study
    from fedimg.tasks import toy as toytask

    tmp, cfg = finished_run
    res = run_study(tmp / "data", tmp / "study", cfg, fl_run=tmp / "run", progress=False)
    for f in ("report.md", "results.json", "per_site.png", "dice_per_round.png"):
        assert (tmp / "study" / f).stat().st_size > 100, f
    assert res["budget"]["epochs_per_case"] == 2 and res["train_cases"]["site-1"] == 36
    assert set(res["evaluations"]) == {"federated", "centralised", *[f"site-{k} alone" for k in range(1, 5)]}
    report = (tmp / "study" / "report.md").read_text()
    assert "| centralised |" in report and "| federated |" in report and "every training case is seen 2 times" in report
    # the federated arm is the run's global model, evaluated on each site's held-out cases
    tcfg = toytask.config_from_dict(cfg.train_config())
    model = toytask.build_model(tcfg)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in load_params(tmp / "run" / "global_model.safetensors")[0].items()})
    site1 = toytask.load_site(tmp / "data" / "site-1", tcfg)
    assert res["evaluations"]["federated"]["site-1"]["loss"] == pytest.approx(toytask.evaluate(model, site1, tcfg)["loss"])
    pooled = pool_sites([site1, toytask.load_site(tmp / "data" / "site-2", tcfg)])
    assert pooled.num_train == 72 and torch.equal(pooled.x_val, site1.x_val)
    assert [r["model_round"] for r in res["federated_rounds"]] == [0, 1]


def test_study_refuses_a_run_with_another_budget(finished_run):
    import dataclasses

    from fedimg.errors import ConfigError
    from fedimg.study.runner import run_study

    tmp, cfg = finished_run
    with pytest.raises(ConfigError, match="rounds"):
        run_study(tmp / "data", tmp / "study-3", dataclasses.replace(cfg, rounds=3), fl_run=tmp / "run", progress=False)
