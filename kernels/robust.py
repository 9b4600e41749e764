"""Robust statistics over K updates: coordinate-wise median and trimmed mean, per-update L2
norms, norm clipping and NaN/Inf detection.

Used to reject poisoned or broken updates and, later, for differential privacy (clipping);
they wrap FedAvg, they never live inside it. All are pure and follow the inputs' backend.

* ``coordinate_median(updates)`` — per coordinate the median of the K values (mean of the
  two middle values for even K).
* ``trimmed_mean(updates, trim_ratio)`` — per coordinate drop ``floor(trim_ratio*K)``
  smallest and largest values, average the rest (``0 <= trim_ratio < 0.5``).
* ``l2_norms(updates)`` — float64 numpy array of the K norms (computed in float64).
* ``clip_by_norm(update, max_norm)`` — ``update * min(1, max_norm/||update||)`` as a new array.
* ``all_finite(update)`` — ``False`` if any NaN or Inf.

Median and trimmed mean assume finite values: check with ``all_finite`` first (NaN sorts
differently per backend). Results are float32 (float64 for float64 inputs).

>>> import numpy as np
>>> us = [np.array([1, 10], np.float32), np.array([2, -5], np.float32), np.array([100, 0], np.float32)]
>>> coordinate_median(us)
array([2., 0.], dtype=float32)
>>> trimmed_mean(us, 0.34)
array([2., 0.], dtype=float32)
>>> l2_norms([np.array([3, 4], np.float32)])
array([5.])
>>> clip_by_norm(np.array([3, 4], np.float32), 1.0)
array([0.6, 0.8], dtype=float32)
>>> all_finite(np.array([1.0, np.inf]))
False
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._backend import choose_backend, kind_of
from ._convert import from_native, to_native
from ._ops import acc_dtype, check_updates, ops_for

__all__ = ["coordinate_median", "trimmed_mean", "l2_norms", "parts_norm", "clip_by_norm", "all_finite"]


def _robust(updates: Sequence[Any], k_trim: int, backend: str | None) -> Any:
    n, kinds = check_updates(updates)
    be = choose_backend(kind_of(updates[0]), n, backend)
    native = [to_native(u, be) for u in updates]
    out = ops_for(be).robust(native, k_trim, acc_dtype(kinds))
    return from_native(out, updates[0])


def coordinate_median(updates: Sequence[Any], *, backend: str | None = None) -> Any:
    """Coordinate-wise median of K equally sized arrays (1-D result)."""
    return _robust(updates, (len(updates) - 1) // 2, backend)


def trimmed_mean(updates: Sequence[Any], trim_ratio: float, *, backend: str | None = None) -> Any:
    """Coordinate-wise mean after dropping ``floor(trim_ratio*K)`` values at each end."""
    if not 0 <= trim_ratio < 0.5:
        raise ValueError(f"trimmed_mean: trim_ratio must be in [0, 0.5), got {trim_ratio}")
    k = len(updates) if isinstance(updates, Sequence) else 0
    return _robust(updates, int(math.floor(trim_ratio * k)), backend)


def l2_norms(updates: Sequence[Any], *, backend: str | None = None) -> np.ndarray:
    """Per-update L2 norms as a float64 numpy array of length K."""
    n, _ = check_updates(updates)
    be = choose_backend(kind_of(updates[0]), n, backend)
    ops = ops_for(be)
    return np.array([math.sqrt(ops.sumsq(to_native(u, be))) for u in updates], dtype=np.float64)


def parts_norm(parts: Sequence[Any], *, backend: str | None = None) -> float:
    """L2 norm (float64) of ONE update given as consecutive 1-D parts (a state dict's tensors,
    :func:`fedimg.kernels.layout.flat_parts`), without packing them: on the numba backend one
    parallel pass over all parts (not one per tensor). NaN/Inf when a value is NaN/Inf.

    >>> parts_norm([np.full(3, 2.0, np.float32), np.zeros(0, np.float32), np.full(1, 2.0, np.float32)])
    4.0
    """
    parts = [p for p in parts if math.prod(p.shape)]
    if not parts:
        return 0.0
    kinds = {kind_of(p) for p in parts}
    if len(kinds) > 1:
        raise TypeError(f"parts_norm: mixes array kinds {sorted(kinds)}; pass arrays of one library/device")
    be = choose_backend(kinds.pop(), sum(math.prod(p.shape) for p in parts), backend)
    ops = ops_for(be)
    native = [to_native(p, be).reshape(-1) for p in parts]
    many = getattr(ops, "sumsq_parts", None)
    return math.sqrt(many(native) if many is not None else sum(ops.sumsq(p) for p in native))


def clip_by_norm(update: Any, max_norm: float, *, backend: str | None = None) -> Any:
    """``update`` scaled down to L2 norm ``max_norm`` if it is longer (a new array)."""
    if not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"clip_by_norm: max_norm must be finite and > 0, got {max_norm}")
    n, kinds = check_updates([update], "update")
    be = choose_backend(kind_of(update), n, backend)
    ops = ops_for(be)
    u = to_native(update, be)
    norm = math.sqrt(ops.sumsq(u))
    if not math.isfinite(norm):
        raise ValueError("clip_by_norm: the update holds NaN/Inf; check it with all_finite first")
    factor = 1.0 if norm <= max_norm else max_norm / norm
    return from_native(ops.scale(u, factor, acc_dtype(kinds)), update)


def all_finite(update: Any, *, backend: str | None = None) -> bool:
    """``True`` when no element is NaN or +-Inf."""
    n, _ = check_updates([update], "update")
    be = choose_backend(kind_of(update), n, backend)
    return bool(ops_for(be).all_finite(to_native(update, be)))
