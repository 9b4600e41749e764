"""numba CPU backend: parallel ``prange`` over row chunks of ``CH`` elements.

Each thread owns a chunk of the output (16 KiB of float32, stays in L1) and streams every
update through it, so the fused weighted sum reads each update once and writes the result
once (naive 2-D ``[k, i]`` indexing was 2-3x slower). The K updates travel as a tuple,
padded to the next power of two (at most 64 per call; more are folded in groups), so only
a handful of specialisations are ever compiled; compiled code is cached on disk.

float16 and bfloat16 updates are read as ``uint16`` bit patterns through a 65536-entry
float32 table (numba's CPU target has no float16), i.e. accumulated in float32. Inputs are
seen read-only (one numba type whether or not the caller's array is writeable).

``wsum_sumsq`` takes one update as its parts (a state dict's tensors, no packed copy): the
parts travel as a tuple (up to ``MAX_TUPLE`` per launch) with a chunk table built once per
layout (chunks never straddle parts), and one loop per chunk folds each value into the output
and adds its square to the update's sum of squares (each value read once). Into a 64-byte
aligned output (the accumulator's buffers, :func:`zeros`) it writes with streaming stores
(:mod:`.stream`): no read of the output's old lines, the same values bit for bit.

>>> import numpy as np
>>> out = np.empty(5, np.float32)
>>> wsum([np.ones(5, np.float16), np.ones(5, np.float32)], np.array([0.25, 0.75]), out, False)
>>> out
array([1., 1., 1., 1., 1.], dtype=float32)
"""

from __future__ import annotations

import math

import numpy as np
from numba import get_num_threads, njit, prange, types
from numba.extending import overload

from . import _ref
from ._backend import warn_once
from .stream import ALIGN, BF16_LUT, F16_LUT, MAX_PARTS, MAX_TUPLE, aligned_empty, aligned_zeros, chunk_table, is_aligned, nt_store, segments, store_fence  # noqa: F401
from .stream import prep as _prep
from .stream import runs as _runs

__all__ = ["wsum", "wsum_sumsq", "sumsq_parts", "fedopt", "robust", "sumsq", "scale", "all_finite", "zeros", "empty", "host", "set_tail", "CH"]

CH = 4096


# -- scalar maths shared with the numba CUDA backend -------------------------------------
# Plain Python functions: compiled here with ``njit(inline="always")`` into the CPU kernels and
# by :mod:`._cuda` with ``cuda.jit(device=True)``, so each formula is written once. They live in
# this file because numba's disk cache only notices edits to the file of the cached kernel.


def fedopt_point(p, g, m, v, method, lr, b1, omb1, b2, omb2, tau):  # pragma: no cover - numba
    """One coordinate of the FedOpt step (see :func:`._ref.fedopt`): ``(p', m', v')``."""
    if method == 3:  # avgm
        mi = b1 * m + g
        return p + lr * mi, mi, v
    mi = b1 * m + omb1 * g
    g2 = g * g
    vi = v
    if method == 0:
        vi = b2 * vi + omb2 * g2
    elif method == 1:
        d = vi - g2
        if d > 0:
            vi = vi - omb2 * g2
        elif d < 0:
            vi = vi + omb2 * g2
    else:
        vi = vi + g2
    return p + lr * mi / (math.sqrt(vi) + tau), mi, vi


def sorted_insert(buf, k, x):  # pragma: no cover - numba
    """Insert ``x`` into the sorted ``buf[:k]`` (one insertion-sort step)."""
    j = k - 1
    while j >= 0 and buf[j] > x:
        buf[j + 1] = buf[j]
        j -= 1
    buf[j + 1] = x


def trimmed_mean_sorted(buf, K, k_trim):  # pragma: no cover - numba
    """Mean of the sorted ``buf[:K]`` without ``k_trim`` values at each end."""
    acc = 0.0
    for k in range(k_trim, K - k_trim):
        acc += buf[k]
    return acc / (K - 2 * k_trim)


_fedopt_point = njit(inline="always")(fedopt_point)
_sorted_insert = njit(inline="always")(sorted_insert)
_trimmed_mean_sorted = njit(inline="always")(trimmed_mean_sorted)


def _ld(a, i, lut):  # pragma: no cover - replaced by the overload inside numba
    return a[i]


@overload(_ld, inline="always")
def _ld_ov(a, i, lut):
    if isinstance(a, types.Array) and a.dtype == types.uint16:
        return lambda a, i, lut: lut[a[i]]
    return lambda a, i, lut: a[i]


