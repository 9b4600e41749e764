"""A real NVFlare SimEnv run where one of two brats sites trains on 2 processes (torchrun, DDP, gloo).

NVFlare starts that site's client as an external process through torchrun
(``ScriptRunner(launch_external_process=True, command="... -m torch.distributed.run ...")``);
rank 0 talks to NVFlare and hands each round to rank 1; the DDP model needs both ranks at every
step, so a completed round means both trained. The global model must be the FedAvg of the
local models the sites kept (the one site-2's rank 0 sent).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedimg.errors import ConfigError
from fedimg.fl.server.federation import FederationConfig

# sw_overlap 0: each site evaluates its validation case every round with about half the sliding windows;
# what is tested is the torchrun launch, the hand-over to rank 1 and FedAvg, not the evaluation
TRAIN = {"roi": [16, 16, 16], "batch_size": 2, "amp": "fp32", "device": "cpu", "allow_identifiable": True,
         "sw_overlap": 0.0}


def _cfg(**kw):
    return FederationConfig(task="brats", rounds=1, local_epochs=1, threads_per_site=2, min_sites=2, train=TRAIN, **kw)


@pytest.mark.slow
def test_simulate_with_a_two_process_site(tmp_path):
    from safetensors.numpy import load_file

    from fedimg.data import synthesize
    from fedimg.fl.nvflare.simulate import run_simulation

    synthesize(tmp_path / "data", sites=2, cases_per_site=4, seed=0, spacing=4.0)
    run = tmp_path / "run"
    summary = run_simulation(tmp_path / "data", run, _cfg(), progress=False, tracking=False, site_nproc={"site-2": 2})
    assert summary["rounds"] == 1 and not summary["rejected"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"site-1", "site-2"} <= set(json.dumps(metrics).replace('"', " ").split())
    g = load_file(str(run / "global_model.safetensors"))
    local = [load_file(str(run / "local_models" / f"{s}.safetensors")) for s in ("site-1", "site-2")]
    for k, v in g.items():  # equal training cases per site: FedAvg is the plain mean
        np.testing.assert_allclose(v, (local[0][k] + local[1][k]) / 2, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(local[0][k], local[1][k]) for k in g)


def test_site_nproc_refused_up_front(tmp_path):
    from fedimg.fl.nvflare.job import site_launch
    from fedimg.tasks import get_task

    sites = {"site-1": tmp_path, "site-2": tmp_path}
    tcfg = get_task("brats").config_from_dict(_cfg().train_config())
    assert site_launch({"site-2": 2}, sites, _cfg(), tcfg, staging=tmp_path)["site-2"]["command"].endswith("--nproc-per-node=2")
    with pytest.raises(ConfigError, match="no site 'site-9'"):
        site_launch({"site-9": 2}, sites, _cfg(), tcfg, staging=tmp_path)
    with pytest.raises(ConfigError, match="does not divide"):
        site_launch({"site-2": 3}, sites, _cfg(), tcfg, staging=tmp_path)
