"""Random crops, flips and intensity augmentation applied to cached tensors on the device.

Random numbers come from the trainer's own ``torch.Generator`` (on the CPU, so results do
not depend on the device and its state can be checkpointed); the tensor work runs where
the cached data live (the GPU when there is one). Crop centres are drawn from whole-tumour
voxels with probability ``pos_fraction`` (like MONAI's ``RandCropByPosNegLabel``),
uniformly otherwise.

>>> import torch
>>> from fedimg.engine.config import TrainConfig
>>> img = torch.zeros(4, 40, 40, 40); reg = torch.zeros(3, 40, 40, 40, dtype=torch.uint8)
>>> fg = torch.nonzero(reg[1].reshape(-1)).reshape(-1)
>>> x, y = sample_batch([img], [reg], [fg], [0, 0], TrainConfig(roi=(32, 32, 32)), torch.Generator().manual_seed(0))
>>> tuple(x.shape), tuple(y.shape), y.dtype
((2, 4, 32, 32, 32), (2, 3, 32, 32, 32), torch.float32)
"""

from __future__ import annotations

from typing import Any

__all__ = ["crop_start", "random_crop", "random_flip", "random_intensity", "sample_batch"]


def _rand(gen: Any) -> float:
    import torch

    return float(torch.rand((), generator=gen))


def crop_start(shape: tuple[int, ...], roi: tuple[int, ...], fg: Any, pos_fraction: float, gen: Any) -> tuple[int, ...]:
    """Start corner of a ``roi`` crop in a volume of spatial ``shape`` (foreground-biased)."""
    import torch

    if fg is not None and fg.numel() and _rand(gen) < pos_fraction:
        flat = int(fg[int(torch.randint(fg.numel(), (), generator=gen))])
        centre = []
        for s in reversed(shape):
            centre.append(flat % s)
            flat //= s
        centre.reverse()
        return tuple(min(max(0, c - r // 2), s - r) for c, r, s in zip(centre, roi, shape))
    return tuple(int(torch.randint(s - r + 1, (), generator=gen)) for s, r in zip(shape, roi))


def random_crop(image: Any, regions: Any, fg: Any, roi: tuple[int, ...], pos_fraction: float, gen: Any) -> tuple[Any, Any]:
    """Crop ``roi`` from an image (C, X, Y, Z) and its regions (views, no copy)."""
    start = crop_start(tuple(image.shape[1:]), roi, fg, pos_fraction, gen)
    sl = (slice(None), *(slice(a, a + r) for a, r in zip(start, roi)))
    return image[sl], regions[sl]


def random_flip(image: Any, regions: Any, prob: float, gen: Any) -> tuple[Any, Any]:
    """Flip each spatial axis independently with probability ``prob``."""
    dims = [d for d in (1, 2, 3) if _rand(gen) < prob]
    if dims:
        return image.flip(dims), regions.flip(dims)
    return image, regions


def random_intensity(image: Any, scale: float, shift: float, gen: Any) -> Any:
    """Per channel ``x * (1 + U(-scale, scale)) + U(-shift, shift)`` (MONAI RandScale/RandShiftIntensity)."""
    import torch

    c = image.shape[0]
    f = 1.0 + scale * (2 * torch.rand(c, generator=gen) - 1)
    o = shift * (2 * torch.rand(c, generator=gen) - 1)
    view = (c,) + (1,) * (image.ndim - 1)
    return image * f.to(image.device).view(view) + o.to(image.device).view(view)


def sample_batch(images: list, regions: list, fgs: list, indices: list[int], config: Any, gen: Any) -> tuple[Any, Any]:
    """Build one augmented training batch ``(x float32 (B,4,*roi), y float32 (B,3,*roi))``."""
    import torch

    from fedimg.engine.contrast import contrast_enabled, random_contrast

    contrast = contrast_enabled(config)
    xs, ys = [], []
    for i in indices:
        img = random_contrast(images[i], config, gen) if contrast else images[i]
        x, y = random_crop(img, regions[i], fgs[i], config.roi, config.pos_fraction, gen)
        x, y = random_flip(x, y, config.flip_prob, gen)
        if config.intensity_scale or config.intensity_shift:
            x = random_intensity(x, config.intensity_scale, config.intensity_shift, gen)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs).contiguous(), torch.stack(ys).float()
