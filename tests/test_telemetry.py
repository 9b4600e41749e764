"""Telemetry: silent without a GPU, samples with one, never touches NVML at import time."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_torch_memory_and_summary_line_absent_on_cpu():
    import torch

    from fedimg.telemetry import format_summary

    with Telemetry(device_index=None, interval=0.01, torch_device=torch.device("cpu")) as tel:
        torch.ones(8).sum()
    s = tel.summary()
    assert tel.torch_device is None and not any(k.startswith(("torch_", "gpu_", "mem_")) for k in s)
    assert format_summary(s) is None


def test_summary_line_names_each_source():
    from fedimg.telemetry import format_summary

    nvml = {"gpu_util_mean": 40.4, "gpu_util_max": 97.0, "mem_used_peak_mib": 2048.0, "torch_max_allocated_mib": 1000.0,
            "torch_max_reserved_mib": 1500.0}
    assert format_summary(nvml) == ("GPU: utilisation mean 40 % (max 97 %), memory peak 2048 MiB (NVML), "
                                    "PyTorch peak allocated 1000 MiB")
    torch_only = {k: v for k, v in nvml.items() if k.startswith("torch_")}
    assert "nvidia-ml-py missing" in format_summary(torch_only) and "reserved 1500 MiB" in format_summary(torch_only)


@pytest.mark.gpu
def test_torch_memory_without_nvml(monkeypatch):
    """nvidia-ml-py missing: no utilisation, but PyTorch's peak memory on the device is reported."""
    import torch

    from fedimg.telemetry import format_summary

    monkeypatch.setitem(sys.modules, "pynvml", None)
    dev = torch.device("cuda", 0)
    with Telemetry(device_index=0, interval=0.05, torch_device=dev) as tel:
        a = torch.empty(64 * 2**20, dtype=torch.uint8, device=dev)
        del a
    s = tel.summary()
    assert s["available"] is False and "gpu_util_mean" not in s
    assert s["torch_max_allocated_mib"] >= 64 and s["torch_max_reserved_mib"] >= 64
    assert "nvidia-ml-py missing" in format_summary(s)
