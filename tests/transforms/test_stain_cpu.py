"""The numba CPU path of Macenko normalisation (transforms/_stain_cpu*.py) against the torch
path (``backend="torch"`` / ``compute="torch"``) and the per-tile numpy reference, on real
tiles, edge cases, and its selection / linear-algebra helpers against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from fedimg.transforms.stain_reference import (
    macenko_fit_numpy,
    macenko_normalize_numpy,
    macenko_stains_numpy,
)
from fedimg.transforms import _stain_cpu as cpu
from fedimg.transforms import _stain_cpu_math as cm
from fedimg.transforms.stain import (
    REFERENCE_HE,
    MacenkoNormalize,
    MacenkoNormalized,
    macenko_normalize,
    macenko_stains,
    od_to_rgb,
)


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def fitted(target_image):
    """Target stains and 99th-percentile concentrations (numpy reference fit, float32 tensors)."""
    stains, max_c = macenko_fit_numpy(np.ascontiguousarray(target_image[200:800, 200:800]))
    return torch.from_numpy(stains).float(), torch.from_numpy(max_c).float()


@pytest.fixture(scope="module")
def tiles(target_image) -> torch.Tensor:
    """Sixteen real 224 px tiles of the target image, (16, 3, 224, 224) uint8, contiguous."""
    t = _chw(target_image[:896, :896])
    return t.unfold(1, 224, 224).unfold(2, 224, 224).permute(1, 2, 0, 3, 4).reshape(-1, 3, 224, 224).contiguous()


def _grey_diff(a, b) -> np.ndarray:
    return np.abs(np.asarray(a).astype(np.int64) - np.asarray(b).astype(np.int64))


def test_numba_matches_torch_on_real_tiles(tiles, fitted):
    stains, max_c = fitted
    fast = MacenkoNormalize(stains=stains, max_conc=max_c)(tiles)  # auto: numba on the CPU
    slow = MacenkoNormalize(stains=stains, max_conc=max_c, compute="torch")(tiles)
    assert fast.dtype == torch.uint8 and fast.shape == tiles.shape
    d = _grey_diff(fast, slow)
    assert d.max() <= 1 and (d > 0).mean() < 1e-3, (d.max(), (d > 0).mean())
    # float output of the pure function
    f_fast = macenko_normalize(tiles, stains, max_c, backend="numba")
    f_slow = macenko_normalize(tiles, stains, max_c, backend="torch")
    assert f_fast.dtype == torch.float32 and f_fast.shape == tiles.shape
    torch.testing.assert_close(f_fast, f_slow, atol=0.05, rtol=0)
    # stain matrices (torch's float32 E[xx^T] - mm^T covariance is the looser one: ~1e-4)
    torch.testing.assert_close(macenko_stains(tiles, backend="numba"), macenko_stains(tiles, backend="torch"), atol=5e-4, rtol=0)


def test_numba_matches_numpy_reference(tiles, fitted):
    stains, max_c = fitted
    out = MacenkoNormalize(stains=stains, max_conc=max_c, compute="numba")(tiles)
    he = macenko_stains(tiles, backend="numba").numpy()
    for i in range(len(tiles)):
        hwc = tiles[i].permute(1, 2, 0).numpy()
        ref = macenko_normalize_numpy(hwc, stains.numpy(), max_c.numpy())
        d = _grey_diff(out[i].permute(1, 2, 0), ref)
        assert d.max() <= 1 and d.mean() < 0.01, (i, d.max(), d.mean())
        np.testing.assert_allclose(he[i], macenko_stains_numpy(hwc), atol=1e-5)


def test_channels_last_views_and_thread_counts_give_identical_output(tiles, fitted):
    import numba

    stains, max_c = fitted
    norm = MacenkoNormalize(stains=stains, max_conc=max_c, compute="numba")
    ref = norm(tiles)
    strided = tiles.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # NHWC memory, as tiles are cut
    assert not strided.is_contiguous()
    torch.testing.assert_close(norm(strided), ref, atol=0, rtol=0)
    before = numba.get_num_threads()
    try:
        for n in {1, min(2, numba.config.NUMBA_NUM_THREADS)}:
            numba.set_num_threads(n)
            torch.testing.assert_close(norm(tiles[:5]), ref[:5], atol=0, rtol=0)
    finally:
        numba.set_num_threads(before)


def test_types_shapes_and_dtypes_round_trip(tiles, fitted):
    stains, max_c = fitted
    fast = MacenkoNormalize(stains=stains, max_conc=max_c)
    slow = MacenkoNormalize(stains=stains, max_conc=max_c, compute="torch")
    x = tiles[:2]
    # numpy uint8 in, numpy uint8 out; a 3-D tile gives what the batch gives for it
    out_np = fast(x.numpy())
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.uint8 and out_np.shape == (2, 3, 224, 224)
    one = fast(x[1].numpy())
    assert one.shape == (3, 224, 224) and np.array_equal(one, out_np[1])
    assert torch.equal(fast(x[1:2]), torch.from_numpy(out_np[1:2]))  # batch of one
    # float inputs stay float (numpy float64, torch float32), close to the torch path
    for xf in (x.numpy().astype(np.float64), x.float()):
        got, want = fast(xf), slow(xf)
        assert type(got) is type(xf) and got.dtype == xf.dtype and got.shape == xf.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=0.05)
    # macenko_normalize: float32 tensor out for every input type, leading shape kept
    r = macenko_normalize(x[0].numpy(), stains, max_c)
    assert torch.is_tensor(r) and r.dtype == torch.float32 and r.shape == (3, 224, 224)
    # int16 input: read as float, output converted back like the torch path
    xi = x.to(torch.int16)
    got, want = fast(xi), slow(xi)
    assert got.dtype == torch.int16 and _grey_diff(got, want).max() <= 1
    # the dictionary twin routes through the same path
    d = MacenkoNormalized(keys="image", stains=stains, max_conc=max_c)({"image": x, "label": 1})
    assert torch.equal(d["image"], fast(x)) and d["label"] == 1


def test_white_and_tiny_tissue_tiles_use_the_fallback(fitted):
    stains, max_c = fitted
    white = torch.full((1, 3, 96, 96), 255, dtype=torch.uint8)
    tiny = white.clone()
    tiny[:, :, 10:15, 10:15] = torch.tensor([120, 60, 150], dtype=torch.uint8)[:, None, None]  # 25 px < 1 %
    small = white.clone()
    rng = np.random.default_rng(0)
    patch = rng.integers(40, 200, (3, 20, 20), dtype=np.uint8)  # 400 px > 1 %: own stains
    small[0, :, 30:50, 30:50] = torch.from_numpy(patch)
    x = torch.cat([white, tiny, small])
    he = macenko_stains(x, backend="numba")
    torch.testing.assert_close(he[:2], REFERENCE_HE.expand(2, 3, 2))
    assert not torch.allclose(he[2], REFERENCE_HE, atol=1e-2)
    torch.testing.assert_close(he, macenko_stains(x, backend="torch"), atol=5e-4, rtol=0)
    np.testing.assert_allclose(he[2].numpy(), macenko_stains_numpy(small[0].permute(1, 2, 0).numpy()), atol=1e-5)
    fast = MacenkoNormalize(stains=stains, max_conc=max_c)(x)
    slow = MacenkoNormalize(stains=stains, max_conc=max_c, compute="torch")(x)
    assert torch.equal(fast[0], white[0])  # white stays white
    assert _grey_diff(fast, slow).max() <= 1
    # a tile that is entirely tissue
    dark = torch.from_numpy(rng.integers(30, 180, (1, 3, 64, 64), dtype=np.uint8))
    assert _grey_diff(MacenkoNormalize(stains=stains, max_conc=max_c)(dark),
                      MacenkoNormalize(stains=stains, max_conc=max_c, compute="torch")(dark)).max() <= 1


def test_misleading_sample_falls_back_to_exact_selection(fitted):
    """Every 4th pixel (the threshold sample of a 64 x 64 tile) is dark with spread hues, the
    rest light with one hue: the sampled cuts miss all four tails (checked when written: 32
    candidates where 42 are needed) and the exact passes must redo them."""
    stains, max_c = fitted
    rng = np.random.default_rng(1)
    conc = np.empty((2, 64, 64))
    ratio = 0.5 + rng.normal(0, 0.01, (64, 64))
    ratio[:, ::4] = rng.uniform(0, 1, (64, 16))
    level = rng.uniform(0.9, 1.2, (64, 64))
    level[:, ::4] = rng.uniform(2.0, 2.5, (64, 16))
    conc[0], conc[1] = level * ratio, level * (1 - ratio)
    rgb = od_to_rgb(torch.einsum("ck,khw->chw", REFERENCE_HE, torch.from_numpy(conc).float())).round().to(torch.uint8)
    x = rgb[None]
    assert cpu._step(64 * 64) == 4
    torch.testing.assert_close(macenko_stains(x, backend="numba"), macenko_stains(x, backend="torch"), atol=5e-4, rtol=0)
    np.testing.assert_allclose(macenko_stains(x, backend="numba")[0].numpy(), macenko_stains_numpy(x[0].permute(1, 2, 0).numpy()),
                               atol=1e-5)
    fast = MacenkoNormalize(stains=stains, max_conc=max_c)(x)
    ref = macenko_normalize_numpy(x[0].permute(1, 2, 0).numpy(), stains.numpy(), max_c.numpy())
    assert _grey_diff(fast[0].permute(1, 2, 0), ref).max() <= 1


def test_nan_and_bad_input_are_rejected(tiles, fitted):
    stains, max_c = fitted
    x = tiles[:3].float()
    x[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"tile\(s\) \[1\] .* NaN"):
        macenko_normalize(x, stains, max_c)
    with pytest.raises(ValueError, match="NaN"):
        macenko_stains(x)
    # +-inf are clamped to [1, 255] as in the torch path (OD 5.5 at -inf magnifies torch's float32 error)
    x[1, 0, 5, 5] = float("inf")
    x[2, 1, 7, 7] = -float("inf")
    torch.testing.assert_close(macenko_normalize(x, stains, max_c), macenko_normalize(x, stains, max_c, backend="torch"),
                               atol=0.5, rtol=0)
    with pytest.raises(ValueError, match="backend"):
        macenko_normalize(x, stains, max_c, backend="cupy")
    with pytest.raises(ValueError, match="compute"):
        MacenkoNormalize(stains=stains, max_conc=max_c, compute="gpu")
    with pytest.raises(ValueError, match="shape"):
        macenko_normalize(np.zeros((2, 4, 8, 8), np.uint8), stains, max_c, backend="numba")
    with pytest.raises(ValueError, match="expected RGB"):  # auto: the torch path names the shape
        macenko_normalize(np.zeros((2, 4, 8, 8), np.uint8), stains, max_c)


def test_order_statistics_match_numpy_percentile():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 101, 5000):
        for ties in (False, True):
            a = rng.normal(size=n)
            if ties:
                a = np.round(a, 1)
            for q in (0.0, 0.01, 0.25, 0.5, 0.99, 1.0):
                lo, frac = cm._position(n, q)
                v0, v1 = cm._pair(a.copy(), n, lo)
                np.testing.assert_allclose(v0 + frac * (v1 - v0), np.percentile(a, 100 * q), rtol=1e-12, atol=1e-12)
    # candidates beyond a cut: found when they hold the tail, not otherwise
    a = rng.normal(size=1000)
    lo, _ = cm._position(1000, 0.99)
    top = np.sort(a)[-15:].copy()
    found, v0, v1 = cm._tail(top, 15, 1000, 0.99, True)
    assert found and (v0, v1) == tuple(np.sort(a)[[lo, lo + 1]])
    assert not cm._tail(np.sort(a)[-5:].copy(), 5, 1000, 0.99, True)[0]
    assert not cm._tail(np.sort(a)[:5].copy(), 5, 1000, 0.01, False)[0]


def test_pseudo_angle_is_monotone_and_inverts():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(20000, 2))
    xy[:8] = [[1, 0], [0, 1], [-1, 0], [0, -1], [1, 1], [-1, 1], [-1, -1], [1, -1]]
    ang = np.arctan2(xy[:, 1], xy[:, 0])
    ps = np.array([cm._pseudo(x, y) for x, y in xy])
    order = np.argsort(ang, kind="stable")
    assert np.all(np.diff(ps[order]) >= 0)
    np.testing.assert_allclose([cm._angle(p) for p in ps], ang, atol=1e-12)


def test_plane_and_pinv_match_lapack():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = rng.normal(size=(3, 3))
        cov = np.ascontiguousarray(m @ m.T)
        _, v = np.linalg.eigh(cov)
        p = cm._plane(cov)
        for k in range(2):  # eigenvectors up to sign
            assert min(np.abs(p[:, k] - v[:, k + 1]).max(), np.abs(p[:, k] + v[:, k + 1]).max()) < 1e-9
        s = rng.normal(size=(3, 2))
        np.testing.assert_allclose(cm._pinv32(s, cm.PINV_RCOND), np.linalg.pinv(s), atol=1e-10)
    rank1 = np.ascontiguousarray(np.array([[0.6, 1.2], [0.7, 1.4], [0.4, 0.8]]))
    np.testing.assert_allclose(cm._pinv32(rank1, cm.PINV_RCOND), np.linalg.pinv(rank1, rcond=cm.PINV_RCOND), atol=1e-12)
    np.testing.assert_array_equal(cm._pinv32(np.zeros((3, 2)), cm.PINV_RCOND), np.zeros((2, 3)))
