"""fedopt_step and the robust statistics: every host backend against hand-written float64 maths."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _kernels_helpers import HOST_BACKENDS, updates  # noqa: E402

from fedimg.kernels import (  # noqa: E402
    METHODS,
    all_finite,
    clip_by_norm,
    coordinate_median,
    fedopt_step,
    l2_norms,
    trimmed_mean,
)


def _fedopt64(p, g, m, v, method, lr, b1, b2, tau):
    p, g, m, v = (a.astype(np.float64) for a in (p, g, m, v))
    if method == "avgm":
        m2 = b1 * m + g
        return p + lr * m2, m2, v
    m2 = b1 * m + (1 - b1) * g
    v2 = {
        "adam": b2 * v + (1 - b2) * g * g,
        "yogi": v - (1 - b2) * g * g * np.sign(v - g * g),
        "adagrad": v + g * g,
    }[method]
    return p + lr * m2 / (np.sqrt(v2) + tau), m2, v2


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_fedopt_matches_formula_and_is_pure(backend, method, rng):
    n = 50001
    p, g, m = updates(rng, 3, n)
    v = np.abs(updates(rng, 1, n)[0])
    ins = [a.copy() for a in (p, g, m, v)]
    got = fedopt_step(p, g, m, v, method=method, lr=0.05, beta1=0.9, beta2=0.99, tau=1e-3, backend=backend)
    want = _fedopt64(p, g, m, v, method, 0.05, 0.9, 0.99, 1e-3)
    for a, b in zip(got, want):
        assert a.dtype == np.float32 and a.shape == (n,)
        np.testing.assert_allclose(a, b, rtol=3e-5, atol=3e-6)
    for a, b in zip((p, g, m, v), ins):
        np.testing.assert_array_equal(a, b)
    assert got[2] is not v


def test_fedopt_first_round_and_options(rng):
    p, g = updates(rng, 2, 100)
    p2, m2, v2 = fedopt_step(p, g, None, None, method="adam", lr=0.1, beta1=0.9, beta2=0.99, eps=1e-3)
    want = _fedopt64(p, g, np.zeros(100), np.zeros(100), "adam", 0.1, 0.9, 0.99, 1e-3)
    np.testing.assert_allclose(p2, want[0], rtol=1e-5, atol=1e-6)
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


def _trim64(us, k):
    s = np.sort(np.stack([u.astype(np.float64) for u in us]), axis=0)
    return s[k : len(us) - k].mean(axis=0)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_median_and_trimmed_mean(backend, k, rng):
    n = 40001
    us = updates(rng, k, n)
    before = [u.copy() for u in us]
    med = coordinate_median(us, backend=backend)
    np.testing.assert_allclose(med, np.median(np.stack(us), axis=0), rtol=1e-6, atol=1e-7)
    tm = trimmed_mean(us, 0.25, backend=backend)
    np.testing.assert_allclose(tm, _trim64(us, int(0.25 * k)), rtol=1e-5, atol=1e-6)
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
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
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
    np.testing.assert_allclose(norms, want, rtol=1e-9)
    clipped = clip_by_norm(us[0], 10.0, backend=backend)
    assert np.linalg.norm(clipped.double().numpy()) == pytest.approx(10.0, rel=1e-5)
    short = clip_by_norm(us[0], 1e9, backend=backend)
    np.testing.assert_array_equal(short.double().numpy(), us[0].double().numpy())
    assert all_finite(us[0], backend=backend)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = us[1].clone()
        x[n - 2] = bad
        assert not all_finite(x, backend=backend)
    with pytest.raises(ValueError, match="NaN"):
        clip_by_norm(x, 1.0, backend=backend)
