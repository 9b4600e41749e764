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


#: float32 unit roundoff (half of ``np.finfo(np.float32).eps``)
U32 = 2.0**-24


def assert_mean_close(got, us, w, *, unit: float = U32, extra: int = 4) -> None:
    """``got`` is the weighted mean ``sum w_i u_i / sum w_i`` computed with roundoff ``unit``.

    Any summation order (blocked, pairwise, SIMD lanes, FMA, GPU threads) of ``k`` terms is
    off by at most ``k unit sum|w_i u_i|`` (Higham, *Accuracy and Stability*, eq. 3.5); the
    products, the weight normalisation, the division and the final cast add ``extra`` more
    roundings. Elementwise: ``|got - exact| <= (k + extra) unit sum|w_i u_i| / sum w_i``
    (plus a few tiny numbers for subnormals), a bound from the dtype and the reduction
    length rather than from one machine's numbers.
    """
    w = np.asarray(w, np.float64)
    keep = w != 0
    terms = [wk * np.abs(np.asarray(u, np.float64)) for wk, u, kp in zip(w, us, keep) if kp]
    scale = sum(terms) / w.sum()
    bound = (int(keep.sum()) + extra) * unit * scale + 1e-30
    err = np.abs(np.asarray(got, np.float64) - ref_mean([u for u, kp in zip(us, keep) if kp], w[keep]))
    assert (err <= bound).all(), (float(err.max()), float((err / bound).max()))
