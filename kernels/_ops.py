"""Per-backend operation tables and the shared argument checks.

Every backend module exposes the same functions on its native arrays:
``wsum(us, ws, out, accumulate)``, ``wsum_sumsq(parts, w, src, out, accumulate)`` (one
update given as consecutive 1-D parts: ``out = [src +] w*update`` and its float64 sum of
squares in the same pass), ``fedopt(p, g, m, v, method, lr, b1, b2, tau)``,
``robust(us, k_trim, dt)``, ``sumsq(u)``, ``scale(u, factor, dt)``, ``all_finite(u)``,
``zeros(n, dt, like)`` and ``host(x)``. ``ops_for(name)`` imports it lazily.

>>> ops_for("numpy").__name__.rsplit(".", 1)[-1]
'_ref'
"""

from __future__ import annotations

import importlib
import math
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._backend import choose_backend, kind_of
from ._convert import float_kind

__all__ = ["ops_for", "acc_dtype", "check_updates", "check_weights", "resolve"]

_MODULES = {
    "numpy": "._ref",
    "numba": "._cpu",
    "numba_cuda": "._cuda",
    "cupy": "._cupy",
    "torch": "._torch",
}
_cache: dict[str, types.ModuleType] = {}


def ops_for(backend: str) -> types.ModuleType:
    if backend not in _cache:
        _cache[backend] = importlib.import_module(_MODULES[backend], __package__)
    return _cache[backend]


def acc_dtype(kinds: Sequence[str]) -> np.dtype:
    """float64 if any input is float64, else float32 (half types accumulate in float32)."""
    return np.dtype(np.float64) if "float64" in kinds else np.dtype(np.float32)


def check_updates(updates: Sequence[Any], what: str = "updates") -> tuple[int, list[str]]:
    """Validate a non-empty sequence of equally sized float arrays of one kind."""
    if isinstance(updates, (str, bytes)) or not isinstance(updates, Sequence) or len(updates) == 0:
        raise ValueError(f"{what}: expected a non-empty sequence of 1-D float arrays")
    kinds = {kind_of(u) for u in updates}
    if len(kinds) > 1:
        raise TypeError(f"{what}: mixes array kinds {sorted(kinds)}; pass arrays of one library/device")
    sizes = {int(np.prod(u.shape)) for u in updates}
    if len(sizes) != 1:
        raise ValueError(f"{what}: arrays differ in size {sorted(sizes)[:4]}; all updates must have the same length")
    return sizes.pop(), [float_kind(u) for u in updates]


def check_weights(weights: Any, k: int) -> np.ndarray:
    w = np.asarray(
        weights.detach().cpu().numpy() if kind_of(weights).startswith("torch") else weights, dtype=np.float64
    ).reshape(-1)
    if w.size != k:
        raise ValueError(f"weights: got {w.size} weights for {k} updates")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights: must be finite and >= 0")
    if not math.fsum(w) > 0:
        raise ValueError("weights: all weights are zero; at least one update must carry weight")
    return w


def resolve(x: Any, size: int, backend: str | None) -> str:
    return choose_backend(kind_of(x), size, backend)
