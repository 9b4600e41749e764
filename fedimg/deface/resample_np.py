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
>>> [w.shape for w in warp_maps([vol, 2 * vol], np.eye(4), (2, 2, 2))]  # two volumes, one set of weights
[(2, 2, 2), (2, 2, 2)]
>>> block_mean(np.ones((5, 5, 5), np.float32), (2, 2, 2)).shape  # partial blocks average what they hold
(3, 3, 3)
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample", "grid_sample", "warp", "warp_maps", "warp_support", "support_box", "block_mean"]


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
    vol = np.asarray(vol, dtype=np.float32)
    padded = np.pad(vol, 2).ravel()  # corners outside read these zeros: adding 0 * w changes no sum
    g = np.asarray(grid, dtype=np.float32)
    one, two = np.float32(1.0), np.float32(2.0)
    pos = [((g[..., a] + one) / two) * np.float32(n - 1) for a, n in zip((2, 1, 0), vol.shape)]  # z, y, x
    lo = [np.floor(p) for p in pos]
    near = [((f + one) - p, p - f) for p, f in zip(pos, lo)]  # weights of the low and the high corner
    # the low corner's index in the padded volume, held where both corners read padding when outside
    idx = [np.clip(f, -2, n).astype(np.int64) + 2 for f, n in zip(lo, vol.shape)]
    sy, sz = (vol.shape[1] + 4) * (vol.shape[2] + 4), vol.shape[2] + 4
    base = idx[0] * sy + idx[1] * sz + idx[2]
    out = np.zeros(g.shape[:-1], np.float32)
    for bz in (0, 1):  # torch's order: tnw, tne, tsw, tse, bnw, bne, bsw, bse (x fastest)
        for by in (0, 1):
            for bx in (0, 1):
                w = near[2][bx] * near[1][by] * near[0][bz]
                out += np.take(padded, base + (bz * sy + by * sz + bx)) * w
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


def _padded_box(vols, m: np.ndarray, shape, origin) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``vols`` (stacked on a last axis, float32, zero-padded by 2 voxels on every side) that the
    trilinear corners of a ``shape`` grid at ``origin`` can reach through ``m``, and its first padded index.

    The grid's positions are affine in its indices, so their extremes lie at the grid's corners; one voxel
    of margin covers rounding. Only this box is copied (not the whole padded volumes), with values equal to
    the whole padded stack's at every index the kernel reads.
    """
    size = np.array(vols[0].shape)
    corners = np.array([[x, y, z, 1.0] for x in (0, shape[0] - 1) for y in (0, shape[1] - 1) for z in (0, shape[2] - 1)])
    corners[:, :3] += np.asarray(origin, dtype=np.float64)
    pos = corners @ m[:3].T
    lo = np.clip(np.floor(pos.min(0)) - 1, -2, size).astype(int) + 2  # padded indices the corners can read
    hi = np.clip(np.floor(pos.max(0)) + 1, -2, size).astype(int) + 2 + 2  # + the upper corner, exclusive
    box = np.zeros((*(hi - lo), len(vols)), np.float32)
    src_lo, src_hi = np.maximum(lo - 2, 0), np.minimum(hi - 2, size)  # template voxels inside the box
    if np.all(src_hi > src_lo):
        dst = tuple(slice(int(a - (l - 2)), int(b - (l - 2))) for a, b, l in zip(src_lo, src_hi, lo))
        src = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi))
        for k, v in enumerate(vols):
            box[(*dst, k)] = np.asarray(v, dtype=np.float32)[src]
    return box, lo


def warp_maps(vols, vox_to_vol: np.ndarray, shape, *, origin=(0, 0, 0), chunk: int = 1 << 16) -> list[np.ndarray]:
    """:func:`warp` of several volumes of one shape at once (the positions, corners and weights computed once):
    numpy, in chunks of about ``chunk`` output voxels; equal to :func:`warp` to float32 rounding.

    Long because it is the whole trilinear kernel: positions, the zero-padded corners, the weights.
    """
    vols = list(vols)
    size = np.array(vols[0].shape)
    m = np.asarray(vox_to_vol, dtype=np.float64)
    shape = tuple(int(n) for n in shape)
    if min(shape) <= 0:
        return [np.empty(shape, np.float32) for _ in vols]
    padded, lo = _padded_box(vols, m, shape, origin)
    flat = padded.reshape(-1, len(vols))
    sy, sz = padded.shape[1] * padded.shape[2], padded.shape[2]
    axes = [np.arange(n, dtype=np.float64) + o for n, o in zip(shape, origin)]
    pj = m[:3, 1:2] * axes[1][None]  # (3, n1): each axis's position from the second index
    pk = m[:3, 2:3] * axes[2][None]
    out = [np.empty(shape, np.float32) for _ in vols]
    rows = max(1, chunk // max(1, shape[1] * shape[2]))
    for i0 in range(0, shape[0], rows):
        pi = m[:3, 0:1] * axes[0][None, i0 : i0 + rows] + m[:3, 3:4]  # (3, r)
        base = 0
        weights = []
        for a, stride in enumerate((sy, sz, 1)):
            pos = pi[a][:, None, None] + pj[a][None, :, None] + pk[a][None, None, :]
            f = np.floor(pos)
            fr = (pos - f).astype(np.float32)
            weights.append((1.0 - fr, fr))
            base = base + (np.clip(f, -2, size[a]).astype(np.int64) + (2 - lo[a])) * stride  # outside: padding
        acc = np.zeros((*weights[0][0].shape, len(vols)), np.float32)
        for bx in (0, 1):
            for by in (0, 1):
                wxy = weights[0][bx] * weights[1][by]
                for bz in (0, 1):
                    acc += np.take(flat, base + (bx * sy + by * sz + bz), axis=0) * (wxy * weights[2][bz])[..., None]
        for k, o in enumerate(out):
            o[i0 : i0 + rows] = acc[..., k]
    return out


def warp_support(vol: np.ndarray, vox_to_vol: np.ndarray, shape) -> np.ndarray:
    """:func:`warp` on a whole grid of ``shape``, computed only in the box that can reach ``vol``'s non-zero
    voxels (the rest reads zero there too: every corner it would blend is zero)."""
    out = np.zeros(tuple(int(n) for n in shape), np.float32)
    box = support_box(vol, vox_to_vol, out.shape)
    if box is not None:
        out[box] = warp_maps([vol], vox_to_vol, [b.stop - b.start for b in box], origin=[b.start for b in box])[0]
    return out


def support_box(vol: np.ndarray, vox_to_vol: np.ndarray, shape) -> tuple[slice, ...] | None:
    """The box of a grid of ``shape`` whose trilinear reads of ``vol`` (through ``vox_to_vol``) can touch its
    non-zero voxels; None when none can (outside it every corner read is zero)."""
    nz = [np.flatnonzero(np.asarray(vol).any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(a.size == 0 for a in nz):
        return None
    lo = [a[0] - 1.0 for a in nz]
    hi = [a[-1] + 1.0 for a in nz]
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    sub = corners @ np.linalg.inv(np.asarray(vox_to_vol, dtype=np.float64)).T
    a = np.clip(np.floor(sub[:, :3].min(0)).astype(int) - 2, 0, shape)
    b = np.clip(np.ceil(sub[:, :3].max(0)).astype(int) + 3, 0, shape)
    if np.any(b <= a):
        return None
    return tuple(slice(int(i), int(j)) for i, j in zip(a, b))


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
