"""Real NVFlare SimEnv runs of the toy task: poisoned updates, payload contents, resume.

Three SimEnv jobs in all (each ~20-40 s): one 4-site run of 2 rounds where site-3 sends NaN
and site-4 a x1e6 update, then a resume to round 3; a 2-site run where site-2 states site-1's name. The sites' data folders lie under a
folder whose name holds a space (each site's client config travels as a file, not as a
whitespace-split command line).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.nvflare]

DATA = "site data"  # a space in every site's data path

BAD_CLIENT = """
import sys
import numpy as np
from fedimg.fl.nvflare.client import main

def hook(params):
    out = {{}}
    for k, v in params.items():
        v = v.clone() if hasattr(v, "clone") else np.array(v)
        if v.dtype.is_floating_point if hasattr(v.dtype, "is_floating_point") else v.dtype.kind == "f":
            {action}
        out[k] = v
    return out

sys.exit(main(update_hook=hook))
"""


def _bad_script(tmp: Path, name: str, action: str) -> str:
    path = tmp / f"{name}.py"
    path.write_text(textwrap.dedent(BAD_CLIENT.format(action=action)))
    return str(path)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from fedimg.fl.nvflare.simulate import run_simulation
    from fedimg.fl.server.federation import FederationConfig
    from fedimg.tasks.toy import make_sites

    tmp = tmp_path_factory.mktemp("sim")
    make_sites(tmp / DATA, n_sites=4, n=48, seed=1)
    scripts = {
        "site-3": _bad_script(tmp, "nan_client", "v = v * float('nan')"),
        "site-4": _bad_script(tmp, "scaled_client", "v = (v + 1.0) * 1e6"),
    }
    # server_threads=2: neither auto's count on a <= 4-CPU machine (1) nor on a larger one (all CPUs)
    cfg = FederationConfig(task="toy", rounds=2, local_epochs=1, train={"features": 8}, min_sites=2, server_threads=2)
    summary = run_simulation(tmp / DATA, tmp / "run", cfg, progress=False, site_scripts=scripts, tracking=False)
    return tmp, cfg, summary


def test_server_threads_reach_the_folding_thread(toy_run):
    """--server-threads travels in the job to the server process and is numba's count in the
    NVFlare thread that folds (numba's count is thread-local)."""
    import numba

    from fedimg.fl.server.state import read_metrics

    tmp, _, _ = toy_run
    want = min(2, numba.config.NUMBA_NUM_THREADS)
    assert [e["fold_threads"] for e in read_metrics(tmp / "run")] == [want, want]


def test_run_outputs_and_rejections(toy_run):
    from fedimg.fl.server.state import load_params, read_metrics

    tmp, cfg, summary = toy_run
    run = tmp / "run"
    assert summary["rounds"] == 2
    for f in ("global_model.safetensors", "rounds/round-001.safetensors", "rounds/round-002.safetensors",
              "metrics.json", "local_models/site-1.safetensors"):
        assert (run / f).is_file(), f
    assert (run / "nvflare").is_dir()
    metrics = read_metrics(run)
    assert [m["round"] for m in metrics] == [1, 2]
    for m in metrics:
        assert sorted(m["accepted"]) == ["site-1", "site-2"]
        reasons = {r["site"]: r["reason"] for r in m["rejected"]}
        assert "non-finite" in reasons["site-3"]
        assert "norm outlier" in reasons["site-4"]
        assert m["sites"]["site-1"]["samples"] == 36
        assert m["aggregation_seconds"] >= 0 and "accuracy" in m["validation"]
    params, _ = load_params(run / "global_model.safetensors")
    assert all(np.isfinite(v).all() for v in params.values())
    assert np.abs(params["0.weight"]).max() < 100
    # the global model moved: it is the mean of the two good sites' updates, not the initial weights
    from fedimg.fl.nvflare.persistor import initial_weights

    init = initial_weights("toy", cfg.train_config())
    assert not np.allclose(init["0.weight"], params["0.weight"])
    # the NVFlare server log names the rejections too
    server_log = next((run / "nvflare").glob("*/server/log.txt")).read_text()
    assert "rejected update from site-3: non-finite" in server_log
    # NVFlare's model selector finds the key metric in the sites' metrics as they send them (``val_accuracy``)
    assert "not in metrics from" not in server_log and "new best validation metric at round 1" in server_log


def test_payload_holds_only_weights_counts_and_metrics(toy_run):
    tmp, _, _ = toy_run
    records = [json.loads(line) for line in (tmp / "run" / "payloads.jsonl").read_text().splitlines()]
    assert len(records) == 8  # 4 sites x 2 rounds
    data_dir = str((tmp / DATA).resolve())
    for rec in records:
        assert set(rec["params"]) == {"0.weight", "0.bias"}
        assert all(t[0] == "ndarray" and t[1] == "float32" for t in rec["params"].values())
        assert all(t[0] == "float" for t in rec["metrics"].values())
        # NVFlare's own bookkeeping plus the sample count and the site's own name; nothing else
        assert set(rec["meta"]) <= {"NUM_STEPS_CURRENT_ROUND", "site", "client_name", "initial_metrics", "props"}, rec["meta"]
        text = json.dumps(rec)
        assert data_dir not in text and "toy.npz" not in text


def test_every_site_trained_as_itself(toy_run):
    """Each of the 4 sites' processes ran as that site: every update states the site NVFlare
    delivered it from, and the stated names are the site set, each once per round (NVFlare's
    simulator once ran two workers as the same site, silently)."""
    import re

    tmp, _, summary = toy_run
    records = [json.loads(line) for line in (tmp / "run" / "payloads.jsonl").read_text().splitlines()]
    stated = [rec["meta"]["site"][1].strip("'") for rec in records]
    assert [rec["meta"]["client_name"][1].strip("'") for rec in records] == stated == [rec["site"] for rec in records]
    assert sorted(stated) == sorted(summary["sites"] * 2)
    for log in (tmp / "run" / "nvflare").glob("*/site-*/log.txt"):  # NVFlare's worker names the site it runs as
        assert set(re.findall(r"Initialize ClientRunner for client: (\S+)", log.read_text())) == {log.parent.name}


def test_site_data_paths_with_spaces(toy_run):
    """Every site read its own cases from a data folder whose path holds a space."""
    from fedimg.fl.server.state import read_metrics

    import torch

    from fedimg.fl.nvflare.persistor import initial_weights
    from fedimg.tasks import toy as toytask

    tmp, cfg, summary = toy_run
    assert " " in str(tmp / DATA) and summary["sites"] == ["site-1", "site-2", "site-3", "site-4"]
    metrics = read_metrics(tmp / "run")
    for m in metrics:
        assert {s: r["samples"] for s, r in m["sites"].items()} == {"site-1": 36, "site-2": 36}
    # round 1: each site evaluated the initial model on its own folder's cases (not another site's)
    tcfg = toytask.config_from_dict(cfg.train_config())
    model = toytask.build_model(tcfg)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in initial_weights("toy", cfg.train_config()).items()})
    losses = {s: toytask.evaluate(model, toytask.load_site(tmp / DATA / s, tcfg), tcfg)["loss"] for s in ("site-1", "site-2")}
    assert losses["site-1"] != pytest.approx(losses["site-2"])
    for s, loss in losses.items():
        assert metrics[0]["sites"][s]["metrics"]["val_loss"] == pytest.approx(loss, rel=1e-5)
    configs = list((tmp / "run" / "nvflare").rglob("fedimg_client.json"))
    assert configs and any(str((tmp / DATA / "site-1").resolve()) in c.read_text() for c in configs)


