"""numba helpers of the CPU Macenko kernels (:mod:`._stain_cpu`): exact order statistics by
quickselect (numpy's linear-interpolation percentiles), sampled cuts that keep only a
tail, a pseudo-angle that orders like ``atan2``, the stain plane of a 3x3 covariance
(Jacobi) and the SVD pseudo-inverse of a 3x2 stain matrix. Explicit signatures: each
compiles once (numba would also compile versions for literal arguments such as ``0``).

>>> import numpy as np
>>> a = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
>>> lo, frac = _position(5, 0.3)
>>> v0, v1 = _pair(a, 5, lo)
>>> float(v0 + frac * (v1 - v0)) == float(np.percentile([3, 1, 2, 5, 4], 30))
True
"""

from __future__ import annotations

import math

import numpy as np
from numba import boolean, float64, int64, njit, types

__all__ = ["PINV_RCOND"]

#: ``torch.linalg.pinv``'s default relative cut-off for a float32 (3, 2) matrix.
PINV_RCOND = 3.0 * float(np.finfo(np.float32).eps)
_V = float64[::1]
_M = float64[:, ::1]


@njit(types.none(_V, int64, int64, int64), cache=True, nogil=True)
def _select(a, lo, hi, k):  # pragma: no cover - numba
    """Wirth's quickselect on ``a[lo:hi]``: afterwards ``a[k]`` is its k-th smallest, with
    ``a[lo:k] <= a[k] <= a[k+1:hi]`` (median-of-three pivots; duplicates split evenly)."""
    left, right = lo, hi - 1
    while left < right:
        m = (left + right) >> 1
        if a[m] < a[left]:
            a[m], a[left] = a[left], a[m]
        if a[right] < a[left]:
            a[right], a[left] = a[left], a[right]
        if a[right] < a[m]:
            a[right], a[m] = a[m], a[right]
        piv = a[m]
        i, j = left, right
        while i <= j:
            while a[i] < piv:
                i += 1
            while piv < a[j]:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if j < k:
            left = i
        if k < i:
            right = j


@njit(types.UniTuple(float64, 2)(_V, int64, int64), cache=True, nogil=True)
def _pair(a, m, k):  # pragma: no cover - numba
    """Order statistics ``k`` and ``min(k + 1, m - 1)`` of ``a[:m]`` (reorders ``a[:m]``)."""
    if k >= m - 1:
        _select(a, 0, m, k)
        return a[k], a[k]
    if 2 * k < m:  # lower half: place k+1, then k is the largest to its left
        _select(a, 0, m, k + 1)
        v0 = a[0]
        for t in range(1, k + 1):
            v0 = max(v0, a[t])
        return v0, a[k + 1]
    _select(a, 0, m, k)  # upper half: place k, then k+1 is the smallest to its right
    v1 = a[k + 1]
    for t in range(k + 2, m):
        v1 = min(v1, a[t])
    return a[k], v1


@njit(types.Tuple((int64, float64))(int64, float64), cache=True, nogil=True)
def _position(n, q):  # pragma: no cover - numba
    pos = q * (n - 1)
    lo = math.floor(pos)
    return lo, pos - lo


@njit(float64(_V, int64, float64, boolean), cache=True, nogil=True)
def _cut(sample, m, q, upper):  # pragma: no cover - numba
    """A threshold from ``m`` sampled values placed safely inside the ``q``-quantile (towards
    the middle: 4 sigma of the sample rank plus 8), so that the values beyond it hold the
    whole tail with near certainty; :func:`_tail` checks, and the caller redoes it exactly."""
    sd = math.sqrt(m * q * (1.0 - q))
    if upper:
        j = max(int(q * (m - 1) - 4.0 * sd) - 8, 0)
    else:
        j = min(math.ceil(q * (m - 1) + 4.0 * sd) + 8, m - 1)
    _select(sample, 0, m, j)
    return sample[j]


@njit(types.Tuple((boolean, float64, float64))(_V, int64, int64, float64, boolean), cache=True, nogil=True)
def _tail(buf, cnt, n, q, upper):  # pragma: no cover - numba
    """``(found, v0, v1)``: the order statistics at ``q``'s interpolation points among ``n``
    values, from the ``cnt`` candidates in ``buf`` (all values ``>=`` a cut when ``upper``,
    else ``<=``); ``found`` is False when the candidates miss them."""
    lo, _ = _position(n, q)
    if upper:
        off = n - cnt
        if lo < off:
            return False, 0.0, 0.0
        v0, v1 = _pair(buf, cnt, lo - off)
        return True, v0, v1
    if min(lo + 1, n - 1) >= cnt:
        return False, 0.0, 0.0
    v0, v1 = _pair(buf, cnt, lo)
    return True, v0, v1


@njit(float64(float64, float64), cache=True, nogil=True)
def _pseudo(px, py):  # pragma: no cover - numba
    """A cheap strictly increasing function of ``atan2(py, px)`` on (-pi, pi]: in (-2, 2]."""
    ax, ay = abs(px), abs(py)
    s = ax + ay
    if s == 0.0:
        return 0.0
    if py >= 0.0:
        return ay / s if px >= 0.0 else 1.0 + ax / s
    return -2.0 + ay / s if px < 0.0 else -1.0 + ax / s


