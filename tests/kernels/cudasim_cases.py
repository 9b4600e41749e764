"""numba CUDA kernels under the CUDA simulator (run by test_kernels_cudasim.py in a subprocess
with NUMBA_ENABLE_CUDASIM=1; the simulator is slow, so every case is tiny).

Not collected by the main test run (the file name does not start with ``test_``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _kernels_helpers import (  # noqa: E402
    U32,
    assert_fedopt_close,
    assert_mean_close,
    assert_trimmed_mean_close,
    median32,
    norm_rtol,
)

from fedimg.kernels import (  # noqa: E402
    METHODS,
    WeightedAccumulator,
    all_finite,
    clip_by_norm,
    coordinate_median,
    fedavg,
    fedopt_step,
    l2_norms,
    pack,
    trimmed_mean,
)

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1", reason="needs the CUDA simulator")
BE = "numba_cuda"
N = 300  # > one 256-thread block, not a multiple of it


def _us(k, n=N, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(k)]


def test_simulator_is_active():
    from numba import cuda

    assert cuda.is_available() and type(cuda.to_device(np.zeros(1))).__module__.startswith("numba.cuda.simulator")


@pytest.mark.parametrize("k", [1, 3, 17])
@pytest.mark.parametrize("mode", ["fused", "blocked"])
def test_fedavg(k, mode):
    us = _us(k)
    w = np.arange(1, k + 1, dtype=np.float64)
    got = fedavg(us, w, mode=mode, block=2, backend=BE)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert_mean_close(got, us, w)  # float32 sum of k terms, any thread order


def test_fedavg_zero_weight_half_and_bf16_and_layout():
    us = _us(3, dtype=np.float16)
    us[1][:] = np.nan
    got = fedavg(us, [1, 0, 3], backend=BE)
    assert_mean_close(got, us, [1, 0, 3])  # the zero-weight (NaN) update is left out
    bf = [torch.from_numpy(u).to(torch.bfloat16) for u in _us(2)]
    got = fedavg(bf, [1, 1], backend=BE)
    assert_mean_close(got.numpy(), [t.float().numpy() for t in bf], [1, 1])
    sds = [{"w": u, "n": np.array([s], np.int64)} for u, s in zip(_us(2, n=40), (5, 9))]
    flats = [pack(sd)[0] for sd in sds]
    layout = pack(sds[0])[1]
    got = fedavg(flats, [1, 1], layout=layout, backend=BE)
    assert got[-1] == 9.0


def test_accumulator():
    us = _us(3)
    acc = WeightedAccumulator(N, backend=BE, block=2)
    for u, w in zip(us, (1.0, 2.0, 0.5)):
        acc.add(u, w)
    assert_mean_close(acc.result(), us, (1.0, 2.0, 0.5))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fedopt(method):
    p, g, m, v = _us(4)
    v = np.abs(v)
    got = fedopt_step(p, g, m, v, method=method, lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3, backend=BE)
    want = fedopt_step(p, g, m, v, method=method, lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3, backend="numpy")
    for res in (got, want):  # the fixed float32 chain, one rounding per operation (FMA: fewer)
        assert_fedopt_close(res, p, g, m, v, method=method, lr=0.1, b1=0.9, b2=0.99, tau=1e-3)


@pytest.mark.parametrize("k", [1, 4, 5, 17])
def test_robust(k):
    us = _us(k, n=40 if k > 16 else 100)
    np.testing.assert_array_equal(coordinate_median(us, backend=BE), median32(us))  # a selection: exact
    for be in (BE, "numpy"):  # float64 mean of the selections, rounded to float32
        assert_trimmed_mean_close(trimmed_mean(us, 0.2, backend=be), us, int(0.2 * k))


def test_norms_clip_finite():
    us = _us(2)
    # float64 sums of squares on the device and in the reference
    want = [np.linalg.norm(u.astype(np.float64)) for u in us]
    np.testing.assert_allclose(l2_norms(us, backend=BE), want, rtol=2 * norm_rtol(N), atol=0)
    c = clip_by_norm(us[0], 1.0, backend=BE)
    rel = (1 + U32) ** 2 * (1 + norm_rtol(N)) - 1  # f = 1/||x|| and x*f rounded to float32
    np.testing.assert_allclose(c, us[0] / want[0], rtol=rel, atol=0)
    assert np.linalg.norm(c.astype(np.float64)) == pytest.approx(1.0, rel=rel + norm_rtol(N), abs=0)
    assert all_finite(us[0], backend=BE)
    bad = us[1].copy()
    bad[N - 1] = np.inf
    assert not all_finite(bad, backend=BE)
    h = us[1].astype(np.float16)
    h[3] = np.nan
    assert not all_finite(h, backend=BE)


def test_fedavg_out_host_buffer_with_device_backend():
    us = _us(2)
    buf = np.zeros(N, np.float32)
    assert fedavg(us, [1, 3], out=buf, backend=BE) is buf
    assert_mean_close(buf, us, [1, 3])


def test_add_checked_folds_like_add_and_refuses_nan():
    us = _us(3)
    bad = us[1].copy()
    bad[7] = np.nan
    plain = WeightedAccumulator(N, backend=BE)
    checked = WeightedAccumulator(N, backend=BE)
    norms = []

    def check(nm):
        norms.append(nm)
        return bool(np.isfinite(nm))

    for u, w in ((us[0], 1.0), (bad, 4.0), (us[2], 0.5)):
        if np.isfinite(u).all():
            plain.add(u, w)
        checked.add_checked([u[:100], u[100:100], u[100:]], w, check)  # parts, one of them empty
    np.testing.assert_array_equal(checked.result(), plain.result())
    assert checked.count == 2 and np.isnan(norms[1])
    want = [np.linalg.norm(u.astype(np.float64)) for u in (us[0], us[2])]
    np.testing.assert_allclose([norms[0], norms[2]], want, rtol=2 * norm_rtol(N), atol=0)  # float64 on the device
    h = WeightedAccumulator(N, backend=BE)
    h.add_checked([us[0].astype(np.float16)], 2.0, check)  # float16 parts are widened on the device
    assert_mean_close(h.result(), [us[0].astype(np.float16)], [2.0])
