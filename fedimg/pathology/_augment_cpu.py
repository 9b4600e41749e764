"""CPU fast path of the tile trainer's input pipeline: gather, flip/rotate, H&E stain
perturbation and scaling to the network's input in one numba pass per batch.

The torch path (:func:`fedimg.pathology.augment.augment_tiles` then
:func:`fedimg.pathology.augment.to_input`) makes about ten full-batch temporaries; this writes
each output pixel once, straight into a channels-last float32 batch, from the same random
draws and with the same rounding to grey levels, so the two paths train on the same
augmented tiles (up to float rounding of the stain maths, rarely one grey level).

Per pixel, with ``S`` the reference H&E stain matrix and ``P = pinv(S)``::

    od  = -ln(max(I, 1) / 255)                  (a 256-entry table)
    c   = P od ;  c' = alpha * c + beta * [c > 0.05]
    out = (255 exp(-S c') - 127.5) / 64
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["OD_LUT", "augment_to_input"]

#: optical density of every uint8 value (:func:`fedimg.transforms.stain.rgb_to_od`), rounded once from float64
OD_LUT = (-np.log(np.clip(np.arange(256, dtype=np.float64), 1.0, 255.0) / 255.0)).astype(np.float32)


@njit(parallel=True, cache=True, nogil=True)
def _augment_kernel(x, idx, flags, alpha, beta, stains, pinv, lut, do_stain, out):  # pragma: no cover - numba
    b, s = out.shape[0], out.shape[1]
    for job in prange(b * s):
        k, i = job // s, job % s
        src = idx[k]
        fw, fh, tr = flags[k, 0], flags[k, 1], flags[k, 2]
        a0, a1, b0, b1 = alpha[k, 0], alpha[k, 1], beta[k, 0], beta[k, 1]
        for j in range(s):
            # out[i, j] = T(flipH(flipW(x)))[i, j]
            r, c = (j, i) if tr else (i, j)
            if fh:
                r = s - 1 - r
            if fw:
                c = s - 1 - c
            v0, v1, v2 = x[src, 0, r, c], x[src, 1, r, c], x[src, 2, r, c]
            if do_stain:
                o0, o1, o2 = lut[v0], lut[v1], lut[v2]
                h = pinv[0, 0] * o0 + pinv[0, 1] * o1 + pinv[0, 2] * o2
                e = pinv[1, 0] * o0 + pinv[1, 1] * o1 + pinv[1, 2] * o2
                h2 = h * a0 + (b0 if h > 0.05 else 0.0)
                e2 = e * a1 + (b1 if e > 0.05 else 0.0)
                for ch in range(3):
                    od = stains[ch, 0] * h2 + stains[ch, 1] * e2
                    # rounded to a grey level as the torch path's uint8 round trip does
                    val = np.rint(min(max(255.0 * math.exp(-od), 0.0), 255.0))
                    out[k, i, j, ch] = (val - 127.5) / 64.0
            else:
                out[k, i, j, 0] = (v0 - 127.5) / 64.0
                out[k, i, j, 1] = (v1 - 127.5) / 64.0
                out[k, i, j, 2] = (v2 - 127.5) / 64.0


def augment_to_input(x, idx, flags, alpha, beta, stains, *, stain: bool = True):
    """Network input ``(B, 3, S, S)`` float32 (channels-last memory) for tiles ``x[idx]``.

    ``x``: uint8 CPU tensor ``(N, 3, S, S)`` (square tiles); ``idx``: ``(B,)`` indices;
    ``flags``: ``(B, 3)`` bool (flip width, flip height, transpose, applied in that order);
    ``alpha``/``beta``: ``(B, 2)`` per-stain scale and shift; ``stains``: ``(3, 2)`` H&E matrix.
    """
    import torch

    xn = x.numpy()
    if xn.ndim != 4 or xn.shape[1] != 3 or xn.shape[2] != xn.shape[3] or xn.dtype != np.uint8 or not xn.flags.c_contiguous:
        raise ValueError(f"expected contiguous uint8 (N, 3, S, S) square tiles, got {tuple(xn.shape)} {xn.dtype}")
    idx_n = np.ascontiguousarray(idx.numpy(), dtype=np.int64)
    b, s = len(idx_n), xn.shape[-1]
    s_np = np.ascontiguousarray(stains.numpy(), dtype=np.float32)
    pinv = np.linalg.pinv(s_np.astype(np.float64)).astype(np.float32)
    out = np.empty((b, s, s, 3), np.float32)
    _augment_kernel(xn, idx_n, np.ascontiguousarray(flags.numpy(), dtype=np.bool_),
                    np.ascontiguousarray(alpha.numpy(), dtype=np.float32), np.ascontiguousarray(beta.numpy(), dtype=np.float32),
                    s_np, pinv, OD_LUT, bool(stain), out)
    return torch.from_numpy(out).permute(0, 3, 1, 2)