@njit(float64(float64), cache=True, nogil=True)
def _angle(d):  # pragma: no cover - numba
    """Inverse of :func:`_pseudo`: the angle ``atan2`` gives for pseudo-angle ``d``."""
    if d >= 1.0:
        u = d - 1.0
        return math.atan2(1.0 - u, -u)
    if d >= 0.0:
        return math.atan2(d, 1.0 - d)
    if d >= -1.0:
        u = d + 1.0
        return math.atan2(-(1.0 - u), u)
    u = d + 2.0
    return math.atan2(-u, -(1.0 - u))


@njit(_M(_M), cache=True, nogil=True)
def _plane(cov):  # pragma: no cover - numba
    """Eigenvectors of the two largest eigenvalues of a symmetric 3x3 matrix as columns
    ``(3, 2)``, ascending like ``eigh(cov)[1][:, 1:3]`` (cyclic Jacobi, float64)."""
    a = cov.copy()
    v = np.eye(3)
    for _ in range(32):
        off = a[0, 1] ** 2 + a[0, 2] ** 2 + a[1, 2] ** 2
        if off <= 1e-36 * (a[0, 0] ** 2 + a[1, 1] ** 2 + a[2, 2] ** 2) or off == 0.0:
            break
        for p, q in ((0, 1), (0, 2), (1, 2)):
            apq = a[p, q]
            if apq == 0.0:
                continue
            theta = (a[q, q] - a[p, p]) / (2.0 * apq)
            t = (1.0 if theta >= 0 else -1.0) / (abs(theta) + math.sqrt(theta * theta + 1.0))
            c = 1.0 / math.sqrt(t * t + 1.0)
            s = t * c
            for k in range(3):  # a <- J^T a J, v <- v J
                akp, akq = a[k, p], a[k, q]
                a[k, p], a[k, q] = c * akp - s * akq, s * akp + c * akq
            for k in range(3):
                apk, aqk = a[p, k], a[q, k]
                a[p, k], a[q, k] = c * apk - s * aqk, s * apk + c * aqk
            a[p, q] = a[q, p] = 0.0  # annihilated (exactly, but for rounding)
            for k in range(3):
                vkp, vkq = v[k, p], v[k, q]
                v[k, p], v[k, q] = c * vkp - s * vkq, s * vkp + c * vkq
    lo = 0  # drop the smallest eigenvalue, keep the other two in ascending order
    for k in range(1, 3):
        if a[k, k] < a[lo, lo]:
            lo = k
    i, j = (1, 2) if lo == 0 else ((0, 2) if lo == 1 else (0, 1))
    if a[j, j] < a[i, i]:
        i, j = j, i
    out = np.empty((3, 2))
    for k in range(3):
        out[k, 0], out[k, 1] = v[k, i], v[k, j]
    return out


@njit(_M(_M, float64), cache=True, nogil=True)
def _pinv32(s, rcond):  # pragma: no cover - numba
    """Pseudo-inverse ``(2, 3)`` of a ``(3, 2)`` matrix as the SVD gives it: singular values
    at or below ``rcond`` times the largest count as zero. Full rank: ``R^-1 Q^T`` from
    Gram-Schmidt (re-orthogonalised once); rank one: ``v1 v1^T S^T / sigma_1^2``."""
    a = s[0, 0] ** 2 + s[1, 0] ** 2 + s[2, 0] ** 2
    c = s[0, 1] ** 2 + s[1, 1] ** 2 + s[2, 1] ** 2
    b = s[0, 0] * s[0, 1] + s[1, 0] * s[1, 1] + s[2, 0] * s[2, 1]
    l1 = 0.5 * (a + c) + math.sqrt(0.25 * (a - c) ** 2 + b * b)  # sigma_1^2
    out = np.zeros((2, 3))
    if not l1 > 0.0:
        return out
    r11 = math.sqrt(a)
    r22 = 0.0
    if r11 > 0.0:
        q1 = s[:, 0] / r11
        r12 = q1[0] * s[0, 1] + q1[1] * s[1, 1] + q1[2] * s[2, 1]
        w = s[:, 1] - r12 * q1
        d = q1[0] * w[0] + q1[1] * w[1] + q1[2] * w[2]
        w -= d * q1
        r12 += d
        r22 = math.sqrt(w[0] ** 2 + w[1] ** 2 + w[2] ** 2)
    if r11 * r22 > rcond * l1:  # sigma_2 = r11 r22 / sigma_1 > rcond sigma_1
        q2 = w / r22
        for k in range(3):
            out[0, k] = q1[k] / r11 - r12 / (r11 * r22) * q2[k]
            out[1, k] = q2[k] / r22
        return out
    u0, u1 = (b, l1 - a) if abs(l1 - a) >= abs(l1 - c) else (l1 - c, b)
    nu = u0 * u0 + u1 * u1
    if nu == 0.0:
        u0, u1, nu = 1.0, 0.0, 1.0
    g00, g01, g11 = u0 * u0 / (nu * l1), u0 * u1 / (nu * l1), u1 * u1 / (nu * l1)
    for k in range(3):
        out[0, k] = g00 * s[k, 0] + g01 * s[k, 1]
        out[1, k] = g01 * s[k, 0] + g11 * s[k, 1]
    return out
