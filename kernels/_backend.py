"""Backend choice for the kernels: the backend follows where the data lives.

==================  =========================================================
input               backend used
==================  =========================================================
numpy (host)        ``numba`` (parallel CPU) when numba imports and the arrays
                    are large enough, else ``numpy`` (the reference)
torch CPU tensor    same as numpy, on a zero-copy ``.numpy()`` view
CuPy array          ``cupy`` (RawKernels named ``fedimg_*``)
torch CUDA tensor   ``cupy`` on a zero-copy DLPack view when CuPy imports, else
                    ``numba_cuda`` on ``__cuda_array_interface__``, else ``torch``
numba device array  ``numba_cuda``
==================  =========================================================

A missing optional package (numba, CuPy) falls back to the next backend and logs one line
per process. Every public op also takes ``backend=`` to force one (used by the parity
tests). Host arrays with ``backend="numba_cuda"`` or ``"cupy"`` are copied to the device
and the result copied back.

Internally bfloat16 host data travel as ``uint16`` bit patterns (numpy has no bfloat16);
integer inputs are rejected before they reach a backend.

>>> kind_of(np.zeros(3, np.float32))
'numpy'
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import numpy as np

__all__ = ["BACKENDS", "kind_of", "optional", "warn_once", "choose_backend", "numba_cuda_works", "NUMBA_MIN_SIZE"]

log = logging.getLogger(__name__)

BACKENDS = ("numpy", "numba", "numba_cuda", "cupy", "torch")
NUMBA_MIN_SIZE = 1 << 15  # below this many elements numpy's per-call overhead wins

_warned: set[str] = set()
_modules: dict[str, Any] = {}


def warn_once(key: str, msg: str, *args: Any) -> None:
    """Log ``msg`` at INFO once per process for ``key`` (fallback notices)."""
    if key not in _warned:
        _warned.add(key)
        log.info(msg, *args)


def optional(name: str) -> Any | None:
    """Import ``name`` lazily; ``None`` (and one log line) when it is missing or broken."""
    if name in _modules:
        return _modules[name]
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        log.debug("fedimg.kernels: %s unavailable (%s)", name, exc)
        mod = None
    _modules[name] = mod
    return mod


def kind_of(x: Any) -> str:
    """``"numpy" | "torch_cpu" | "torch_cuda" | "cupy" | "numba_cuda"`` for an array."""
    mod = type(x).__module__
    if mod.startswith("torch"):
        return "torch_cuda" if x.is_cuda else "torch_cpu"
    if mod.startswith("cupy"):
        return "cupy"
    if mod.startswith("numba") and hasattr(x, "copy_to_host"):
        return "numba_cuda"
    return "numpy"


_numba_cuda_state: list[bool] = []


def numba_cuda_works() -> bool:
    """Whether numba can compile and run a CUDA kernel here (driver, NVVM and libdevice).

    Checked once per process with a one-element kernel; a GPU without the CUDA toolkit's
    NVVM (``pip install nvidia-cuda-nvcc-cu12`` or ``numba-cuda[cu12]`` provides it) gives
    ``False`` and one log line, and torch CUDA data then use torch ops.
    """
    if _numba_cuda_state:
        return _numba_cuda_state[0]
    ok = False
    if optional("numba") is not None:
        try:
            from numba import cuda

            if cuda.is_available():
                @cuda.jit
                def _probe(a):  # pragma: no cover - device code
                    a[0] = a[0] + 1.0

                d = cuda.to_device(np.zeros(1, np.float32))
                _probe[1, 1](d)
                ok = float(d.copy_to_host()[0]) == 1.0
        except Exception as exc:
            warn_once("numba_cuda", "fedimg.kernels: numba CUDA unusable (%s)", str(exc).splitlines()[0][:200])
    _numba_cuda_state.append(ok)
    return ok


def choose_backend(kind: str, size: int, requested: str | None = None) -> str:
    """Pick the backend for data of ``kind`` and ``size`` elements (``requested`` wins)."""
    if requested is not None:
        if requested not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {requested!r}")
        if requested == "numba" and optional(__package__ + "._cpu") is None:
            warn_once("fb:numba", "fedimg.kernels: numba missing; using numpy")
            return "numpy"
        if requested == "cupy" and optional("cupy") is None:
            warn_once("fb:cupy", "fedimg.kernels: CuPy missing; using %s", "torch" if kind == "torch_cuda" else "numpy")
            return "torch" if kind == "torch_cuda" else "numpy"
        return requested
    if kind in ("numpy", "torch_cpu"):
        if size >= NUMBA_MIN_SIZE and optional(__package__ + "._cpu") is not None:
            return "numba"
        return "numpy"
    if kind == "cupy":
        return "cupy"
    if kind == "numba_cuda":
        return "numba_cuda"
    # torch CUDA
    if optional("cupy") is not None:
        return "cupy"
    if numba_cuda_works():
        warn_once("fb:torchcuda", "fedimg.kernels: CuPy missing; torch CUDA tensors use numba CUDA")
        return "numba_cuda"
    warn_once("fb:torchnative", "fedimg.kernels: CuPy and numba CUDA missing; torch CUDA tensors use torch ops")
    return "torch"
