"""numba CPU backend: parallel ``prange`` over row chunks of ``CH`` elements.

Each thread owns a chunk of the output (16 KiB of float32, stays in L1) and streams every
update through it, so the fused weighted sum reads each update once and writes the result
once (naive 2-D ``[k, i]`` indexing was 2-3x slower). The K updates travel as a tuple,
padded to the next power of two (at most 64 per call; more are folded in groups), so only
a handful of specialisations are ever compiled; compiled code is cached on disk.

float16 and bfloat16 updates are read as ``uint16`` bit patterns through a 65536-entry
float32 table (numba's CPU target has no float16), i.e. accumulated in float32.

>>> import numpy as np
>>> out = np.empty(5, np.float32)
>>> wsum([np.ones(5, np.float16), np.ones(5, np.float32)], np.array([0.25, 0.75]), out, False)
>>> out
array([1., 1., 1., 1., 1.], dtype=float32)
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from . import _ref
from ._backend import warn_once

__all__ = ["wsum", "fedopt", "robust", "sumsq", "scale", "all_finite", "zeros", "empty", "host", "set_tail", "CH", "read_sum", "triad"]

CH = 4096
MAX_TUPLE = 64
F16_LUT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
BF16_LUT = (np.arange(65536, dtype=np.uint32) << 16).view(np.float32)


def _ld(a, i, lut):  # pragma: no cover - replaced by the overload inside numba
    return a[i]


@overload(_ld, inline="always")
def _ld_ov(a, i, lut):
    if isinstance(a, types.Array) and a.dtype == types.uint16:
        return lambda a, i, lut: lut[a[i]]
    return lambda a, i, lut: a[i]


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


@njit(parallel=True, cache=True, nogil=True)
def _fedopt_k(p, g, m, v, method, lr, b1, omb1, b2, omb2, tau, po, mo, vo):  # pragma: no cover - numba
    n = p.size
    for c in prange((n + CH - 1) // CH):
        s = c * CH
        e = min(s + CH, n)
        pc, gc, mc, vc = p[s:e], g[s:e], m[s:e], v[s:e]
        poc, moc, voc = po[s:e], mo[s:e], vo[s:e]
        if method == 3:
            for i in range(e - s):
                mi = b1 * mc[i] + gc[i]
                moc[i] = mi
                voc[i] = vc[i]
                poc[i] = pc[i] + lr * mi
            continue
        for i in range(e - s):
            gi = gc[i]
            mi = b1 * mc[i] + omb1 * gi
            g2 = gi * gi
            vi = vc[i]
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
            moc[i] = mi
            voc[i] = vi
            poc[i] = pc[i] + lr * mi / (math.sqrt(vi) + tau)


@njit(parallel=True, cache=True, nogil=True)
def _robust_k(us, K, k_trim, out, lut):  # pragma: no cover - numba
    n = out.size
    keep = K - 2 * k_trim
    for c in prange((n + CH - 1) // CH):
        s = c * CH
        e = min(s + CH, n)
        buf = np.empty(K, np.float64)
        for i in range(s, e):
            for k in range(K):
                x = np.float64(_ld(us[k], i, lut))
                j = k - 1  # insertion sort while gathering
                while j >= 0 and buf[j] > x:
                    buf[j + 1] = buf[j]
                    j -= 1
                buf[j + 1] = x
            acc = 0.0
            for k in range(k_trim, K - k_trim):
                acc += buf[k]
            out[i] = acc / keep


@njit(parallel=True, cache=True, nogil=True)
def _sumsq_k(u, lut):  # pragma: no cover - numba
    n = u.size
    nch = (n + CH - 1) // CH
    parts = np.zeros(nch, np.float64)
    for c in prange(nch):
        s = c * CH
        e = min(s + CH, n)
        acc = 0.0
        v = u[s:e]
        for i in range(e - s):
            x = np.float64(_ld(v, i, lut))
            acc += x * x
        parts[c] = acc
    return parts.sum()


@njit(parallel=True, cache=True, nogil=True)
def _scale_k(u, f, out, lut):  # pragma: no cover - numba
    n = out.size
    for c in prange((n + CH - 1) // CH):
        s = c * CH
        e = min(s + CH, n)
        o = out[s:e]
        v = u[s:e]
        for i in range(e - s):
            o[i] = f * _ld(v, i, lut)


@njit(parallel=True, cache=True, nogil=True)
def _nonfinite_k(u, lut):  # pragma: no cover - numba
    n = u.size
    nch = (n + CH - 1) // CH
    bad = np.zeros(nch, np.int64)
    for c in prange(nch):
        s = c * CH
        e = min(s + CH, n)
        cnt = 0
        v = u[s:e]
        for i in range(e - s):
            if not math.isfinite(_ld(v, i, lut)):
                cnt += 1
        bad[c] = cnt
    return bad.sum()


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def read_sum(a):  # pragma: no cover - numba
    """Read-only chunked sum (vectorised, reassociated): the benchmark's read-bandwidth probe."""
    n = a.size
    nch = (n + CH - 1) // CH
    parts = np.zeros(nch, np.float32)
    for c in prange(nch):
        parts[c] = a[c * CH : min(c * CH + CH, n)].sum()
    return parts.sum()


