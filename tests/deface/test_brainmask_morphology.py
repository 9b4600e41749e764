"""The brain estimate's fast morphology gives scipy's voxels: the ball dilation and the bounding-box crops,
the one-labelling slice hole fill, and QC's boxed distance thresholds.

``morph.dilate_ball`` (an OR of shifted 1-D dilations) against ``scipy.ndimage.binary_dilation``
with the same ellipsoid on random blobs touching the border, isotropic and anisotropic; the
cropped ``_grow_brain`` against the whole-grid computation on a synthetic head.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from fedimg.deface import brainmask as bm
from fedimg.deface.morph import deeper_than, dilate_ball, farther_than, fill_holes_slices


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


def _blobs(rng, shape, level):
    mask = ndi.gaussian_filter(rng.random(shape), 1.5) > level
    mask[:, 0] |= rng.random(mask[:, 0].shape) > 0.8  # on the border too
    return mask


@pytest.mark.parametrize("shape", [(12, 17, 9), (1, 14, 14), (20, 3, 25)])
def test_fill_holes_slices_is_scipys_slice_loop(shape):
    rng = np.random.default_rng(3)
    for level in (0.45, 0.5, 0.55):
        mask = _blobs(rng, shape, level)
        for axis in range(3):
            want = np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(mask, axis, 0)], axis=axis)
            assert np.array_equal(fill_holes_slices(mask, axis), want)
    ring = np.zeros((3, 9, 9), bool)
    ring[:, 2:7, 2:7], ring[:, 3:6, 3:6] = True, False  # a hole in every slice across axis 0, none across 1 and 2
    assert fill_holes_slices(ring, 0)[:, 4, 4].all() and not fill_holes_slices(ring, 1)[:, 4, 4].any()


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.8, 1.875, 1.875), (4.0, 1.0, 2.5)])
def test_boxed_distance_thresholds_are_scipys(spacing):
    rng = np.random.default_rng(4)
    for level in (0.52, 0.56):
        mask = _blobs(rng, (30, 26, 34), level)
        for mm in (2.0, 8.0, 10.0):
            deep = ndi.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1] > mm
            far = ndi.distance_transform_edt(~mask, sampling=spacing) > mm
            assert np.array_equal(deeper_than(mask, spacing, mm), deep)
            assert np.array_equal(farther_than(mask, spacing, mm), far)
    assert not deeper_than(np.zeros((4, 4, 4), bool), spacing, 1.0).any()


def test_removal_offset_counts_only_tissue_whose_mirror_was_acquired():
    """A field of view that cuts one side off (padding there) leaves a centred removal's tissue off the
    mid-plane; counted where the mirror cell was acquired too it is centred, while a removal of one
    cheek stays off."""
    from fedimg.deface.brainmask import BrainEstimate, removal_metrics

    g = np.indices((20, 20, 20))
    fov = g[0] >= 4  # cells x < 4: padding
    brain = ((g - 9.5) ** 2).sum(0) < 9
    centre, normal, anterior = np.full(3, 9.5), np.array([1.0, 0, 0]), np.array([0, 1.0, 0])

    def offset(remove, fov):
        est = BrainEstimate(head=g[0] >= 4, brain=brain, step=(1, 1, 1), cell_ml=0.001, cell_spacing=np.ones(3),
                            cell_affine=np.eye(4), reference=1.0, placed_frame=(centre, normal, anterior), fov=fov)
        return removal_metrics(None, np.eye(4), remove, estimate=est)["removal_offset_mm"]

    face = g[1] >= 15
    assert offset(face, None) == pytest.approx(2.0)  # tissue x = 4..19 about 9.5
    assert offset(face, fov) == pytest.approx(0.0)  # x = 4..15: their mirrors 15..4 were acquired
    assert offset(face & (g[0] >= 10), fov) == pytest.approx(3.0)  # one cheek: x = 10..15


def test_acquired_part_keeps_only_voxels_in_acquired_cells():
    """QC's face measures (:func:`.qc_face.acquired_part`): voxels of a cell outside ``BrainEstimate.acquired``
    drop out; without an acquired estimate (the whole grid) the mask is returned as it is."""
    from fedimg.deface.brainmask import BrainEstimate
    from fedimg.deface.qc_face import acquired_part

    cells = np.ones((5, 5, 5), bool)
    cells[:, :, 3:] = False  # cells z >= 3 (voxels z >= 6 at step 2): not acquired
    est = BrainEstimate(head=cells, brain=np.zeros_like(cells), step=(2, 2, 2), cell_ml=0.008, cell_spacing=np.full(3, 2.0),
                        cell_affine=np.diag([2.0, 2.0, 2.0, 1.0]), reference=1.0, acquired=cells)
    mask = np.zeros((10, 10, 10), bool)
    mask[2:8, 2:8, 2:10] = True
    got = acquired_part(mask, est)
    assert got[:, :, :6].sum() == mask[:, :, :6].sum() and not got[:, :, 6:].any()
    whole = BrainEstimate(head=cells, brain=np.zeros_like(cells), step=(2, 2, 2), cell_ml=0.008, cell_spacing=np.full(3, 2.0),
                          cell_affine=np.diag([2.0, 2.0, 2.0, 1.0]), reference=1.0)
    assert acquired_part(mask, whole) is mask and acquired_part(None, est) is None
