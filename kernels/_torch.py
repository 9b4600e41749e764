"""torch backend: torch CUDA tensors when neither CuPy nor numba CUDA is usable.

Plain torch ops on the tensors' own device (also runs on CPU tensors, which is how the
parity tests exercise it without a GPU). ``add_(u, alpha=w)`` accumulates half-precision
updates into the float32 sum without a temporary copy.

>>> import torch
>>> out = torch.zeros(2)
>>> wsum([torch.ones(2, dtype=torch.bfloat16)], [0.5], out, False)
>>> out
tensor([0.5000, 0.5000])
"""

from __future__ import annotations

import numpy as np

__all__ = ["wsum", "wsum_sumsq", "fedopt", "robust", "sumsq", "scale", "all_finite", "zeros", "empty", "host", "set_tail"]


def _tdt(dt):
    import torch

    return torch.float64 if np.dtype(dt) == np.float64 else torch.float32


def wsum(us, ws, out, accumulate: bool) -> None:
    start = 0
    if not accumulate:
        out.copy_(us[0]).mul_(float(ws[0]))
        start = 1
    for k in range(start, len(us)):
        out.add_(us[k], alpha=float(ws[k]))


def wsum_sumsq(parts, w: float, src, out, accumulate: bool) -> float:
    """``out = [src +] w * concat(parts)`` (the ops of :func:`wsum`) and the parts' float64 sum of squares.

    Multi-tensor ops (``torch._foreach_copy_`` / ``_foreach_add_`` / ``_foreach_mul_`` /
    ``_foreach_norm``) over the parts and their segments of ``out``: on a GPU one fused launch
    per step for all of a model's tensors instead of one per tensor, and one device sync for
    the norm instead of one per tensor. Elementwise the same ``add_(u, alpha=w)`` /
    ``copy_(u).mul_(w)`` as :func:`wsum`.
    """
    import torch

    flat = [u.reshape(-1) for u in parts]
    if not flat:
        return 0.0
    sizes = [u.numel() for u in flat]
    outs = list(out.split(sizes))
    if accumulate:
        if src is not out:
            torch._foreach_copy_(outs, list(src.split(sizes)))
        torch._foreach_add_(outs, flat, alpha=float(w))
    else:
        torch._foreach_copy_(outs, flat)
        torch._foreach_mul_(outs, float(w))
    norms = torch._foreach_norm(flat, 2, dtype=torch.float64)
    return float(torch.stack(norms).square().sum())


def fedopt(p, g, m, v, method: int, lr: float, b1: float, b2: float, tau: float):
    import torch

    dt = torch.float64 if torch.float64 in (p.dtype, g.dtype, m.dtype, v.dtype) else torch.float32
    p, g, m, v = (a.to(dt) for a in (p, g, m, v))
    if method == 3:
        m2 = m * b1 + g
        return p + lr * m2, m2, v.clone()
    m2 = m * b1 + (1 - b1) * g
    g2 = g * g
    if method == 0:
        v2 = v * b2 + (1 - b2) * g2
    elif method == 1:
        v2 = v - (1 - b2) * g2 * torch.sign(v - g2)
    else:
        v2 = v + g2
    return p + lr * m2 / (torch.sqrt(v2) + tau), m2, v2


def robust(us, k_trim: int, dt=np.float32):
    import torch

    K = len(us)
    out = torch.empty(us[0].numel(), dtype=_tdt(dt), device=us[0].device)
    chunk = 1 << 20
    for s in range(0, out.numel(), chunk):
        block = torch.stack([u[s : s + chunk].to(out.dtype) for u in us]).sort(dim=0).values
        out[s : s + chunk] = block[k_trim : K - k_trim].double().mean(dim=0).to(out.dtype)
    return out


def sumsq(u) -> float:
    import torch

    return float(torch.linalg.vector_norm(u, dtype=torch.float64) ** 2)


def scale(u, factor: float, dt=np.float32):
    return u.to(_tdt(dt)) * factor


def all_finite(u) -> bool:
    import torch

    return bool(torch.isfinite(u).all())


def zeros(n: int, dt, like):
    import torch

    return torch.zeros(n, dtype=_tdt(dt), device=like.device)


def empty(n: int, dt, like):
    import torch

    return torch.empty(n, dtype=_tdt(dt), device=like.device)


def host(x) -> np.ndarray:
    import torch

    if x.dtype == torch.bfloat16:
        x = x.float()
    return x.detach().cpu().numpy()


def set_tail(res, start: int, values: np.ndarray) -> None:
    import torch

    res[start:] = torch.from_numpy(np.asarray(values)).to(device=res.device, dtype=res.dtype)
