"""Device resolution, thread counts and seeding, decided once and passed down.

Nothing here touches CUDA at import time; ``"auto"`` picks CUDA only when it is
available, and there is never a silent default to ``"cuda"``.

>>> resolve_device("cpu")
device(type='cpu')
>>> server_fold_threads(0, cpus=2), server_fold_threads(0, cpus=16), server_fold_threads(3, cpus=2)
(1, 16, 3)
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np

__all__ = ["resolve_device", "configure_threads", "configured_threads", "nvidia_driver_present", "seed_everything", "bf16_supported", "server_fold_threads",
           "set_launch_threads", "SMALL_SERVER_CPUS", "available_cpus"]

log = logging.getLogger(__name__)


def resolve_device(spec: str = "auto"):
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a ``torch.device``.

    Raises :class:`fedimg.errors.ConfigError` when CUDA is asked for but absent.
    """
    import torch

    from fedimg.errors import ConfigError

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: no CUDA GPU is visible to torch; use --device cpu or auto")
        try:
            dev = torch.device(spec)
        except RuntimeError:  # "cuda0", "cuda:x": one clear error, not a traceback
            raise ConfigError(f"--device {spec!r} is not understood; use auto, cpu, cuda or cuda:N") from None
        idx = 0 if dev.index is None else dev.index
        if idx >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible; pick cuda:0..")
        return torch.device("cuda", idx)
    raise ConfigError(f"--device {spec!r} is not understood; use auto, cpu, cuda or cuda:N")


def configure_threads(num_threads: int | None = None, *, numba: bool = True, torch: bool = True) -> int:
    """Set torch (intra- and inter-op) and numba thread counts deliberately.

    ``None`` means the number of CPUs this process may use. Returns the count used (also
    :func:`configured_threads`). BLAS threads follow ``OMP_NUM_THREADS`` where it is set.
    ``numba=False``: for commands that never run numba code (``fedimg deface``), which then
    do not pay its import (~0.3 s). ``torch=False``: set torch's counts only if torch is
    already imported; otherwise torch is not imported here (~1.5 s; ``fedimg deface`` on the
    CPU registers in numpy), and a later import gets ``OMP_NUM_THREADS`` or its own default.
    """
    import sys

    if num_threads is None:
        num_threads = available_cpus()
    n = max(1, int(num_threads))
    _CONFIGURED[:] = [n]
    try:
        if numba:
            import numba as nb

            nb.set_num_threads(min(n, nb.config.NUMBA_NUM_THREADS))
    except Exception:  # numba missing or already-running pool: keep its default
        log.debug("numba threads left at default", exc_info=True)
    if not torch and "torch" not in sys.modules:
        return n
    import torch as _torch

    # After numba: its OpenMP pool start resets the OpenMP thread count torch reads.
    _torch.set_num_threads(n)
    try:  # inter-op threads can only be set once per process
        _torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return n


_CONFIGURED: list[int] = []


def configured_threads() -> int:
    """torch's intra-op count where torch is imported, else the count :func:`configure_threads` set
    last, else the available CPUs (never imports torch)."""
    import sys

    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    return _CONFIGURED[0] if _CONFIGURED else available_cpus()


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded (``/proc/driver/nvidia`` or ``/dev/nvidiactl``), without importing torch.

    False means no CUDA device can be visible, so ``"auto"`` is the CPU; True says nothing more
    (:func:`resolve_device` asks torch).
    """
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


def available_cpus() -> int:
    """The CPUs this process may use (its affinity where the OS has one, else the CPU count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


SMALL_SERVER_CPUS = 4  # up to this many CPUs the server folds with one thread (``server_fold_threads``)


def server_fold_threads(requested: int = 0, *, cpus: int | None = None) -> int:
    """The numba thread count for the server's fold: ``requested``, or for ``0`` ("auto") one
    thread when the server process may use at most :data:`SMALL_SERVER_CPUS` CPUs, else all of them.

    Why one on a small server: the fold is memory-bound and runs per tensor (two kernel launches per
    update, each waking every worker). On the 2-vCPU AMD EPYC of ``benchmarks/RESULTS.md`` one thread
    folded a SegResNet update faster than two (7.6 vs 9.2-10.3 ms), and two spinning OpenMP workers on
    a loaded host made the fold 15x slower. Above four CPUs more threads add bandwidth; that count
    (numba's default, all CPUs) is not measured here. ``cpus``: the CPUs to assume (default: this
    process's affinity).
    """
    if requested:
        return int(requested)
    if cpus is None:
        cpus = available_cpus()
    return 1 if cpus <= SMALL_SERVER_CPUS else int(cpus)


def set_launch_threads(n: int) -> int:
    """Give numba kernels launched from *the calling thread* ``n`` threads (at most numba's pool).

    numba's count is thread-local: a thread that NVFlare starts gets numba's default whatever the
    main thread set, so call this in the thread that launches the kernels. Returns the count that
    thread now has (``numba.get_num_threads()``).
    """
    import numba as nb

    nb.set_num_threads(max(1, min(int(n), nb.config.NUMBA_NUM_THREADS)))
    return int(nb.get_num_threads())


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) RNGs."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def bf16_supported(device) -> bool:
    """Whether bf16 autocast is worthwhile on ``device`` (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))
