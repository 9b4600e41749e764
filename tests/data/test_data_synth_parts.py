"""Building blocks of fedimg synth: k-means, warping, deformation, tumour geometry, anatomy."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from fedimg.data.anatomy import load_anatomy, render, kmeans_1d, TISSUE_CONTRAST
from fedimg.data.deform import identity_coordinates, random_coordinates, warp
from fedimg.data.tumour import TumourSpec, fractions, mass_effect, to_labels


def test_kmeans_finds_three_clusters(rng):
    v = np.concatenate([rng.normal(m, 3.0, 5000) for m in (50.0, 120.0, 300.0)])
    np.testing.assert_allclose(kmeans_1d(v, 3), [50.0, 120.0, 300.0], atol=1.0)


def test_warp_identity_and_matches_scipy(rng):
    v = rng.random((2, 7, 8, 9)).astype(np.float32)
    ident = identity_coordinates((7, 8, 9))
    np.testing.assert_allclose(warp(v, ident), v, atol=1e-5)
    shifted = ident + np.array([0.4, -0.3, 0.6], np.float32)[:, None, None, None]
    ref = np.stack([ndi.map_coordinates(v[i], shifted, order=1, mode="constant", cval=0.0) for i in range(2)])
    inner = (slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(warp(v, shifted)[inner], ref[inner], atol=1e-5)


def test_random_coordinates_without_randomness_is_identity(rng):
    c = random_coordinates(rng, (6, 7, 8), spacing=2.0, centre=(3, 3, 4), max_rotation_deg=0.0,
                           scale_range=(1.0, 1.0), max_shift_mm=0.0, displacement_mm=0.0)
    np.testing.assert_allclose(c, identity_coordinates((6, 7, 8)), atol=1e-5)
    d = random_coordinates(rng, (6, 7, 8), spacing=2.0, centre=(3, 3, 4))
    assert 0.05 < np.abs(d - identity_coordinates((6, 7, 8))).max() < 4.0


def _spec(enhancing=True, necrotic=0.5):
    return TumourSpec(centre=(15.0, 15.0, 15.0), radius_vox=6.0, necrotic_fraction=necrotic, oedema_factor=1.6,
                      enhancing=enhancing, axes=(1.0, 1.0, 1.0), waves=np.zeros((2, 4, 5), np.float32))


def test_tumour_compartments_are_nested():
    coords = identity_coordinates((30, 30, 30))
    frac = fractions(_spec(), coords, wm=np.ones((30, 30, 30), np.float32))
    assert (frac >= 0).all() and (frac.sum(0) <= 1 + 1e-6).all()
    label = to_labels(frac, np.ones((30, 30, 30), np.float32))
    assert label[15, 15, 15] == 1 and label[15, 15, 19] == 4 and label[15, 15, 23] == 2 and label[15, 15, 29] == 0
    # non-enhancing (low-grade) tumour: no label 4
    lg = to_labels(fractions(_spec(enhancing=False), coords, wm=np.ones((30, 30, 30), np.float32)),
                   np.ones((30, 30, 30), np.float32))
    assert 4 not in lg and 1 in lg and 2 in lg
    # outside the brain there is no tumour label
    brain = np.ones((30, 30, 30), np.float32)
    brain[:, :, 17:] = 0.0
    assert not to_labels(frac, brain)[:, :, 17:].any()


def test_mass_effect_pushes_outward_and_fades():
    coords = identity_coordinates((60, 60, 60))
    pushed = mass_effect(coords, _spec(), 0.3)
    np.testing.assert_allclose(pushed[:, 15, 15, 15], coords[:, 15, 15, 15])  # centre stays
    assert pushed[2, 15, 15, 20] < 19.0  # near the tumour we sample closer to the centre
    np.testing.assert_allclose(pushed[:, 59, 59, 59], coords[:, 59, 59, 59], atol=1e-3)  # far away: unchanged


@pytest.fixture(scope="module")
def anat():
    return load_anatomy(2.0)


def test_anatomy(anat):
    assert anat.intensity.shape == anat.brain.shape and all(n % 8 == 0 for n in anat.shape)
    vol_ml = (anat.brain >= 0.5).sum() * 8 / 1000
    assert 1200 < vol_ml < 2200, vol_ml  # an adult brain with CSF
    c = anat.centres
    assert c["csf"] < c["gm"] < c["wm"] and c["bone"] < c["muscle"] < c["fat"]
    # the brain lies in the upper part of the head, the face in front of it (RAS axes)
    head = anat.intensity > 15
    zb = np.nonzero(anat.brain >= 0.5)[2].mean()
    assert zb > np.nonzero(head)[2].mean()
    # voxel → world: twice the template's voxel size (1 x 0.977 x 0.977 mm)
    np.testing.assert_allclose(np.linalg.norm(anat.affine[:3, :3], axis=0), [2.0, 1.953, 1.953], atol=0.001)


def test_render_contrast_order(anat):
    c = anat.centres
    vals = np.array([c["csf"], c["gm"], c["wm"]], np.float32)
    out = render(vals, np.ones(3, np.float32), c)
    t1, t1ce, t2, flair = out
    assert t1[0] < t1[1] < t1[2]  # CSF < GM < WM on T1
    assert t2[0] > t2[1] > t2[2]  # CSF > GM > WM on T2
    assert flair[0] < flair[2] < flair[1]  # CSF suppressed on FLAIR
    np.testing.assert_allclose(out[:, 0], TISSUE_CONTRAST["csf"], atol=1e-3)
    outside = render(np.array([0.0, c["fat"]], np.float32), np.zeros(2, np.float32), c)
    np.testing.assert_allclose(outside[:, 0], 0.0)
    np.testing.assert_allclose(outside[:, 1], TISSUE_CONTRAST["fat"], atol=1e-3)
