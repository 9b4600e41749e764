"""Thresholded trilinear warps of binary maps, exactly as thresholding :func:`.resample_np.warp_maps`.

Defacing warps the template's face and brain-protection maps (each 0 or 1) and keeps only
``face > 0.5`` and ``brain > 0.01`` (:func:`.masks.removal_mask`), QC only ``brain > 0.5``
(:func:`.qc.head_shape_brain`, :func:`.qc.brain_in_head`). A trilinear value is a weighted sum of
its cell's eight corners with non-negative weights summing to 1 (to float32 rounding): where all
eight corners are 1 it is about 1, where all are 0 it is 0, so any threshold in ``[0, 0.99]``
decides it without the sum. Only the cells with mixed corners (the maps' boundaries: ~5 % of a
face box) are summed, with :func:`.resample_np.warp_maps`'s float32 arithmetic step for step (the
same positions, weights, products and order of additions), so every voxel is the one the
thresholded float map gives. A per-map table of corner states (:func:`cube_codes`, once per map
and process) replaces the eight reads per voxel and map by one.

>>> import numpy as np
>>> from fedimg.deface.resample_np import warp_maps
>>> vol = np.zeros((6, 6, 6), np.float32); vol[2:5, 1:4, 2:6] = 1.0
>>> m = np.array([[0.9, 0.1, 0, 0.3], [0, 1.1, 0, -0.2], [0.05, 0, 0.8, 0.4], [0, 0, 0, 1]])
>>> got = warp_above([vol], [0.5], m, (7, 7, 7), origin=(-1, 0, 0))[0]
>>> bool(np.array_equal(got, warp_maps([vol], m, (7, 7, 7), origin=(-1, 0, 0))[0] > 0.5)), got.dtype
(True, dtype('bool'))
"""

from __future__ import annotations

import logging
import threading

import numpy as np

__all__ = ["cube_codes", "make_codes", "remember_codes", "warp_above", "warp_support_above", "ALL_ONE", "ALL_ZERO", "MAX_THRESHOLD"]

log = logging.getLogger(__name__)

ALL_ONE, ALL_ZERO = 1, 2  # cube_codes' states; 0: mixed corners (summed exactly)
MAX_THRESHOLD = 0.99  # all-one cells read 1 to float32 rounding (a few 1e-7): any threshold below this is decided

_CODES: list = []  # (volume, its codes): computed once per map and process
_LOCK = threading.Lock()


def cube_codes(vol: np.ndarray) -> np.ndarray | None:
    """Corner states of every trilinear cell of ``vol`` zero-padded by 2 (as :func:`.resample_np.warp_maps` reads it).

    Entry ``[i + 2, j + 2, k + 2]`` describes the cell whose low corner is voxel ``(i, j, k)``, ``i`` from -2 to
    ``n``: :data:`ALL_ONE`, :data:`ALL_ZERO` or 0 (mixed). None when ``vol`` is not binary (only 0 and 1).
    Cached per array (the template's maps are read once per process); the array must not change afterwards.
    """
    with _LOCK:
        for key, codes in _CODES:
            if key is vol:
                return codes
        codes = make_codes(np.asarray(vol))
        _CODES[:] = [*_CODES[-3:], (vol, codes)]
        return codes


def remember_codes(vol: np.ndarray, codes: np.ndarray) -> None:
    """Let :func:`cube_codes` answer ``codes`` for the array ``vol`` (tables :func:`make_codes` made of its values,
    e.g. read from :mod:`.template_cache`); a table it holds for ``vol`` already is kept."""
    with _LOCK:
        if not any(key is vol for key, _ in _CODES):
            _CODES[:] = [*_CODES[-3:], (vol, codes)]


