"""The torch-free resampling of the CPU deface path against the torch calls it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.deface.masks import _face_box, _warp_torch, warp_template_maps
from fedimg.deface.resample_np import block_mean, grid_sample, sample, warp, warp_maps, warp_support
from fedimg.deface.template import load_template

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _torch_grid_sample(vol, grid):
    out = F.grid_sample(torch.as_tensor(vol)[None, None], torch.as_tensor(grid)[None, :, :, None, :],
                        mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0, 0, :, :, 0].numpy()


def test_grid_sample_equals_torch_bit_for_bit():
    rng = np.random.default_rng(3)
    vol = rng.random((7, 9, 11), dtype=np.float32)
    grid = rng.uniform(-1.3, 1.3, (4, 5000, 3)).astype(np.float32)  # inside, partly and wholly outside
    np.testing.assert_array_equal(grid_sample(vol, grid), _torch_grid_sample(vol, grid))


def test_sample_and_warp_match_grid_sample():
    rng = np.random.default_rng(4)
    vol = rng.random((6, 8, 10), dtype=np.float32)
    vox = rng.uniform(-1.5, 11.0, (4000, 3))
    size = np.array(vol.shape, np.float64)
    grid = (vox * 2.0 / (size - 1) - 1.0)[:, ::-1].astype(np.float32)[None]
    np.testing.assert_allclose(sample(vol, vox), _torch_grid_sample(vol, grid)[0], atol=2e-6)
    m = np.eye(4)
    m[:3, :3] = [[0.9, 0.1, 0.0], [-0.1, 1.1, 0.05], [0.0, 0.0, 0.8]]
    m[:3, 3] = [0.3, -0.7, 1.2]
    got = warp(vol, m, (5, 6, 7), origin=(1, 0, 2))
    idx = np.stack(np.meshgrid(*[np.arange(n) + o for n, o in zip((5, 6, 7), (1, 0, 2))], indexing="ij"), -1)
    np.testing.assert_allclose(got, sample(vol, idx.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]).reshape(5, 6, 7), atol=2e-6)


@pytest.mark.parametrize("shape, step", [((10, 12, 14), (2, 2, 2)), ((9, 11, 13), (2, 3, 4)), ((5, 5, 5), (1, 2, 1))])
def test_block_mean_equals_avg_pool_ceil_mode(shape, step):
    img = np.random.default_rng(5).random(shape, dtype=np.float32) * 1000
    ref = F.avg_pool3d(torch.as_tensor(img)[None, None], kernel_size=step, stride=step, ceil_mode=True)[0, 0].numpy()
    np.testing.assert_allclose(block_mean(img, step), ref, rtol=1e-6)


def test_template_maps_on_the_cpu_match_the_torch_path():
    t = load_template()
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-90.0, -120.0, -100.0]
    pose = np.eye(4)
    pose[:3, :3] = [[0.98, -0.17, 0.0], [0.17, 0.98, 0.0], [0.0, 0.0, 1.02]]
    pose[:3, 3] = [3.0, -4.0, 5.0]
    shape = (92, 112, 100)
    face, brain = warp_template_maps(t, shape, aff, pose, device="cpu")
    box = _face_box(t, shape, np.linalg.inv(t.affine) @ pose @ aff)
    ref = _warp_torch(t, np.linalg.inv(t.affine) @ pose @ aff, box, torch.device("cpu"), 2_000_000)
    assert face[box].any() and not face[tuple(slice(0, s.start) for s in box)].any()
    # torch computes the sample positions in float32 (about 1e-5 voxel off); scipy in float64
    np.testing.assert_allclose(face[box], ref[0], atol=5e-5)
    np.testing.assert_allclose(brain[box], ref[1], atol=5e-5)
    assert ((face[box] > 0.5) != (ref[0] > 0.5)).sum() <= 2 and ((brain[box] > 0.01) != (ref[1] > 0.01)).sum() <= 2


def test_warp_support_equals_the_whole_warp():
    vol = np.zeros((20, 22, 24), np.float32)
    vol[6:12, 8:15, 5:9] = np.random.default_rng(6).random((6, 7, 4), dtype=np.float32)
    m = np.eye(4)
    m[:3, :3] = [[0.5, 0.05, 0.0], [-0.05, 0.5, 0.02], [0.0, 0.0, 0.45]]
    m[:3, 3] = [1.0, 2.0, -1.5]
    whole = warp(vol, m, (40, 44, 48))
    assert whole.any() and (whole == 0).mean() > 0.5
    part = warp_support(vol, m, (40, 44, 48))
    np.testing.assert_allclose(part, whole, atol=1e-6)  # the box's origin moves the float64 rounding only
    np.testing.assert_array_equal(part > 0.25, whole > 0.25)


def test_warp_maps_equals_warp():
    rng = np.random.default_rng(7)
    vols = [rng.random((9, 10, 11), dtype=np.float32), rng.random((9, 10, 11), dtype=np.float32)]
    m = np.eye(4)
    m[:3, :3] = [[1.2, 0.1, 0.0], [-0.1, 0.9, 0.2], [0.05, 0.0, 1.1]]
    m[:3, 3] = [-2.0, 1.0, -3.0]
    got = warp_maps(vols, m, (12, 13, 14), origin=(1, -2, 0), chunk=100)  # several chunks, points far outside too
    for g, v in zip(got, vols):
        np.testing.assert_allclose(g, warp(v, m, (12, 13, 14), origin=(1, -2, 0)), atol=1e-6)


def test_warp_maps_reads_only_the_box_it_reaches():
    """A small output box reads a small part of the volumes (copied, not the whole padded stack), and gives
    bit for bit what the same box of a larger grid gives, in the volume, at its edges and outside it."""
    rng = np.random.default_rng(8)
    vols = [rng.random((30, 31, 32), dtype=np.float32), rng.random((30, 31, 32), dtype=np.float32)]
    m = np.eye(4)
    m[:3, :3] = [[0.9, 0.1, 0.0], [-0.1, 1.1, 0.05], [0.0, 0.02, 1.0]]
    m[:3, 3] = [-4.0, 2.5, -1.0]
    whole = warp_maps(vols, m, (40, 40, 40), origin=(-2, -3, -1), chunk=700)
    for lo, hi in [((10, 12, 9), (18, 15, 22)), ((0, 0, 0), (5, 6, 7)), ((30, 31, 33), (40, 40, 40))]:
        shape = tuple(b - a for a, b in zip(lo, hi))
        part = warp_maps(vols, m, shape, origin=tuple(a + o for a, o in zip(lo, (-2, -3, -1))), chunk=50)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        for p, w in zip(part, whole):
            np.testing.assert_array_equal(p, w[box])
    assert any(w.any() and (w == 0).any() for w in whole)  # the grid reaches past the volumes' edges
