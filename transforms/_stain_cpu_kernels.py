"""numba CPU kernels of batched Macenko stain normalisation (driven by :mod:`._stain_cpu`,
the CPU path of :func:`fedimg.transforms.stain.macenko_normalize`).

Same maths as the torch path, four passes over each tile and no full-size float temporaries:

1. OD, tissue mask (OD > ``beta`` in every channel), mean and 3x3 covariance in one pass;
   its two largest eigenvectors (Jacobi, float64) span the stain plane.
2. The angle of every tissue pixel in that plane and its ``alpha`` / ``100 - alpha``
   percentiles (numpy's linear interpolation, exact order statistics).
3. Least-squares concentrations through the pseudo-inverse (the SVD one, with
   ``torch.linalg.pinv``'s float32 cut-off) and their 99th percentiles over all pixels.
4. ``255 exp(-M OD)`` with ``M`` the folded 3x3 matrix, clipped to [0, 255]; uint8 outputs
   are written as uint8 (rounded half to even, as ``torch.round``), float outputs unrounded.

Percentiles need no sort: a strided sample of 1024 pixels places a cut safely inside each
tail, the pass keeps only the values beyond it (a few percent), and quickselect finds the
order statistics among those; if the cut missed (a check, not a guess) the pass is redone
over all values. Angles are selected on a pseudo-angle (a monotone function of ``atan2``,
one division) and only the selected ones turned into angles. uint8 inputs read OD from a
256-entry table (``-ln(max(I, 1) / 255)``), and their output pass needs no ``exp`` per
pixel: ``exp(-sum_k M[c,k] OD_k)`` is a product of three 256-entry tables built per tile.
Float inputs are read as float32 (as ``torch``'s ``img.float()``); statistics are
accumulated in float64. Inputs may have any strides (a channels-last batch viewed as
``(B, 3, H, W)`` is read in place). :func:`run_tiles` is the one entry point: one serial
``nogil`` call per group of tiles. Small helpers carry explicit signatures so each
compiles once; compiled code is cached.

>>> import numpy as np
>>> x = np.random.default_rng(0).integers(0, 256, (1, 3, 16, 16), dtype=np.uint8)
>>> he, ok = np.empty((1, 3, 2)), np.ones(1, np.bool_)
>>> fb = np.array([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]])
>>> out = np.empty((0, 0, 0, 0), np.uint8)  # stains only: nothing written
>>> run_tiles(x, OD_LUT, 0.15, 1.0, 2.0, fb, fb, np.ones(2), PINV_RCOND, out, he, ok, 0, 1, False)
>>> bool(ok[0]), he.shape
(True, (1, 3, 2))
"""

from __future__ import annotations

import math

import numpy as np
from numba import int64, njit, types
from numba.extending import overload

from ._stain_cpu_math import (
    PINV_RCOND,
    _angle,
    _cut,
    _pinv32,
    _plane,
    _position,
    _pseudo,
    _tail,
)

__all__ = ["OD_LUT", "PINV_RCOND", "run_tiles"]

#: ``-ln(max(v, 1) / 255)`` for every uint8 value ``v``.
OD_LUT = -np.log(np.maximum(np.arange(256, dtype=np.float64), 1.0) / 255.0)
#: Largest ``|M[c, k]| * OD`` for which the product-of-tables output stays finite.
_TABLE_LIMIT = 200.0
#: Pixels sampled per tile to place the percentile cuts (tiles under 4x this select over all).
_SAMPLE = 1024


def _od(x, b, c, i, j, lut):  # pragma: no cover - replaced by the overload inside numba
    return lut[x[b, c, i, j]]


@overload(_od)
def _od_ov(x, b, c, i, j, lut):
    if x.dtype == types.uint8:
        return lambda x, b, c, i, j, lut: lut[x[b, c, i, j]]

    def impl(x, b, c, i, j, lut):
        v = np.float64(x[b, c, i, j])
        if v < 1.0:  # explicit comparisons so NaN stays NaN (as torch.clamp)
            v = 1.0
        elif v > 255.0:
            v = 255.0
        return -math.log(v / 255.0)

    return impl


@njit(inline="always")
def _od3(x, b, i, j, lut):  # pragma: no cover - numba
    """The three channels' optical densities of pixel ``(i, j)`` of tile ``b``."""
    return _od(x, b, 0, i, j, lut), _od(x, b, 1, i, j, lut), _od(x, b, 2, i, j, lut)


