"""numpy reference backend: the definition every other backend is tested against.

Works chunk by chunk (``CHUNK`` elements) so temporaries stay in cache and no full-size
copy of an update is ever made; accumulates in float32 (float64 for float64 data) in a
fixed order ``k = 0 .. K-1``. bfloat16 data arrive as ``uint16`` bit patterns.

>>> import numpy as np
>>> out = np.empty(3, np.float32)
>>> wsum([np.ones(3, np.float32), np.full(3, 3, np.float32)], np.array([0.5, 0.5]), out, False)
>>> out
array([2., 2., 2.], dtype=float32)
"""

from __future__ import annotations

import numpy as np

__all__ = ["CHUNK", "as_float", "common_float", "fedopt_consts", "padded", "wsum", "wsum_sumsq", "fedopt", "robust", "sumsq", "scale", "all_finite", "METHODS", "zeros", "empty", "host", "set_tail"]

CHUNK = 1 << 16
METHODS = {"adam": 0, "yogi": 1, "adagrad": 2, "avgm": 3}


def as_float(u: np.ndarray, dt: np.dtype = np.dtype(np.float32)) -> np.ndarray:
    """Values of ``u`` in ``dt`` (``uint16`` means bfloat16 bits)."""
    if u.dtype == np.uint16:
        return (u.astype(np.uint32) << 16).view(np.float32).astype(dt, copy=False)
    return u.astype(dt, copy=False)


def common_float(*arrays) -> np.dtype:
    """float64 if any of ``arrays`` is float64, else float32 (the dtype the FedOpt step runs in)."""
    return np.dtype(np.float64) if any(a.dtype == np.float64 for a in arrays) else np.dtype(np.float32)


def fedopt_consts(dt: np.dtype, lr: float, b1: float, b2: float, tau: float) -> tuple:
    """The FedOpt kernels' scalar arguments in ``dt``: ``(lr, b1, 1-b1, b2, 1-b2, tau)``."""
    c = np.dtype(dt).type
    return c(lr), c(b1), c(1) - c(b1), c(b2), c(1) - c(b2), c(tau)


def padded(arrs) -> tuple[tuple, int]:
    """``(tuple of arrs padded with arrs[0] to a power-of-two length, len(arrs))``: the numba
    kernels take K arrays as one tuple, and padding keeps the compiled specialisations few."""
    k = len(arrs)
    t = 1 << max(0, (k - 1).bit_length())
    return tuple(arrs) + (arrs[0],) * (t - k), k


def wsum(us, ws, out: np.ndarray, accumulate: bool) -> None:
    """``out[:] = (out if accumulate else 0) + sum_k ws[k] * us[k]`` in ``out.dtype``."""
    dt = out.dtype
    w = [dt.type(x) for x in ws]
    n = out.size
    for s in range(0, n, CHUNK):
        e = min(s + CHUNK, n)
        o = out[s:e]
        if not accumulate:
            np.multiply(as_float(us[0][s:e], dt), w[0], out=o)
            start = 1
        else:
            start = 0
        for k in range(start, len(us)):
            o += w[k] * as_float(us[k][s:e], dt)


def wsum_sumsq(parts, w: float, src: np.ndarray, out: np.ndarray, accumulate: bool) -> float:
    """``out[:] = (src if accumulate else 0) + w * concat(parts)``; returns the parts' sum of squares.

    The update arrives as ``parts`` (1-D arrays whose concatenation has ``out.size`` values) and is
    read once, chunk by chunk: each chunk is folded and measured while it is in cache. Elementwise
    the same arithmetic as :func:`wsum` (``src + w*u`` in ``out.dtype``); the sum of squares is
    float64, NaN/Inf when a value is NaN/Inf. ``src`` may be ``out``.
    """
    dt = out.dtype
    wv = dt.type(w)
    total, off = 0.0, 0
    for u in parts:
        for s in range(0, u.size, CHUNK):
            x = u[s : s + CHUNK]
            o = out[off + s : off + s + x.size]
            if accumulate:
                np.add(src[off + s : off + s + x.size], wv * as_float(x, dt), out=o)
            else:
                np.multiply(as_float(x, dt), wv, out=o)
            total += sumsq(x)
        off += u.size
    return total


