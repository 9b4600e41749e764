"""CuPy backend: RawKernel / ElementwiseKernel / ReductionKernel named ``fedimg_*``.

Kernels are built once per (name, device) and kept in ``_KERNELS``. The weighted sum and
the robust statistics read the K updates through a device array of pointers, so one
compiled kernel serves every K; float16 and bfloat16 updates are read as 16-bit patterns
and widened to float32 in registers (no temporary copies). torch CUDA tensors reach this
module as zero-copy DLPack views (see :mod:`fedimg.kernels._convert`).

Example (needs a GPU and CuPy)::

    import cupy
    out = cupy.empty(5, cupy.float32)
    wsum([cupy.ones(5, cupy.float16)], np.array([2.0]), out, False)  # out == 2
"""

from __future__ import annotations

import numpy as np

from . import _ref
from ._backend import warn_once

__all__ = ["wsum", "wsum_sumsq", "fedopt", "robust", "sumsq", "scale", "all_finite", "zeros", "empty", "host", "set_tail"]

TPB = 256
MAX_K = 64
_KERNELS: dict[tuple[str, int], object] = {}

_PRELUDE = r"""
__device__ __forceinline__ float fedimg_h2f(unsigned short h) {
  unsigned int s = ((unsigned int)(h & 0x8000u)) << 16;
  unsigned int e = (h >> 10) & 0x1fu;
  unsigned int m = h & 0x3ffu;
  if (e == 0u) { float f = (float)m * 5.9604644775390625e-8f; return s ? -f : f; }
  if (e == 31u) return __uint_as_float(s | 0x7f800000u | (m << 13));
  return __uint_as_float(s | ((e + 112u) << 23) | (m << 13));
}
__device__ __forceinline__ float fedimg_bf2f(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
"""
# source type name, how to widen one element
_TYPES = {
    "f16": ("unsigned short", "fedimg_h2f({x})"),
    "bf16": ("unsigned short", "fedimg_bf2f({x})"),
    "f32": ("float", "{x}"),
    "f64": ("double", "{x}"),
}
_ACC = {"f32": "float", "f64": "double"}

_WSUM = r"""
extern "C" __global__ void {name}(const unsigned long long* __restrict__ ptrs, const {A}* __restrict__ w,
                                  const int K, {A}* __restrict__ out, const long long n, const int accumulate) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (; i < n; i += stride) {
    {A} acc = accumulate ? out[i] : ({A})0;
#pragma unroll 8
    for (int k = 0; k < K; ++k) {  // unrolled: several independent loads in flight per thread
      const {T}* u = (const {T}*)ptrs[k];
      acc += w[k] * ({A}){LOAD};
    }
    out[i] = acc;
  }
}
"""

_ROBUST = r"""
extern "C" __global__ void {name}(const unsigned long long* __restrict__ ptrs, const int K, const int k_trim,
                                  {A}* __restrict__ out, const long long n) {
  double buf[64];
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (; i < n; i += stride) {
    for (int k = 0; k < K; ++k) {
      const {T}* u = (const {T}*)ptrs[k];
      double x = (double){LOAD};
      int j = k - 1;
      while (j >= 0 && buf[j] > x) { buf[j + 1] = buf[j]; --j; }
      buf[j + 1] = x;
    }
    double acc = 0.0;
    for (int k = k_trim; k < K - k_trim; ++k) acc += buf[k];
    out[i] = ({A})(acc / (double)(K - 2 * k_trim));
  }
}
"""

_WSUM_SUMSQ = r"""
extern "C" __global__ void {name}(const {T}* __restrict__ u, const {A} w, const {A}* __restrict__ src,
                                  {A}* __restrict__ out, const long long n, const int accumulate,
                                  double* __restrict__ res) {
  __shared__ double sm[256];  // TPB
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  double ss = 0.0;
  for (; i < n; i += stride) {
    const double d = (double){LOAD};
    out[i] = accumulate ? src[i] + w * ({A}){LOAD} : w * ({A}){LOAD};
    ss += d * d;
  }
  sm[threadIdx.x] = ss;
  __syncthreads();
  for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sm[threadIdx.x] += sm[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(res, sm[0]);
}
"""

