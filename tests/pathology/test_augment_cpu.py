"""The CPU fused input pipeline (gather + flips/rotation + stain perturbation + scaling in one
numba pass) against the torch path it replaces, on the same random draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.pathology._augment_cpu import OD_LUT, augment_to_input
from fedimg.pathology.augment import draw_augment, to_input
from fedimg.pathology.config import TileTrainConfig
from fedimg.pathology.models import build_tile_model
from fedimg.pathology.tiledata import TileSiteData
from fedimg.tasks.tiles_train import TileTrainer
from fedimg.transforms.stain import REFERENCE_HE, rgb_to_od


@pytest.fixture(scope="module")
def real_tiles(target_image) -> torch.Tensor:
    """Twelve real 96 px H&E tiles (N, 3, 96, 96) uint8."""
    t = torch.from_numpy(np.ascontiguousarray(target_image[:384, :288])).permute(2, 0, 1)
    return t.unfold(1, 96, 96).unfold(2, 96, 96).permute(1, 2, 0, 3, 4).reshape(-1, 3, 96, 96).contiguous()


def _replay(tr: TileTrainer, state: torch.Tensor) -> torch.Generator:
    """A generator in the trainer generator's ``state`` (the draws both paths consumed)."""
    g = torch.Generator()
    g.set_state(state)
    return g


def _trainer(x: torch.Tensor, **kw) -> TileTrainer:
    y = torch.arange(len(x)) % 2
    cfg = TileTrainConfig(model="resnet10", width=0.25, batch_size=6, epochs=1, val_fraction=0.0, amp="fp32", **kw)
    data = TileSiteData(x_train=x, y_train=y, x_val=x[:0], y_val=y[:0], device=torch.device("cpu"), fingerprint="t", classes=["0", "1"])
    return TileTrainer(build_tile_model(cfg), data, cfg)


U32 = 2.0**-24  # float32 unit roundoff


def _exact_and_bound(geo: np.ndarray, alpha, beta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 stain-augmented grey values ``v`` of uint8 tiles ``geo`` (B, 3, S, S), a per-pixel
    bound on how far either float32 path lies from ``v`` before rounding, and the distance of
    each concentration to the ``c > 0.05`` branch (both paths must take the same branch).

    Each path computes ``255 exp(-S (alpha c + beta [c > 0.05]))`` with ``c = P od`` in
    float32, in its own order (u = 2**-24): ``od`` off by ``u (1 + 2 od)`` (table or log),
    ``P`` by ``8 kappa(S) u`` (float32 SVD pinv, or a float32 copy of the float64 one),
    ``c`` (3-term dot) by ``(3u + e_P) sum|P| od + u sum|P| (1 + 2 od)``, ``c'`` by ``alpha dc + 2u |c'|``,
    ``z = S c'`` (2-term dot) by ``sum|S| dc' + 2u sum|S c'|``; the output's relative error
    is then ``dz + 3u`` (exp, the product by 255, the cast). These are bounds for any
    summation order, so they hold on every CPU.
    """
    S = REFERENCE_HE.double().numpy()
    P = np.linalg.pinv(S)
    od = -np.log(np.clip(geo.reshape(geo.shape[0], 3, -1).astype(np.float64), 1, 255) / 255.0)
    a, b = np.asarray(alpha, np.float64)[:, :, None], np.asarray(beta, np.float64)[:, :, None]
    c = np.einsum("kj,bjn->bkn", P, od)
    c2 = a * c + b * (c > 0.05)
    v = np.clip(255.0 * np.exp(-np.einsum("ck,bkn->bcn", S, c2)), 0, 255)
    e_p = 8.0 * np.linalg.cond(S) * U32
    dc = (3 * U32 + e_p) * np.einsum("kj,bjn->bkn", np.abs(P), od) + U32 * np.einsum("kj,bjn->bkn", np.abs(P), 1 + 2 * od)
    dc2 = np.abs(a) * dc + 2 * U32 * np.abs(c2)
    dz = np.einsum("ck,bkn->bcn", np.abs(S), dc2) + 2 * U32 * np.einsum("ck,bkn->bcn", np.abs(S), np.abs(c2))
    return v.reshape(geo.shape), (v * (dz + 3 * U32)).reshape(geo.shape), (np.abs(c - 0.05) - dc).min()


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
        # both round to grey levels (a step is 1/64 of the input): a pixel may differ by one
        # step only where the exact value lies within both paths' float32 error of a .5
        # (derived in _exact_and_bound, no CPU's numbers), and their share bounds the flips
        flags, alpha, beta = draw_augment(_replay(tr, state), 8, sigma1=tr.config.stain_sigma1, sigma2=tr.config.stain_sigma2)
        geo = augment_to_input(real_tiles, idx, flags, alpha, beta, REFERENCE_HE, stain=False) * 64 + 127.5
        exact, err, branch_margin = _exact_and_bound(geo.round().to(torch.uint8).numpy(), alpha, beta)
        assert branch_margin > 0  # no concentration within float error of the 0.05 switch
        assert float(diff.max()) <= 1 / 64 + 1e-5
        flips = (diff > 1e-5).numpy()
        near = np.abs(exact - np.floor(exact) - 0.5) <= err
        assert not (flips & ~near).any(), int((flips & ~near).sum())
        assert flips.mean() <= near.mean(), (flips.mean(), near.mean())


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
