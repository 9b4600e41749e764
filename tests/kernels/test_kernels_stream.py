"""Streaming stores in the numba CPU fold (``kernels/stream.py``): the same bits as ordinary
stores, chunks aligned in the output, and a refused update (NaN late in a tensor) that leaves
the accumulator exactly as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedimg.kernels import WeightedAccumulator, _cpu, _ref
from fedimg.kernels.stream import ALIGN, aligned_zeros, chunk_table, is_aligned, segments

SIZES = [0, 1, 5, 15, 16, 17, 63, 4095, 4096, 4097, 9000, 3, 20000]


@pytest.mark.parametrize("off", [0, 1, 7, 16, 4099])
def test_chunk_table_covers_every_value_once_aligned(off):
    sizes = tuple(SIZES)
    cpart, clo, clen, starts = chunk_table(sizes, off, 4096)
    assert starts[0] == off and list(np.diff(starts)) == list(sizes[:-1])
    seen = [np.zeros(n, np.int64) for n in sizes]
    for p, lo, n in zip(cpart, clo, clen):
        assert 0 < n <= 4096 and lo + n <= sizes[p]  # never across parts
        seen[p][lo : lo + n] += 1
        if (starts[p] + lo) % ALIGN:  # only a part's head is off the grid, and it ends on it
            assert lo == 0 and (n == sizes[p] or (starts[p] + n) % ALIGN == 0)
    assert all((s == 1).all() for s in seen)


@pytest.mark.parametrize("nseg", [1, 2, 8, 500])
def test_segments_split_the_chunks_by_values(nseg):
    """Segments cover every chunk once, in order; each holds about total/nseg values (at most one
    chunk more), however the tensors' sizes fall (a 20000-value part beside one-value ones)."""
    sizes = tuple(SIZES)
    clen = chunk_table(sizes, 3, 4096)[2]
    seg = segments(sizes, 3, 4096, nseg)
    assert len(seg) == nseg + 1 and seg[0] == 0 and seg[-1] == clen.size and (np.diff(seg) >= 0).all()
    vals = [int(clen[a:b].sum()) for a, b in zip(seg[:-1], seg[1:])]
    assert sum(vals) == sum(sizes) and max(vals) <= sum(sizes) / nseg + 4096


def _parts(rng, dt):
    return [rng.standard_normal(n).astype(dt) for n in SIZES * 2]


@pytest.mark.parametrize("dt", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
def test_streaming_fold_is_bit_identical(dt, accumulate, in_place, rng):
    """Into an aligned buffer (streaming stores) and an unaligned one (ordinary stores): the same
    bits, the same sum of squares, and the float32 values are numpy's ``src + w*u``."""
    parts = _parts(rng, dt)
    n = sum(p.size for p in parts)
    odt = np.float64 if dt == np.float64 else np.float32
    base = rng.standard_normal(n).astype(odt)
    outs = []
    for aligned in (True, False):
        out = aligned_zeros(n, odt) if aligned else aligned_zeros(n + 1, odt)[1:]
        assert is_aligned(out) is aligned
        src = out if in_place else base
        if in_place:
            out[...] = base
        ss = _cpu.wsum_sumsq(parts, 0.3, src, out, accumulate)
        outs.append((out.copy(), ss))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    assert outs[0][1] == outs[1][1]
    want = np.empty(n, odt)
    _ref.wsum_sumsq([p.astype(odt) for p in parts], 0.3, base, want, accumulate)
    np.testing.assert_array_equal(outs[0][0], want)


def test_streaming_scale_is_exact(rng):
    u = rng.standard_normal(3 * 4096 + 5).astype(np.float32)
    out = _cpu.scale(u, 1 / 3, np.float32)
    assert is_aligned(out)
    np.testing.assert_array_equal(out, np.float32(1 / 3) * u)


def test_refused_update_leaves_the_streamed_sum_untouched(rng):
    """A model's worth of tensors through the accumulator (its buffers aligned: streaming
    stores); an update with one NaN in the last value of a late tensor, and one whose norm the
    check refuses, change nothing; the result equals the numpy backend's bit for bit."""
    sds = [_parts(rng, np.float32) for _ in range(3)]
    n = sum(p.size for p in sds[0])
    acc, ref = WeightedAccumulator(n, backend="numba"), WeightedAccumulator(n, backend="numpy")
    assert is_aligned(acc._acc)
    for a in (acc, ref):
        assert a.add_checked(sds[0], 2.0, math.isfinite) and a.add_checked(sds[1], 3.0, math.isfinite)
    before = acc.result()
    bad = [p.copy() for p in sds[2]]
    bad[-2][-1] = np.nan
    assert not acc.add_checked(bad, 5.0, math.isfinite)
    assert not acc.add_checked(sds[2], 5.0, lambda norm: norm < 1.0)
    assert (acc.count, acc.total_weight) == (2, 5.0)
    np.testing.assert_array_equal(acc.result(), before)
    np.testing.assert_array_equal(acc.result(), ref.result())
    assert acc.add_checked(sds[2], 5.0, math.isfinite) and ref.add_checked(sds[2], 5.0, math.isfinite)
    np.testing.assert_array_equal(acc.result(), ref.result())
