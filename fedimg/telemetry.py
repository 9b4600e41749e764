"""GPU telemetry sampled by NVML (nvidia-ml-py) in a background thread.

Utilisation, memory and power are sampled every ``interval`` seconds while the block
runs. Without a GPU, NVML library or driver the sampler is a silent no-op; nothing touches
NVML at import time.

>>> with Telemetry(device_index=0, interval=0.05) as tel:
...     pass
>>> s = tel.summary()
>>> sorted(k for k in s if k in ("available", "samples"))
['available', 'samples']
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["Telemetry", "cpu_name"]

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

    def __init__(self, device_index: int | None = 0, interval: float = 0.5) -> None:
        self.device_index = device_index
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
        return out

    def to_dict(self) -> dict[str, Any]:
        """Summary plus the raw samples (for ``telemetry.json``)."""
        return {"summary": self.summary(), "interval_s": self.interval, "samples": self.samples}
