"""GPU telemetry sampled by NVML (nvidia-ml-py) in a background thread.

Utilisation, memory and power are sampled every ``interval`` seconds while the block
runs. Given the CUDA ``torch_device`` the work runs on, the summary also holds PyTorch's own
peak allocated / reserved memory (``torch.cuda.max_memory_*``), which is all there is when
nvidia-ml-py is missing. Without a GPU, NVML library or driver the sampler is a silent
no-op and the summary has no GPU numbers; nothing touches NVML or CUDA at import time.

>>> with Telemetry(device_index=None, interval=0.05) as tel:
...     pass
>>> s = tel.summary()
>>> s["available"], s["samples"], "gpu_util_mean" in s, format_summary(s)
(False, 0, False, None)
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["Telemetry", "cpu_name", "format_summary"]

log = logging.getLogger(__name__)


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform string)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


class Telemetry:
    """Background NVML sampler for one GPU; ``summary()`` gives means, peaks and the device name."""

    def __init__(self, device_index: int | None = 0, interval: float = 0.5, torch_device: Any = None) -> None:
        self.device_index = device_index
        self.torch_device = torch_device if getattr(torch_device, "type", None) == "cuda" else None
        self.interval = float(interval)
        self.samples: list[dict[str, float]] = []
        self.device_name: str | None = None
        self.available = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        self._handle: Any = None
        self._t0 = 0.0
        self._t1 = 0.0

    def start(self) -> Telemetry:
        self._t0 = time.perf_counter()
        if self.torch_device is not None:
            self._torch_memory(reset=True)
        if self.device_index is None:
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(int(self.device_index))
            name = pynvml.nvmlDeviceGetName(self._handle)
            self.device_name = name.decode() if isinstance(name, bytes) else str(name)
            self._nvml = pynvml
            self.available = True
        except Exception as exc:  # no GPU / driver / library: stay silent
            log.debug("telemetry off: %s", exc)
            return self
        self._sample()
        self._thread = threading.Thread(target=self._run, name="fedimg-telemetry", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        nv, h = self._nvml, self._handle
        row: dict[str, float] = {"t": time.perf_counter() - self._t0}
        try:
            util = nv.nvmlDeviceGetUtilizationRates(h)
            row["gpu_util"] = float(util.gpu)
            row["mem_util"] = float(util.memory)
        except Exception:
            pass
        try:
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            row["mem_used_mib"] = mem.used / 2**20
            row["mem_total_mib"] = mem.total / 2**20
        except Exception:
            pass
        try:
            row["power_w"] = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
        except Exception:
            pass
        self.samples.append(row)

    def _torch_memory(self, reset: bool = False) -> dict[str, float]:
        """PyTorch's peak allocated / reserved MiB on ``torch_device`` (reset at :meth:`start`)."""
        try:
            import torch

            if reset:
                torch.cuda.reset_peak_memory_stats(self.torch_device)
                return {}
            return {"torch_max_allocated_mib": torch.cuda.max_memory_allocated(self.torch_device) / 2**20,
                    "torch_max_reserved_mib": torch.cuda.max_memory_reserved(self.torch_device) / 2**20}
        except Exception as exc:  # CUDA unusable: no numbers, no noise
            log.debug("torch CUDA memory stats off: %s", exc)
            return {}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> Telemetry:
        self._t1 = time.perf_counter()
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            self._sample()
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
        return self

    def __enter__(self) -> Telemetry:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def elapsed(self) -> float:
        """Seconds since :meth:`start` on the samples' clock (to mark windows for :meth:`summary`)."""
        return time.perf_counter() - self._t0

    def summary(self, windows: list[tuple[float, float]] | None = None) -> dict[str, Any]:
        """Means and peaks over the samples (``available: False`` and no numbers without NVML).

        ``windows``: only samples whose time (:meth:`elapsed`) lies in one of these spans.
        """
        rows = self.samples if windows is None else [s for s in self.samples
                                                     if any(a <= s["t"] <= b for a, b in windows)]
        out: dict[str, Any] = {"available": self.available, "device": self.device_name or cpu_name(),
                               "samples": len(rows), "seconds": max(0.0, (self._t1 or time.perf_counter()) - self._t0)}

        def col(k: str) -> list[float]:
            return [s[k] for s in rows if k in s]

        if (u := col("gpu_util")):
            out["gpu_util_mean"] = sum(u) / len(u)
            out["gpu_util_max"] = max(u)
        if (m := col("mem_used_mib")):
            out["mem_used_peak_mib"] = max(m)
        if (p := col("power_w")):
            out["power_mean_w"] = sum(p) / len(p)
            out["power_max_w"] = max(p)
        if self.torch_device is not None:
            out.update(self._torch_memory())
        return out

    def to_dict(self) -> dict[str, Any]:
        """Summary plus the raw samples (for ``telemetry.json``)."""
        return {"summary": self.summary(), "interval_s": self.interval, "samples": self.samples}


def format_summary(summary: dict[str, Any]) -> str | None:
    """One line of GPU utilisation and memory for a benchmark's table, ``None`` without GPU numbers.

    >>> format_summary({"available": True, "gpu_util_mean": 91.0, "gpu_util_max": 100.0,
    ...                 "mem_used_peak_mib": 5120.0, "torch_max_allocated_mib": 3000.0})
    'GPU: utilisation mean 91 % (max 100 %), memory peak 5120 MiB (NVML), PyTorch peak allocated 3000 MiB'
    >>> format_summary({"torch_max_allocated_mib": 3000.0, "torch_max_reserved_mib": 3500.0})
    'GPU: utilisation not sampled (nvidia-ml-py missing), PyTorch peak allocated 3000 MiB, reserved 3500 MiB'
    """
    parts = []
    if "gpu_util_mean" in summary:
        parts.append(f"utilisation mean {summary['gpu_util_mean']:.0f} % (max {summary.get('gpu_util_max', 0):.0f} %)")
    elif "torch_max_allocated_mib" in summary:
        parts.append("utilisation not sampled (nvidia-ml-py missing)")
    if "mem_used_peak_mib" in summary:
        parts.append(f"memory peak {summary['mem_used_peak_mib']:.0f} MiB (NVML)")
    if "torch_max_allocated_mib" in summary:
        s = f"PyTorch peak allocated {summary['torch_max_allocated_mib']:.0f} MiB"
        if "torch_max_reserved_mib" in summary and "mem_used_peak_mib" not in summary:
            s += f", reserved {summary['torch_max_reserved_mib']:.0f} MiB"
        parts.append(s)
    return "GPU: " + ", ".join(parts) if parts else None
