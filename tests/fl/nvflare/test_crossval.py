"""Cross-site validation inside an exported job (NVFlare's CrossSiteModelEval + fedimg's locator and report).

The fast tests read the exported job's server config. The slow one runs the job folder that
``fedimg export-job`` writes under NVFlare's simulator (``nvflare simulator JOB``, ~40 s)
and checks that the server's table holds exactly what evaluating the same models on the
same sites here gives.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedimg.cli import main

SITES = ["site-1", "site-2"]


def _export(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "job"
    rc = main(["export-job", "--out", str(out), "--task", "toy", "--rounds", "2", "--threads", "1",
               "--sites", *SITES, *extra])
    return rc, out


def _cse_args(job: Path) -> dict | None:
    server = json.loads((job / "app_server" / "config" / "config_fed_server.json").read_text())
    found = [w["args"] for w in server["workflows"] if w["path"].endswith(".CrossSiteModelEval")]
    assert len(found) <= 1
    return found[0] if found else None


def test_export_job_adds_cross_site_evaluation_after_training(tmp_path):
    rc, job = _export(tmp_path)
    assert rc == 0
    server = json.loads((job / "app_server" / "config" / "config_fed_server.json").read_text())
    assert [w["path"].rsplit(".", 1)[1] for w in server["workflows"]] == ["FedAvg", "CrossSiteModelEval"]
    args = _cse_args(job)
    assert args["model_locator_id"] == "fedimg_model_locator"
    assert args.get("submit_model_task_name", "submit_model") == "submit_model"  # local models evaluated too
    ids = {c["id"]: c["path"] for c in server["components"]}
    assert ids["fedimg_model_locator"] == "fedimg.fl.nvflare.crossval.FedimgModelLocator"
    assert ids["fedimg_crossval_report"] == "fedimg.fl.nvflare.crossval.FedimgCrossSiteReport"
    report = next(c for c in server["components"] if c["id"] == "fedimg_crossval_report")
    assert report["args"]["key_metric"] == "accuracy"


def test_crossval_options_and_client_level_dp(tmp_path, capsys):
    rc, job = _export(tmp_path / "off", "--crossval", "off")
    assert rc == 0 and _cse_args(job) is None
    rc, job = _export(tmp_path / "global", "--crossval", "global")
    assert rc == 0 and _cse_args(job)["submit_model_task_name"] == ""
    # client-level DP: local models are not noised, so they never go to other sites
    rc, job = _export(tmp_path / "dp", "--client-dp")
    assert rc == 0 and _cse_args(job)["submit_model_task_name"] == ""
    rc, job = _export(tmp_path / "dp-all", "--client-dp", "--crossval", "all")
    assert rc == 2 and not job.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fedimg: error: ") and "--crossval global" in err[-1]


@pytest.mark.slow
@pytest.mark.nvflare
def test_exported_job_writes_the_same_table_as_evaluating_here(tmp_path):
    from fedimg.fl.nvflare.client import CONFIG_NAME, ClientConfig
    from fedimg.fl.nvflare.simulate import allow_fedimg_components
    from fedimg.fl.server.state import load_params
    from fedimg.study.crossval import evaluate_models
    from fedimg.tasks.toy import make_sites

    data = {p.name: p.resolve() for p in map(Path, make_sites(tmp_path / "data", n_sites=2, n=48, seed=4))}
    rc, job = _export(tmp_path, "--site-data", *[f"{s}={data[s]}" for s in SITES])
    assert rc == 0
    for site in SITES:  # each site keeps its local model where this test can read it (never sent by this)
        path = job / f"app_{site}" / "custom" / CONFIG_NAME
        cc = ClientConfig.read(path)
        dataclasses.replace(cc, local_model_dir=str(tmp_path / "local")).write(path)
    ws = tmp_path / "ws"
    allow_fedimg_components(ws / "local")
    exe = Path(sys.executable).with_name("nvflare")
    res = subprocess.run([str(exe), "simulator", str(job), "-w", str(ws), "-n", "2", "-t", "2"],
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    run = ws / "server" / "simulate_job" / "fedimg"
    table = json.loads((run / "crossval" / "crossval.json").read_text())
    assert table["key_metric"] == "accuracy" and table["sites"] == SITES
    assert list(table["results"]) == ["global", "local site-1", "local site-2"]
    models = {"global": load_params(run / "global_model.safetensors")[0]}
    models.update({f"local {s}": load_params(tmp_path / "local" / f"{s}.safetensors")[0] for s in SITES})
    cc = ClientConfig.read(job / "app_site-1" / "custom" / CONFIG_NAME)
    here = evaluate_models(models, data, "toy", cc.task_config)
    for model, per_site in here.items():
        for site, metrics in per_site.items():
            got = table["results"][model][site]
            assert set(got) == set(metrics), (model, site)
            np.testing.assert_allclose([got[k] for k in sorted(got)], [metrics[k] for k in sorted(metrics)], atol=1e-6)
    rows = (run / "crossval" / "crossval.csv").read_text().splitlines()
    assert rows[0] == "model,site-1,site-2,mean" and [r.split(",")[0] for r in rows[1:]] == list(table["results"])
    assert (run / "crossval" / "heatmap.png").stat().st_size > 1000
    assert [m["round"] for m in json.loads((run / "metrics.json").read_text())] == [1, 2]  # no round added by it
