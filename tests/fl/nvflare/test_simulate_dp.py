"""A real NVFlare SimEnv run of the tile task with patient-level DP-SGD at both sites and
client-level DP-FedAvg on the server: the guarantees reach the server's metrics.json."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.nvflare]


def test_tiles_federation_with_patient_and_client_dp(synth_sites, tmp_path):
    from fedimg.fl.nvflare.simulate import run_simulation
    from fedimg.fl.server.federation import FederationConfig
    from fedimg.fl.server.state import read_metrics

    data = synth_sites[0].parent
    cfg = FederationConfig(
        task="tiles", rounds=1, local_epochs=1, threads_per_site=1,
        train={"model": "resnet10", "width": 0.25, "norm": "group", "batch_size": 16, "amp": "fp32", "device": "cpu"},
        dp={"epsilon": 4.0, "delta": 1e-5, "max_grad_norm": 1.0},
        client_dp={"noise_multiplier": 1.0, "clip": 0.5, "delta": 1e-5, "seed": 0},
    )
    run_simulation(data, tmp_path / "run", cfg, progress=False, tracking=False)
    (entry,) = read_metrics(tmp_path / "run")
    assert entry["rejected"] == [] and sorted(entry["accepted"]) == ["site-1", "site-2"]
    for site in ("site-1", "site-2"):
        m = entry["sites"][site]["metrics"]
        # the budget was planned for this one epoch: spent exactly, never exceeded
        assert 0 < m["train_dp_epsilon"] <= 4.0 and m["train_dp_budget_spent"] == 1.0
        assert m["train_dp_sample_rate"] == pytest.approx(16 / entry["sites"][site]["samples"])
        assert entry["sites"][site]["update_norm"] <= 0.5 + 1e-4  # clipped at the site before sending
    dp = entry["client_dp"]
    assert dp["rounds"] == 1 and dp["sites"] == 2 and dp["amplification"] is False and dp["epsilon"] > 0
