"""``fedimg train --dp-*``: the 3-D task's DP-SGD through the engine's hook, its records, resume
and the budget stop."""

from __future__ import annotations

import json

from fedimg.cli import main

TRAIN = ["--roi", "32", "32", "32", "--threads", "1", "--no-progress", "--allow-identifiable", "--batch-size", "2"]


def _train(site, out, *extra):
    return main(["-q", "train", "--data", str(site), "--out", str(out), *TRAIN, *extra])


def test_train_with_dp_records_the_guarantee_resumes_and_stops_at_the_budget(site, tmp_path):
    out = tmp_path / "dp"
    assert _train(site, out, "--epochs", "1", "--dp-epsilon", "8", "--dp-max-grad-norm", "1.0") == 0
    first = json.loads((out / "privacy.json").read_text())
    assert first["config"]["epsilon"] == 8.0 and 0 < first["metrics"]["dp_epsilon"] <= 8.0
    assert first["metrics"]["dp_sample_rate"] == 2 / 6 and first["metrics"]["dp_steps"] == 3  # 6 training cases
    # resume with one more epoch than the budget was planned for: the noise stays, the budget stops it
    assert _train(site, out, "--epochs", "2", "--resume") == 0
    rows = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [r["dp_noise_multiplier"] for r in rows] == [first["metrics"]["dp_noise_multiplier"]] * 2
    assert all(r["dp_epsilon"] <= 8.0 for r in rows) and rows[-1]["dp_budget_spent"] == 1.0
    final = json.loads((out / "privacy.json").read_text())
    assert "-DP for each training case" in final["statement"] and final["metrics"]["dp_steps"] == 3
    assert any((out / "tb").iterdir())