def fedopt(p, g, m, v, method: int, lr: float, b1: float, b2: float, tau: float):
    """FedOpt server step (Reddi et al. 2021, Hsu et al. 2019 for avgm); new arrays.

    ``g`` is the pseudo-gradient ``mean(client) - params`` (a step direction):

    * m' = b1*m + (1-b1)*g          (avgm: m' = b1*m + g)
    * adam:    v' = b2*v + (1-b2)*g^2
    * yogi:    v' = v - (1-b2)*g^2*sign(v - g^2)
    * adagrad: v' = v + g^2
    * p' = p + lr*m'/(sqrt(v')+tau)  (avgm: p' = p + lr*m', v' = v)
    """
    dt = common_float(p, g, m, v).type
    p, g, m, v = (as_float(a, np.dtype(dt)) for a in (p, g, m, v))
    b1, b2, lr, tau = (dt(x) for x in (b1, b2, lr, tau))
    one = dt(1)
    if method == 3:
        m2 = b1 * m + g
        return (p + lr * m2).astype(dt), m2.astype(dt), v.astype(dt, copy=True)
    m2 = b1 * m + (one - b1) * g
    g2 = g * g
    if method == 0:
        v2 = b2 * v + (one - b2) * g2
    elif method == 1:
        v2 = v - (one - b2) * g2 * np.sign(v - g2)
    else:
        v2 = v + g2
    p2 = p + lr * m2 / (np.sqrt(v2) + tau)
    return p2.astype(dt), m2.astype(dt), v2.astype(dt)


def robust(us, k_trim: int, dt=np.float32) -> np.ndarray:
    """Per coordinate: sort the K values, drop ``k_trim`` at each end, average the rest.

    ``k_trim = (K-1)//2`` is the coordinate-wise median.
    """
    K = len(us)
    n = us[0].size
    out = np.empty(n, dt)
    for s in range(0, n, CHUNK):
        e = min(s + CHUNK, n)
        block = np.stack([as_float(u[s:e], np.dtype(dt)) for u in us])
        block.sort(axis=0)
        out[s:e] = block[k_trim : K - k_trim].mean(axis=0, dtype=np.float64)
    return out


def sumsq(u: np.ndarray) -> float:
    """Sum of squares in float64."""
    total = 0.0
    for s in range(0, u.size, CHUNK):
        c = as_float(u[s : s + CHUNK], np.dtype(np.float64))
        total += float(np.dot(c, c))
    return total


def scale(u: np.ndarray, factor: float, dt=np.float32) -> np.ndarray:
    """``u * factor`` as a new ``dt`` array."""
    out = np.empty(u.size, dt)
    f = np.dtype(dt).type(factor)
    for s in range(0, u.size, CHUNK):
        np.multiply(as_float(u[s : s + CHUNK], np.dtype(dt)), f, out=out[s : s + CHUNK])
    return out


def all_finite(u: np.ndarray) -> bool:
    if u.dtype == np.uint16:  # bfloat16: exponent bits all ones means inf/nan
        return not bool(np.any((u & 0x7F80) == 0x7F80))
    for s in range(0, u.size, CHUNK):
        if not np.isfinite(u[s : s + CHUNK]).all():
            return False
    return True


def zeros(n: int, dt, like=None) -> np.ndarray:
    return np.zeros(n, dt)


def empty(n: int, dt, like=None) -> np.ndarray:
    return np.empty(n, dt)


def host(x) -> np.ndarray:
    return np.asarray(x)


def set_tail(res: np.ndarray, start: int, values: np.ndarray) -> None:
    res[start:] = values