def test_resume_continues_from_last_round(toy_run):
    from fedimg.errors import InputError
    from fedimg.fl.nvflare.simulate import run_simulation
    from fedimg.fl.server.federation import FederationConfig
    from fedimg.fl.server.state import load_params, read_metrics

    tmp, cfg, _ = toy_run
    run = tmp / "run"
    with pytest.raises(InputError, match="--resume"):
        run_simulation(tmp / DATA, run, cfg, progress=False)
    before, _ = load_params(run / "rounds" / "round-002.safetensors")
    sites = {f"site-{k}": (tmp / DATA / f"site-{k}").resolve() for k in (1, 2)}
    cfg3 = FederationConfig(task="toy", rounds=3, local_epochs=1, train={"features": 8}, min_sites=2)
    summary = run_simulation(tmp / DATA, run, cfg3, resume=True, progress=False, sites=sites, tracking=False)
    assert summary["rounds"] == 3
    metrics = read_metrics(run)
    assert [m["round"] for m in metrics] == [1, 2, 3]
    assert metrics[2]["validation"]["model_round"] == 2 and metrics[2]["rejected"] == []
    # round 3 started from round 2's checkpoint: site-1 evaluated exactly those weights
    import torch

    from fedimg.tasks import toy as toytask

    tcfg = toytask.config_from_dict(cfg3.train_config())
    model = toytask.build_model(tcfg)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in before.items()})
    expected = toytask.evaluate(model, toytask.load_site(sites["site-1"], tcfg), tcfg)
    got = metrics[2]["sites"]["site-1"]["metrics"]
    assert got["val_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    after, meta = load_params(run / "global_model.safetensors")
    assert meta["round"] == 3 and not np.allclose(after["0.weight"], before["0.weight"])


IMPOSTOR_CLIENT = """
import sys
import nvflare.client as flare
from fedimg.fl.nvflare.client import main

_send = flare.send

def send(model, *args, **kwargs):  # what a worker that became site-1 sends from site-2's slot
    if model.meta and "site" in model.meta:
        model.meta["site"] = "site-1"
    return _send(model, *args, **kwargs)

flare.send = send
sys.exit(main())
"""


def test_a_site_stating_another_name_stops_the_run_with_one_error(tmp_path):
    """The third SimEnv job: site-2's process states site-1 (as NVFlare's worker-name race made it);
    the server rejects it, stops after round 1 of 3, and the run's error names both sites."""
    from fedimg.errors import FedimgError
    from fedimg.fl.nvflare.simulate import run_simulation
    from fedimg.fl.server.federation import FederationConfig
    from fedimg.fl.server.state import read_metrics
    from fedimg.tasks.toy import make_sites

    make_sites(tmp_path / "data", n_sites=2, n=48, seed=1)
    script = tmp_path / "impostor.py"
    script.write_text(IMPOSTOR_CLIENT)
    cfg = FederationConfig(task="toy", rounds=3, local_epochs=1, train={"features": 8})
    with pytest.raises(FedimgError) as err:
        run_simulation(tmp_path / "data", tmp_path / "run", cfg, progress=False, tracking=False,
                       site_scripts={"site-2": str(script)})
    assert "\n" not in str(err.value)
    assert ("round 1: rejected the update from site-2: stated site 'site-1' is not 'site-2', the site NVFlare "
            "delivered it from") in str(err.value)
    metrics = read_metrics(tmp_path / "run")
    assert [m["round"] for m in metrics] == [1] and metrics[0]["accepted"] == ["site-1"]
