"""Telemetry (silent without a GPU, samples with one) and the training benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedimg.telemetry import Telemetry


def test_telemetry_import_does_not_touch_nvml():
    code = "import sys, fedimg.telemetry, fedimg.engine, fedimg.cli.train; print('pynvml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False"


def test_telemetry_without_device_is_a_silent_no_op(caplog):
    with Telemetry(device_index=None, interval=0.01) as tel:
        pass
    s = tel.summary()
    assert s["available"] is False and s["samples"] == 0 and "gpu_util_mean" not in s
    assert isinstance(s["device"], str) and s["device"]
    assert json.dumps(tel.to_dict())
    assert not [r for r in caplog.records if r.levelno >= 30]


def test_telemetry_bad_index_is_silent():
    with Telemetry(device_index=99, interval=0.01) as tel:
        pass
    assert tel.summary()["available"] is False


@pytest.mark.gpu
def test_telemetry_samples_on_gpu():
    import time

    import torch

    with Telemetry(device_index=0, interval=0.05) as tel:
        a = torch.randn(4096, 4096, device="cuda")
        t0 = time.time()
        while time.time() - t0 < 1.0:
            a = a @ a
            a = a / a.norm()
        torch.cuda.synchronize()
    s = tel.summary()
    assert s["available"] and s["samples"] >= 5
    assert s["gpu_util_max"] > 0 and s["mem_used_peak_mib"] > 0


def test_bench_train_runs_and_writes_json(site, tmp_path, capsys):
    from fedimg.cli import main

    out = tmp_path / "train.json"
    assert main(["-q", "bench", "train", "--data", str(site), "--roi", "32", "32", "32", "--epochs", "1",
                 "--threads", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    table = capsys.readouterr().out
    assert "MONAI tutorial loop" in table and "fedimg engine" in table and "ratio" in table
    assert res["ratio"] > 0 and res["device"] and res["telemetry"]["available"] is False
    peer, eng = list(res["results"].values())[:2]
    assert peer["voxels_per_s"] > 0 and eng["voxels_per_s"] > 0
    assert res["ratio"] == pytest.approx(eng["voxels_per_s"] / peer["voxels_per_s"])


def test_benchmark_script_help():
    r = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "benchmarks" / "train_throughput.py"), "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--quick" in r.stdout and "--json" in r.stdout
