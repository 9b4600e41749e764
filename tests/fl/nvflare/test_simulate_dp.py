"""A real NVFlare SimEnv run of the tile task, started as a user does (``fedimg simulate --task
tiles``), with patient-level DP-SGD at both sites and client-level DP-FedAvg on the server: the
run completes, reports AUC, and the guarantees reach the server's metrics.json.

(This one run also stands for the former plain ``simulate --task tiles`` CLI test of
tests/pathology/test_cli.py: the same command with DP options added.)"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.nvflare]


def test_tiles_federation_with_patient_and_client_dp(synth_sites, tmp_path):
    from fedimg.cli import main
    from fedimg.fl.server.state import read_metrics

    data = synth_sites[0].parent
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": "resnet10", "width": 0.25, "norm": "group", "batch_size": 16, "amp": "fp32",
                               "device": "cpu"}))
    rc = main(["-q", "simulate", "--task", "tiles", "--data", str(data), "--out", str(tmp_path / "run"),
               "--rounds", "1", "--local-epochs", "1", "--config", str(cfg), "--threads", "1", "--no-progress",
               "--no-crossval", "--dp-epsilon", "4", "--dp-delta", "1e-5", "--dp-max-grad-norm", "1",
               "--client-dp", "--noise-multiplier", "1", "--clip", "0.5", "--client-dp-delta", "1e-5"])
    assert rc == 0
    (entry,) = read_metrics(tmp_path / "run")
    assert entry["rejected"] == [] and sorted(entry["accepted"]) == ["site-1", "site-2"]
    assert "auc" in entry["validation"]  # the tile task's metric reaches the server
    for site in ("site-1", "site-2"):
        m = entry["sites"][site]["metrics"]
        assert "val_auc" in m
        # the budget was planned for this one epoch: spent exactly, never exceeded
        assert 0 < m["train_dp_epsilon"] <= 4.0 and m["train_dp_budget_spent"] == 1.0
        assert m["train_dp_sample_rate"] == pytest.approx(16 / entry["sites"][site]["samples"])
        assert entry["sites"][site]["update_norm"] <= 0.5 + 1e-4  # clipped at the site before sending
    dp = entry["client_dp"]
    assert dp["rounds"] == 1 and dp["sites"] == 2 and dp["amplification"] is False and dp["epsilon"] > 0
