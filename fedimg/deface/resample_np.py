"""Trilinear resampling and block averaging in numpy/scipy: the CPU deface path without torch.

What ``torch.nn.functional.grid_sample`` (``mode="bilinear"``, ``padding_mode="zeros"``,
``align_corners=True``) and ``avg_pool3d`` (``ceil_mode=True``) computed before, to float32
rounding: scipy's ``mode="grid-constant"`` blends a point partly outside the volume with zero,
as ``grid_sample``'s zeros padding does, and a point a voxel or more outside reads zero.

>>> import numpy as np
>>> vol = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
>>> sample(vol, np.array([[1.0, 1.0, 1.5], [-0.5, 0.0, 0.0], [9.0, 0.0, 0.0]])).tolist()
[13.5, 0.0, 0.0]
>>> grid_sample(vol, np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], np.float32)).tolist()  # normalised x, y, z
[13.0, 26.0]
>>> warp(vol, np.eye(4), (2, 2, 2), origin=(1, 1, 1)).shape      # the box [1:3]^3 of the input grid
(2, 2, 2)
>>> block_mean(np.ones((5, 5, 5), np.float32), (2, 2, 2)).shape  # partial blocks average what they hold
(3, 3, 3)
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample", "grid_sample", "warp", "block_mean"]


def sample(vol: np.ndarray, vox: np.ndarray) -> np.ndarray:
    """Trilinear values ``(M,)`` (float32) of ``vol`` at voxel coordinates ``vox`` ``(M, 3)``, zeros outside."""
    from scipy import ndimage as ndi

    coords = np.ascontiguousarray(np.asarray(vox, dtype=np.float64).T)
    return ndi.map_coordinates(np.asarray(vol, dtype=np.float32), coords, output=np.float32, order=1,
                               mode="grid-constant", cval=0.0, prefilter=False)


def grid_sample(vol: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``grid_sample(vol, grid, align_corners=True)`` (trilinear, zeros padding) for a normalised float32
    ``grid`` ``(..., 3)`` (x the last axis of ``vol``), with torch's CPU float32 arithmetic step for step:
    the same numbers bit for bit, where the coarse search's choices turn on the last digit."""
    vol = np.ascontiguousarray(vol, dtype=np.float32)
    g = np.asarray(grid, dtype=np.float32)
    one, two = np.float32(1.0), np.float32(2.0)
    pos = [((g[..., a] + one) / two) * np.float32(n - 1) for a, n in zip((2, 1, 0), vol.shape)]  # z, y, x
    lo = [np.floor(p) for p in pos]
    hi = [f + one for f in lo]
    near = [(h - p, p - f) for p, f, h in zip(pos, lo, hi)]  # weights of the low and the high corner
    idx = [(f.astype(np.int64), h.astype(np.int64)) for f, h in zip(lo, hi)]
    out = np.zeros(g.shape[:-1], np.float32)
    flat = vol.ravel()
    for bz in (0, 1):  # torch's order: tnw, tne, tsw, tse, bnw, bne, bsw, bse (x fastest)
        for by in (0, 1):
            for bx in (0, 1):
                w = near[2][bx] * near[1][by] * near[0][bz]
                z, y, x = idx[0][bz], idx[1][by], idx[2][bx]
                ok = (z >= 0) & (z < vol.shape[0]) & (y >= 0) & (y < vol.shape[1]) & (x >= 0) & (x < vol.shape[2])
                v = np.zeros(out.shape, np.float32)
                v[ok] = flat[(z[ok] * vol.shape[1] + y[ok]) * vol.shape[2] + x[ok]]
                out += v * w
    return out


def warp(vol: np.ndarray, vox_to_vol: np.ndarray, shape, *, origin=(0, 0, 0)) -> np.ndarray:
    """``vol`` resampled (trilinear, zeros outside, float32) on a grid of ``shape`` whose voxel ``i`` is
    voxel ``origin + i`` of a space that the 4x4 ``vox_to_vol`` maps into ``vol``'s voxels."""
    from scipy import ndimage as ndi

    m = np.asarray(vox_to_vol, dtype=np.float64)
    offset = m[:3, :3] @ np.asarray(origin, dtype=np.float64) + m[:3, 3]
    return ndi.affine_transform(np.asarray(vol, dtype=np.float32), m[:3, :3], offset=offset,
                                output_shape=tuple(int(s) for s in shape), output=np.float32, order=1,
                                mode="grid-constant", cval=0.0, prefilter=False)


def block_mean(image: np.ndarray, step) -> np.ndarray:
    """Mean of ``step``-sized blocks (float32); a block cut by the edge averages the voxels it holds."""
    st = tuple(int(s) for s in step)
    img = np.asarray(image, dtype=np.float32)
    out_shape = tuple(-(-n // s) for n, s in zip(img.shape, st))
    pad = [(0, o * s - n) for o, s, n in zip(out_shape, st, img.shape)]
    if any(p for _, p in pad):
        img = np.pad(img, pad)
    blocks = img.reshape(out_shape[0], st[0], out_shape[1], st[1], out_shape[2], st[2])
    total = blocks.sum(axis=(1, 3, 5), dtype=np.float64)
    counts = [np.minimum(s, n - np.arange(o) * s) for o, s, n in zip(out_shape, st, image.shape)]
    count = counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
    return (total / count).astype(np.float32)
