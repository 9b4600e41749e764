"""fedopt_step and the robust statistics: every host backend against hand-written float64 maths."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _kernels_helpers import (  # noqa: E402
    HOST_BACKENDS,
    U32,
    U64,
    assert_fedopt_close,
    assert_trimmed_mean_close,
    median32,
    norm_rtol,
    updates,
)

from fedimg.kernels import (  # noqa: E402
    METHODS,
    all_finite,
    clip_by_norm,
    coordinate_median,
    fedopt_step,
    l2_norms,
    trimmed_mean,
)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_fedopt_matches_formula_and_is_pure(backend, method, rng):
    n = 50001
    p, g, m = updates(rng, 3, n)
    v = np.abs(updates(rng, 1, n)[0])
    ins = [a.copy() for a in (p, g, m, v)]
    got = fedopt_step(p, g, m, v, method=method, lr=0.05, beta1=0.9, beta2=0.99, tau=1e-3, backend=backend)
    for a in got:
        assert a.dtype == np.float32 and a.shape == (n,)
    # a fixed chain of float32 operations: one rounding each, propagated through sqrt and /
    assert_fedopt_close(got, p, g, m, v, method=method, lr=0.05, b1=0.9, b2=0.99, tau=1e-3)
    for a, b in zip((p, g, m, v), ins):
        np.testing.assert_array_equal(a, b)
    assert got[2] is not v


def test_fedopt_first_round_and_options(rng):
    p, g = updates(rng, 2, 100)
    p2, m2, v2 = fedopt_step(p, g, None, None, method="adam", lr=0.1, beta1=0.9, beta2=0.99, eps=1e-3)
    z = np.zeros(100, np.float32)
    assert_fedopt_close((p2, m2, v2), p, g, z, z, method="adam", lr=0.1, b1=0.9, b2=0.99, tau=1e-3)
    # identity: zero pseudo-gradient and zero momentum leaves params unchanged
    same, _, _ = fedopt_step(p, np.zeros_like(p), None, np.ones_like(p), method="yogi", lr=1.0)
    np.testing.assert_array_equal(same, p)
    with pytest.raises(ValueError, match="method"):
        fedopt_step(p, g, method="sgd")
    with pytest.raises(ValueError, match="eps or tau"):
        fedopt_step(p, g, eps=1e-3, tau=1e-2)
    with pytest.raises(ValueError, match="values"):
        fedopt_step(p, g[:5])
    tp, tm, tv = fedopt_step(torch.from_numpy(p), torch.from_numpy(g), method="adagrad", lr=0.1)
    assert isinstance(tp, torch.Tensor) and tp.dtype == torch.float32


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_median_and_trimmed_mean(backend, k, rng):
    n = 40001
    us = updates(rng, k, n)
    before = [u.copy() for u in us]
    med = coordinate_median(us, backend=backend)
    # a selection (odd K) or the correctly rounded mean of the two middle values: exact
    np.testing.assert_array_equal(med, median32(us))
    np.testing.assert_array_equal(med, np.median(np.stack(us), axis=0))
    tm = trimmed_mean(us, 0.25, backend=backend)
    assert_trimmed_mean_close(tm, us, int(0.25 * k))  # float64 mean of selections, rounded to float32
    for u, b in zip(us, before):
        np.testing.assert_array_equal(u, b)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_median_resists_an_outlier_and_half_inputs(backend, rng):
    us = updates(rng, 5, 40000)
    us[3] = us[3] + 1e6
    med = coordinate_median(us, backend=backend)
    assert np.abs(med).max() < 10
    bf = [torch.from_numpy(u).to(torch.bfloat16) for u in us]
    got = coordinate_median(bf, backend=backend)
    want = np.median(np.stack([t.float().numpy() for t in bf]), axis=0)
    np.testing.assert_array_equal(got.numpy(), want)  # K = 5: the median is one of the values
    with pytest.raises(ValueError, match="trim_ratio"):
        trimmed_mean(us, 0.5)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_norms_clip_finite(backend, dtype, rng):
    n = 40003
    base = updates(rng, 3, n)
    us = [torch.from_numpy(u).to(getattr(torch, dtype)) for u in base]
    norms = l2_norms(us, backend=backend)
    want = [np.linalg.norm(u.double().numpy()) for u in us]
    # float64 sums of squares in every backend, and the float64 reference: both within norm_rtol
    np.testing.assert_allclose(norms, want, rtol=2 * norm_rtol(n), atol=0)
    clipped = clip_by_norm(us[0], 10.0, backend=backend)
    # x * f with f = 10/||x|| rounded to the result dtype (float32; float64 for float64): two
    # roundings per element on top of the norm's error, elementwise and for the clipped norm
    unit = U64 if dtype == "float64" else U32
    rel = (1 + unit) ** 2 * (1 + norm_rtol(n)) - 1
    x = us[0].double().numpy()
    np.testing.assert_allclose(clipped.double().numpy(), x * (10.0 / np.linalg.norm(x)), rtol=rel, atol=0)
    assert np.linalg.norm(clipped.double().numpy()) == pytest.approx(10.0, rel=rel + norm_rtol(n), abs=0)
    short = clip_by_norm(us[0], 1e9, backend=backend)
    np.testing.assert_array_equal(short.double().numpy(), us[0].double().numpy())
    assert all_finite(us[0], backend=backend)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = us[1].clone()
        x[n - 2] = bad
        assert not all_finite(x, backend=backend)
    with pytest.raises(ValueError, match="NaN"):
        clip_by_norm(x, 1.0, backend=backend)
