"""The CPU fused input pipeline (gather + flips/rotation + stain perturbation + scaling in one
numba pass) against the torch path it replaces, on the same random draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.pathology._augment_cpu import OD_LUT, augment_to_input
from fedimg.pathology.train import TileSiteData, TileTrainConfig, TileTrainer, build_tile_model, to_input
from fedimg.transforms.stain import REFERENCE_HE, rgb_to_od


@pytest.fixture(scope="module")
def real_tiles(target_image) -> torch.Tensor:
    """Twelve real 96 px H&E tiles (N, 3, 96, 96) uint8."""
    t = torch.from_numpy(np.ascontiguousarray(target_image[:384, :288])).permute(2, 0, 1)
    return t.unfold(1, 96, 96).unfold(2, 96, 96).permute(1, 2, 0, 3, 4).reshape(-1, 3, 96, 96).contiguous()


def _trainer(x: torch.Tensor, **kw) -> TileTrainer:
    y = torch.arange(len(x)) % 2
    cfg = TileTrainConfig(model="resnet10", width=0.25, batch_size=6, epochs=1, val_fraction=0.0, amp="fp32", **kw)
    data = TileSiteData(x_train=x, y_train=y, x_val=x[:0], y_val=y[:0], device=torch.device("cpu"), fingerprint="t", classes=["0", "1"])
    return TileTrainer(build_tile_model(cfg), data, cfg)


def test_lut_is_the_od_of_every_byte():
    np.testing.assert_allclose(OD_LUT, rgb_to_od(torch.arange(256)).numpy(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("channels_last", ["on", "off"])
def test_fused_cpu_input_matches_torch_augment_then_scale(real_tiles, channels_last):
    tr = _trainer(real_tiles, channels_last=channels_last)
    idx = torch.tensor([3, 0, 7, 7, 11, 5, 2, 9])
    for _ in range(3):  # several draws: every flip/transpose combination shows up
        state = tr.generator.get_state()
        fast = tr.batch_input(idx)
        after = tr.generator.get_state()
        tr.generator.set_state(state)
        ref = to_input(tr.augment(real_tiles[idx]), tr.channels_last)
        assert torch.equal(tr.generator.get_state(), after)  # same draws consumed
        assert fast.shape == ref.shape == (8, 3, 96, 96) and fast.dtype == torch.float32
        assert fast.is_contiguous(memory_format=torch.channels_last) == (channels_last == "on")
        diff = (fast - ref).abs()
        # both round to grey levels; float differences in the stain maths flip a rare pixel by one level
        assert float(diff.max()) <= 1 / 64 + 1e-5
        assert float((diff > 1e-5).float().mean()) < 0.002


def test_flags_are_flip_width_flip_height_transpose_in_order(real_tiles):
    idx = torch.tensor([1, 1, 1, 1])
    flags = torch.tensor([[False, False, False], [True, False, False], [False, True, False], [True, True, True]])
    ones, zeros = torch.ones(4, 2), torch.zeros(4, 2)
    out = augment_to_input(real_tiles, idx, flags, ones, zeros, REFERENCE_HE, stain=False)
    src = to_input(real_tiles[1:2], False)[0]
    torch.testing.assert_close(out[0], src)
    torch.testing.assert_close(out[1], src.flip(-1))
    torch.testing.assert_close(out[2], src.flip(-2))
    torch.testing.assert_close(out[3], src.flip(-1).flip(-2).transpose(-1, -2))


def test_rejects_non_square_or_non_uint8_tiles():
    flags, a, b = torch.zeros(1, 3, dtype=torch.bool), torch.ones(1, 2), torch.zeros(1, 2)
    with pytest.raises(ValueError, match="square"):
        augment_to_input(torch.zeros(2, 3, 8, 6, dtype=torch.uint8), torch.tensor([0]), flags, a, b, REFERENCE_HE)
    with pytest.raises(ValueError, match="uint8"):
        augment_to_input(torch.zeros(2, 3, 8, 8), torch.tensor([0]), flags, a, b, REFERENCE_HE)
