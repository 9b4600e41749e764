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
