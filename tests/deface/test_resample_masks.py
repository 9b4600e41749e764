"""Thresholded warps of binary maps (:mod:`fedimg.deface.resample_masks`): the voxels of the thresholded float warp.

No tolerance: every comparison is voxel for voxel against ``warp_maps(...) > t`` / ``warp_support(...) > t``, on
random binary volumes under random affines (positions outside the volume, cells cut by its edge, thresholds at
0, 0.01, 0.5 and 0.99), and on the real template's face and brain maps warped onto the real 1 mm heads' grids
with their own registrations (the defacer's and QC's calls).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface.masks import removal_mask, warp_template_maps, warp_template_masks
from fedimg.deface.resample_masks import ALL_ONE, ALL_ZERO, cube_codes, warp_above, warp_support_above
from fedimg.deface.resample_np import warp_maps, warp_support
from fedimg.deface.template import load_template
from fedimg.imageio.volume import to_canonical

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"


def _blobs(rng, shape) -> np.ndarray:
    vol = np.zeros(shape, np.float32)
    for _ in range(4):
        lo = rng.integers(0, np.array(shape) - 2)
        hi = lo + rng.integers(2, np.array(shape) // 2 + 3)
        vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1.0
    vol[rng.random(shape) < 0.03] = 1.0  # speckle: single voxels, mixed cells everywhere
    return vol


def _affine(rng) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.eye(3) * rng.uniform(0.5, 1.6, 3) + rng.normal(0, 0.25, (3, 3))
    m[:3, 3] = rng.uniform(-4, 4, 3)
    return m


def test_cube_codes_match_the_eight_corners():
    rng = np.random.default_rng(0)
    vol = _blobs(rng, (9, 11, 7))
    codes = cube_codes(vol)
    padded = np.pad(vol, 2)
    for p in np.ndindex(codes.shape):
        corners = padded[p[0] : p[0] + 2, p[1] : p[1] + 2, p[2] : p[2] + 2]
        want = ALL_ONE if corners.min() == 1 else ALL_ZERO if corners.max() == 0 else 0
        assert codes[p] == want, p
    assert cube_codes(vol) is codes  # cached
    assert cube_codes(np.full((3, 3, 3), 0.5, np.float32)) is None  # not binary


@pytest.mark.parametrize("seed", range(12))
def test_warp_above_equals_the_thresholded_warp(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(5, 16, 3))
    vols = [_blobs(rng, shape), _blobs(rng, shape)]
    m = _affine(rng)
    out_shape = tuple(int(n) for n in rng.integers(4, 20, 3))
    origin = tuple(int(o) for o in rng.integers(-6, 6, 3))
    ref = warp_maps(vols, m, out_shape, origin=origin, chunk=97)
    for t in ((0.5, 0.01), (0.0, 0.99), (0.3, 0.5)):
        got = warp_above(vols, t, m, out_shape, origin=origin, chunk=97)
        for r, g, th in zip(ref, got, t):
            assert g.dtype == bool and np.array_equal(g, r > th)


def test_warp_above_falls_back_outside_its_range():
    rng = np.random.default_rng(3)
    vol = _blobs(rng, (8, 8, 8))
    grey = vol * 0.7  # not binary: warped in full
    m = _affine(rng)
    for v, t in ((grey, 0.5), (vol, -0.1), (vol, 0.995)):
        assert np.array_equal(warp_above([v], [t], m, (9, 9, 9))[0], warp_maps([v], m, (9, 9, 9))[0] > t)


@pytest.mark.parametrize("seed", range(4))
def test_warp_support_above_equals_the_thresholded_support_warp(seed):
    rng = np.random.default_rng(100 + seed)
    vol = np.zeros((20, 22, 18), np.float32)
    vol[5:14, 6:15, 4:12] = _blobs(rng, (9, 9, 8))
    m = _affine(rng)
    assert np.array_equal(warp_support_above(vol, m, (24, 20, 26), 0.5), warp_support(vol, m, (24, 20, 26)) > 0.5)


@pytest.mark.parametrize("name", ["ds000031_sub-01_ses-006_run-001_T1w.nii.gz", "pycortex_S1_T1w_2mm.nii.gz"])
def test_template_masks_equal_the_thresholded_maps_on_real_heads(name):
    """The defacer's warp (face > 0.5, brain > 0.01) on the real heads' canonical grids, with their registrations."""
    img = nib.load(str(MRI / name))
    key = name.replace("_2mm", "")
    pose = np.array(json.loads((MRI / "registrations.json").read_text())["subject_to_template"][key])
    can, aff = to_canonical(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    template = load_template()
    for shift in (0.0, 7.3):  # the registration, and one moved 7.3 mm along A-P
        moved = pose.copy()
        moved[1, 3] += shift
        face, brain = warp_template_maps(template, can.shape, aff, moved)
        face_mask, brain_mask = warp_template_masks(template, can.shape, aff, moved)
        assert np.array_equal(face_mask, face > 0.5) and np.array_equal(brain_mask, brain > 0.01)
        assert face_mask.any() and brain_mask.any()
        protect = np.zeros(can.shape, bool)
        protect[::7, ::5, ::3] = True
        for user in (None, protect):
            want = removal_mask(face, brain, user)
            got = removal_mask(face_mask, brain_mask, user)
            assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_a_gpu_device_thresholds_the_float_warp(monkeypatch):
    """On a GPU ``device`` the float maps come from ``warp_template_maps`` (torch) and are thresholded as before."""
    import fedimg.deface.masks as masks

    rng = np.random.default_rng(5)
    face, brain = rng.random((6, 7, 8)).astype(np.float32), rng.random((6, 7, 8)).astype(np.float32) * 0.02
    seen = []

    def fake(template, shape, affine, pose, *, device=None, chunk=2_000_000):
        seen.append(device)
        return face, brain

    monkeypatch.setattr(masks, "warp_template_maps", fake)
    got = masks.warp_template_masks(None, (6, 7, 8), np.eye(4), np.eye(4), device="cuda:0")
    assert seen == ["cuda:0"] and np.array_equal(got[0], face > 0.5) and np.array_equal(got[1], brain > 0.01)
