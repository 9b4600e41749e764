"""Plumbing shared by the stain transforms (:mod:`.stain`, :mod:`.reinhard`): batching of
``(3, H, W)`` / ``(B, 3, H, W)`` inputs, returning results in the input's type, and the
dictionary-transform base that only routes keys."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Transform
from monai.utils.type_conversion import convert_to_dst_type

__all__: list[str] = []  # private plumbing: stain.py and reinhard.py import the names they use


def _batched(img) -> tuple[torch.Tensor, bool]:
    t = torch.as_tensor(img)
    if t.ndim == 3:
        return t.unsqueeze(0), True
    if t.ndim != 4 or t.shape[1] != 3:
        raise ValueError(f"expected RGB channel-first (3, H, W) or (B, 3, H, W), got shape {tuple(t.shape)}")
    return t, False


def _like(out: torch.Tensor, img):
    """Return ``out`` with the type/device/dtype of ``img`` (uint8 inputs are rounded)."""
    ref = torch.as_tensor(img) if not isinstance(img, np.ndarray) else img
    if ref.dtype in (torch.uint8, np.uint8):
        out = out.round().clamp(0, 255)
    return convert_to_dst_type(out, img, dtype=img.dtype)[0]


class _StainMapBase(MapTransform):
    transform: Transform

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
