"""The brain estimate's fast morphology gives scipy's voxels: the ball dilation and the bounding-box crops.

``morph.dilate_ball`` (an OR of shifted 1-D dilations) against ``scipy.ndimage.binary_dilation``
with the same ellipsoid on random blobs touching the border, isotropic and anisotropic; the
cropped ``_grow_brain`` against the whole-grid computation on a synthetic head.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from fedimg.deface import brainmask as bm
from fedimg.deface.morph import dilate_ball


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.8, 1.875, 1.875), (2.0, 1.0, 3.0), (4.0, 4.0, 1.0)])
def test_dilate_ball_is_scipys_dilation(spacing):
    rng = np.random.default_rng(0)
    ball = bm._ball(8.0, np.array(spacing))
    for shape in ((40, 50, 30), (7, 30, 5)):  # the second is thinner than the ball on two axes
        mask = ndi.gaussian_filter(rng.random(shape), 2) > 0.53
        mask[0] |= rng.random(mask[0].shape) > 0.9  # blobs on the border
        want = ndi.binary_dilation(mask, structure=ball)
        assert 0 < mask.sum() < want.sum() < mask.size
        assert np.array_equal(dilate_ball(mask, ball), want)
    assert not dilate_ball(np.zeros((5, 6, 7), bool), ball).any()


def test_grow_brain_in_its_box_is_the_whole_grid_computation():
    g = np.stack(np.meshgrid(*[np.arange(48.0)] * 3, indexing="ij"), -1)
    r = np.linalg.norm((g - [22.0, 25.0, 24.0]) * [1.0, 0.9, 1.1], axis=-1)
    small = np.where(r < 21, 300.0, 0.0)
    small[r < 17] = 100.0
    small[r < 15] = 500.0
    small[r < 4] = 50.0  # a ventricle-like hole
    sp = np.array([2.0, 2.0, 2.0])
    head = small > 0
    depth = ndi.distance_transform_edt(np.pad(head, 1), sampling=sp)[1:-1, 1:-1, 1:-1]
    deep = head & (depth >= 0.75 * depth.max())
    got = bm._grow_brain(small, head, depth, deep, 500.0, sp, 6.0, 0.55, 1.6, 8.0, 6.0)
    cand = head & (depth >= 6.0) & (small >= 0.55 * 500) & (small <= 1.6 * 500)  # the whole-grid steps
    ball = bm._ball(8.0, sp)
    lab, _ = ndi.label(ndi.binary_erosion(cand, structure=ball))
    counts = np.bincount(lab[deep])
    counts[0] = 0
    want = ndi.binary_dilation(lab == int(np.argmax(counts)), structure=ball) & cand
    want = ndi.binary_dilation(want, iterations=3, mask=cand)
    want = ndi.binary_fill_holes(np.pad(want, 1))[1:-1, 1:-1, 1:-1]
    assert want.sum() > 1000 and np.array_equal(got, want)
