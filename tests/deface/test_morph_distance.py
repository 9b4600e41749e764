"""``deeper_than`` / ``farther_than`` by a ball of offsets: scipy's distance map's voxels at the thresholds QC uses.

QC's brain cross-check (:func:`fedimg.deface.qc.head_shape_brain`) erodes a placed brain by 8 mm and
dilates it by 10 mm on the 2 mm cell grid (cell spacings 1.8-4 mm and thick slabs in the dev corpus);
the ball shortcut must give the distance map's voxel sets exactly, including offsets exactly ``mm``
away (2 mm cells: 10 mm = (3, 4, 0) cells, kept within the ball as ``> mm`` leaves them out of the map).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from fedimg.deface.morph import _deeper_than_edt, _farther_than_edt, deeper_than, distance_ball, farther_than

SPACINGS = [(2.0, 2.0, 2.0), (1.8, 1.875, 1.875), (1.875, 1.875, 2.4), (2.0, 2.0, 5.0), (3.0, 3.0, 3.0),
            (2.2, 2.4, 2.6), (1.9531, 1.9531, 2.0), (4.0, 4.0, 4.0), (2.5, 1.25, 3.75)]


def _blobs(rng, shape, level: float) -> np.ndarray:
    return ndi.gaussian_filter(rng.random(shape), 2.0) > level


@pytest.mark.parametrize("spacing", SPACINGS)
def test_ball_thresholds_equal_the_distance_map(spacing):
    rng = np.random.default_rng(11)
    for level in (0.5, 0.53):
        mask = _blobs(rng, (34, 30, 28), level)
        mask[10:24, 8:22, 6:20] = True  # one large body, as a placed brain is
        for mm in (8.0, 10.0, 2 * spacing[0], 5.0, 6.0):
            assert np.array_equal(deeper_than(mask, spacing, mm), _deeper_than_edt(mask, spacing, mm)), (spacing, mm)
            assert np.array_equal(farther_than(mask, spacing, mm), _farther_than_edt(mask, spacing, mm)), (spacing, mm)


def test_reference_is_scipys_whole_volume_map_and_a_ball_is_symmetric():
    mask = np.zeros((21, 21, 21), bool)
    mask[10, 10, 10] = True
    far = ndi.distance_transform_edt(~mask, sampling=(2.0, 2.0, 2.0)) > 10.0
    assert np.array_equal(farther_than(mask, (2.0, 2.0, 2.0), 10.0), far)
    assert not far[10 + 3, 10 + 4, 10] and far[10 + 3, 10 + 5, 10]  # exactly 10 mm away: within
    ball = distance_ball((1.8, 1.875, 2.4), 8.0)
    assert ball.shape == (11, 11, 9) and np.array_equal(ball, ball[::-1, ::-1, ::-1]) and ball[5, 5, 4]
    assert not deeper_than(np.zeros((4, 4, 4), bool), (2.0, 2.0, 2.0), 1.0).any()
    with pytest.raises(ValueError, match="needs a mask with a True voxel"):
        farther_than(np.zeros((4, 4, 4), bool), (2.0, 2.0, 2.0), 1.0)
