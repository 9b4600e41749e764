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