def _zero_of(a):  # pragma: no cover - replaced by the overload inside numba
    return 0.0


@overload(_zero_of, inline="always")
def _zero_of_ov(a):
    """A zero of the type ``_ld`` reads from ``a``: float64 for float64 data, else float32."""
    if isinstance(a, types.Array) and a.dtype == types.float64:
        return lambda a: np.float64(0.0)
    return lambda a: np.float32(0.0)


def _cast_like(x, like):  # pragma: no cover - replaced by the overload inside numba
    return x


@overload(_cast_like, inline="always")
def _cast_like_ov(x, like):
    if like == types.float64:
        return lambda x, like: np.float64(x)
    return lambda x, like: np.float32(x)


@njit(fastmath={"reassoc"}, cache=True, nogil=True)
def _sumsq_chunk(v, lut, acc):  # pragma: no cover - numba
    """Sum of squares of one chunk, accumulated in ``acc``'s type, returned as float64.

    ``acc = 0.0``: float64 throughout. ``acc = _zero_of(v)``: float32 for float32 and narrower
    data (twice the vector lanes; the fused fold uses it and falls back to float64 when a
    square overflows, i.e. beyond 1.8e19). ``reassoc`` (and no other fast-math flag) lets LLVM
    vectorise the reduction (4x faster than a serial add chain); it only reorders the
    additions, never NaN/Inf handling, and is confined to this function.
    """
    for i in range(v.size):
        x = _cast_like(_ld(v, i, lut), acc)
        acc += x * x
    return np.float64(acc)


@njit(inline="always")
def _nonfinite_chunk(v, lut):  # pragma: no cover - numba
    cnt = 0
    for i in range(v.size):
        if not math.isfinite(_ld(v, i, lut)):
            cnt += 1
    return cnt