def make_codes(vol: np.ndarray) -> np.ndarray | None:
    """:func:`cube_codes`' table of ``vol``, made afresh (not cached)."""
    nonzero = vol != 0  # one pass over the map; the rest works on booleans
    if not np.array_equal(vol == 1, nonzero):  # a value other than 0 and 1
        return None
    codes = np.full(tuple(n + 3 for n in vol.shape), ALL_ZERO, np.uint8)
    nz = [np.flatnonzero(nonzero.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(a.size == 0 for a in nz):
        return codes
    lo, hi = [int(a[0]) for a in nz], [int(a[-1]) for a in nz]
    sub = np.zeros(tuple(b - a + 3 for a, b in zip(lo, hi)), bool)  # voxels lo - 1 .. hi + 1, zero outside
    sub[1:-1, 1:-1, 1:-1] = nonzero[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
    one, some = sub[:-1] & sub[1:], sub[:-1] | sub[1:]  # pairs along each axis in turn: the 8 corners
    one, some = one[:, :-1] & one[:, 1:], some[:, :-1] | some[:, 1:]
    one, some = one[:, :, :-1] & one[:, :, 1:], some[:, :, :-1] | some[:, :, 1:]
    box = tuple(slice(a + 1, b + 3) for a, b in zip(lo, hi))  # cells with low corner lo - 1 .. hi
    codes[box] = one.view(np.uint8) | ((~some).view(np.uint8) << 1)
    return codes


def warp_above(vols, thresholds, vox_to_vol: np.ndarray, shape, *, origin=(0, 0, 0),
               chunk: int = 1 << 16) -> list[np.ndarray]:
    """``[warp_maps(vols, vox_to_vol, shape, origin=origin)[k] > thresholds[k]]``: the same voxels, as boolean arrays.

    ``vols``: binary float32 maps of one shape (other maps, or thresholds outside ``[0, MAX_THRESHOLD]``, are
    warped in full and thresholded). Long because it is the trilinear kernel of :func:`.resample_np.warp_maps`
    restricted to the cells with mixed corners.
    """
    vols = list(vols)
    shape = tuple(int(n) for n in shape)
    codes = [cube_codes(v) if 0.0 <= float(t) <= MAX_THRESHOLD else None for v, t in zip(vols, thresholds)]
    if any(c is None for c in codes) or min(shape) <= 0:
        from .resample_np import warp_maps

        return [w > t for w, t in zip(warp_maps(vols, vox_to_vol, shape, origin=origin, chunk=chunk), thresholds)]
    size = np.array(vols[0].shape)
    m = np.asarray(vox_to_vol, dtype=np.float64)
    sy, sz = int((size[1] + 3) * (size[2] + 3)), int(size[2] + 3)
    flat = [c.reshape(-1) for c in codes]
    axes = [np.arange(n, dtype=np.float64) + o for n, o in zip(shape, origin)]
    pj = m[:3, 1:2] * axes[1][None]  # (3, n1): as warp_maps computes the positions
    pk = m[:3, 2:3] * axes[2][None]
    out = [np.empty(shape, bool) for _ in vols]
    rows = max(1, chunk // max(1, shape[1] * shape[2]))
    for i0 in range(0, shape[0], rows):
        pi = m[:3, 0:1] * axes[0][None, i0 : i0 + rows] + m[:3, 3:4]  # (3, r)
        low, cell = [], 0
        for a, stride in enumerate((sy, sz, 1)):
            pos = pi[a][:, None, None] + pj[a][None, :, None] + pk[a][None, None, :]
            f = np.clip(np.floor(pos), -2, size[a]).astype(np.int64)  # outside: cells of padding
            low.append(f)
            cell = cell + (f + 2) * stride
        for k, (vol, fc, t) in enumerate(zip(vols, flat, thresholds)):
            code = fc[cell]
            res = code == ALL_ONE
            mixed = np.nonzero(code == 0)
            if mixed[0].size:
                res[mixed] = _summed(vol, [f[mixed] for f in low], [(pi[a], pj[a], pk[a]) for a in range(3)], mixed) > t
            out[k][i0 : i0 + rows] = res
    return out


def _summed(vol: np.ndarray, low, parts, idx) -> np.ndarray:
    """The trilinear values (float32) at the cells ``idx`` of a chunk, as :func:`.resample_np.warp_maps` sums them:
    the positions ``pi + pj + pk`` (float64, that order), weights ``1 - fr`` and ``fr`` in float32, the corner
    weight ``(wx * wy) * wz``, and the eight corners added in the order x, y, z (zeros outside ``vol``)."""
    weights = []
    ii, jj, kk = idx
    for pi, pj, pk in parts:
        pos = pi[ii] + pj[jj] + pk[kk]
        fr = (pos - np.floor(pos)).astype(np.float32)
        weights.append((1.0 - fr, fr))
    size = vol.shape
    acc = np.zeros(ii.size, np.float32)
    for bx in (0, 1):
        x = low[0] + bx
        okx = (x >= 0) & (x < size[0])
        for by in (0, 1):
            y = low[1] + by
            oky = okx & (y >= 0) & (y < size[1])
            wxy = weights[0][bx] * weights[1][by]
            for bz in (0, 1):
                z = low[2] + bz
                ok = oky & (z >= 0) & (z < size[2])
                val = np.zeros(ii.size, np.float32)
                val[ok] = vol[x[ok], y[ok], z[ok]]
                acc += val * (wxy * weights[2][bz])
    return acc


def warp_support_above(vol: np.ndarray, vox_to_vol: np.ndarray, shape, threshold: float) -> np.ndarray:
    """``warp_support(vol, vox_to_vol, shape) > threshold`` (:func:`.resample_np.warp_support`) for a binary ``vol``:
    computed in the same box (outside it every corner is zero: False), with :func:`warp_above`."""
    if not 0.0 <= float(threshold) <= MAX_THRESHOLD or cube_codes(vol) is None:
        from .resample_np import warp_support

        return warp_support(vol, vox_to_vol, shape) > threshold
    from .resample_np import support_box

    out = np.zeros(tuple(int(n) for n in shape), bool)
    box = support_box(vol, vox_to_vol, out.shape)
    if box is not None:
        out[box] = warp_above([vol], [threshold], vox_to_vol, [b.stop - b.start for b in box],
                              origin=[b.start for b in box])[0]
    return out
