"""The CuPy kernels' CUDA C sources, compiled for the host with a C++ shim and run on numpy data.

No GPU or CuPy is needed: the sources (``fedimg_wsum_*``, ``fedimg_robust_*``, the FedOpt
elementwise body) are plain CUDA C without device intrinsics other than ``__uint_as_float``,
so a shim runs them with one "thread" that walks the whole grid-stride loop. This checks
the half-precision decoders bit for bit and the kernels' maths against numpy (the fused
fold + sum of squares too: with one "thread" its block reduction is the identity).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedimg.kernels import _cupy as C

sys.path.insert(0, str(Path(__file__).parent))
from _kernels_helpers import (  # noqa: E402
    U32,
    U64,
    assert_fedopt_close,
    assert_sum_close,
    assert_trimmed_mean_close,
    median32,
    sumsq_rtol,
)

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

SHIM = r"""
#include <cmath>
#include <cstring>
using std::sqrt;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
inline void __syncthreads() {}
inline double atomicAdd(double* a, double v) { double old = *a; *a += v; return old; }
struct D3 { unsigned x; };
static D3 blockIdx = {0}, blockDim = {1}, threadIdx = {0}, gridDim = {1};
inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    parts = [SHIM, C._PRELUDE]
    for kind, tmpl in (("wsum", C._WSUM), ("robust", C._ROBUST), ("wsum_sumsq", C._WSUM_SUMSQ)):
        for t, (tname, load) in C._TYPES.items():
            for a, aname in C._ACC.items():
                src = tmpl.replace("{name}", f"fedimg_{kind}_{t}_{a}").replace("{A}", aname).replace("{T}", tname)
                parts.append(src.replace("{LOAD}", load.format(x="u[i]")))
    for T, code in (("float", "f32"), ("double", "f64")):
        parts.append(
            f"template <typename T> static void body_{code}(T p, T g, T m, T v, int method, T lr, T b1, T b2, T tau,"
            f" T& po, T& mo, T& vo) {{ {C._FEDOPT_BODY} }}\n"
            f'extern "C" void fedopt_{code}(const {T}* p, const {T}* g, const {T}* m, const {T}* v, int method,'
            f" {T} lr, {T} b1, {T} b2, {T} tau, {T}* po, {T}* mo, {T}* vo, long long n) {{"
            f" for (long long i = 0; i < n; ++i) body_{code}<{T}>(p[i], g[i], m[i], v[i], method, lr, b1, b2, tau,"
            f" po[i], mo[i], vo[i]); }}\n"
        )
    d = tmp_path_factory.mktemp("cupy_src")
    (d / "k.cpp").write_text("\n".join(parts))
    subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(d / "k.so"), str(d / "k.cpp")], check=True,
                   capture_output=True)
    return ctypes.CDLL(str(d / "k.so"))


def _p(a):
    return ctypes.c_void_p(a.ctypes.data)


def _wsum(lib, t, a, us, ws, init=None):
    adt = np.float32 if a == "f32" else np.float64
    n = us[0].size
    ptrs = np.array([u.ctypes.data for u in us], np.uint64)
    w = np.asarray(ws, adt)
    out = np.zeros(n, adt) if init is None else init.copy()
    getattr(lib, f"fedimg_wsum_{t}_{a}")(_p(ptrs), _p(w), ctypes.c_int(len(us)), _p(out), ctypes.c_longlong(n),
                                          ctypes.c_int(init is not None))
    return out


def test_half_decoders_bit_exact(lib):
    bits = np.arange(65536, dtype=np.uint16)
    for t, ref in (("f16", bits.view(np.float16).astype(np.float32)),
                   ("bf16", (bits.astype(np.uint32) << 16).view(np.float32))):
        got = _wsum(lib, t, "f32", [bits], [1.0])
        fin = np.isfinite(ref)
        np.testing.assert_array_equal(got[fin], ref[fin])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))