def _put(out, b, c, i, j, v):  # pragma: no cover - replaced by the overload inside numba
    out[b, c, i, j] = v


@overload(_put)
def _put_ov(out, b, c, i, j, v):
    if out.dtype == types.uint8:

        def impl(out, b, c, i, j, v):
            out[b, c, i, j] = np.uint8(np.rint(v))

        return impl

    def impl_f(out, b, c, i, j, v):
        out[b, c, i, j] = v

    return impl_f


@njit(int64(int64), cache=True, nogil=True)
def _step(n):  # pragma: no cover - numba
    """Pixel stride of the threshold sample; 0 when ``n`` is too small to bother."""
    return n // _SAMPLE if n >= 4 * _SAMPLE else 0


@njit(cache=True, nogil=True)
def _angles(x, b, lut, beta, p, t_lo, t_hi, lo_buf, hi_buf):  # pragma: no cover - numba
    """Pseudo-angles of the tissue pixels in plane ``p``: those ``<= t_lo`` into ``lo_buf``,
    those ``>= t_hi`` into ``hi_buf``; returns both counts."""
    _, _, H, W = x.shape
    cl = ch = 0
    for i in range(H):
        for j in range(W):
            o0, o1, o2 = _od3(x, b, i, j, lut)
            if o0 > beta and o1 > beta and o2 > beta:
                d = _pseudo(p[0, 0] * o0 + p[1, 0] * o1 + p[2, 0] * o2, p[0, 1] * o0 + p[1, 1] * o1 + p[2, 1] * o2)
                if d <= t_lo:
                    lo_buf[cl] = d
                    cl += 1
                if d >= t_hi:
                    hi_buf[ch] = d
                    ch += 1
    return cl, ch


@njit(cache=True, nogil=True)
def _angle_range(x, b, lut, beta, n, q, p, lo_buf, hi_buf, sample):  # pragma: no cover - numba
    """The ``q`` and ``1 - q`` percentile angles of the ``n`` tissue pixels (numpy-style
    linear interpolation of ``atan2``), selecting on pseudo-angles near the two tails."""
    _, _, H, W = x.shape
    t_lo, t_hi = np.inf, -np.inf  # everything is a candidate: exact selection over all
    step = _step(n)
    if step:
        m = 0
        for k in range(0, H * W, step):
            i, j = k // W, k % W
            o0, o1, o2 = _od3(x, b, i, j, lut)
            if o0 > beta and o1 > beta and o2 > beta:
                sample[0, m] = _pseudo(p[0, 0] * o0 + p[1, 0] * o1 + p[2, 0] * o2, p[0, 1] * o0 + p[1, 1] * o1 + p[2, 1] * o2)
                m += 1
                if m == sample.shape[1]:
                    break
        if m >= _SAMPLE // 8:
            t_lo, t_hi = _cut(sample[0], m, q, False), _cut(sample[0], m, 1.0 - q, True)
    cl, ch = _angles(x, b, lut, beta, p, t_lo, t_hi, lo_buf, hi_buf)
    f_lo, a0, a1 = _tail(lo_buf, cl, n, q, False)
    f_hi, b0, b1 = _tail(hi_buf, ch, n, 1.0 - q, True)
    if not (f_lo and f_hi):  # the sample misled the cuts: redo exactly
        cl, ch = _angles(x, b, lut, beta, p, np.inf, -np.inf, lo_buf, hi_buf)
        f_lo, a0, a1 = _tail(lo_buf, cl, n, q, False)
        f_hi, b0, b1 = _tail(hi_buf, ch, n, 1.0 - q, True)
    _, fr = _position(n, q)
    lo = _angle(a0) + fr * (_angle(a1) - _angle(a0))
    _, fr = _position(n, 1.0 - q)
    hi = _angle(b0) + fr * (_angle(b1) - _angle(b0))
    return lo, hi


