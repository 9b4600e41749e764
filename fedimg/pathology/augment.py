"""Tile augmentation and network input: flips, 90-degree rotations, H&E stain perturbation.

Random parameters are drawn from a caller's ``torch.Generator`` on the CPU
(:func:`draw_augment`, so ``--resume`` is exact and results do not depend on the device);
the pixel work runs where the tiles live: torch ops on a GPU (:func:`augment_tiles` then
:func:`to_input`), one fused numba pass on the CPU (:mod:`fedimg.pathology._augment_cpu`).
:func:`batch_input` picks the path.

>>> import torch
>>> x = torch.full((2, 3, 4, 4), 128, dtype=torch.uint8)
>>> to_input(x, False).shape, float(to_input(x, False)[0, 0, 0, 0])
(torch.Size([2, 3, 4, 4]), 0.0078125)
>>> flags, alpha, beta = draw_augment(torch.Generator().manual_seed(0), 2, sigma1=0.0, sigma2=0.0)
>>> out = augment_tiles(x, flags, alpha, beta)
>>> out.shape, out.dtype
(torch.Size([2, 3, 4, 4]), torch.uint8)
"""

from __future__ import annotations

from typing import Any

__all__ = ["to_input", "draw_augment", "augment_tiles", "batch_input"]


def to_input(xb: Any, channels_last: bool) -> Any:
    """uint8 ``(B, 3, S, S)`` → float input scaled to about [-2, 2]."""
    import torch

    x = xb.float().sub_(127.5).div_(64.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def draw_augment(generator: Any, b: int, *, sigma1: float, sigma2: float) -> tuple[Any, Any, Any]:
    """One batch of augmentation parameters from ``generator`` (CPU tensors): flags ``(b, 3)``
    (flip width, flip height, transpose), stain ``alpha`` ``(b, 2)`` in ``1 ± sigma1`` and
    ``beta`` ``(b, 2)`` in ``± sigma2``."""
    import torch

    r = torch.rand(b, 8, generator=generator)
    return r[:, :3] < 0.5, 1 + sigma1 * (2 * r[:, 3:5] - 1), sigma2 * (2 * r[:, 5:7] - 1)


def augment_tiles(xb: Any, flags: Any, alpha: Any, beta: Any) -> Any:
    """Flips, transposes and H&E stain perturbation of uint8 tiles ``(B, 3, S, S)`` (uint8 out), torch ops."""
    import torch

    from fedimg.transforms.stain import stain_augment

    flags = flags.to(xb.device)
    x = torch.where(flags[:, 0, None, None, None], xb.flip(-1), xb)
    x = torch.where(flags[:, 1, None, None, None], x.flip(-2), x)
    x = torch.where(flags[:, 2, None, None, None], x.transpose(-1, -2), x)
    out = stain_augment(x, alpha.to(x.device), beta.to(x.device))
    return out.round_().to(torch.uint8)


def batch_input(x: Any, idx: Any, generator: Any, config: Any, *, channels_last: bool) -> Any:
    """The network input for tiles ``x[idx]``: augmented when ``config.augment``
    (parameters from ``generator``, stain spread ``config.stain_sigma1/2``).

    On the CPU (square tiles) the gather, augmentation and scaling run as one numba pass
    (:mod:`fedimg.pathology._augment_cpu`); elsewhere as torch ops on the tiles' device.
    """
    sigmas = {"sigma1": config.stain_sigma1, "sigma2": config.stain_sigma2}
    if config.augment and x.device.type == "cpu" and x.shape[-1] == x.shape[-2]:
        from fedimg.transforms.stain import REFERENCE_HE

        from ._augment_cpu import augment_to_input

        flags, alpha, beta = draw_augment(generator, int(idx.shape[0]), **sigmas)
        out = augment_to_input(x.contiguous(), idx, flags, alpha, beta, REFERENCE_HE)
        return out if channels_last else out.contiguous()
    xb = x[idx]
    if config.augment:
        xb = augment_tiles(xb, *draw_augment(generator, xb.shape[0], **sigmas))
    return to_input(xb, channels_last)
