"""Batched Macenko stain normalisation on the CPU (the numba path of
:func:`fedimg.transforms.stain.macenko_normalize`): input views, thread groups and the
public entry points; the kernels and their maths live in :mod:`._stain_cpu_kernels`.

Threads: one serial ``nogil`` kernel per group of tiles (tiles ``g, g + T, ...``), run on
``T = numba.get_num_threads()`` threads (what :func:`fedimg.device.configure_threads` sets):
the caller's and a small pool's. A ``prange`` kernel ran as fast but added ~10 s to every
cold compile (the parfor pass) and starts numba's OpenMP pool beside torch's; this doesn't.

>>> import numpy as np
>>> x = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
>>> he = np.array([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]])
>>> out, stains = normalize(x, he, np.array([1.9, 1.0]), uint8_out=True)
>>> out.shape, out.dtype, stains.shape
((2, 3, 32, 32), dtype('uint8'), (2, 3, 2))
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import get_num_threads

from ._stain_cpu_kernels import OD_LUT, PINV_RCOND, run_tiles

__all__ = ["OD_LUT", "PINV_RCOND", "host_batch", "normalize", "stains"]


_pool: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (pid, workers) -> pool; a forked child makes its own
_pool_lock = threading.Lock()


def _launch(x, out, norm: bool, beta: float, alpha: float, min_fraction: float, fallback, ts, tmax) -> np.ndarray:
    """Run :func:`run_tiles` over ``x`` with ``numba.get_num_threads()`` threads; the stain matrices."""
    if x.ndim != 4 or x.shape[1] != 3 or x.dtype not in (np.uint8, np.float32):
        raise ValueError(f"expected a (B, 3, H, W) uint8 or float32 array, got {x.dtype} {x.shape}")
    B = x.shape[0]
    min_count = max(2.0, float(min_fraction) * x.shape[2] * x.shape[3])
    fb = _host(fallback).reshape(3, 2)
    he, ok = np.empty((B, 3, 2)), np.ones(B, np.bool_)
    args = (x, OD_LUT, float(beta), float(alpha), min_count, fb, ts, tmax, PINV_RCOND, out, he, ok)
    groups = max(1, min(B, get_num_threads()))
    if groups == 1:
        run_tiles(*args, 0, 1, norm)
    else:
        key = (os.getpid(), groups - 1)
        with _pool_lock:
            pool = _pool.get(key)
            if pool is None:
                pool = _pool[key] = ThreadPoolExecutor(groups - 1, thread_name_prefix="fedimg-stain")
        futures = [pool.submit(run_tiles, *args, g, groups, norm) for g in range(1, groups)]
        run_tiles(*args, 0, groups, norm)  # the caller's thread takes group 0
        for f in futures:
            f.result()
    if not ok.all():  # torch's eigh fails on these too (a NaN covariance)
        bad = np.flatnonzero(~ok).tolist()
        raise ValueError(f"Macenko: tile(s) {bad[:10]} of the batch hold NaN; stain normalisation needs finite RGB "
                         "values (replace or drop those tiles)")
    return he


def _host(v) -> np.ndarray:
    """A float64 numpy copy of a small array-like (numpy, or a torch tensor on any device)."""
    if torch.is_tensor(v):
        v = v.detach().cpu().double().numpy()
    return np.ascontiguousarray(np.asarray(v, dtype=np.float64))


def host_batch(img) -> tuple[np.ndarray, bool] | str:
    """``(x, single)`` with ``x`` the ``(B, 3, H, W)`` uint8 or float32 host array the kernels
    read (uint8 as is, other real dtypes as float32 like torch's ``img.float()``; no copy for
    uint8/float32 numpy arrays and CPU tensors), or why it cannot be (a string)."""
    if torch.is_tensor(img):
        t = img.detach()
        if t.device.type != "cpu" or t.is_complex():
            return f"a {t.device.type} {t.dtype} tensor"
        x = (t if t.dtype == torch.uint8 else t.float()).numpy()
    else:
        x = np.asarray(img)
        if x.dtype.kind not in "biuf":
            return f"an array of dtype {x.dtype}"
        if x.dtype != np.uint8:
            x = x.astype(np.float32, copy=False)
    if not (x.ndim in (3, 4) and x.shape[-3] == 3 and x.size):
        return f"shape {x.shape} (expected non-empty (3, H, W) or (B, 3, H, W))"
    return (x[None], True) if x.ndim == 3 else (x, False)


def normalize(x: np.ndarray, target_stains, target_max, *, beta: float = 0.15, alpha: float = 1.0,
              min_fraction: float = 0.01, fallback=None, uint8_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Macenko-normalise ``x`` ``(B, 3, H, W)`` (uint8 or float32, any strides).

    Returns ``(out, stains)``: ``out`` C-contiguous uint8 (``uint8_out``; needs uint8 ``x``)
    or float32 in [0, 255] and the per-tile stain matrices ``(B, 3, 2)`` float64.
    ``fallback`` defaults to ``target_stains`` (as ``macenko_normalize``). NaN raises ValueError.
    """
    if uint8_out and x.dtype != np.uint8:
        raise ValueError("uint8_out needs a uint8 input")
    ts, tmax = _host(target_stains).reshape(3, 2), _host(target_max).reshape(2)
    out = np.empty(x.shape, np.uint8 if uint8_out else np.float32)
    he = _launch(x, out, True, beta, alpha, min_fraction, ts if fallback is None else fallback, ts, tmax)
    return out, he


def stains(x: np.ndarray, *, beta: float = 0.15, alpha: float = 1.0, min_fraction: float = 0.01,
           fallback=None) -> np.ndarray:
    """Per-tile Macenko stain matrices ``(B, 3, 2)`` float64 of ``x`` ``(B, 3, H, W)``.
    ``fallback``: ``(3, 2)``, required. NaN raises ValueError."""
    # the same compiled kernel as normalize(uint8_out=True / float32 out), told not to write
    out = np.empty((0, 0, 0, 0), np.uint8 if x.dtype == np.uint8 else np.float32)
    return _launch(x, out, False, beta, alpha, min_fraction, fallback, np.zeros((3, 2)), np.zeros(2))
