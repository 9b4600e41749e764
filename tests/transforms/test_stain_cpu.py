"""The numba CPU path of Macenko normalisation (transforms/_stain_cpu*.py) against the torch
path (``backend="torch"`` / ``compute="torch"``) and the per-tile numpy reference, on real
tiles, edge cases, and its selection / linear-algebra helpers against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

import _stain_parity as sp  # noqa: E402  (pytest puts tests/transforms on sys.path)

from fedimg.transforms.stain_reference import (
    macenko_fit_numpy,
    macenko_normalize_numpy,
    macenko_stains_numpy,
)
from fedimg.transforms import _stain_cpu as cpu
from fedimg.transforms import _stain_cpu_kernels as ck
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


def _assert_stains_within_bound(he_numba, he_torch, x) -> None:
    """Per-tile stain matrices of both paths (float32 tensors) within the derived bound of
    the torch path's float32 covariance (:func:`sp.torch_stain_error`) plus the float32
    cast of the numba path's float64 matrix (``u``, entries are at most 1)."""
    od = sp.od64(x)
    for b in range(len(od)):
        err = np.abs(he_numba[b].double().numpy() - he_torch[b].double().numpy())
        bound = sp.torch_stain_error(od[b]) + sp.U32
        assert (err <= bound).all(), (b, err.max(), bound.min())


def _parity_tolerance(x, stains, max_c, *, beta=0.15, alpha=1.0):
    """Per-pixel bound ``(B, 3, H, W)`` on ``|numba float output - torch float output|`` for an
    RGB batch with integer values (see ``_stain_parity``), and the per-tile stain matrices of
    both paths. The numba path is float64 inside: its float32 output is off its own maths by
    half an ulp (``u * out``); the torch path by :func:`sp.torch_output_error`; the two maths
    differ by what the two stain matrices give (computed exactly here, in float64)."""
    xs = np.asarray(x)
    he_numba = cpu.stains(np.ascontiguousarray(xs.astype(np.float32) if xs.dtype != np.uint8 else xs), beta=beta, alpha=alpha,
                          fallback=stains.double().numpy())
    he_torch = macenko_stains(torch.as_tensor(xs), beta=beta, alpha=alpha, fallback=stains, backend="torch").double().numpy()
    od = sp.od64(xs)
    tol = np.empty(od.shape)
    for b in range(len(od)):
        ref_n = sp.normalize_given_stains(he_numba[b], od[b], stains.numpy(), max_c.numpy())[0]
        ref_t = sp.normalize_given_stains(he_torch[b], od[b], stains.numpy(), max_c.numpy())[0]
        tol[b] = (np.abs(ref_n - ref_t) + sp.U32 * ref_n + 1e-9
                  + sp.torch_output_error(he_torch[b], od[b], stains.numpy(), max_c.numpy()))
    return tol.reshape(xs.shape), he_numba, he_torch


def test_tissue_mask_is_exact_in_float32():
    """Both paths keep the pixels with OD > beta in every channel; for integer RGB the OD
    values ``-ln(v / 255)`` lie >= 3e-3 from beta = 0.15, a million float32 roundings away,
    so the float32 and float64 masks are the same and the bounds below can assume it."""
    assert np.abs(cpu.OD_LUT - 0.15).min() > 1e4 * sp.U32


def test_numba_matches_torch_on_real_tiles(tiles, fitted):
    """The two CPU paths on real tiles, with bounds that follow from float32 arithmetic
    (``tests/transforms/_stain_parity.py``), so they hold on every CPU (SIMD width, AMX,
    BLAS blocking and numba's reassociation only change the summation order):

    1. stain matrices: the torch path's float32 covariance sums (N ~ 5e4 terms) are the only
       long reductions; their error, propagated through the measured sensitivity of the
       stain matrix to the covariance, bounds ``|S_numba - S_torch|`` per tile;
    2. float outputs, before any rounding: given its own stain matrix, each path computes
       ``255 exp(-M OD)`` within a per-pixel bound of a few ``k u`` (``k``-term dots, u =
       2**-24); the two stain matrices' effect is computed exactly, so
       ``|f_numba - f_torch| <= tol`` pixel by pixel;
    3. uint8 outputs are those floats rounded (half to even in both), so a pixel may differ
       by one grey level only where a ``.5`` boundary lies within ``tol`` of it: every
       differing pixel must be one of those, and their fraction (~ 2 mean(tol)) bounds the
       fraction of differing pixels. No bound is a number one CPU happened to give.
    """
    stains, max_c = fitted
    tol, he_numba, he_torch = _parity_tolerance(tiles, stains, max_c)
    # 1. stain matrices
    od = sp.od64(tiles)
    for b in range(len(tiles)):
        err = np.abs(he_numba[b] - he_torch[b])
        assert (err <= sp.torch_stain_error(od[b])).all(), (b, err.max(), sp.torch_stain_error(od[b]).max())
    # 2. float outputs of the pure function
    f_fast = macenko_normalize(tiles, stains, max_c, backend="numba")
    f_slow = macenko_normalize(tiles, stains, max_c, backend="torch")
    assert f_fast.dtype == torch.float32 and f_fast.shape == tiles.shape
    diff = np.abs(f_fast.double().numpy() - f_slow.double().numpy())
    assert (diff <= tol).all(), (diff.max(), (diff / tol).max())
    # 3. uint8 outputs: the rounded floats (numba: rint of its float64 value, whose float32
    # copy f_fast can only sit exactly on a .5 where the float64 value is within half an ulp)
    fast = MacenkoNormalize(stains=stains, max_conc=max_c)(tiles)  # auto: numba on the CPU
    slow = MacenkoNormalize(stains=stains, max_conc=max_c, compute="torch")(tiles)
    assert fast.dtype == torch.uint8 and fast.shape == tiles.shape
    assert torch.equal(slow, f_slow.round().clamp(0, 255).to(torch.uint8))
    off = fast != f_fast.round().to(torch.uint8)
    assert (sp.distance_to_half(f_fast[off]) == 0).all()
    d = _grey_diff(fast, slow)
    near = sp.distance_to_half(f_fast) <= tol
    assert d.max() <= 1 and not (d.astype(bool) & ~near).any(), (d.max(), (d.astype(bool) & ~near).sum())
    assert (d > 0).mean() <= near.mean(), ((d > 0).mean(), near.mean(), 2 * tol.mean())


