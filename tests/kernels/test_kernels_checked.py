"""WeightedAccumulator.add_checked: fold + L2 norm in one pass, kept only if the check accepts.

Every host backend: the sum is bit-identical to ``add``'s, the norm matches float64 maths,
and a refused update (NaN, Inf, an outlier) leaves the accumulator exactly as it was.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _kernels_helpers import HOST_BACKENDS, U32, U64, assert_mean_close, norm_rtol, sumsq_rtol, updates  # noqa: E402

from fedimg.kernels import WeightedAccumulator, fedavg, pack  # noqa: E402
from fedimg.kernels._convert import to_native  # noqa: E402
from fedimg.kernels._ops import ops_for  # noqa: E402
from fedimg.kernels.layout import flat_parts  # noqa: E402

N = 70001
CUTS = [0, 7, 7, 4096, 40000, N]  # an empty part, a part smaller than a chunk, parts across chunk edges


def _parts(u):
    return [u[a:b] for a, b in itertools.pairwise(CUTS)]


def _norm64(t) -> float:
    return float(np.linalg.norm(torch.as_tensor(t).double().numpy()))


def _chunk(backend: str, dtype: str = "float32") -> int:
    """numba's fused fold sums the squares of float32/half data per chunk (<= CH values) in
    float32, then the chunks in float64; numpy and torch (and float64 data) sum in float64."""
    if backend == "numba" and dtype != "float64":
        from fedimg.kernels._cpu import CH

        return CH
    return 0


def _checked_norm_rtol(n: int, backend: str, dtype: str = "float32") -> float:
    """The fused fold's norm against the float64 reference norm: both errors."""
    return norm_rtol(n, f32_chunk=_chunk(backend, dtype)) + norm_rtol(n)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_add_checked_folds_like_add_and_measures_the_norm(backend, dtype, rng):
    us = [torch.from_numpy(u).to(getattr(torch, dtype)) for u in updates(rng, 4, N)]
    acc_dt = np.float64 if dtype == "float64" else np.float32
    plain = WeightedAccumulator(N, dtype=acc_dt, backend=backend)
    checked = WeightedAccumulator(N, dtype=acc_dt, backend=backend)
    norms: list[float] = []
    for k, u in enumerate(us):
        plain.add(u, k + 0.5)
        assert checked.add_checked(_parts(u), k + 0.5, lambda nm: norms.append(nm) or True)
    np.testing.assert_array_equal(checked.result(), plain.result())
    assert checked.count == plain.count == 4 and checked.total_weight == plain.total_weight
    np.testing.assert_allclose(norms, [_norm64(u) for u in us], rtol=_checked_norm_rtol(N, backend, dtype), atol=0)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_refused_updates_never_touch_the_sum(backend, rng):
    good = updates(rng, 2, N)
    nan = good[0].copy()
    nan[N - 3] = np.nan
    inf = good[1].copy()
    inf[5] = -np.inf
    scaled = good[1] * np.float32(1e6)
    seen: list[float] = []

    def check(norm: float) -> bool:
        seen.append(norm)
        return math.isfinite(norm) and norm < 1e4

    acc = WeightedAccumulator(N, backend=backend)
    assert not acc.add_checked(nan, 9.0, check)  # refused while the sum is still empty
    assert acc.add_checked(_parts(good[0]), 2.0, check)
    assert not acc.add_checked(_parts(inf), 9.0, check)
    assert not acc.add_checked(scaled, 9.0, check)
    assert acc.add_checked(good[1], 3.0, check)
    ref = WeightedAccumulator(N, backend=backend)
    ref.add(good[0], 2.0)
    ref.add(good[1], 3.0)
    assert acc.count == 2 and acc.total_weight == 5.0
    np.testing.assert_array_equal(acc.result(), ref.result())
    assert math.isnan(seen[0]) and math.isinf(seen[2])
    assert seen[3] == pytest.approx(_norm64(scaled), rel=_checked_norm_rtol(N, backend), abs=0)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_norm_beyond_float32_squares_is_exact(backend):
    u = np.full(N, 1e30, np.float32)  # finite values whose float32 squares overflow
    norms: list[float] = []
    WeightedAccumulator(N, backend=backend).add_checked(_parts(u), 1.0, lambda nm: norms.append(nm) or True)
    # float32 squares overflow, so every backend sums in float64: float64 bound, against the
    # norm of the float32 values (float32(1e30) is 1.5e-8 off 1e30)
    assert math.isfinite(norms[0]) and norms[0] == pytest.approx(_norm64(u), rel=2 * norm_rtol(N), abs=0)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
