"""Stain normalisation: torch vs numpy reference, perturbed tiles move back to the target,
idempotence on the target, array/dict transforms, augmentation determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.transforms.stain_reference import macenko_fit_numpy, macenko_normalize_numpy
from fedimg.transforms.stain import (
    MacenkoNormalize,
    MacenkoNormalized,
    RandStainAugment,
    RandStainAugmentd,
    ReinhardNormalize,
    _quantile,
    fit_macenko,
    macenko_normalize,
    macenko_stains,
    stain_augment,
)


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def target(target_image) -> np.ndarray:
    """A 600 x 600 crop of the real target tile (keeps the tests fast)."""
    return np.ascontiguousarray(target_image[200:800, 200:800])


@pytest.fixture(scope="module")
def tiles(target_image) -> torch.Tensor:
    """Sixteen real 128 px tiles cut from the target image, (16, 3, 128, 128) uint8."""
    t = _chw(target_image[:512, :512])
    return t.unfold(1, 128, 128).unfold(2, 128, 128).permute(1, 2, 0, 3, 4).reshape(-1, 3, 128, 128).contiguous()


def _perturb(x: torch.Tensor, stains: torch.Tensor) -> torch.Tensor:
    """A different 'site': scaled concentrations and rotated stain vectors."""
    shift = torch.tensor([[0.08, -0.10], [-0.10, 0.06], [0.10, 0.05]])
    out = stain_augment(x, torch.tensor([1.35, 0.7]), torch.tensor([0.05, -0.05]), stains=stains, shift=shift)
    return out.round().to(torch.uint8)


def test_quantile_matches_numpy():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(3, 1000)))
    valid = torch.from_numpy(rng.random((3, 1000)) < 0.6)
    for q in (0.01, 0.5, 0.99):
        got = _quantile(x, q, valid).numpy()
        ref = [np.percentile(x[i][valid[i]].numpy(), 100 * q) for i in range(3)]
        # float64 order statistics and interpolation on both sides: a few u64 apart
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)


def test_batched_torch_matches_numpy_reference(tiles, target):
    stains_np, max_np = macenko_fit_numpy(target)
    stains, max_c = fit_macenko(_chw(target))
    # Bounds that hold on any CPU: the stains are float64 maths cast to float32 (<= 6e-8
    # apart); the 99th percentile of float32 3-term concentrations moves by at most their
    # error, ~(3 + 8 kappa) u ~ 1e-5 relative (u = 2**-24): 2e-3 leaves a margin of ~100x.
    np.testing.assert_allclose(stains.numpy(), stains_np, atol=2e-3)
    np.testing.assert_allclose(max_c.numpy(), max_np, rtol=2e-3)
    out = MacenkoNormalize(target.transpose(2, 0, 1))(tiles[:3])
    for i in range(3):
        ref = macenko_normalize_numpy(tiles[i].permute(1, 2, 0).numpy(), stains_np, max_np)
        diff = np.abs(out[i].permute(1, 2, 0).numpy().astype(int) - ref.astype(int))
        # the float32-rounded fit (above) shifts every output by ~1e-4 grey levels: these
        # bounds (a rounding apart on average, three at most) are far from any CPU's numbers
        assert diff.mean() < 0.5 and diff.max() <= 3
    # a batch gives the same result as one tile at a time
    # (the same per-tile arithmetic either way: at most one rounding apart)
    one = torch.stack([MacenkoNormalize(stains=stains, max_conc=max_c)(t) for t in tiles[:3]])
    torch.testing.assert_close(one, MacenkoNormalize(stains=stains, max_conc=max_c)(tiles[:3]), atol=1, rtol=0)


def test_macenko_moves_perturbed_tiles_back_to_target(tiles, target):
    stains, max_c = fit_macenko(_chw(target))
    perturbed = _perturb(tiles, stains)
    restored = macenko_normalize(perturbed, stains, max_c)
    reference = macenko_normalize(tiles, stains, max_c)  # the unperturbed tiles, normalised

    def mad(a, b):
        return (a.float() - b.float()).abs().mean().item()

    before, after = mad(perturbed, tiles), mad(restored, reference)
    print(f"tile MAD: perturbed {before:.2f} -> normalised {after:.2f}")  # measured: 14.0 -> 4.0
    assert before > 10 and after < 0.4 * before
    # the estimated stain vectors of the restored tiles are the target's
    cos_before = (macenko_stains(perturbed) * stains).sum(1).min().item()
    cos_after = (macenko_stains(restored.round().to(torch.uint8)) * stains).sum(1).min().item()
    assert cos_after > cos_before and cos_after > 0.99, (cos_before, cos_after)
    # Reinhard is also invariant to the perturbation
    rein = ReinhardNormalize(target.transpose(2, 0, 1))
    assert mad(rein(perturbed), rein(tiles)) < 0.5 * before


def test_idempotent_on_target(target):
    chw = target.transpose(2, 0, 1)
    norm = MacenkoNormalize(chw)
    once = norm(chw)
    assert isinstance(once, np.ndarray) and once.dtype == np.uint8 and once.shape == chw.shape
    assert np.abs(once.astype(int) - chw).mean() < 2.5  # only the 3rd OD component is lost
    twice = norm(once)
    assert np.abs(twice.astype(int) - once).mean() < 0.5
    rein = ReinhardNormalize(chw)
    assert np.abs(rein(chw).astype(int) - chw).mean() < 0.5


def test_dict_transforms_touch_only_their_keys(tiles, target):
    data = {"image": tiles[:2].clone(), "label": torch.tensor([0, 1])}
    out = MacenkoNormalized(keys="image", target=target.transpose(2, 0, 1))(data)
    assert out["label"] is data["label"]
    assert out["image"].dtype == torch.uint8 and not torch.equal(out["image"], tiles[:2])
    torch.testing.assert_close(data["image"], tiles[:2])  # input dict untouched
    aug = RandStainAugmentd(keys="image", sigma1=0.3, sigma2=0.2).set_random_state(7)
    a = aug({"image": tiles[:4]})["image"]
    b = RandStainAugmentd(keys="image", sigma1=0.3, sigma2=0.2).set_random_state(7)({"image": tiles[:4]})["image"]
    torch.testing.assert_close(a, b)
    assert (a.float() - tiles[:4].float()).abs().mean() > 1


def test_augmentation_prob_zero_is_identity(tiles):
    aug = RandStainAugment(prob=0.0)
    x = tiles[:2]
    assert aug(x) is x
