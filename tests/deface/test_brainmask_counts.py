"""Per-cell counts give QC the numbers the voxel-by-voxel lookups gave: random masks and steps (edge cells
holding the leftover voxels), the removal metrics and the head-outline recall."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.deface.brainmask import BrainEstimate, removal_metrics
from fedimg.deface.morph import cell_counts
from fedimg.deface.qc_face import face_shape_recall, face_shape_recall_counted


def _estimate(rng, shape, step):
    cells = tuple(-(-n // s) for n, s in zip(shape, step))
    head = rng.random(cells) < 0.7
    return BrainEstimate(head=head, brain=head & (rng.random(cells) < 0.4), step=step, cell_ml=float(np.prod(step)) / 1000,
                         cell_spacing=np.array(step, float), cell_affine=np.diag([*map(float, step), 1.0]), reference=1.0)


@pytest.mark.parametrize("seed", range(12))
def test_counts_equal_lookups(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(3, 40, 3))
    step = tuple(int(s) for s in rng.integers(1, 5, 3))
    est = _estimate(rng, shape, step)
    mask = rng.random(shape) < rng.random()
    counts = cell_counts(mask, step, est.head.shape)
    for which in ("head", "brain"):
        assert int(counts[getattr(est, which)].sum()) == int(est.lookup(mask, which).sum())
    assert counts.sum() == mask.sum() and counts.dtype == np.int64
    shape_mask = rng.random(shape) < 0.3
    assert face_shape_recall_counted(mask, shape_mask, est) == face_shape_recall(mask, shape_mask, lambda m: est.lookup(m, "head"))


def test_removal_metrics_count_removed_cells_as_before():
    rng = np.random.default_rng(5)
    est = _estimate(rng, (30, 33, 29), (2, 2, 3))
    remove = np.zeros((30, 33, 29), bool)
    remove[20:, 10:25, :12] = True
    got = removal_metrics(None, np.diag([1.0, 1.0, 1.0, 1.0]), remove, estimate=est)
    assert got["brain_removed_ml"] == float(est.lookup(remove, "brain").sum()) * 0.001
    assert got["removed_tissue_ml"] == float(est.lookup(remove, "head").sum()) * 0.001


@pytest.mark.parametrize("seed", range(16))
def test_box_counts_equal_full_int64_counts(seed):
    """The bounding-box, narrow-integer counts are the int64 sums over every cell: sparse blocks anywhere
    (edges included), grids with cells past the mask's end or fewer cells than fit, wide steps (uint16)."""
    from fedimg.deface.morph import _cell_counts_full

    rng = np.random.default_rng(500 + seed)
    shape = tuple(int(n) for n in rng.integers(1, 60, 3))
    step = tuple(int(s) for s in rng.integers(1, 9 if seed % 4 else 30, 3))
    mask = np.zeros(shape, bool)
    lo = [int(rng.integers(0, n)) for n in shape]
    hi = [int(rng.integers(a, n)) + 1 for a, n in zip(lo, shape)]
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = rng.random(tuple(b - a for a, b in zip(lo, hi))) < rng.random()
    cells = tuple(max(1, -(-n // s) + int(rng.integers(-2, 3))) for n, s in zip(shape, step))
    got, want = cell_counts(mask, step, cells), _cell_counts_full(mask, step, cells)
    assert got.dtype == np.int64 and got.shape == cells
    assert np.array_equal(got, want) and int(got.sum()) == int(mask.sum())


def test_counts_of_an_empty_or_full_mask():
    from fedimg.deface.morph import _cell_counts_full

    assert not cell_counts(np.zeros((7, 8, 9), bool), (2, 2, 2), (4, 4, 5)).any()
    full = np.ones((40, 41, 3), bool)  # one 40 x 41 x 3 cell: 4920 voxels, more than uint8 holds
    assert np.array_equal(cell_counts(full, (40, 41, 3), (1, 1, 1)), _cell_counts_full(full, (40, 41, 3), (1, 1, 1)))
    assert int(cell_counts(full, (40, 41, 3), (1, 1, 1))[0, 0, 0]) == 4920
