"""Weighted averaging of model updates: fused, blocked and streaming FedAvg.

* :func:`fedavg` — K updates already in memory, one pass (``mode="fused"``: each update
  read once, the result written once), ``mode="blocked"`` (``block`` updates per pass) or
  ``mode="streaming"`` (one pass per update, as the accumulator does).
* :class:`WeightedAccumulator` — ``acc += w * update`` as each update arrives, then
  ``result() = acc / total_weight``. Server memory is the accumulator plus the result
  (2x the model) whatever the number of sites; ``block=B`` buffers references to B
  updates and folds them in one pass (more memory, less traffic on ``acc``).
  ``add_checked(update, w, check)`` folds and measures an update (its L2 norm) in the same
  pass, into a second buffer that counts only if ``check(norm)`` accepts it (a server that
  must reject bad updates before they touch the sum: 3x the model); the update may be given
  as its tensors (:func:`fedimg.kernels.layout.flat_parts`), so no packed copy is made.

Results are float32 (float64 when an input is float64; float16/bfloat16 inputs are
accumulated in float32) and of the inputs' kind: numpy in → numpy out, torch CUDA in →
torch CUDA out on the same device, CuPy in → CuPy out. Updates with weight 0 are skipped
(they contribute nothing, even when they hold NaN). With ``layout=`` (from
:func:`fedimg.kernels.pack`) the integer tail takes the element-wise max instead of the
mean (see :mod:`fedimg.kernels.layout`). Inputs are never modified.

>>> import numpy as np
>>> a, b = np.zeros(4, np.float32), np.ones(4, np.float32)
>>> fedavg([a, b], [1, 3])
array([0.75, 0.75, 0.75, 0.75], dtype=float32)
>>> acc = WeightedAccumulator(4)
>>> acc.add(a, 1); acc.add(b, 3)
>>> acc.result(), acc.count, acc.total_weight
(array([0.75, 0.75, 0.75, 0.75], dtype=float32), 2, 4.0)
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._backend import choose_backend, kind_of
from ._convert import float_kind, from_native, to_native
from ._ops import acc_dtype, check_updates, check_weights, ops_for
from .layout import Layout, slice_parts

__all__ = ["fedavg", "WeightedAccumulator", "MODES"]

log = logging.getLogger(__name__)

MODES = ("fused", "blocked", "streaming")


def _split(layout: Layout | None, n: int) -> int:
    if layout is None:
        return n
    if layout.size != n:
        raise ValueError(f"layout describes {layout.size} values but the updates have {n}")
    return layout.float_size


def _tail_max(tails: list[np.ndarray]) -> np.ndarray:
    out = tails[0].astype(np.float64, copy=True)
    for t in tails[1:]:
        np.maximum(out, t, out=out)
    return out


def fedavg(
    updates: Sequence[Any],
    weights: Sequence[float] | np.ndarray,
    *,
    mode: str = "fused",
    block: int = 8,
    layout: Layout | None = None,
    backend: str | None = None,
    out: Any = None,
) -> Any:
    """Weighted mean ``sum_k w_k u_k / sum_k w_k`` of equally sized float arrays (1-D result).

    ``out``: an existing contiguous float32 (float64 for float64 inputs) array of the same
    kind and length to write the result into and return (a server reusing its buffer
    across rounds saves the allocation and page faults of a fresh result).
    """
    if mode not in MODES:
        raise ValueError(f"fedavg: mode must be one of {MODES}, not {mode!r}")
    if block < 1:
        raise ValueError("fedavg: block must be >= 1")
    n, kinds = check_updates(updates)
    w = check_weights(weights, len(updates))
    keep = [i for i in range(len(updates)) if w[i] > 0]
    wn = w[keep] / w.sum()
    fs = _split(layout, n)
    be = choose_backend(kind_of(updates[0]), n, backend)
    ops = ops_for(be)
    dt = acc_dtype(kinds)
    native = [to_native(updates[i], be) for i in keep]
    target = out
    direct = target is not None and _check_out(target, updates[0], n, dt) and _same_memory(kind_of(target), be)
    out = to_native(target, be) if direct else ops.empty(n, dt, native[0])
    body = [u[:fs] for u in native] if fs < n else native
    if fs > 0:
        if mode == "fused":
            ops.wsum(body, wn, out[:fs] if fs < n else out, False)
        else:
            step = block if mode == "blocked" else 1
            for s in range(0, len(body), step):
                ops.wsum(body[s : s + step], wn[s : s + step], out[:fs] if fs < n else out, s > 0)
    if fs < n:
        ops.set_tail(out, fs, _tail_max([ops.host(u[fs:]) for u in native]))
    if target is None:
        return from_native(out, updates[0])
    if not direct:  # the backend computed elsewhere (forced backend=): copy into the caller's buffer
        res = from_native(out, target)
        if hasattr(target, "copy_"):
            target.view(-1).copy_(res)
        else:
            target.reshape(-1)[...] = res
    return target


_HOST = ("numpy", "torch_cpu")


def _same_memory(kind: str, backend: str) -> bool:
    """Whether ``to_native(x, backend)`` is a zero-copy view of an array of ``kind``."""
    return backend in (("numpy", "numba", "torch") if kind in _HOST else ("cupy", "numba_cuda", "torch"))


def _check_out(target: Any, like: Any, n: int, dt: np.dtype) -> bool:
    """Validate a caller's ``out`` array (same kind as the updates, length, dtype, contiguous)."""
    if kind_of(target) != kind_of(like):
        raise TypeError(f"out: is a {kind_of(target)} array, the updates are {kind_of(like)}")
    if int(np.prod(target.shape)) != n or float_kind(target) != dt.name:
        raise ValueError(f"out: needs {n} values of {dt.name}")
    if hasattr(target, "is_contiguous"):
        contiguous = target.is_contiguous()
    elif hasattr(target, "is_c_contiguous"):
        contiguous = target.is_c_contiguous()
    else:
        contiguous = target.flags.c_contiguous
    if not contiguous:
        raise ValueError("out: must be contiguous")
    return True


