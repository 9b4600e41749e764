"""The training benchmark: ``fedimg bench train`` (fedimg's engine alone) and
``benchmarks/train_throughput.py`` (engine vs the MONAI tutorial loop). Not timing tests."""

from __future__ import annotations

import json

import pytest

TINY = ["--roi", "32", "32", "32", "--epochs", "1", "--threads", "1"]


def test_fedimg_bench_train_measures_the_engine_alone(site, tmp_path, capsys):
    from fedimg.cli import main

    out = tmp_path / "train.json"
    assert main(["-q", "bench", "train", "--data", str(site), *TINY, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    table = capsys.readouterr().out
    assert "fedimg engine" in table and "voxels/s" in table and "tutorial" not in table
    assert res["benchmark"] == "train" and res["device"] and res["telemetry"]["available"] is False
    assert "GPU telemetry: not available" in table and "ratio" not in res
    (name, eng), = res["results"].items()
    assert name.startswith("fedimg engine") and eng["voxels_per_s"] > 0 and eng["epoch_s"] > 0
    assert res["engine_voxels_per_s"] == pytest.approx(eng["voxels_per_s"])


def test_bench_train_runs_and_writes_json(site, tmp_path, capsys, benchmark_script):
    """``benchmarks/train_throughput.py``: the tutorial loop and the engine, interleaved, with the ratio."""
    script = benchmark_script("train_throughput")
    out = tmp_path / "train.json"
    assert script.main(["--data", str(site), *TINY, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    table = capsys.readouterr().out
    assert "MONAI tutorial loop" in table and "fedimg engine" in table and "ratio" in table
    assert res["ratio"] > 0 and res["device"] and res["telemetry"]["available"] is False
    peer, eng = list(res["results"].values())[:2]
    assert peer["voxels_per_s"] > 0 and eng["voxels_per_s"] > 0
    assert res["ratio"] == pytest.approx(eng["voxels_per_s"] / peer["voxels_per_s"])
