"""numba CUDA backend: grid-stride kernels on numba device arrays.

Used for numba device arrays, and for torch CUDA tensors when CuPy is missing (zero-copy
through ``__cuda_array_interface__``). The K updates travel as a tuple padded to a power of
two (<= 16 per launch, more are folded in groups), so few specialisations compile. Kernels
only ever see float32/float64: float16 arrays are widened on the device first (a temporary
float32 copy; mixed-precision arithmetic is avoided on purpose) and bfloat16 torch tensors
are widened by torch before they get here (numba has no bfloat16). CuPy reads both in
registers without copies, which is why it is preferred when installed. Runs on the CPU under
``NUMBA_ENABLE_CUDASIM=1`` (the CI parity tests do that with tiny arrays).

Example (needs a GPU or the simulator)::

    from numba import cuda
    out = cuda.device_array(5, np.float32)
    wsum([cuda.to_device(np.ones(5, np.float32))], np.array([2.0]), out, False)
    out.copy_to_host()  # array([2., 2., 2., 2., 2.], dtype=float32)
"""

from __future__ import annotations

import numba
import numpy as np
from numba import cuda

from . import _ref
from ._backend import warn_once
from ._cpu import fedopt_point, sorted_insert, trimmed_mean_sorted

__all__ = ["wsum", "wsum_sumsq", "fedopt", "robust", "sumsq", "scale", "all_finite", "zeros", "empty", "host", "set_tail"]

TPB = 256
MAX_TUPLE = 16  # 16 arrays ~ 0.9 KiB of kernel parameters (the classic limit is 4 KiB)
MAX_ROBUST = 64  # local sort buffer
MAX_BLOCKS = 4096


