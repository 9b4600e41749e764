"""Per-case landmark intensity standardisation (fedimg.transforms.intensity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.transforms.intensity import (LANDMARKS, LandmarkStandardize, LandmarkStandardized, landmark_standardize,
                                         standard_scale)


def _head(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two channels of three 'tissues' plus noise inside a box; background 0."""
    rng = np.random.default_rng(seed)
    img = np.zeros((2, 24, 24, 24), np.float32)
    mask = np.zeros((24, 24, 24), bool)
    mask[3:21, 4:20, 2:22] = True
    tissue = rng.integers(0, 3, mask.sum())
    for c, levels in enumerate(([300.0, 500.0, 800.0], [900.0, 400.0, 600.0])):
        img[c][mask] = np.asarray(levels)[tissue] + rng.normal(0, 40, mask.sum())
    return img, mask


def test_standard_scale_is_the_normal_quantiles():
    s = standard_scale(LANDMARKS)
    assert s[5] == pytest.approx(0.0, abs=1e-12)  # the median
    assert s[0] == pytest.approx(-2.3263, abs=1e-4) and s[-1] == pytest.approx(2.3263, abs=1e-4)
    assert np.all(np.diff(s) > 0)


def test_landmarks_land_on_the_standard_scale():
    img, mask = _head()
    out = landmark_standardize(img, mask)
    for c in range(2):
        got = np.percentile(out[c][mask], LANDMARKS)
        np.testing.assert_allclose(got, standard_scale(), atol=1e-3)  # float32 output, interpolated percentiles


def test_scale_and_offset_change_nothing():
    img, mask = _head()
    ref = landmark_standardize(img, mask)
    for a, b in ((2.5, 0.0), (0.3, -100.0), (1.45 ** 2, 37.0)):
        np.testing.assert_allclose(landmark_standardize(a * img + b, mask), ref, atol=2e-5)


@pytest.mark.parametrize("gamma", [0.65, 1.4])
def test_a_monotone_remap_gives_the_same_output_within_tolerance(gamma):
    """A scanner's gamma plus scale and offset: the z-score moves by ~0.1-0.3, the landmark map much less."""
    img, mask = _head(1)
    raw = img / img.max()
    remapped = 3.0 * np.where(mask, raw, 0.0) ** gamma + 0.5
    ref, out = landmark_standardize(raw, mask), landmark_standardize(remapped, mask)
    diff = np.abs(out - ref)[:, mask]
    assert diff.mean() < 0.03 and np.percentile(diff, 99) < 0.15

    def z(x):
        v = x[:, mask]
        return (v - v.mean(1, keepdims=True)) / v.std(1, keepdims=True)

    assert np.abs(z(remapped) - z(raw)).mean() > 3 * diff.mean()  # the z-score is not invariant; this is


def test_foreground_only():
    img, mask = _head()
    out = landmark_standardize(img, mask)
    assert float(np.abs(out[:, ~mask]).max()) == 0.0
    noisy = img.copy()
    noisy[:, ~mask] = np.random.default_rng(3).normal(1e4, 10, (~mask).sum())  # background never counts
    np.testing.assert_array_equal(landmark_standardize(noisy, mask), out)


def test_output_range_is_clipped():
    img, mask = _head()
    img[0, 10, 10, 10] = 1e6  # one extreme outlier
    img[1, 10, 10, 11] = -1e6
    out = landmark_standardize(img, mask, clip=5.0)
    assert out.dtype == np.float32
    assert float(out[:, mask].max()) <= 5.0 and float(out[:, mask].min()) >= -5.0
    assert out[0, 10, 10, 10] == pytest.approx(5.0) and out[1, 10, 10, 11] == pytest.approx(-5.0)


def test_a_constant_image_maps_to_zero():
    img = np.full((3, 8, 8, 8), 7.0, np.float32)
    out = landmark_standardize(img)
    assert np.array_equal(out, np.zeros_like(out))
    assert np.array_equal(landmark_standardize(np.zeros_like(img), np.zeros((8, 8, 8), bool)), np.zeros_like(out))


def test_tied_landmarks_stay_monotone():
    """Half the foreground at one value: the tied landmarks merge; the map stays increasing."""
    rng = np.random.default_rng(0)
    img = np.concatenate([np.full(500, 10.0), rng.uniform(20, 30, 500)]).reshape(1, 10, 10, 10).astype(np.float32)
    out = landmark_standardize(img)[0].ravel()
    order = np.argsort(img.ravel(), kind="stable")
    assert np.all(np.diff(out[order]) >= -1e-6)
    assert np.all(np.isfinite(out))


def test_torch_matches_numpy_and_keeps_the_device():
    img, mask = _head()
    t = landmark_standardize(torch.from_numpy(img), torch.from_numpy(mask))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), landmark_standardize(img, mask), atol=1e-6)


def test_bad_input_is_named():
    img, mask = _head()
    with pytest.raises(ValueError, match="strictly increasing"):
        landmark_standardize(img, mask, percentiles=(50, 10))
    with pytest.raises(ValueError, match="inside \\(0, 100\\)"):
        landmark_standardize(img, mask, percentiles=(0, 50, 100))
    with pytest.raises(ValueError, match="does not match"):
        landmark_standardize(img, mask[:-1])
    bad = img.copy()
    bad[1, 5, 5, 5] = np.nan
    with pytest.raises(ValueError, match="channel 1 holds NaN"):
        landmark_standardize(bad, mask)


def test_array_and_dictionary_transforms_never_touch_labels():
    img, mask = _head()
    label = (img[0] > 600).astype(np.uint8)
    out = LandmarkStandardize()(img)  # foreground: non-zero voxels
    np.testing.assert_allclose(out, landmark_standardize(img, mask), atol=1e-6)
    d = LandmarkStandardized(keys="image")({"image": torch.from_numpy(img), "label": label})
    assert d["label"] is label
    np.testing.assert_allclose(d["image"].numpy(), out, atol=1e-6)


def test_a_metatensor_keeps_its_affine_and_meta():
    """MONAI pipelines carry the affine on the MetaTensor: the transform keeps it (as NormalizeIntensity does)."""
    from monai.data import MetaTensor, get_track_meta, set_track_meta

    img = np.random.default_rng(3).gamma(4.0, 50.0, size=(2, 8, 8, 8)).astype(np.float32)
    aff = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64))
    prev = get_track_meta()
    set_track_meta(True)  # fedimg's training cache turns MONAI's metadata off process-wide
    try:
        mt = MetaTensor(torch.from_numpy(img), affine=aff, meta={"filename_or_obj": "t1.nii.gz"})
        out = LandmarkStandardized(keys="image")({"image": mt})["image"]
    finally:
        set_track_meta(prev)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, aff) and out.meta["filename_or_obj"] == "t1.nii.gz"
    assert out.dtype == torch.float32 and np.allclose(out.numpy(), LandmarkStandardize()(img), atol=1e-6)
    assert isinstance(LandmarkStandardize()(img), np.ndarray)  # numpy stays numpy