@njit(cache=True, nogil=True)
def _tile_stains(x, b, lut, beta, alpha, min_count, fallback, buf0, buf1, sample, he):  # pragma: no cover - numba
    """Stain matrix of tile ``b`` into ``he`` (3, 2); returns False when the tile holds NaN."""
    _, _, H, W = x.shape
    n = np.int64(0)  # not a literal 0: callees get one int64 version
    s0 = s1 = s2 = 0.0
    s00 = s01 = s02 = s11 = s12 = s22 = 0.0
    nan = False
    for i in range(H):
        for j in range(W):
            o0, o1, o2 = _od3(x, b, i, j, lut)
            if o0 > beta and o1 > beta and o2 > beta:
                n += 1
                s0 += o0
                s1 += o1
                s2 += o2
                s00 += o0 * o0
                s01 += o0 * o1
                s02 += o0 * o2
                s11 += o1 * o1
                s12 += o1 * o2
                s22 += o2 * o2
            elif math.isnan(o0) or math.isnan(o1) or math.isnan(o2):
                nan = True
    if nan:
        return False
    he[:, :] = fallback
    if n < min_count:
        return True
    m0, m1, m2 = s0 / n, s1 / n, s2 / n
    cov = np.empty((3, 3))
    d = n - 1.0
    cov[0, 0] = (s00 - n * m0 * m0) / d
    cov[1, 1] = (s11 - n * m1 * m1) / d
    cov[2, 2] = (s22 - n * m2 * m2) / d
    cov[0, 1] = cov[1, 0] = (s01 - n * m0 * m1) / d
    cov[0, 2] = cov[2, 0] = (s02 - n * m0 * m2) / d
    cov[1, 2] = cov[2, 1] = (s12 - n * m1 * m2) / d
    p = _plane(cov)
    for col in range(2):
        if p[0, col] < 0:  # sign convention: positive red
            p[:, col] = -p[:, col]
    lo, hi = _angle_range(x, b, lut, beta, n, alpha / 100.0, p, buf0, buf1, sample)
    v = np.empty((3, 2))
    for r in range(3):
        v[r, 0] = p[r, 0] * math.cos(lo) + p[r, 1] * math.sin(lo)
        v[r, 1] = p[r, 0] * math.cos(hi) + p[r, 1] * math.sin(hi)
    if not v[0, 0] > v[0, 1]:  # haematoxylin first: larger red OD
        for r in range(3):
            v[r, 0], v[r, 1] = v[r, 1], v[r, 0]
    for col in range(2):
        sign = -1.0 if v[0, col] + v[1, col] + v[2, col] < 0 else 1.0
        norm = max(math.sqrt(v[0, col] ** 2 + v[1, col] ** 2 + v[2, col] ** 2), 1e-8)
        for r in range(3):
            v[r, col] = sign * v[r, col] / norm
    if np.isfinite(v).all():
        he[:, :] = v
    return True


@njit(cache=True, nogil=True)
def _write_direct(x, b, lut, mat, out):  # pragma: no cover - numba
    _, _, H, W = x.shape
    for i in range(H):
        for j in range(W):
            o0, o1, o2 = _od3(x, b, i, j, lut)
            for c in range(3):
                val = 255.0 * math.exp(-(mat[c, 0] * o0 + mat[c, 1] * o1 + mat[c, 2] * o2))
                _put(out, b, c, i, j, min(val, 255.0))


def _write(x, b, lut, mat, tab, out):  # pragma: no cover - replaced by the overload inside numba
    _write_direct(x, b, lut, mat, out)


@overload(_write)
def _write_ov(x, b, lut, mat, tab, out):
    if x.dtype != types.uint8:
        return lambda x, b, lut, mat, tab, out: _write_direct(x, b, lut, mat, out)

    def impl(x, b, lut, mat, tab, out):
        if np.abs(mat).max() * lut[0] > _TABLE_LIMIT:  # huge gains (near-white tile): exp of the sum
            _write_direct(x, b, lut, mat, out)
            return
        for c in range(3):
            for k in range(3):
                scale = 255.0 if k == 0 else 1.0
                for v in range(256):
                    tab[c, k, v] = scale * math.exp(-mat[c, k] * lut[v])
        _, _, H, W = x.shape
        for i in range(H):
            for j in range(W):
                r, g, bl = x[b, 0, i, j], x[b, 1, i, j], x[b, 2, i, j]
                for c in range(3):
                    val = tab[c, 0, r] * tab[c, 1, g] * tab[c, 2, bl]
                    _put(out, b, c, i, j, min(val, 255.0))

    return impl