_FEDOPT_BODY = r"""
T mi, vi;
if (method == 3) {
  mi = b1 * m + g; vi = v; po = p + lr * mi;
} else {
  mi = b1 * m + ((T)1 - b1) * g;
  T g2 = g * g;
  if (method == 0) vi = b2 * v + ((T)1 - b2) * g2;
  else if (method == 1) { T d = v - g2; vi = d > (T)0 ? v - ((T)1 - b2) * g2 : (d < (T)0 ? v + ((T)1 - b2) * g2 : v); }
  else vi = v + g2;
  po = p + lr * mi / (sqrt(vi) + tau);
}
mo = mi; vo = vi;
"""


def _cp():
    import cupy

    return cupy


def _dev_id() -> int:
    return _cp().cuda.Device().id


def _raw(kind: str, t: str, a: str):
    key = (f"fedimg_{kind}_{t}_{a}", _dev_id())
    if key not in _KERNELS:
        tname, load = _TYPES[t]
        tmpl = {"wsum": _WSUM, "robust": _ROBUST, "wsum_sumsq": _WSUM_SUMSQ}[kind]
        src = _PRELUDE + tmpl.replace("{name}", key[0]).replace("{A}", _ACC[a]).replace("{T}", tname)
        src = src.replace("{LOAD}", load.format(x="u[i]"))
        _KERNELS[key] = _cp().RawKernel(src, key[0])
    return _KERNELS[key]


def _elementwise(name: str, factory):
    key = (name, _dev_id())
    if key not in _KERNELS:
        _KERNELS[key] = factory()
    return _KERNELS[key]


def _tcode(u) -> str:
    dt = np.dtype(u.dtype)
    return {np.dtype(np.float16): "f16", np.dtype(np.uint16): "bf16", np.dtype(np.float32): "f32"}.get(dt, "f64")