@njit(parallel=True, cache=True, nogil=True)
def _wsum_k(us, K, ws, out, accumulate, lut):  # pragma: no cover - numba
    n = out.size
    for c in prange((n + CH - 1) // CH):
        s = c * CH
        e = min(s + CH, n)
        o = out[s:e]  # chunk views: LLVM vectorises the unit-stride loops
        k0 = 0
        if not accumulate:
            u = us[0][s:e]
            w = ws[0]
            for i in range(e - s):
                o[i] = w * _ld(u, i, lut)
            k0 = 1
        for k in range(k0, K):
            u = us[k][s:e]
            w = ws[k]
            for i in range(e - s):
                o[i] += w * _ld(u, i, lut)


@njit(fastmath={"reassoc"}, cache=True, nogil=True)
def _fold_sumsq_chunk(v, s, o, w, lut, acc, accumulate):  # pragma: no cover - numba
    """``o = [s +] w*v`` and ``acc + sum(v**2)`` in one loop over one chunk (one read of ``v``).

    Each value is ``s + w*x`` exactly as :func:`wsum` computes it: ``reassoc`` only lets LLVM
    reorder the sum of squares (its own chain); a single add has nothing to reassociate and no
    fusion into an FMA is allowed (that needs ``contract``, which is not set).
    """
    if accumulate:
        for i in range(v.size):
            x = _ld(v, i, lut)
            o[i] = s[i] + w * x
            y = _cast_like(x, acc)
            acc += y * y
    else:
        for i in range(v.size):
            x = _ld(v, i, lut)
            o[i] = w * x
            y = _cast_like(x, acc)
            acc += y * y
    return np.float64(acc)


@njit(fastmath={"reassoc"}, cache=True, nogil=True)
def _fold_sumsq_nt_chunk(v, s, o, w, lut, acc, accumulate):  # pragma: no cover - numba
    """:func:`_fold_sumsq_chunk` with streaming stores (:mod:`.stream`): the same values bit for
    bit, written without reading ``o`` first; ``o`` starts on the 64-byte grid. The caller fences
    (:func:`.stream.store_fence`) after its last chunk."""
    if accumulate:
        for i in range(v.size):
            x = _ld(v, i, lut)
            nt_store(o, i, s[i] + w * x)
            y = _cast_like(x, acc)
            acc += y * y
    else:
        for i in range(v.size):
            x = _ld(v, i, lut)
            nt_store(o, i, w * x)
            y = _cast_like(x, acc)
            acc += y * y
    return np.float64(acc)


@njit(parallel=True, cache=True, nogil=True)
def _wsum_sumsq_k(us, cpart, clo, clen, starts, seg, w, src, out, accumulate, lut, nt):  # pragma: no cover - numba
    """``out = [src +] w * us[p]`` on each part's segment (part p at ``starts[p]``), and the
    parts' sum of squares from the same loop: one pass over memory, one launch per update.

    Chunk c covers values ``clo[c] .. clo[c] + clen[c]`` of part ``cpart[c]`` (chunks never
    straddle parts; :func:`.stream.chunk_table`, built once per layout). The parallel loop runs
    over ``seg``'s runs of chunks of equal bytes (:func:`.stream.segments`: the threads share
    the bytes, not the tensors), one fence per run. ``nt``: ``out`` is 64-byte aligned, chunks
    that start on the grid use streaming stores.
    """
    nch = cpart.size
    ss = np.zeros(nch, np.float64)
    for g in prange(seg.size - 1):
        for c in range(seg[g], seg[g + 1]):
            p = cpart[c]
            u = us[p]
            lo = clo[c]
            hi = lo + clen[c]
            a = starts[p] + lo
            b = starts[p] + hi
            if nt and a % ALIGN == 0:
                ss[c] = _fold_sumsq_nt_chunk(u[lo:hi], src[a:b], out[a:b], w, lut, _zero_of(u), accumulate)
            else:
                ss[c] = _fold_sumsq_chunk(u[lo:hi], src[a:b], out[a:b], w, lut, _zero_of(u), accumulate)
        if nt:
            store_fence()
    return ss.sum()


@njit(parallel=True, cache=True, nogil=True)
def _sumsq_parts_k(us, cpart, clo, clen, lut):  # pragma: no cover - numba
    """float64 sum of squares of the parts ``us`` (chunk table as in :func:`_wsum_sumsq_k`)."""
    nch = cpart.size
    ss = np.zeros(nch, np.float64)
    for c in prange(nch):
        u = us[cpart[c]]
        lo = clo[c]
        ss[c] = _sumsq_chunk(u[lo : lo + clen[c]], lut, 0.0)
    return ss.sum()


@njit(parallel=True, cache=True, nogil=True)
def _fedopt_k(p, g, m, v, method, lr, b1, omb1, b2, omb2, tau, po, mo, vo):  # pragma: no cover - numba
    n = p.size
    for c in prange((n + CH - 1) // CH):
        s = c * CH
        e = min(s + CH, n)
        pc, gc, mc, vc = p[s:e], g[s:e], m[s:e], v[s:e]
        poc, moc, voc = po[s:e], mo[s:e], vo[s:e]
        for i in range(e - s):
            poc[i], moc[i], voc[i] = _fedopt_point(pc[i], gc[i], mc[i], vc[i], method, lr, b1, omb1, b2, omb2, tau)


@njit(parallel=True, cache=True, nogil=True)
def _robust_k(us, K, k_trim, out, lut):  # pragma: no cover - numba
    n = out.size
    for c in prange((n + CH - 1) // CH):
        s = c * CH
        e = min(s + CH, n)
        buf = np.empty(K, np.float64)
        for i in range(s, e):
            for k in range(K):
                _sorted_insert(buf, k, np.float64(_ld(us[k], i, lut)))
            out[i] = _trimmed_mean_sorted(buf, K, k_trim)


@njit(parallel=True, cache=True, nogil=True)
def _reduce_k(u, lut, count_nonfinite):  # pragma: no cover - numba
    """Sum of squares (float64) or, with ``count_nonfinite``, the number of NaN/Inf values."""
    n = u.size
    nch = (n + CH - 1) // CH
    parts = np.zeros(nch, np.float64)
    for c in prange(nch):
        v = u[c * CH : min(c * CH + CH, n)]
        parts[c] = _nonfinite_chunk(v, lut) if count_nonfinite else _sumsq_chunk(v, lut, 0.0)
    return parts.sum()


@njit(parallel=True, cache=True, nogil=True)
def _scale_k(u, f, out, lut, nt):  # pragma: no cover - numba
    """``out = f * u``; ``nt``: ``out`` is 64-byte aligned, written with streaming stores."""
    n = out.size
    for c in prange((n + CH - 1) // CH):
        s = c * CH
        e = min(s + CH, n)
        o = out[s:e]
        v = u[s:e]
        if nt:
            for i in range(e - s):
                nt_store(o, i, f * _ld(v, i, lut))
            store_fence()
        else:
            for i in range(e - s):
                o[i] = f * _ld(v, i, lut)


def wsum(us, ws, out: np.ndarray, accumulate: bool) -> None:
    """``out = [out +] sum_k ws[k] us[k]``: one pass per run of same-dtype updates (<= 64)."""
    ws = np.asarray(ws, dtype=out.dtype)
    prepped = [_prep(u) for u in us]
    for start, end in _runs(prepped):
        tup, k = _ref.padded([a for a, _ in prepped[start:end]])
        _wsum_k(tup, k, ws[start:end].copy(), out, accumulate or start > 0, prepped[start][1])


def wsum_sumsq(parts, w: float, src: np.ndarray, out: np.ndarray, accumulate: bool) -> float:
    """``out = [src +] w * concat(parts)`` and the update's float64 sum of squares, in one pass.

    One parallel launch per run of up to ``MAX_PARTS`` same-dtype parts (a SegResNet's 83
    tensors: two), not one per tensor; the threads split each by bytes.
    """
    wv = out.dtype.type(w)
    prepped = [_prep(u) for u in parts]
    total, off, nt = 0.0, 0, is_aligned(out)  # the accumulator's buffers are (aligned_zeros)
    nseg = 4 * get_num_threads()
    for start, end in _runs(prepped, MAX_PARTS):
        arrs = [a for a, _ in prepped[start:end]]
        sizes = tuple(a.size for a in arrs)
        cpart, clo, clen, starts = chunk_table(sizes, off, CH)
        seg = segments(sizes, off, CH, nseg)
        total += _wsum_sumsq_k(_ref.padded(arrs)[0], cpart, clo, clen, starts, seg, wv, src, out, accumulate,
                               prepped[start][1], nt)
        off += sum(sizes)
    if not math.isfinite(total):  # NaN/Inf, or a float32 square overflowed: the exact float64 sum
        total = sum(_reduce_k(a, lut, False) for a, lut in prepped)
    return float(total)


def sumsq_parts(parts) -> float:
    """float64 sum of squares of one update given as its parts: one launch per run of <= MAX_PARTS parts."""
    prepped = [_prep(u) for u in parts]
    total = 0.0
    for start, end in _runs(prepped, MAX_PARTS):
        arrs = [a for a, _ in prepped[start:end]]
        cpart, clo, clen, _ = chunk_table(tuple(a.size for a in arrs), 0, CH)
        total += _sumsq_parts_k(_ref.padded(arrs)[0], cpart, clo, clen, prepped[start][1])
    return float(total)


def fedopt(p, g, m, v, method: int, lr: float, b1: float, b2: float, tau: float):
    dt = _ref.common_float(p, g, m, v)
    p, g, m, v = (_ref.as_float(a, dt) for a in (p, g, m, v))
    po, mo, vo = np.empty_like(p), np.empty_like(p), np.empty_like(p)
    _fedopt_k(p, g, m, v, method, *_ref.fedopt_consts(dt, lr, b1, b2, tau), po, mo, vo)
    return po, mo, vo


def robust(us, k_trim: int, dt=np.float32) -> np.ndarray:
    if len(us) > MAX_TUPLE:
        warn_once("cpu:robust", "fedimg.kernels: robust stats over %d > %d updates use numpy", len(us), MAX_TUPLE)
        return _ref.robust(us, k_trim, dt)
    prepped = [_prep(u) for u in us]
    if len({(a.dtype, id(t)) for a, t in prepped}) > 1:
        prepped = [_prep(_ref.as_float(u, np.dtype(np.float32))) for u in us]
    tup, k = _ref.padded([a for a, _ in prepped])
    out = np.empty(us[0].size, dt)
    _robust_k(tup, k, int(k_trim), out, prepped[0][1])
    return out


def sumsq(u: np.ndarray) -> float:
    a, lut = _prep(u)
    return float(_reduce_k(a, lut, False))


def scale(u: np.ndarray, factor: float, dt=np.float32) -> np.ndarray:
    a, lut = _prep(u)
    out = aligned_empty(u.size, dt)  # every value written (streaming stores): no zeroed pages needed
    _scale_k(a, np.dtype(dt).type(factor), out, lut, True)
    return out


def all_finite(u: np.ndarray) -> bool:
    a, lut = _prep(u)
    return _reduce_k(a, lut, True) == 0


zeros = aligned_zeros  # the accumulator's buffers: streaming stores need the 64-byte grid
empty, host, set_tail = _ref.empty, _ref.host, _ref.set_tail