def _launch(kernel, n: int):
    """``kernel`` configured for ``n`` elements: grid-stride loops, <= MAX_BLOCKS blocks of TPB."""
    return kernel[max(1, min((n + TPB - 1) // TPB, MAX_BLOCKS)), TPB]


# the scalar maths of the CPU kernels, compiled as device functions (one definition, two targets)
_fedopt_point = cuda.jit(device=True)(fedopt_point)
_sorted_insert = cuda.jit(device=True)(sorted_insert)
_trimmed_mean_sorted = cuda.jit(device=True)(trimmed_mean_sorted)


@cuda.jit
def _wsum_k(us, K, ws, out, accumulate):  # pragma: no cover - device code
    # ws has K+1 entries, ws[K] == 0: a zero of the output's dtype
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = out.size
    while i < n:
        acc = ws[K]
        if accumulate:
            acc = out[i]
        for k in range(K):
            acc += ws[k] * us[k][i]
        out[i] = acc
        i += stride


@cuda.jit
def _fedopt_k(p, g, m, v, method, lr, b1, omb1, b2, omb2, tau, po, mo, vo):  # pragma: no cover
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < p.size:
        po[i], mo[i], vo[i] = _fedopt_point(p[i], g[i], m[i], v[i], method, lr, b1, omb1, b2, omb2, tau)
        i += stride


@cuda.jit
def _robust_k(us, K, k_trim, out):  # pragma: no cover - device code
    buf = cuda.local.array(64, numba.float64)
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < out.size:
        for k in range(K):
            _sorted_insert(buf, k, numba.float64(us[k][i]))
        out[i] = _trimmed_mean_sorted(buf, K, k_trim)
        i += stride


@cuda.jit
def _robust2d_k(stack, k_trim, out):  # pragma: no cover - device code
    buf = cuda.local.array(64, numba.float64)
    K = stack.shape[0]
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < out.size:
        for k in range(K):
            _sorted_insert(buf, k, numba.float64(stack[k, i]))
        out[i] = _trimmed_mean_sorted(buf, K, k_trim)
        i += stride


@cuda.jit(device=True)
def _block_add(sm, acc, res):  # pragma: no cover - device code
    """Sum every thread's ``acc`` over the block (shared ``sm`` of TPB) and add it to ``res[0]``."""
    t = cuda.threadIdx.x
    sm[t] = acc
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if t < s:
            sm[t] += sm[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        cuda.atomic.add(res, 0, sm[0])


@cuda.jit
def _sumsq_k(u, res):  # pragma: no cover - device code
    sm = cuda.shared.array(TPB, numba.float64)
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    acc = 0.0
    while i < u.size:
        x = numba.float64(u[i])
        acc += x * x
        i += stride
    _block_add(sm, acc, res)


@cuda.jit
def _wsum_sumsq_k(u, w, src, out, accumulate, res):  # pragma: no cover - device code
    """``out = [src +] w*u`` and ``res[0] += sum(u**2)`` (float64) in one grid-stride pass."""
    sm = cuda.shared.array(TPB, numba.float64)
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    acc = 0.0
    while i < u.size:
        x = u[i]
        if accumulate:
            out[i] = src[i] + w * x
        else:
            out[i] = w * x
        d = numba.float64(x)
        acc += d * d
        i += stride
    _block_add(sm, acc, res)


@cuda.jit
def _scale_k(u, f, out):  # pragma: no cover - device code
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < out.size:
        out[i] = f * u[i]
        i += stride


@cuda.jit
def _nonfinite_k(u, flag):  # pragma: no cover - device code
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < u.size:
        d = u[i] - u[i]  # 0 for finite values, NaN for NaN and +-Inf
        if d != d:
            flag[0] = 1
        i += stride


@cuda.jit
def _fill_k(out, val):  # pragma: no cover - device code
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < out.size:
        out[i] = val[0]
        i += stride


@cuda.jit
def _widen_k(src, dst):  # pragma: no cover - device code
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < dst.size:
        dst[i] = src[i]  # a plain float16 -> float32 cast
        i += stride


def _dev(u):
    """A float32/float64 numba device array (half types widened: no mixed-precision arithmetic in kernels)."""
    if isinstance(u, np.ndarray):
        return cuda.to_device(_ref.as_float(u) if u.dtype in (np.uint16, np.float16) else u)
    if u.dtype == np.uint16:
        return cuda.to_device(_ref.as_float(u.copy_to_host()))
    if u.dtype == np.float16:
        out = cuda.device_array(u.size, np.float32)
        _launch(_widen_k, u.size)(u, out)
        return out
    return u


def empty(n: int, dt, like=None):
    return cuda.device_array(n, dtype=np.dtype(dt))


def zeros(n: int, dt, like=None):
    out = empty(n, dt)
    _launch(_fill_k, n)(out, cuda.to_device(np.zeros(1, np.dtype(dt))))
    return out


def wsum(us, ws, out, accumulate: bool) -> None:
    ws = np.asarray(ws, dtype=out.dtype)
    us = [_dev(u) for u in us]
    s = 0
    while s < len(us):  # runs of one dtype (a tuple must be homogeneous), <= MAX_TUPLE each
        e = s
        while e < len(us) and e - s < MAX_TUPLE and us[e].dtype == us[s].dtype:
            e += 1
        tup, k = _ref.padded(us[s:e])
        w = cuda.to_device(np.concatenate([ws[s:e], np.zeros(1, out.dtype)]))
        _launch(_wsum_k, out.size)(tup, k, w, out, accumulate or s > 0)
        s = e


def wsum_sumsq(parts, w: float, src, out, accumulate: bool) -> float:
    """``out = [src +] w * concat(parts)`` and the parts' float64 sum of squares (one launch per part)."""
    res = cuda.to_device(np.zeros(1, np.float64))
    wv = np.dtype(out.dtype).type(w)
    off = 0
    for u in parts:
        u = _dev(u)
        n = u.size
        if n:
            _launch(_wsum_sumsq_k, n)(u, wv, src[off : off + n], out[off : off + n], accumulate, res)
        off += n
    return float(res.copy_to_host()[0])


def fedopt(p, g, m, v, method: int, lr: float, b1: float, b2: float, tau: float):
    p, g, m, v = (_dev(a) for a in (p, g, m, v))
    dt = _ref.common_float(p, g, m, v)
    if any(a.dtype != dt for a in (p, g, m, v)):  # mixed dtypes: widen on the host (rare, once per round)
        p, g, m, v = (cuda.to_device(_ref.as_float(a.copy_to_host(), dt)) for a in (p, g, m, v))
    n = p.size
    po, mo, vo = empty(n, dt), empty(n, dt), empty(n, dt)
    _launch(_fedopt_k, n)(p, g, m, v, method, *_ref.fedopt_consts(dt, lr, b1, b2, tau), po, mo, vo)
    return po, mo, vo


def robust(us, k_trim: int, dt=np.float32):
    if len(us) > MAX_ROBUST:
        warn_once("cuda:robust", "fedimg.kernels: robust stats over %d > %d updates run on the host", len(us), MAX_ROBUST)
        return cuda.to_device(_ref.robust([host(u) for u in us], k_trim, dt))
    us = [_dev(u) for u in us]
    if len({u.dtype for u in us}) > 1:
        us = [cuda.to_device(host(u).astype(np.float64)) for u in us]
    out = empty(us[0].size, dt)
    if len(us) > MAX_TUPLE:  # too many for a tuple argument: stack them (K x P device copy)
        stack = cuda.device_array((len(us), us[0].size), dtype=us[0].dtype)
        for k, u in enumerate(us):
            stack[k].copy_to_device(u)
        _launch(_robust2d_k, out.size)(stack, int(k_trim), out)
        return out
    tup, k = _ref.padded(us)
    _launch(_robust_k, out.size)(tup, k, int(k_trim), out)
    return out


def sumsq(u) -> float:
    u = _dev(u)
    res = cuda.to_device(np.zeros(1, np.float64))
    _launch(_sumsq_k, u.size)(u, res)
    return float(res.copy_to_host()[0])


def scale(u, factor: float, dt=np.float32):
    u = _dev(u)
    out = empty(u.size, dt)
    _launch(_scale_k, u.size)(u, np.dtype(dt).type(factor), out)
    return out


def all_finite(u) -> bool:
    u = _dev(u)
    flag = cuda.to_device(np.zeros(1, np.int32))
    _launch(_nonfinite_k, u.size)(u, flag)
    return int(flag.copy_to_host()[0]) == 0


def host(x) -> np.ndarray:
    arr = x.copy_to_host() if hasattr(x, "copy_to_host") else np.asarray(x)
    return _ref.as_float(arr) if arr.dtype == np.uint16 else arr


def set_tail(res, start: int, values) -> None:
    res[start:].copy_to_device(np.ascontiguousarray(values, dtype=res.dtype))