@pytest.mark.parametrize("t", ["f16", "bf16", "f32", "f64"])
@pytest.mark.parametrize("a", ["f32", "f64"])
def test_wsum_source(lib, t, a, rng):
    base = [rng.standard_normal(1003).astype(np.float32) for _ in range(5)]
    ws = [0.5, 0.0, 2.0, 1.0, 0.25]
    if t == "f16":
        us, vals = [b.astype(np.float16).view(np.uint16) for b in base], [b.astype(np.float16).astype(np.float64) for b in base]
    elif t == "bf16":
        ts = [torch.from_numpy(b).to(torch.bfloat16) for b in base]
        us, vals = [x.view(torch.int16).numpy().view(np.uint16) for x in ts], [x.double().numpy() for x in ts]
    else:
        dt = np.float32 if t == "f32" else np.float64
        us, vals = [b.astype(dt) for b in base], [b.astype(np.float64) for b in base]
    init = np.ones(1003, np.float32 if a == "f32" else np.float64)
    got = _wsum(lib, t, a, us, ws, init)
    # 1 + sum of the nonzero w*u in the accumulator type, any order: the summation bound
    # (float64 data into float32: one more rounding per term, within ``extra``)
    assert_sum_close(got, [init] + [w * v for w, v in zip(ws, vals) if w], unit=U32 if a == "f32" else U64)


@pytest.mark.parametrize("k", [1, 2, 7, 64])
def test_robust_source(lib, k, rng):
    us = [rng.standard_normal(501).astype(np.float32) for _ in range(k)]
    for trim in {(k - 1) // 2, k // 4}:
        out = np.zeros(501, np.float32)
        ptrs = np.array([u.ctypes.data for u in us], np.uint64)
        lib.fedimg_robust_f32_f32(_p(ptrs), ctypes.c_int(k), ctypes.c_int(trim), _p(out), ctypes.c_longlong(501))
        assert_trimmed_mean_close(out, us, trim)  # float64 mean of selections, rounded to float32
        if trim == (k - 1) // 2:
            np.testing.assert_array_equal(out, median32(us))  # the median: exact


@pytest.mark.parametrize("method", ["adam", "yogi", "adagrad", "avgm"])
def test_fedopt_source(lib, method, rng):
    from fedimg.kernels import METHODS, fedopt_step

    p, g, m = (rng.standard_normal(777).astype(np.float32) for _ in range(3))
    v = np.abs(rng.standard_normal(777)).astype(np.float32)
    outs = [np.empty(777, np.float32) for _ in range(3)]
    f = ctypes.c_float
    lib.fedopt_f32(_p(p), _p(g), _p(m), _p(v), ctypes.c_int(METHODS[method]), f(0.05), f(0.9), f(0.99), f(1e-3),
                   *[_p(o) for o in outs], ctypes.c_longlong(777))
    want = fedopt_step(p, g, m, v, method=method, lr=0.05, beta1=0.9, beta2=0.99, tau=1e-3, backend="numpy")
    # the same fixed float32 chain (an FMA where the compiler contracts only drops a rounding)
    for got in (outs, want):
        assert_fedopt_close(got, p, g, m, v, method=method, lr=0.05, b1=0.9, b2=0.99, tau=1e-3)


@pytest.mark.parametrize("t", ["f16", "bf16", "f32", "f64"])
@pytest.mark.parametrize("accumulate", [0, 1])
def test_wsum_sumsq_source(lib, t, accumulate, rng):
    base = rng.standard_normal(1003).astype(np.float32)
    if t == "f16":
        u, vals = base.astype(np.float16).view(np.uint16), base.astype(np.float16).astype(np.float64)
    elif t == "bf16":
        x = torch.from_numpy(base).to(torch.bfloat16)
        u, vals = x.view(torch.int16).numpy().view(np.uint16), x.double().numpy()
    else:
        u = base.astype(np.float32 if t == "f32" else np.float64)
        vals = u.astype(np.float64)
    src = rng.standard_normal(1003).astype(np.float32)
    out = np.zeros(1003, np.float32)
    res = np.zeros(1, np.float64)
    getattr(lib, f"fedimg_wsum_sumsq_{t}_f32")(_p(u), ctypes.c_float(0.5), _p(src), _p(out), ctypes.c_longlong(1003),
                                              ctypes.c_int(accumulate), _p(res))
    # 0.5 * u is exact; the addition rounds once (float64 data: the cast to float32 once more)
    conv = U32 * 0.5 * np.abs(vals) if t == "f64" else 0.0
    exact = (src if accumulate else 0) + 0.5 * vals
    err = np.abs(out - exact)
    assert (err <= conv + (U32 + U64) * (np.abs(exact) + conv)).all()
    # float64 sum of squares (float32/half squares exact), and the float64 np.dot reference
    assert res[0] == pytest.approx(float(np.dot(vals, vals)), rel=2 * sumsq_rtol(1003), abs=0)
