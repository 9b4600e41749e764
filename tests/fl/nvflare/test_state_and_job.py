"""Run state files, client payloads, site discovery, the exported job folder, the toy task."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedimg.errors import ConfigError, InputError
from fedimg.fl.nvflare.client import CONFIG_NAME, ClientConfig, build_arg_parser, find_config, make_payload
from fedimg.fl.server import state
from fedimg.fl.server.federation import FederationConfig, discover_sites
from fedimg.fl.server.strategies import StrategyConfig


def test_rounds_latest_and_fallback(tmp_path):
    for r in (1, 2, 3):
        state.save_round(tmp_path, r, {"w": np.full(2, r, np.float32)}, {"strategy": "fedavg"})
    assert state.load_latest(tmp_path)[0] == 3
    assert (tmp_path / "rounds" / "round-003.json").is_file()
    state.round_path(tmp_path, 3).unlink()  # a crash lost the newest checkpoint
    rnd, params, _ = state.load_latest(tmp_path)
    assert rnd == 2 and params["w"].tolist() == [2.0, 2.0]
    assert state.load_latest(tmp_path / "fresh") is None
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="bad.safetensors"):
        state.load_params(tmp_path / "bad.safetensors")


def test_metrics_replace_by_round(tmp_path):
    state.append_metrics(tmp_path, {"round": 2, "x": 1})
    state.append_metrics(tmp_path, {"round": 1, "x": 1})
    state.append_metrics(tmp_path, {"round": 2, "x": 5})
    assert state.read_metrics(tmp_path) == [{"round": 1, "x": 1}, {"round": 2, "x": 5}]


def test_payload_has_only_differences_counts_and_float_metrics():
    g = {"w": torch.ones(3), "b": torch.zeros(1)}
    loc = {"w": torch.full((3,), 1.5), "b": torch.ones(1)}
    params, metrics, meta = make_payload(g, loc, num_samples=7, val={"dice": 0.5, "per_case": [1], "name": "x"},
                                         train={"loss": np.float32(0.25), "nan": float("nan")})
    assert torch.equal(params["w"], torch.full((3,), 0.5)) and torch.equal(params["b"], torch.ones(1))
    assert metrics == {"val_dice": 0.5, "train_loss": 0.25}
    assert meta == {"NUM_STEPS_CURRENT_ROUND": 7}
    full, _, _ = make_payload(g, loc, num_samples=1, val={}, train={}, send="full")
    assert torch.equal(full["w"], loc["w"])


def test_config_round_trips_through_the_client_config_file(tmp_path):
    cfg = {"roi": [32, 32, 32], "lr": 0.002, "model": "segresnet", "threads": None, "amp": "auto", "extra": {},
           "name": "has space"}
    cc = ClientConfig(task="brats", task_config=cfg, local_epochs=2, prox_mu=0.01, send="full", threads=3,
                      local_model_dir=str(tmp_path / "local models"), data=str(tmp_path / "site data" / "site-1"))
    path = cc.write(tmp_path / "a dir" / CONFIG_NAME)
    args = build_arg_parser().parse_args(["--config", str(path)])
    back = ClientConfig.read(find_config(args.config))
    assert back == cc and back.task_config == cfg and back.data.endswith("site data/site-1")
    assert build_arg_parser().parse_args([]).config == CONFIG_NAME
    # a bare name is found in the job's custom/ folder (on the job process's path), the last one first
    assert find_config(CONFIG_NAME, search=[str(tmp_path), str(path.parent)]) == path
    with pytest.raises(InputError, match=CONFIG_NAME):
        find_config(CONFIG_NAME, search=[str(tmp_path)])
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(InputError, match="bad.json"):
        ClientConfig.read(tmp_path / "bad.json")
    with pytest.raises(ConfigError):
        ClientConfig(send="both")


def test_site_data_from_the_environment(monkeypatch):
    from fedimg.config import SITE_DATA_ENV, site_data_dir_from_env

    monkeypatch.delenv(SITE_DATA_ENV, raising=False)
    assert SITE_DATA_ENV == "FEDIMG_SITE_DATA" and site_data_dir_from_env() is None
    monkeypatch.setenv(SITE_DATA_ENV, "/data/site 1")
    assert site_data_dir_from_env() == "/data/site 1"


def test_discover_sites(tmp_path):
    with pytest.raises(InputError, match="site-"):
        discover_sites(tmp_path)
    for name in ("site-2", "site-1", "other", "site-b"):
        (tmp_path / name).mkdir()
    (tmp_path / "site-3").write_text("not a folder")
    assert list(discover_sites(tmp_path)) == ["site-1", "site-2", "site-b"]


def test_export_job_is_portable(tmp_path):
    from fedimg.fl.nvflare.job import build_recipe, export_job

    cfg = FederationConfig(task="toy", rounds=3, local_epochs=2, train={"features": 4})
    recipe = build_recipe(cfg, {"site-a": tmp_path / "site a", "site-b": None}, run_dir=None)
    out = export_job(recipe, tmp_path / "jobs" / "toy")
    assert (out / "meta.json").is_file() and (out / "app_site-a" / "custom" / "client.py").is_file()
    server = json.loads((out / "app_server" / "config" / "config_fed_server.json").read_text())
    text = json.dumps(server)
    assert "fedimg.fl.nvflare.aggregator.FedimgAggregator" in text and "fedimg.fl.nvflare.persistor.FedimgPersistor" in text
    assert '"num_rounds": 3' in text
    agg_args = _component_args(server, "FedimgAggregator")
    assert StrategyConfig.from_dict(agg_args["strategy"]) == cfg.strategy  # one JSON object, not loose flags
    assert agg_args["validation"] == {"max_rel_norm": 10.0, "max_norm_ratio": 20.0, "min_sites": 1,
                                      "max_samples": 1e7, "max_samples_ratio": 10.0, "task": "toy"}
    client = json.loads((out / "app_site-a" / "config" / "config_fed_client.json").read_text())
    args = client["executors"][0]["executor"]["args"]
    assert args["task_script_path"] == "client.py"
    assert args["task_script_args"] == f"--config {CONFIG_NAME}"  # the whole configuration is one file
    a_cfg = ClientConfig.read(out / "app_site-a" / "custom" / CONFIG_NAME)
    assert a_cfg.data == str(tmp_path / "site a") and a_cfg.local_epochs == 2 and a_cfg.task == "toy"
    assert a_cfg.task_config["features"] == 4 and a_cfg.task_config["epochs"] == 6
    b_cfg = ClientConfig.read(out / "app_site-b" / "custom" / CONFIG_NAME)
    assert b_cfg.data == ""  # the site's $FEDIMG_SITE_DATA at run time
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 200_000  # no copied libraries


def _component_args(doc, class_name: str) -> dict:
    """The ``args`` of the one component of class ``class_name`` anywhere in a job config."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if str(node.get("path", "")).endswith("." + class_name):
                found.append(node.get("args", {}))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    (args,) = found
    return args


def test_toy_task_learns(tmp_path):
    from fedimg.tasks import toy as toytask

    (site,) = toytask.make_sites(tmp_path, n_sites=1, n=200, seed=0, shift=0.0)
    cfg = toytask.config_from_dict({"features": 8, "epochs": 5})
    data = toytask.load_site(site, cfg)
    model = toytask.build_model(cfg)
    before = toytask.evaluate(model, data, cfg)["loss"]
    _, n = toytask.train_one_round(model, data, cfg, epochs=5)
    assert n == 150 and toytask.evaluate(model, data, cfg)["loss"] < before
