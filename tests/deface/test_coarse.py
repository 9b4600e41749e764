"""Coarse head-mask alignment: masks of real heads, recovery of large tilts under contrast changes and crops."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface.coarse import _angle, block_mean, coarse_candidates, head_mask, padding_cells, rotation_grid, rotation_matrix
from fedimg.deface.register import RegistrationConfig, register
from fedimg.deface.template import load_template, template_head_mask


def test_head_mask_of_a_real_head_is_filled_and_plausible(head_2mm):
    img = nib.load(str(head_2mm))
    mask, aff = head_mask(np.asarray(img.dataobj, dtype=np.float32), img.affine, step_mm=4.0)
    ml = mask.sum() * abs(np.linalg.det(aff[:3, :3])) / 1000
    assert 2500 < ml < 6000  # a head (with some neck), not the background, not only the brain
    centre = tuple(n // 2 for n in mask.shape)
    assert mask[centre]  # the dark ventricles and skull inside are filled
    assert not mask[0, 0, 0]


def test_rotation_grid_has_the_45_degree_corners_and_90_degree_turns():
    rots = rotation_grid()
    assert len(rots) == 5**3 + 6
    assert any(np.allclose(r, rotation_matrix(45, -45, 45)) for r in rots)
    assert any(np.allclose(r, rotation_matrix(0, 90, 0)) for r in rots)
    for r in rots[:10]:
        assert np.allclose(r @ r.T, np.eye(3)) and math.isclose(np.linalg.det(r), 1.0)


def _t2_like(t: np.ndarray) -> np.ndarray:
    """Invert the brain/CSF contrast inside the head (T1 -> T2-like); background stays dark."""
    x = t / np.percentile(t, 99)
    return np.interp(x, [0, 0.08, 0.25, 0.5, 0.7, 1.0, 2.0], [0, 0.05, 1.0, 0.6, 0.42, 0.75, 0.8]).astype(np.float32)


@pytest.mark.parametrize("angles", [(31.0, -27.0, 38.0), (-42.0, 14.0, -33.0)])
def test_coarse_then_mi_recovers_a_large_tilt_of_a_cropped_t2_like_head(angles):
    """The template, T2-like, chin cut 40 mm, tilted on every axis (not a grid rotation)."""
    t = load_template()
    full = _t2_like(t.intensity)[:, :, 40:]  # the bottom 40 slices (about 39 mm) cut off
    data = full.reshape(88, 2, 128, 2, 108, 2).mean((1, 3, 5))  # 2 mm voxels
    shift = np.eye(4)
    shift[:3, 3] = [0.5, 0.5, 40.5]
    shift = shift @ np.diag([2.0, 2.0, 2.0, 1.0])
    tilt = np.eye(4)
    tilt[:3, :3] = rotation_matrix(*angles)
    tilt[:3, 3] = [5.0, -8.0, 6.0]
    subject_affine = tilt @ t.affine @ shift
    truth = np.linalg.inv(tilt)  # subject world -> template world
    tm, ta = template_head_mask(4.0)
    cands = coarse_candidates(data, subject_affine, tm, ta, keep=4)
    assert _angle(cands[0].matrix, truth) < 15.0 and cands[0].dice > 0.8
    reg = register(data, subject_affine, t.intensity, t.affine, config=RegistrationConfig.preset("fast"),
                   initial=[c.matrix for c in cands])
    head = np.argwhere(data[::3, ::3, ::3] > 0.1) * 3.0
    pts = (np.c_[head, np.ones(len(head))] @ subject_affine.T)[:, :3]
    d = pts @ (reg.subject_to_template[:3, :3] - truth[:3, :3]).T + (reg.subject_to_template[:3, 3] - truth[:3, 3])
    assert float(np.sqrt((d**2).sum(1).mean())) < 2.0
    assert len(reg.candidates) >= 2


def test_head_mask_leaves_out_padding_darker_than_the_acquired_air():
    """Corners filled with a value below the air (a tilt correction's fill) must not move the background
    level; a padding that is the background itself (a masked image) leaves the mask as it was."""
    rng = np.random.default_rng(0)
    g = np.indices((40, 40, 40)) - 19.5
    head = np.where((g**2).sum(0) < 15**2, 300.0, 0.0) + np.abs(rng.normal(0, 20, (40, 40, 40)))
    head[(g**2).sum(0) < 10**2] = 60.0  # a dark core, as brain in some contrasts
    ref, _ = head_mask(head.astype(np.float32), np.eye(4), step_mm=2.0)
    padded = head.copy()
    padded[g[0] + g[1] > 22] = -60.0  # an oblique corner outside the acquired field of view
    got, _ = head_mask(padded.astype(np.float32), np.eye(4), step_mm=2.0)
    inside = ~((g[0] + g[1] > 18)[::2, ::2, ::2])  # cells clear of the corner
    assert (got[inside] == ref[inside]).all()
    masked = head.copy()
    masked[(g**2).sum(0) >= 16**2] = 0.0  # the scanner's mask: the padding is the background
    m0, _ = head_mask(masked.astype(np.float32), np.eye(4), step_mm=2.0)
    assert padding_cells(block_mean(masked, np.eye(4), 2.0)[0]) is not None and m0.sum() > 0
