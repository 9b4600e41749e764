"""``morph.erode_ball`` is scipy's ``binary_erosion`` with the same ellipsoid (outside the array: background), and the
brain estimate's head closing and candidate erosion built on it give scipy's voxels on the real heads."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from fedimg.deface import brainmask as bm
from fedimg.deface.morph import dilate_ball, erode_ball
from fedimg.imageio.volume import to_canonical

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.8, 1.875, 1.875), (2.0, 1.0, 3.0), (4.0, 4.0, 1.0), (3.5, 2.4, 2.4)])
@pytest.mark.parametrize("mm", [4.0, 8.0])
def test_erode_ball_is_scipys_erosion(spacing, mm):
    rng = np.random.default_rng(1)
    ball = bm._ball(mm, np.array(spacing))
    for shape in ((40, 50, 30), (7, 30, 5)):  # the second is thinner than the ball on two axes
        mask = ndi.gaussian_filter(rng.random(shape), 2) > 0.45
        mask[0] |= rng.random(mask[0].shape) > 0.2  # mask voxels on the border: eroded by the outside
        want = ndi.binary_erosion(mask, structure=ball)
        assert np.array_equal(erode_ball(mask, ball), want)
        closed = ndi.binary_closing(np.pad(mask, 2), structure=ball, iterations=1)
        assert np.array_equal(erode_ball(dilate_ball(np.pad(mask, 2), ball), ball), closed)
    assert erode_ball(np.ones((6, 7, 8), bool), ball).sum() == ndi.binary_erosion(np.ones((6, 7, 8), bool), structure=ball).sum()
    assert not erode_ball(np.zeros((5, 6, 7), bool), ball).any()


def _scipy_head_mask(small, spacing):
    """brainmask.head_mask as it was: scipy's closing."""
    pos = small[small > 0]
    top = float(np.percentile(pos, 99))
    thr = min(bm._otsu(np.clip(pos, 0, top)) * 0.5, 0.15 * top)
    head = small > max(thr, 0.02 * top)
    head = ndi.binary_closing(np.pad(head, 2), structure=bm._ball(4.0, spacing), iterations=1)[2:-2, 2:-2, 2:-2]
    return bm._largest(bm.fill_holes_cut(head))


@pytest.mark.parametrize("name", ["ds000031_sub-01_ses-006_run-001_T1w.nii.gz", "pycortex_S1_T1w_2mm.nii.gz"])
def test_head_mask_and_candidate_erosion_on_real_heads(name):
    img = nib.load(str(MRI / name))
    can, aff = to_canonical(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    small, st = bm._reduce(can, spacing, 2.0)
    sp = spacing * np.array(st)
    head = bm.head_mask(small, sp)
    assert head.any() and np.array_equal(head, _scipy_head_mask(small, sp))
    depth = ndi.distance_transform_edt(head, sampling=sp)
    m = float(np.median(small[head & (depth > 0.75 * depth.max())]))
    for q in (0.8, 1.0, 1.2):  # the candidate bands of the estimate's tries
        cand = head & (depth >= 6.0) & (small >= 0.55 * q * m) & (small <= 1.6 * q * m)
        ball = bm._ball(8.0, sp)
        assert np.array_equal(erode_ball(cand, ball), ndi.binary_erosion(cand, structure=ball))