@njit(parallel=True, cache=True, nogil=True)
def triad(a, b, c, s):  # pragma: no cover - numba
    """``a = b + s*c`` (STREAM triad): the benchmark's read+write bandwidth probe."""
    n = a.size
    for k in prange((n + CH - 1) // CH):
        lo = k * CH
        hi = min(lo + CH, n)
        av, bv, cv = a[lo:hi], b[lo:hi], c[lo:hi]
        for i in range(hi - lo):
            av[i] = bv[i] + s * cv[i]


def _prep(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(array numba can read, table) — float16 as uint16 bits with the float16 table."""
    if u.dtype == np.float16:
        return u.view(np.uint16), F16_LUT
    return u, BF16_LUT


def _padded(arrs: list[np.ndarray]) -> tuple[tuple[np.ndarray, ...], int]:
    k = len(arrs)
    t = 1 << max(0, (k - 1).bit_length())
    return tuple(arrs) + (arrs[0],) * (t - k), k


def wsum(us, ws, out: np.ndarray, accumulate: bool) -> None:
    """``out = [out +] sum_k ws[k] us[k]``: one pass per run of same-dtype updates (<= 64)."""
    ws = np.asarray(ws, dtype=out.dtype)
    prepped = [_prep(u) for u in us]
    start = 0
    while start < len(prepped):
        dt = prepped[start][0].dtype
        lut = prepped[start][1]
        end = start
        while end < len(prepped) and end - start < MAX_TUPLE and prepped[end][0].dtype == dt and prepped[end][1] is lut:
            end += 1
        tup, k = _padded([a for a, _ in prepped[start:end]])
        _wsum_k(tup, k, ws[start:end].copy(), out, accumulate or start > 0, lut)
        start = end


def fedopt(p, g, m, v, method: int, lr: float, b1: float, b2: float, tau: float):
    dt = np.dtype(np.float64) if np.float64 in (p.dtype, g.dtype, m.dtype, v.dtype) else np.dtype(np.float32)
    p, g, m, v = (_ref.as_float(a, dt) for a in (p, g, m, v))
    po, mo, vo = np.empty_like(p), np.empty_like(p), np.empty_like(p)
    c = dt.type
    _fedopt_k(p, g, m, v, method, c(lr), c(b1), c(1) - c(b1), c(b2), c(1) - c(b2), c(tau), po, mo, vo)
    return po, mo, vo


def robust(us, k_trim: int, dt=np.float32) -> np.ndarray:
    if len(us) > MAX_TUPLE:
        warn_once("cpu:robust", "fedimg.kernels: robust stats over %d > %d updates use numpy", len(us), MAX_TUPLE)
        return _ref.robust(us, k_trim, dt)
    prepped = [_prep(u) for u in us]
    if len({(a.dtype, id(t)) for a, t in prepped}) > 1:
        prepped = [(_ref.as_float(u, np.dtype(np.float32)), BF16_LUT) for u in us]
    tup, k = _padded([a for a, _ in prepped])
    out = np.empty(us[0].size, dt)
    _robust_k(tup, k, int(k_trim), out, prepped[0][1])
    return out


def sumsq(u: np.ndarray) -> float:
    a, lut = _prep(u)
    return float(_sumsq_k(a, lut))


def scale(u: np.ndarray, factor: float, dt=np.float32) -> np.ndarray:
    a, lut = _prep(u)
    out = np.empty(u.size, dt)
    _scale_k(a, np.dtype(dt).type(factor), out, lut)
    return out


def all_finite(u: np.ndarray) -> bool:
    a, lut = _prep(u)
    return int(_nonfinite_k(a, lut)) == 0


zeros, empty, host, set_tail = _ref.zeros, _ref.empty, _ref.host, _ref.set_tail