def test_numba_matches_numpy_reference(tiles, fitted):
    stains, max_c = fitted
    out = MacenkoNormalize(stains=stains, max_conc=max_c, compute="numba")(tiles)
    he = macenko_stains(tiles, backend="numba").numpy()
    for i in range(len(tiles)):
        hwc = tiles[i].permute(1, 2, 0).numpy()
        ref = macenko_normalize_numpy(hwc, stains.numpy(), max_c.numpy())
        # both paths are float64 inside (stains agree to ~1e-11: kappa sqrt(N) u64 with
        # u64 = 2**-53), so their unrounded outputs agree to ~1e-8 grey levels and a pixel
        # differs only on a .5 tie: these bounds hold with a margin of ~1e6 on any CPU
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
    # float inputs stay float (numpy float64, torch float32), within the derived per-pixel
    # bound of the torch path (see test_numba_matches_torch_on_real_tiles)
    tol = _parity_tolerance(x, stains, max_c)[0]
    for xf in (x.numpy().astype(np.float64), x.float()):
        got, want = fast(xf), slow(xf)
        assert type(got) is type(xf) and got.dtype == xf.dtype and got.shape == xf.shape
        assert (np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)) <= tol).all()
    # macenko_normalize: float32 tensor out for every input type, leading shape kept
    r = macenko_normalize(x[0].numpy(), stains, max_c)
    assert torch.is_tensor(r) and r.dtype == torch.float32 and r.shape == (3, 224, 224)
    # int16 input: read as float, output converted back like the torch path
    xi = x.to(torch.int16)
    got, want = fast(xi), slow(xi)
    assert got.dtype == torch.int16 and _grey_diff(got, want).max() <= 1  # tol < 0.5: one rounding apart at most
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
    _assert_stains_within_bound(he, macenko_stains(x, backend="torch"), x)
    # float64 against float64 (then a float32 cast, <= u = 6e-8): 1e-5 has a margin of ~100x on any CPU
    np.testing.assert_allclose(he[2].numpy(), macenko_stains_numpy(small[0].permute(1, 2, 0).numpy()), atol=1e-5)
    fast = MacenkoNormalize(stains=stains, max_conc=max_c)(x)
    slow = MacenkoNormalize(stains=stains, max_conc=max_c, compute="torch")(x)
    assert torch.equal(fast[0], white[0])  # white stays white
    assert _grey_diff(fast, slow).max() <= 1  # float outputs within tol < 0.5 (derived bound): one rounding apart
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
    assert ck._step(64 * 64) == 4
    _assert_stains_within_bound(macenko_stains(x, backend="numba"), macenko_stains(x, backend="torch"), x)
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
    # +-inf are clamped to [1, 255] as in the torch path (OD 5.5 at -inf magnifies torch's
    # float32 error: the derived per-pixel bound grows with sum |M| OD there)
    x[1, 0, 5, 5] = float("inf")
    x[2, 1, 7, 7] = -float("inf")
    tol = _parity_tolerance(x, stains, max_c)[0]
    diff = np.abs(macenko_normalize(x, stains, max_c).double().numpy() - macenko_normalize(x, stains, max_c, backend="torch").double().numpy())
    assert (diff <= tol).all(), (diff.max(), (diff / tol).max())
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
                # the same order statistics and interpolation formula in float64: a few u64 (1e-16) apart
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
        # float64 pseudo-inverses differ by ~kappa^2 u64 |S^+| (kappa of N(0,1) 3x2 draws < 1e2): << 1e-10
        np.testing.assert_allclose(cm._pinv32(s, cm.PINV_RCOND), np.linalg.pinv(s), atol=1e-10)
    rank1 = np.ascontiguousarray(np.array([[0.6, 1.2], [0.7, 1.4], [0.4, 0.8]]))
    np.testing.assert_allclose(cm._pinv32(rank1, cm.PINV_RCOND), np.linalg.pinv(rank1, rcond=cm.PINV_RCOND), atol=1e-12)
    np.testing.assert_array_equal(cm._pinv32(np.zeros((3, 2)), cm.PINV_RCOND), np.zeros((2, 3)))
