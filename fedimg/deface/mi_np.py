"""Mutual information and its analytic gradient in numpy: the CPU twin of :mod:`.mi` (no torch).

The same cost as :func:`.mi.mutual_information`: a joint histogram of moving (B, N) and
fixed (N,) intensities in [0, 1], a cubic B-spline Parzen window on the moving and a linear
one on the fixed intensity, ``bins + 2`` padded bins. :func:`mi_and_grad` also returns
d MI / d moving intensity (what autograd gives the torch path); :func:`trilinear` samples a
volume at voxel coordinates with zeros outside (``grid_sample``'s ``align_corners=True``,
``padding_mode="zeros"``) and returns the interpolant's exact gradient, for the chain rule
to the affine parameters (:mod:`.register_np`).

>>> import numpy as np
>>> f = np.linspace(0, 1, 1000)
>>> mi, g = mi_and_grad(f[None], fixed_weights(f, 16), 16)
>>> mi.shape, g.shape, bool(mi[0] > 1.5)          # identical intensities: highly informative
((1,), (1, 1000), True)
>>> vol = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
>>> v, dv = trilinear(pad_volume(vol), np.array([[1.0, 1.0, 1.5], [9.0, 0.0, 0.0]]))
>>> v.tolist(), dv[0].tolist()                     # 13.5 inside, 0 outside; steps 9, 3, 1 per voxel
([13.5, 0.0], [9.0, 3.0, 1.0])
"""

from __future__ import annotations

import numpy as np

__all__ = ["mi_and_grad", "fixed_weights", "trilinear", "pad_volume", "PAD"]

EPS = 1e-10  # as in :func:`.mi.mutual_information`
PAD = 2  # zero voxels around a volume for :func:`trilinear`


def fixed_weights(fixed: np.ndarray, bins: int):
    """Linear Parzen window of the fixed intensities: bin indices ``(N, 2)`` and weights ``(N, 2)``."""
    nb = bins + 2
    pf = np.asarray(fixed, dtype=np.float64) * (bins - 1) + 1.0
    f0 = np.floor(pf)
    ff = pf - f0
    jf = np.clip(np.stack([f0, f0 + 1], -1), 0, nb - 1).astype(np.int64)
    return jf, np.stack([1.0 - ff, ff], -1)


def _bspline(moving: np.ndarray, bins: int):
    """Cubic B-spline window of the moving intensities: the first bin ``(B, N)`` of the four, their
    weights and d weight / d intensity (4 arrays each, bins ``first .. first + 3``).

    Closed forms of :func:`.mi.bspline_weights` (``t`` the fraction of the bin position); the
    first bin is held in 0..bins - 1, which moves only weights that are 0 (or within rounding of an
    intensity a hair outside [0, 1]) and so needs no clamping per bin.
    """
    p = moving.astype(np.float64) * (bins - 1) + 1.0
    base = np.clip(np.floor(p), 1.0, float(bins))
    t = p - base
    t2 = t * t
    t3 = t2 * t
    s = 1.0 - t
    w = (s * s * s / 6.0, (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0, (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0, t3 / 6.0)
    k = float(bins - 1)
    dw = (-0.5 * s * s * k, (1.5 * t2 - 2.0 * t) * k, (-1.5 * t2 + t + 0.5) * k, 0.5 * t2 * k)
    return base.astype(np.int64) - 1, w, dw


def mi_and_grad(moving: np.ndarray, fixed: tuple[np.ndarray, np.ndarray], bins: int):
    """MI per start of moving ``(B, N)`` against the fixed window ``(jf, wf)`` of :func:`fixed_weights`,
    and d MI / d moving ``(B, N)``."""
    nb = bins + 2
    nbm = nb + 1  # one spare moving bin: the fourth weight of the top bin (always 0) lands there
    jf, wf = fixed
    b, n = moving.shape
    first, wm, dwm = _bspline(moving, bins)
    base = ((first + (np.arange(b) * nbm)[:, None]) * nb + jf[None, :, 0]).ravel()  # (B*N,) bin (first, jf0)
    wf0, wf1 = np.tile(wf[:, 0], b), np.tile(wf[:, 1], b)
    idx = np.concatenate([base + (k * nb + l) for k in range(4) for l in (0, 1)])
    vals = np.concatenate([w.ravel() * f for w in wm for f in (wf0, wf1)])
    joint = np.bincount(idx, weights=vals, minlength=b * nbm * nb).reshape(b, nbm, nb)[:, :nb] / n
    pm = joint.sum(2, keepdims=True)
    pf = joint.sum(1, keepdims=True)
    log_ratio = np.log(joint + EPS) - np.log(pm + EPS) - np.log(pf + EPS)
    mi = (joint * log_ratio).sum((1, 2))
    # d MI / d joint, every term (the eps in the logs included), then through the Parzen windows
    dj = np.zeros((b, nbm, nb))
    dj[:, :nb] = log_ratio + joint / (joint + EPS) - pm / (pm + EPS) - pf / (pf + EPS)
    dj = dj.ravel()
    grad = np.zeros(b * n)
    for k in range(4):
        at = base + k * nb
        grad += dwm[k].ravel() * (wf0 * dj[at] + wf1 * dj[at + 1])
    return mi, grad.reshape(b, n) / n


def pad_volume(vol: np.ndarray) -> np.ndarray:
    """``vol`` (3-D) as float32 with :data:`PAD` zero voxels on every side (the input of :func:`trilinear`)."""
    return np.ascontiguousarray(np.pad(np.asarray(vol, dtype=np.float32), PAD))


def trilinear(padded: np.ndarray, vox: np.ndarray):
    """Trilinear values ``(M,)`` and gradients ``(M, 3)`` (per voxel step) of the unpadded volume at ``vox`` ``(M, 3)``.

    ``padded`` comes from :func:`pad_volume`; points outside the volume read zero, points
    partly outside blend with zero (as ``grid_sample`` with zeros padding does).
    """
    hi = np.array(padded.shape, dtype=np.float64) - 2 * PAD + 1.0 - 1e-6
    v = np.clip(np.asarray(vox, dtype=np.float64), -PAD, hi) + PAD
    f0 = np.floor(v)
    fr = v - f0
    i = f0.astype(np.int64)
    s0, s1 = padded.shape[1] * padded.shape[2], padded.shape[2]
    base = i[:, 0] * s0 + i[:, 1] * s1 + i[:, 2]
    flat = padded.ravel()
    c = [np.take(flat, base + off) for off in (0, 1, s1, s1 + 1, s0, s0 + 1, s0 + s1, s0 + s1 + 1)]  # (x, y, z) = bits
    x, y, z = fr[:, 0], fr[:, 1], fr[:, 2]
    # along z, then y, then x; the derivatives of the same bilinear blends
    c00, c01 = c[0] + z * (c[1] - c[0]), c[2] + z * (c[3] - c[2])
    c10, c11 = c[4] + z * (c[5] - c[4]), c[6] + z * (c[7] - c[6])
    c0, c1 = c00 + y * (c01 - c00), c10 + y * (c11 - c10)
    val = c0 + x * (c1 - c0)
    dz0 = (c[1] - c[0]) + y * ((c[3] - c[2]) - (c[1] - c[0]))
    dz1 = (c[5] - c[4]) + y * ((c[7] - c[6]) - (c[5] - c[4]))
    grad = np.stack([c1 - c0, (c01 - c00) + x * ((c11 - c10) - (c01 - c00)), dz0 + x * (dz1 - dz0)], -1)
    return val, grad