class WeightedAccumulator:
    """Streaming weighted mean with constant memory (accumulator + result).

    ``device``: ``None``/``"cpu"`` keeps the sum in host memory (numba or numpy), a CUDA
    device (``"cuda"``, ``"cuda:1"``, ``torch.device``) keeps it in a torch CUDA tensor
    driven by CuPy / numba CUDA / torch. Updates may come from host or device; they are
    moved to the accumulator's device. ``add``/``result``/``reset`` are thread-safe (NVFlare
    may deliver updates from several threads).

    >>> acc = WeightedAccumulator(3, block=2)
    >>> for k in range(5):
    ...     acc.add(np.full(3, k, np.float32), 1.0)
    >>> acc.result()
    array([2., 2., 2.], dtype=float32)
    """

    def __init__(
        self,
        size: int,
        dtype: Any = np.float32,
        device: Any = None,
        *,
        block: int = 1,
        layout: Layout | None = None,
        backend: str | None = None,
    ) -> None:
        self.size = int(size)
        if self.size < 1:
            raise ValueError("WeightedAccumulator: size must be >= 1")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError("WeightedAccumulator: dtype must be float32 or float64")
        if block < 1:
            raise ValueError("WeightedAccumulator: block must be >= 1")
        self.block = int(block)
        self.layout = layout
        self._fs = _split(layout, self.size)
        dev = None if device is None else str(device)
        if dev is None or dev == "cpu":
            self._like = np.empty(0, self.dtype)
            self.device = "cpu"
        elif dev.startswith("cuda"):
            import torch

            self._like = torch.empty(0, dtype=getattr(torch, self.dtype.name), device=dev)
            self.device = str(self._like.device)
        else:
            raise ValueError(f"WeightedAccumulator: device must be None, 'cpu' or 'cuda[:n]', not {device!r}")
        self.backend = choose_backend(kind_of(self._like), self.size, backend)
        self._ops = ops_for(self.backend)
        self._acc = None
        self._scratch = None  # add_checked's second sum, allocated on first use
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget every update (keeps the buffer)."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        if self._acc is None:
            self._acc = self._zeros()
        self._pending: list[Any] = []
        self._pending_w: list[float] = []
        self._tail: np.ndarray | None = None
        self._folded = 0
        self.total_weight = 0.0
        self.count = 0

    def _zeros(self) -> Any:
        # torch / CuPy allocate on the like's device (a torch tensor); numba needs none
        return self._ops.zeros(self.size, self.dtype, None if self.backend == "numba_cuda" else self._like)

    def _checked(self, what: str, parts: list[Any], weight: float) -> float:
        """Validate an update's weight, length and dtypes; the weight as a float."""
        w = float(weight)
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"WeightedAccumulator.{what}: weight must be finite and >= 0, got {weight!r}")
        n = sum(p.size if type(p) is np.ndarray else math.prod(p.shape) for p in parts)
        if n != self.size:
            raise ValueError(f"WeightedAccumulator.{what}: update has {n} values, accumulator holds {self.size}")
        seen = set()
        for p in parts:  # one dtype check per kind of array (a model's tensors share a few)
            if (type(p), p.dtype) not in seen:
                float_kind(p)
                seen.add((type(p), p.dtype))
        return w

    def add(self, update: Any, weight: float) -> None:
        """Fold ``weight * update`` into the sum (``update`` is not modified or kept beyond a block)."""
        w = self._checked("add", [update], weight)
        with self._lock:
            self._add(update, w)

    def _native(self, u: Any) -> Any:
        u = to_native(u, self.backend)
        if self.backend == "torch" and self.device != "cpu" and u.device != self._like.device:  # host -> device
            u = u.to(self._like.device)
        return u

    def _host_tail(self, parts: list[Any]) -> np.ndarray | None:
        """The integer-buffer tail ``[float_size, size)`` of an update as float64 host values."""
        if self._fs == self.size:
            return None
        return np.concatenate([self._ops.host(p).reshape(-1) for p in slice_parts(parts, self._fs, self.size)]).astype(np.float64)

    def _max_tail(self, tail: np.ndarray | None) -> None:
        if tail is not None:
            self._tail = tail.copy() if self._tail is None else np.maximum(self._tail, tail)

    def _add(self, update: Any, w: float) -> None:
        self.count += 1
        if w == 0:
            return
        u = self._native(update)
        self._max_tail(self._host_tail([u]))
        self.total_weight += w
        self._pending.append(u[: self._fs] if self._fs < self.size else u)
        self._pending_w.append(w)
        if len(self._pending) >= self.block:
            self._flush()

    def add_checked(self, update: Any, weight: float, check: Callable[[float], bool]) -> bool:
        """Fold ``weight * update`` only if ``check(norm)`` accepts it; one pass over the update.

        ``update``: one array, or a list/tuple of arrays that one after the other make the
        update (e.g. :func:`fedimg.kernels.layout.flat_parts` of a state dict: no packed copy
        is made). The pass that reads the update writes ``sum + weight * update`` into a second
        buffer and measures the update's L2 norm (float64, over all its values; NaN/Inf when a
        value is NaN/Inf). ``check(norm)`` then decides: ``True`` makes that buffer the sum,
        ``False`` drops it, and the accumulator is exactly as before (count, weight, sum).
        Element for element the sum is bit-identical to :meth:`add`'s. Costs one more
        accumulator-sized buffer, allocated on first use. ``check`` runs under the accumulator's
        lock (keep it quick). Returns what ``check`` returned.
        """
        parts = list(update) if isinstance(update, (list, tuple)) else [update]
        w = self._checked("add_checked", parts, weight)
        host = self.backend in ("numba", "numpy")  # 1-D contiguous numpy parts (flat_parts) are native as they are
        if not (host and all(type(p) is np.ndarray and p.ndim == 1 and p.flags.c_contiguous for p in parts)):
            parts = [self._native(p) for p in parts]
        with self._lock:
            return self._add_checked(parts, w, check)

    def _add_checked(self, parts: list[Any], w: float, check: Callable[[float], bool]) -> bool:
        fs = self._fs
        body = slice_parts(parts, 0, fs) if fs < self.size else parts
        tail = self._host_tail(parts)
        ss = float(np.dot(tail, tail)) if tail is not None else 0.0
        fold = w > 0 and fs > 0
        if fold:
            self._flush()  # plain add()s still pending go first
            if self._scratch is None:
                self._scratch = self._zeros()
            src, out = (self._acc[:fs], self._scratch[:fs]) if fs < self.size else (self._acc, self._scratch)
            ss += self._ops.wsum_sumsq(body, w, src, out, self._folded > 0)
        else:
            ss += sum(self._ops.sumsq(p) for p in body)
        if not check(math.sqrt(ss)):  # NaN/Inf stay NaN/Inf
            return False
        self.count += 1
        if w == 0:
            return True
        if fold:
            self._acc, self._scratch = self._scratch, self._acc
            self._folded += 1
        self._max_tail(tail)
        self.total_weight += w
        return True

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._fs > 0:
            acc = self._acc[: self._fs] if self._fs < self.size else self._acc
            self._ops.wsum(self._pending, np.asarray(self._pending_w), acc, self._folded > 0)
        self._folded += len(self._pending)
        self._pending, self._pending_w = [], []

    def result(self) -> Any:
        """A new array ``sum_k w_k u_k / sum_k w_k`` (the accumulator keeps going)."""
        with self._lock:
            return self._result()

    def _result(self) -> Any:
        self._flush()
        if self.total_weight <= 0:
            raise ValueError("WeightedAccumulator.result: no update with weight > 0 was added")
        out = self._ops.scale(self._acc, 1.0 / self.total_weight, self.dtype)
        if self._tail is not None:
            self._ops.set_tail(out, self._fs, self._tail)
        return from_native(out, self._like)
