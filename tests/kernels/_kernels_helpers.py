"""Shared helpers for the kernel parity tests (not a test module)."""

from __future__ import annotations

import importlib.util

import numpy as np

HOST_BACKENDS = ["numpy", "torch"] + (["numba"] if importlib.util.find_spec("fedimg.kernels._cpu") else [])


def updates(rng: np.random.Generator, k: int, n: int, dtype=np.float32) -> list[np.ndarray]:
    return [rng.standard_normal(n).astype(dtype) for _ in range(k)]


def ref_mean(us, w) -> np.ndarray:
    w = np.asarray(w, np.float64)
    return sum(wk * u.astype(np.float64) for wk, u in zip(w, us)) / w.sum()


#: unit roundoffs (half of ``np.finfo(dt).eps``): float32 and float64
U32 = 2.0**-24
U64 = 2.0**-53


def gamma(n: int, unit: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: bound on the relative error of ``n`` roundings."""
    return n * unit / (1 - n * unit)


def assert_sum_close(got, terms, *, unit: float = U32, extra: int = 4, final: float = 0.0) -> None:
    """``got`` is ``sum(terms)`` (float64 arrays holding the exact terms) computed with roundoff ``unit``.

    Any summation order (blocked, pairwise, SIMD lanes, FMA, GPU threads) of ``k`` terms is
    off by at most ``k unit sum|t_i|`` (Higham, *Accuracy and Stability*, eq. 3.5); forming the
    terms (products, conversions), a normalisation and the cast add ``extra`` more roundings.
    ``final``: the result is then rounded once more to a coarser type (e.g. float64
    accumulation stored as float32), ``final * |result|``. The float64 reference has its own
    ``(2k + 2) U64 sum|t_i|`` (its products, sum and weight normalisation). A bound from the
    dtype and the reduction length, never from one machine's numbers.
    """
    terms = [np.asarray(t, np.float64) for t in terms]
    k = len(terms)
    scale = sum(np.abs(t) for t in terms)
    exact = sum(terms)
    err_k = (k + extra) * unit * scale + (2 * k + 2) * U64 * scale
    bound = err_k + final * (np.abs(exact) + err_k) + 1e-300
    err = np.abs(np.asarray(got, np.float64) - exact)
    assert (err <= bound).all(), (float(err.max()), float((err / bound).max()))


def assert_mean_close(got, us, w, *, unit: float = U32, extra: int = 4, final: float = 0.0) -> None:
    """``got`` is the weighted mean ``sum w_i u_i / sum w_i`` computed with roundoff ``unit``.

    :func:`assert_sum_close` over the terms ``w_i u_i / sum w`` (zero weights left out: their
    terms are exact zeros): ``|got - exact| <= (k + extra) unit sum|w_i u_i| / sum w_i``.
    """
    w = np.asarray(w, np.float64)
    keep = w != 0
    tot = w.sum()
    terms = [wk * np.asarray(u, np.float64) / tot for wk, u, kp in zip(w, us, keep) if kp]
    assert_sum_close(got, terms, unit=unit, extra=extra, final=final)


def sorted_rows(us) -> np.ndarray:
    """The K updates as a float64 ``(K, n)`` stack sorted per coordinate (order statistics)."""
    return np.sort(np.stack([np.asarray(u, np.float64) for u in us]), axis=0)


def median32(us) -> np.ndarray:
    """The coordinate median as the kernels define it, exactly: the middle value (odd K), else
    the mean of the two middle values rounded once to float32. ``(a + b) / 2`` in float64 then
    float32 is that correctly rounded value: halving is exact, and rounding a float64 sum of two
    float32s to float32 is innocuous double rounding (53 >= 2*24 + 2, Figueroa 1995)."""
    s = sorted_rows(us)
    k = len(us)
    return ((s[(k - 1) // 2] + s[k // 2]) / 2).astype(np.float32)


def assert_trimmed_mean_close(got, us, k_trim: int) -> None:
    """Trimmed mean = mean of the ``m = K - 2 k_trim`` middle order statistics (exact
    selections); every backend sums them in float64 and rounds the mean once to float32:
    ``(m + 2) U64 sum|x| / m`` (sum, division) plus ``U32 |mean|``."""
    s = sorted_rows(us)[k_trim : len(us) - k_trim]
    assert_mean_close(got, list(s), np.ones(len(s)), unit=U64, extra=2, final=U32)


def norm_rtol(n: int, *, f32_chunk: int = 0) -> float:
    """Relative error bound of an L2 norm of ``n`` values computed as sqrt(sum of squares).

    float64 accumulation in any order: squares of float32/half data are exact in float64,
    float64 squares round once; ``n - 1`` additions, and torch's ``norm**2`` round trip 2 more:
    ``gamma_{n+2}(U64)`` on the sum. ``f32_chunk = c``: chunks of at most ``c`` squares are summed
    in float32 first (numba's fused ``wsum_sumsq``): ``+ gamma_c(U32)``. The square root halves
    a relative error (``|sqrt(1+e) - 1| <= e/2 (1+e)``) and rounds once (``U64``).
    """
    e = gamma(n + 2, U64) + (gamma(f32_chunk, U32) if f32_chunk else 0.0)
    return e / 2 * (1 + e) + U64


def sumsq_rtol(n: int, *, f32_chunk: int = 0) -> float:
    """Relative error bound of a kernel's sum of ``n`` squares (see :func:`norm_rtol`)."""
    return gamma(n + 2, U64) + (gamma(f32_chunk, U32) if f32_chunk else 0.0)


# -- FedOpt: a running error bound through the fixed elementwise chain ----------------------
# Each quantity is (x, e): x its exact value (float64 of float32 inputs), e a bound on how far a
# backend's value can be. Every operation rounds once in float32 (a kernel) and once in float64
# (the reference), r = U32 + U64 relative; an FMA only drops a rounding. Propagation is exact
# (no first-order approximation), including through sqrt and the division.

_R = U32 + U64


def _c(x, e=0.0):
    return (np.asarray(x, np.float64), np.asarray(e, np.float64))


def _rnd(x, e):
    return x, e + _R * (np.abs(x) + e)


def _add(a, b, sign=1.0):
    return _rnd(a[0] + sign * b[0], a[1] + b[1])


def _mul(a, b):
    return _rnd(a[0] * b[0], np.abs(a[0]) * b[1] + np.abs(b[0]) * a[1] + a[1] * b[1])


def _sqrt(a):
    x = np.sqrt(a[0])
    den = np.sqrt(np.maximum(a[0] - a[1], 0)) + x  # |sqrt(x+d) - sqrt(x)| = |d| / (sqrt(x+d) + sqrt(x))
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.where(den > 0, np.minimum(a[1] / den, np.sqrt(a[1])), np.sqrt(a[1]))
    return _rnd(x, e)


def _div(a, b):
    assert (np.abs(b[0]) > b[1]).all()
    bb = np.abs(b[0])
    return _rnd(a[0] / b[0], (np.abs(a[0]) * b[1] + bb * a[1]) / (bb * (bb - b[1])))


def _fedopt_chain(p, g, m, v, method, lr, b1, b2, tau, s=None):
    """``(p', m', v')`` as (exact, bound) pairs; constants are rounded to float32 (``U32 |c|``),
    ``1 - b`` from the rounded ``b`` (at most ``U32`` absolute either way it is formed)."""
    p, g, m, v = (_c(np.asarray(a, np.float64)) for a in (p, g, m, v))
    k = {n: _c(c, U32 * abs(c)) for n, c in (("lr", lr), ("b1", b1), ("b2", b2), ("tau", tau))}
    omb1, omb2 = _c(1 - b1, U32 + U64), _c(1 - b2, U32 + U64)
    if method == "avgm":
        m2 = _add(_mul(k["b1"], m), g)
        return _add(p, _mul(k["lr"], m2)), m2, v
    m2 = _add(_mul(k["b1"], m), _mul(omb1, g))
    g2 = _mul(g, g)
    if method == "adam":
        v2 = _add(_mul(k["b2"], v), _mul(omb2, g2))
    elif method == "yogi":
        v2 = _add(v, _mul(_mul(omb2, g2), _c(s)), -1.0)
    else:
        v2 = _add(v, g2)
    step = _div(_mul(k["lr"], m2), _add(_sqrt(v2), k["tau"]))
    return _add(p, step), m2, v2


def assert_fedopt_close(got, p, g, m, v, *, method, lr, b1, b2, tau) -> None:
    """``got = (p', m', v')`` of a float32 FedOpt step within the running error bound.

    yogi branches on ``sign(v - g*g)``: where ``v`` is within one rounding of ``g*g`` a backend
    may take either branch (``v - fl(g*g)`` vs a fused ``v - g*g``), so there any sign passes.
    """
    g64, v64 = np.asarray(g, np.float64), np.asarray(v, np.float64)
    signs = [None]
    if method == "yogi":
        exact = np.sign(v64 - g64 * g64)
        ambiguous = np.abs(v64 - g64 * g64) <= U32 * g64 * g64
        signs = [exact] + [np.where(ambiguous, float(s), exact) for s in (-1, 0, 1)]
    got = [np.asarray(a, np.float64) for a in got]
    ok = np.zeros(got[0].shape, bool)
    worst = None
    for s in signs:
        chain = _fedopt_chain(p, g, m, v, method, lr, b1, b2, tau, s)
        ratio = np.max([np.abs(a - x) / (e + 1e-300) for a, (x, e) in zip(got, chain)], axis=0)
        ok |= ratio <= 1
        worst = ratio if worst is None else np.minimum(worst, ratio)
    assert ok.all(), (int((~ok).sum()), float(worst.max()))
