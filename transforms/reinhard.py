"""Reinhard (2001) colour transfer in CIE L*a*b* (D65), batched in torch: array transform
:class:`ReinhardNormalize` and its dictionary twin. Re-exported by :mod:`.stain`.

>>> import torch
>>> target = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
>>> ReinhardNormalize(target)(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)).dtype
torch.uint8
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Transform
from monai.utils import TransformBackends

from ._stain_common import _batched, _like, _StainMapBase

__all__ = ["rgb_to_lab", "lab_to_rgb", "fit_reinhard", "reinhard_normalize", "ReinhardNormalize", "ReinhardNormalized"]

_RGB2XYZ = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > 0.008856, t.clamp_min(1e-12) ** (1 / 3), 7.787 * t + 16 / 116)


def rgb_to_lab(img: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 255] ``(B, 3, H, W)`` → CIE L*a*b* (float32, same shape)."""
    c = img.float() / 255.0
    lin = torch.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", _RGB2XYZ.to(lin.device), lin) / _WHITE.to(lin.device)[None, :, None, None]
    fx, fy, fz = _f(xyz).unbind(1)
    lum = torch.where(xyz[:, 1] > 0.008856, 116 * fy - 16, 903.3 * xyz[:, 1])
    return torch.stack([lum, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_lab`: float sRGB in [0, 255]."""
    lum, a, b = lab.unbind(1)
    fy = (lum + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=1)
    xyz = torch.where(f > 0.206893, f**3, (f - 16 / 116) / 7.787) * _WHITE.to(lab.device)[None, :, None, None]
    lin = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_RGB2XYZ).to(lab.device), xyz).clamp(0, 1)
    c = torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return (c * 255.0).clamp(0, 255)


def fit_reinhard(target) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel L*a*b* mean and std ``(3,)`` of a target image."""
    t, _ = _batched(target)
    lab = rgb_to_lab(t).flatten(2)[0]
    return lab.mean(-1), lab.std(-1)


def reinhard_normalize(img, target_mean, target_std) -> torch.Tensor:
    """Match each image's L*a*b* channel means and stds to the target's (Reinhard 2001)."""
    t, single = _batched(img)
    lab = rgb_to_lab(t)
    flat = lab.flatten(2)
    mu, sd = flat.mean(-1)[..., None, None], flat.std(-1).clamp_min(1e-6)[..., None, None]
    tm = torch.as_tensor(target_mean, device=lab.device).float()[None, :, None, None]
    ts = torch.as_tensor(target_std, device=lab.device).float()[None, :, None, None]
    out = lab_to_rgb((lab - mu) / sd * ts + tm)
    return out[0] if single else out



class ReinhardNormalize(Transform):
    """Reinhard colour transfer in L*a*b* to a target image (fitted once)."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, target=None, *, mean=None, std=None) -> None:
        if target is not None:
            mean, std = fit_reinhard(torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target))
        if mean is None or std is None:
            raise ValueError("ReinhardNormalize needs a target image or mean= and std=")
        self.mean, self.std = torch.as_tensor(mean).float(), torch.as_tensor(std).float()

    def __call__(self, img):
        return _like(reinhard_normalize(img, self.mean, self.std), img)


class ReinhardNormalized(_StainMapBase):
    """Dictionary twin of :class:`ReinhardNormalize`."""

    backend = ReinhardNormalize.backend

    def __init__(self, keys: KeysCollection, target=None, allow_missing_keys: bool = False, **kw: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ReinhardNormalize(target, **kw)