@njit(cache=True, nogil=True)
def _concentrations(x, b, lut, pinv, t0, t1, buf0, buf1):  # pragma: no cover - numba
    """Stain concentrations of every pixel: those ``>= t0`` / ``>= t1`` into the buffers."""
    _, _, H, W = x.shape
    n0 = n1 = 0
    for i in range(H):
        for j in range(W):
            o0, o1, o2 = _od3(x, b, i, j, lut)
            c0 = pinv[0, 0] * o0 + pinv[0, 1] * o1 + pinv[0, 2] * o2
            c1 = pinv[1, 0] * o0 + pinv[1, 1] * o1 + pinv[1, 2] * o2
            if c0 >= t0:
                buf0[n0] = c0
                n0 += 1
            if c1 >= t1:
                buf1[n1] = c1
                n1 += 1
    return n0, n1


@njit(cache=True, nogil=True)
def _conc_p99(x, b, lut, pinv, buf0, buf1, sample):  # pragma: no cover - numba
    """99th percentiles of both stains' concentrations over all pixels (as torch's path)."""
    _, _, H, W = x.shape
    n = H * W
    t0 = t1 = -np.inf
    step = _step(n)
    if step:
        m = 0
        for k in range(0, n, step):
            i, j = k // W, k % W
            o0, o1, o2 = _od3(x, b, i, j, lut)
            sample[0, m] = pinv[0, 0] * o0 + pinv[0, 1] * o1 + pinv[0, 2] * o2
            sample[1, m] = pinv[1, 0] * o0 + pinv[1, 1] * o1 + pinv[1, 2] * o2
            m += 1
        t0 = _cut(sample[0], m, 0.99, True)
        t1 = _cut(sample[1], m, 0.99, True)
    n0, n1 = _concentrations(x, b, lut, pinv, t0, t1, buf0, buf1)
    f0, a0, a1 = _tail(buf0, n0, n, 0.99, True)
    f1, b0, b1 = _tail(buf1, n1, n, 0.99, True)
    if not (f0 and f1):  # the sample misled the cuts: redo exactly
        n0, n1 = _concentrations(x, b, lut, pinv, -np.inf, -np.inf, buf0, buf1)
        f0, a0, a1 = _tail(buf0, n0, n, 0.99, True)
        f1, b0, b1 = _tail(buf1, n1, n, 0.99, True)
    _, fr = _position(n, 0.99)
    return a0 + fr * (a1 - a0), b0 + fr * (b1 - b0)


@njit(cache=True, nogil=True)
def _tile_normalize(x, b, lut, he, ts, tmax, rcond, buf0, buf1, sample, tab, out):  # pragma: no cover - numba
    pinv = _pinv32(he, rcond)
    c99_0, c99_1 = _conc_p99(x, b, lut, pinv, buf0, buf1, sample)
    g0 = tmax[0] / max(c99_0, 1e-6)
    g1 = tmax[1] / max(c99_1, 1e-6)
    mat = np.empty((3, 3))
    for c in range(3):
        for j in range(3):
            mat[c, j] = ts[c, 0] * g0 * pinv[0, j] + ts[c, 1] * g1 * pinv[1, j]
    _write(x, b, lut, mat, tab, out)


@njit(cache=True, nogil=True)
def run_tiles(x, lut, beta, alpha, min_count, fallback, ts, tmax, rcond, out, he_out, ok, start, stride, norm):  # pragma: no cover - numba
    """Tiles ``start, start + stride, ...``: stain matrices into ``he_out`` and, with ``norm``,
    normalised tiles into ``out``; ``ok[b]`` False when tile ``b`` holds NaN."""
    B, _, H, W = x.shape
    buf0 = np.empty(H * W)
    buf1 = np.empty(H * W)
    sample = np.empty((2, 2 * _SAMPLE))  # threshold samples (one row per stain / the angles)
    tab = np.empty((3, 3, 256))
    he = np.empty((3, 2))
    for b in range(start, B, stride):
        ok[b] = _tile_stains(x, b, lut, beta, alpha, min_count, fallback, buf0, buf1, sample, he)
        he_out[b] = he
        if norm and ok[b]:
            _tile_normalize(x, b, lut, he, ts, tmax, rcond, buf0, buf1, sample, tab, out)
