"""GPU parity: torch CUDA tensors and CuPy arrays through every device backend vs numpy.

Marked ``gpu`` (skipped without CUDA); the CuPy cases also skip when CuPy is missing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _kernels_helpers import (  # noqa: E402
    U32,
    U64,
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

pytestmark = pytest.mark.gpu
HAS_CUPY = importlib.util.find_spec("cupy") is not None
DEVICE_BACKENDS = [
    pytest.param("numba_cuda", marks=pytest.mark.skipif(
        "not __import__('torch').cuda.is_available() or "
        "not __import__('fedimg.kernels._backend', fromlist=['x']).numba_cuda_works()",
        reason="numba cannot compile CUDA here (needs NVVM: pip install nvidia-cuda-nvcc-cu12)")),
    "torch",
] + (["cupy"] if HAS_CUPY else [])
N = 1_000_003  # not a multiple of any block size


def _us(k, dtype=torch.float32, n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g).to(dtype) for _ in range(k)]


def _cuda(ts):
    return [t.cuda() for t in ts]


def _np64(ts):
    return [t.double().numpy() for t in ts]


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("k", [1, 5, 16, 70])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_fedavg_device_matches_numpy(backend, k, dtype):
    host = _us(k, getattr(torch, dtype), n=N if k <= 16 else 10_001)
    w = np.random.default_rng(k).uniform(0, 5, k)
    w[0] = 0.0 if k > 1 else 1.0
    dev = _cuda(host)
    before = [t.clone() for t in dev]
    got = fedavg(dev, w, backend=backend)
    assert got.is_cuda and got.dtype == (torch.float64 if dtype == "float64" else torch.float32)
    want = fedavg(host, w, backend="numpy")
    unit = U64 if dtype == "float64" else U32  # the accumulator type; any thread order
    for res in (got.cpu().numpy(), want.numpy()):
        assert_mean_close(res, _np64(host), w, unit=unit)
    for a, b in zip(dev, before):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_accumulator_on_device(backend):
    us = _us(6)
    acc = WeightedAccumulator(N, device="cuda", backend=backend, block=4)
    for i, u in enumerate(us):
        acc.add(u.cuda() if i % 2 else u.numpy(), float(i + 1))  # host and device updates
    got = acc.result()
    assert got.is_cuda
    assert_mean_close(got.cpu().numpy(), _np64(us), np.arange(1, 7))


def test_accumulator_layout_tail_on_device():
    sds = [{"w": torch.randn(1000), "n": torch.tensor(s)} for s in (4, 11, 2)]
    layout = pack(sds[0])[1]
    acc = WeightedAccumulator(layout.size, device="cuda", layout=layout)
    for sd in sds:
        acc.add(torch.from_numpy(pack(sd)[0]).cuda(), 1.0)
    assert float(acc.result()[-1]) == 11.0


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_fedopt_device(backend, method):
    p, g, m, v = _us(4)
    v = v.abs()
    got = fedopt_step(*_cuda([p, g, m, v]), method=method, lr=0.05, tau=1e-3, backend=backend)
    want = fedopt_step(p, g, m, v, method=method, lr=0.05, tau=1e-3, backend="numpy")
    assert all(a.is_cuda for a in got)
    ins = [t.numpy() for t in (p, g, m, v)]
    for res in ([a.cpu().numpy() for a in got], [b.numpy() for b in want]):  # one rounding per op (FMA: fewer)
        assert_fedopt_close(res, *ins, method=method, lr=0.05, b1=0.9, b2=0.99, tau=1e-3)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_robust_device(backend, dtype):
    host = _us(7, getattr(torch, dtype), n=100_003)
    dev = _cuda(host)
    h64 = _np64(host)
    n = h64[0].size
    med = coordinate_median(dev, backend=backend).cpu().numpy()
    np.testing.assert_array_equal(med, median32(h64))  # K = 7: a selection, exact
    np.testing.assert_array_equal(med, coordinate_median(host, backend="numpy").numpy())
    for tm in (trimmed_mean(dev, 0.3, backend=backend), trimmed_mean(host, 0.3, backend="numpy")):
        assert_trimmed_mean_close(tm.cpu().numpy(), h64, 2)  # float64 mean of 3 selections, rounded to float32
    # float64 sums of squares on both sides, any order
    np.testing.assert_allclose(l2_norms(dev, backend=backend), l2_norms(host, backend="numpy"), rtol=2 * norm_rtol(n),
                               atol=0)
    c = clip_by_norm(dev[0], 3.0, backend=backend)
    rel = (1 + U32) ** 2 * (1 + norm_rtol(n)) - 1  # f = 3/||x|| and x*f rounded to float32
    assert c.is_cuda and float(torch.linalg.vector_norm(c.double())) == pytest.approx(3.0, rel=rel + norm_rtol(n),
                                                                                       abs=0)
    assert all_finite(dev[0], backend=backend)
    bad = dev[1].clone()
    bad[-1] = float("nan")
    assert not all_finite(bad, backend=backend)


@pytest.mark.skipif(not HAS_CUPY, reason="CuPy not installed")
def test_cupy_arrays_stay_cupy():
    import cupy

    us = [cupy.asarray(u.numpy()) for u in _us(3)]
    got = fedavg(us, [1, 2, 3])
    assert isinstance(got, cupy.ndarray)
    assert_mean_close(cupy.asnumpy(got), [cupy.asnumpy(u) for u in us], [1, 2, 3])
    p2, _, _ = fedopt_step(us[0], us[1], None, None, method="adam", lr=0.1)
    assert isinstance(p2, cupy.ndarray)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_fedavg_into_device_out(backend):
    host = _us(4)
    buf = torch.empty(N, device="cuda")
    assert fedavg(_cuda(host), [1, 2, 3, 4], out=buf, backend=backend) is buf
    assert_mean_close(buf.cpu().numpy(), _np64(host), [1, 2, 3, 4])


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_add_checked_on_device(backend, dtype):
    us = _us(3, getattr(torch, dtype))
    bad = us[1].clone()
    bad[12] = float("nan")
    plain = WeightedAccumulator(N, device="cuda", backend=backend)
    checked = WeightedAccumulator(N, device="cuda", backend=backend)
    norms = []
    for i, (u, w) in enumerate(((us[0], 1.0), (bad, 4.0), (us[2], 0.5))):
        if i != 1:
            plain.add(u.cuda(), w)
        parts = [u[:1000], u[1000:]] if i == 0 else [u.cuda()[:5], u.cuda()[5:]]  # host and device parts
        checked.add_checked(parts, w, lambda nm: norms.append(nm) or bool(np.isfinite(nm)))
    assert checked.count == 2 and np.isnan(norms[1])
    for acc in (checked, plain):  # two kernels (fused fold, plain fold): each a float32 weighted mean
        assert_mean_close(acc.result().cpu().numpy(), _np64([us[0], us[2]]), [1.0, 0.5])
    want = [float(torch.linalg.vector_norm(u.double())) for u in (us[0], us[2])]
    np.testing.assert_allclose([norms[0], norms[2]], want, rtol=2 * norm_rtol(N), atol=0)  # float64 on the device


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_add_checked_segresnet_parts_on_device(backend):
    """83 parts shaped like a SegResNet update (the torch backend folds them with one
    multi-tensor launch per step): the weighted mean and the norm of the numpy reference."""
    from fedimg.bench.aggregate import model_shapes

    sizes = [int(np.prod(s)) for _, s in model_shapes("segresnet")]
    n = sum(sizes)
    us = _us(2, n=n)
    acc = WeightedAccumulator(n, device="cuda", backend=backend)
    norms = []
    for u, w in zip(us, (3.0, 1.0)):
        acc.add_checked(list(u.cuda().split(sizes)), w, lambda nm: norms.append(nm) or True)
    assert_mean_close(acc.result().cpu().numpy(), _np64(us), [3.0, 1.0])
    want = [float(torch.linalg.vector_norm(u.double())) for u in us]
    np.testing.assert_allclose(norms, want, rtol=2 * norm_rtol(n), atol=0)