def test_backend_wsum_sumsq(backend, accumulate, in_place, rng):
    """The backend op on parts: elementwise exactly its own ``wsum``; the sum of squares in float64."""
    u, base = updates(rng, 2, N)
    ops = ops_for(backend)
    src = to_native(base.copy(), backend)
    out = src if in_place else to_native(np.zeros(N, np.float32), backend)
    ss = ops.wsum_sumsq([to_native(p, backend) for p in _parts(u)], 0.25, src, out, accumulate)
    want = to_native(base.copy(), backend)
    ops.wsum([to_native(u, backend)], np.array([0.25]), want, accumulate)
    np.testing.assert_array_equal(ops.host(out), ops.host(want))
    # 0.25 * u is exact (a power of two), the one addition rounds once: U32 relative
    want64 = (base if accumulate else 0) + 0.25 * u.astype(np.float64)
    np.testing.assert_allclose(ops.host(out), want64, rtol=U32 + U64, atol=0)
    ss_rtol = sumsq_rtol(N, f32_chunk=_chunk(backend)) + sumsq_rtol(N)
    assert ss == pytest.approx(float(np.dot(u.astype(np.float64), u.astype(np.float64))), rel=ss_rtol, abs=0)


def test_layout_tail_and_zero_weight(rng):
    sds = [{"w": rng.standard_normal(3000).astype(np.float32), "n": np.array(s, np.int64)} for s in (4, 11, 7)]
    layout = pack(sds[0])[1]
    acc = WeightedAccumulator(layout.size, layout=layout)
    norms: list[float] = []
    for sd in sds:
        assert acc.add_checked(flat_parts(sd, layout), 1.0, lambda nm: norms.append(nm) or True)
    assert float(acc.result()[-1]) == 11.0  # the integer tail takes the max
    assert_mean_close(acc.result()[:-1], [sd["w"] for sd in sds], [1, 1, 1])
    # default backend: the looser (float32-chunk) bound covers numba and numpy alike
    want = [math.hypot(_norm64(sd["w"]), float(sd["n"])) for sd in sds]
    np.testing.assert_allclose(norms, want, rtol=_checked_norm_rtol(3001, "numba") + 2 * U64, atol=0)
    before = acc.result()
    assert acc.add_checked(flat_parts(sds[0], layout), 0.0, lambda nm: nm > 0)  # counted, carries no weight
    assert acc.count == 4 and acc.total_weight == 3.0
    np.testing.assert_array_equal(acc.result(), before)


def test_add_checked_argument_errors():
    acc = WeightedAccumulator(10)
    with pytest.raises(ValueError, match="10"):
        acc.add_checked([np.zeros(4, np.float32), np.zeros(5, np.float32)], 1.0, bool)
    with pytest.raises(ValueError, match=">= 0"):
        acc.add_checked(np.zeros(10, np.float32), -1.0, bool)
    with pytest.raises(TypeError, match="float"):
        acc.add_checked([np.zeros(5, np.float32), np.zeros(5, np.int64)], 1.0, bool)
    assert acc.count == 0


def test_read_only_and_writeable_updates_mix(rng):
    """NVFlare hands over read-only arrays; numba must take them next to writeable ones."""
    a, b = updates(rng, 2, 40000)
    b.flags.writeable = False
    assert_mean_close(fedavg([a, b], [1, 3], backend="numba"), [a, b], [1, 3])
    acc = WeightedAccumulator(40000, backend="numba")
    assert acc.add_checked([a[:100], b[100:]], 1.0, lambda nm: True)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_wsum_sumsq_many_parts_matches_the_reference(backend, rng):
    """A model's worth of parts (150: more than one numba tuple of 64; empty, tiny and multi-chunk
    ones), a weight that is not a power of two: numba gives exactly numpy's ``src + w*u`` in
    float32 (no FMA contraction, no reordering of the fold on any CPU; torch, which may fuse,
    exactly its own ``wsum``), the sum of squares within its bound; the second call (numba's
    cached chunk table) gives the same bits."""
    from fedimg.kernels import _ref

    sizes = [int(s) for s in rng.choice([0, 1, 5, 63, 4095, 4096, 4097, 9000], size=150)]
    parts = [rng.standard_normal(s, dtype=np.float32) for s in sizes]
    n = sum(sizes)
    base = rng.standard_normal(n, dtype=np.float32)
    ops = ops_for(backend)
    want = np.empty(n, np.float32)
    ss_want = _ref.wsum_sumsq(parts, 0.3, base, want, True)
    if backend == "torch":
        native = to_native(base.copy(), backend)
        ops.wsum([to_native(np.concatenate(parts), backend)], np.array([0.3]), native, True)
        want = ops.host(native)
    for _ in range(2):
        out = to_native(np.zeros(n, np.float32), backend)
        ss = ops.wsum_sumsq([to_native(p, backend) for p in parts], 0.3, to_native(base, backend), out, True)
        np.testing.assert_array_equal(ops.host(out), want)
        assert ss == pytest.approx(ss_want, rel=sumsq_rtol(n, f32_chunk=_chunk(backend)) + sumsq_rtol(n), abs=0)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_parts_norm_is_the_norm_of_the_packed_update(backend, rng):
    from fedimg.kernels import parts_norm

    u, _ = updates(rng, 2, N)
    parts = [to_native(p, backend) for p in _parts(u)] * 40  # 200 parts: several numba launches
    want = math.sqrt(40) * _norm64(u)
    assert parts_norm(parts, backend=backend) == pytest.approx(want, rel=2 * norm_rtol(40 * N), abs=0)
    bad = u.copy()
    bad[N - 1] = np.inf
    assert math.isinf(parts_norm([to_native(p, backend) for p in _parts(bad)], backend=backend))
    assert parts_norm([], backend=backend) == 0.0
