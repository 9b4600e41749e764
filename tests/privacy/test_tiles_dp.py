"""DP-SGD in ``fedimg train-tiles`` (Opacus over tiles), and DP with a streamed tile store
refused when the options are read, before any tile is loaded."""

from __future__ import annotations

import math

import pytest

from fedimg.cli import main
from fedimg.io import read_json


def test_train_tiles_with_dp_sgd(synth_sites, tmp_path, hashed):
    site = synth_sites[0]
    h = hashed(site)
    out = tmp_path / "run"
    rc = main(["train-tiles", "--data", str(site), "--out", str(out), "--epochs", "1", "--batch-size", "16",
               "--width", "0.25", "--amp", "fp32", "--device", "cpu", "--threads", "1", "--no-augment",
               "--dp-epsilon", "4", "--dp-max-grad-norm", "1.0", "--no-progress"])
    assert rc == 0
    h.assert_unchanged()
    cfg = read_json(out / "config.json")
    assert cfg["model"] == "resnet18" and cfg["norm"] == "group"  # a model DP-SGD can make private
    rec = read_json(out / "privacy.json")
    m = rec["metrics"]
    assert 0 < m["dp_epsilon"] <= 4.0 and m["dp_budget_spent"] == 1.0  # the one planned epoch spent, not exceeded
    assert m["dp_noise_multiplier"] > 0 and "training tile" in rec["statement"]
    row = read_json(out / "metrics.json")["epochs"][-1]
    assert row["dp_epsilon"] == pytest.approx(m["dp_epsilon"]) and math.isfinite(row["loss"])


@pytest.mark.parametrize("extra, words", [
    (["--stream", "on"], "cannot train on a streamed tile store"),
    (["--model", "densenet121"], "use --model resnet18 or resnet10"),
])
def test_train_tiles_dp_refusals_come_first(tmp_path, capsys, extra, words):
    rc = main(["train-tiles", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run"),
               "--dp-epsilon", "8", *extra])
    assert rc != 0
    err = capsys.readouterr().err
    assert words in err and "missing" not in err  # refused on the options, before the data are even looked at
    assert not (tmp_path / "run").exists()


def test_federation_refuses_dp_on_streamed_tiles():
    from fedimg.errors import ConfigError
    from fedimg.fl.server.federation import FederationConfig

    with pytest.raises(ConfigError, match="cannot train on a streamed tile store"):
        FederationConfig(task="tiles", train={"stream": "on"}, dp={"epsilon": 8.0})
    FederationConfig(task="tiles", train={"stream": "off"}, dp={"epsilon": 8.0})  # held in memory: fine