def _grid(n: int) -> int:
    return max(1, min((n + TPB - 1) // TPB, 65535))


def _ptrs(arrs):
    cp = _cp()
    return cp.asarray(np.array([a.data.ptr for a in arrs], dtype=np.uint64))


def _widen(u, dt):
    """float copy of ``u`` (bfloat16 bits shifted, float16 cast); no copy when already ``dt``."""
    cp = _cp()
    if u.dtype == cp.uint16:
        return (u.astype(cp.uint32) << 16).view(cp.float32).astype(dt, copy=False)
    return u.astype(dt, copy=False)


def _device_of(like) -> int | None:
    """CUDA device index of a CuPy array or torch tensor (``None``: the current device)."""
    if like is None:
        return None
    d = like.device
    return d.id if hasattr(d, "id") else d.index


def empty(n: int, dt, like=None):
    cp = _cp()
    with cp.cuda.Device(_device_of(like)):
        return cp.empty(n, dtype=np.dtype(dt))


def zeros(n: int, dt, like=None):
    cp = _cp()
    with cp.cuda.Device(_device_of(like)):
        return cp.zeros(n, dtype=np.dtype(dt))


def wsum(us, ws, out, accumulate: bool) -> None:
    cp = _cp()
    a = "f64" if out.dtype == cp.float64 else "f32"
    ws = np.asarray(ws, dtype=out.dtype)
    n = out.size
    start = 0
    while start < len(us):
        t = _tcode(us[start])
        end = start
        while end < len(us) and _tcode(us[end]) == t:
            end += 1
        group = [cp.ascontiguousarray(u) for u in us[start:end]]
        kern = _raw("wsum", t, a)
        kern(
            (_grid(n),),
            (TPB,),
            (_ptrs(group), cp.asarray(ws[start:end]), np.int32(len(group)), out, np.int64(n),
             np.int32(1 if (accumulate or start > 0) else 0)),
        )
        del group  # the pointers stay valid: the caller holds the updates until we return
        start = end


def wsum_sumsq(parts, w: float, src, out, accumulate: bool) -> float:
    """``out = [src +] w * concat(parts)`` and the parts' float64 sum of squares (one launch per part)."""
    cp = _cp()
    a = "f64" if out.dtype == cp.float64 else "f32"
    wv = np.dtype(out.dtype).type(w)
    res = cp.zeros(1, cp.float64)
    off = 0
    for u in parts:
        u = cp.ascontiguousarray(u)
        n = u.size
        if n:
            _raw("wsum_sumsq", _tcode(u), a)(
                (_grid(n),), (TPB,), (u, wv, src[off : off + n], out[off : off + n], np.int64(n), np.int32(accumulate), res)
            )
        off += n
    return float(res.get()[0])


def fedopt(p, g, m, v, method: int, lr: float, b1: float, b2: float, tau: float):
    cp = _cp()
    dt = _ref.common_float(p, g, m, v)
    p, g, m, v = (_widen(x, dt) for x in (p, g, m, v))
    kern = _elementwise(
        "fedimg_fedopt",
        lambda: cp.ElementwiseKernel(
            "T p, T g, T m, T v, int32 method, T lr, T b1, T b2, T tau",
            "T po, T mo, T vo",
            _FEDOPT_BODY,
            "fedimg_fedopt",
        ),
    )
    c = dt.type
    po, mo, vo = cp.empty_like(p), cp.empty_like(p), cp.empty_like(p)
    kern(p, g, m, v, np.int32(method), c(lr), c(b1), c(b2), c(tau), po, mo, vo)
    return po, mo, vo


def robust(us, k_trim: int, dt=np.float32):
    cp = _cp()
    a = "f64" if np.dtype(dt) == np.float64 else "f32"
    codes = {_tcode(u) for u in us}
    if len(us) > MAX_K or len(codes) > 1:
        if len(us) > MAX_K:
            warn_once("cupy:robust", "fedimg.kernels: robust stats over %d > %d updates use cupy.sort", len(us), MAX_K)
        block = cp.sort(cp.stack([_widen(u, np.dtype(dt)) for u in us]), axis=0)
        return block[k_trim : len(us) - k_trim].mean(axis=0, dtype=cp.float64).astype(dt)
    group = [cp.ascontiguousarray(u) for u in us]
    n = group[0].size
    out = cp.empty(n, dtype=np.dtype(dt))
    _raw("robust", codes.pop(), a)((_grid(n),), (TPB,), (_ptrs(group), np.int32(len(group)), np.int32(k_trim), out, np.int64(n)))
    return out


def sumsq(u) -> float:
    cp = _cp()
    if u.dtype == cp.uint16:
        u = _widen(u, np.dtype(np.float32))
    kern = _elementwise(
        "fedimg_sumsq",
        lambda: cp.ReductionKernel(
            "T x", "float64 y", "static_cast<double>(x) * static_cast<double>(x)", "a + b", "y = a", "0", "fedimg_sumsq"
        ),
    )
    return float(kern(u))


def scale(u, factor: float, dt=np.float32):
    cp = _cp()
    w = _widen(u, np.dtype(dt))
    return cp.multiply(w, np.dtype(dt).type(factor))


def all_finite(u) -> bool:
    cp = _cp()
    if u.dtype == cp.uint16:
        return not bool(((u & 0x7F80) == 0x7F80).any())
    kern = _elementwise(
        "fedimg_nonfinite",
        lambda: cp.ReductionKernel(
            "T x", "int32 y", "isfinite(static_cast<double>(x)) ? 0 : 1", "max(a, b)", "y = a", "0", "fedimg_nonfinite"
        ),
    )
    return int(kern(u)) == 0


def host(x) -> np.ndarray:
    arr = x.get()
    return _ref.as_float(arr) if arr.dtype == np.uint16 else arr


def set_tail(res, start: int, values) -> None:
    res[start:] = _cp().asarray(np.asarray(values, dtype=res.dtype))
