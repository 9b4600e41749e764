"""QC's head-outline comparison counted in the placement's box (``removal_dice``, ``face_shape_recall_counted``):
the same numbers as the whole-volume sums and per-cell counts they replace, floats exact."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.deface.brainmask import BrainEstimate
from fedimg.deface.morph import cell_counts
from fedimg.deface.qc_face import face_shape_recall, face_shape_recall_counted, removal_dice


def _dice_full(a, b):
    total = float(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def _recall_cells(remove, shape, est):
    def in_head(mask):
        return int(cell_counts(mask, est.step, est.head.shape)[est.head].sum())

    n = in_head(shape)
    return 1.0 if n == 0 else float(in_head(shape & remove)) / n


def _estimate(rng, cells, step) -> BrainEstimate:
    head = rng.random(cells) < 0.7
    return BrainEstimate(head=head, brain=np.zeros(cells, bool), step=step, cell_ml=0.008, cell_spacing=np.ones(3),
                         cell_affine=np.eye(4), reference=1.0)


@pytest.mark.parametrize("seed", range(10))
def test_box_counts_equal_the_whole_volume_counts(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(8, 40, 3))
    step = tuple(int(s) for s in rng.integers(1, 4, 3))
    cells = tuple(max(1, n // s - int(rng.integers(0, 2))) for n, s in zip(shape, step))  # voxels past the last cell too
    est = _estimate(rng, cells, step)
    a, b = np.zeros(shape, bool), np.zeros(shape, bool)
    lo = [int(rng.integers(0, n // 2)) for n in shape]
    b[lo[0]:, lo[1]: lo[1] + 9, lo[2]:] = rng.random(b[lo[0]:, lo[1]: lo[1] + 9, lo[2]:].shape) < 0.6
    a[rng.random(shape) < 0.3] = True
    for x, y in ((a, b), (b, a), (a, np.zeros(shape, bool)), (np.zeros(shape, bool), np.zeros(shape, bool))):
        assert removal_dice(x, y) == _dice_full(x, y)
        assert face_shape_recall_counted(x, y, est) == _recall_cells(x, y, est)
        assert face_shape_recall_counted(x, y, est) == face_shape_recall(x, y, lambda m: est.lookup(m, "head"))


def test_dice_of_non_boolean_masks_is_the_sum_formula():
    a = np.array([[[0, 2, 1]]])
    b = np.array([[[1, 2, 0]]])
    assert removal_dice(a, b) == _dice_full(a, b)
