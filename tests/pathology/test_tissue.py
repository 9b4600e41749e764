"""Tissue detection: Otsu threshold, clean-up, and the real slide's white background excluded."""

from __future__ import annotations

import numpy as np
import torch

from fedimg.pathology.slide import open_slide
from fedimg.pathology.tissue import otsu_threshold, slide_tissue_mask, tissue_mask


def test_otsu_splits_two_modes():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.1, 0.02, 5000), rng.normal(0.6, 0.05, 3000)])
    t = float(otsu_threshold(torch.from_numpy(v)))
    assert 0.1 < t < 0.45  # in the gap: separates the two modes
    assert (v[:5000] < t).mean() > 0.99 and (v[5000:] > t).all()


def test_square_of_tissue_with_speckle_removed():
    rgb = np.full((64, 64, 3), 245, np.uint8)
    rgb[16:48, 16:48] = (150, 60, 140)  # pink/purple "tissue"
    rgb[2, 60] = (120, 40, 120)  # one-pixel speck of dust
    mask = tissue_mask(rgb, min_object_px=8)
    expected = np.zeros((64, 64), bool)
    expected[16:48, 16:48] = True
    np.testing.assert_array_equal(mask, expected)


def test_od_method_agrees_on_square():
    rgb = np.full((48, 48, 3), 250, np.uint8)
    rgb[8:40, 8:40] = (170, 90, 160)
    assert tissue_mask(rgb, method="od", min_object_px=8)[8:40, 8:40].all()
    assert not tissue_mask(rgb, method="od", min_object_px=8)[:6].any()


def test_real_slide_mask_excludes_white_background(slide_path):
    with open_slide(slide_path) as s:
        mask, thumb, ds = slide_tissue_mask(s, mask_mpp=8.0)
    assert mask.shape == thumb.shape[:2]
    assert ds > 10  # low resolution
    assert 0.15 < mask.mean() < 0.7  # the slide is part tissue, part glass
    white = (thumb > 215).all(-1)
    assert white.sum() > 1000
    assert mask[white].mean() < 0.05  # white glass is not tissue
    assert thumb[mask].mean() < thumb[~mask].mean() - 30  # tissue is darker than the background
