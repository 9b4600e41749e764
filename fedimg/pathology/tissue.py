"""Tissue detection on a low-resolution view of a slide.

Otsu's threshold on HSV saturation (white glass has none) or on summed optical density,
computed in torch on the device given (the GPU when there is one), then small objects are
removed and small holes filled on the (small) mask with scipy.

>>> import numpy as np
>>> rgb = np.full((64, 64, 3), 245, np.uint8); rgb[16:48, 16:48] = (150, 60, 140)
>>> int(tissue_mask(rgb, min_object_px=4).sum())
1024
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["otsu_threshold", "tissue_score", "tissue_mask", "slide_tissue_mask"]

log = logging.getLogger(__name__)


def otsu_threshold(values, bins: int = 256):
    """Otsu threshold of a torch tensor of values (any shape), via a ``bins`` histogram."""
    import torch

    v = values.flatten().float()
    lo, hi = v.min(), v.max()
    if float(hi - lo) <= 0:
        return hi
    idx = ((v - lo) / (hi - lo) * (bins - 1)).round().long()
    hist = torch.bincount(idx, minlength=bins).double()
    centers = torch.linspace(0, 1, bins, dtype=torch.float64, device=v.device) * (hi - lo).double() + lo.double()
    w0 = hist.cumsum(0)
    w1 = hist.sum() - w0
    m0 = (hist * centers).cumsum(0)
    mu0 = m0 / w0.clamp_min(1)
    mu1 = (m0[-1] - m0) / w1.clamp_min(1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    k = int(torch.argmax(between[:-1]))
    return ((centers[k] + centers[k + 1]) / 2).float()


def tissue_score(rgb, method: str = "saturation"):
    """Per-pixel tissue score ``(H, W)`` of an RGB torch tensor ``(H, W, 3)`` in [0, 255]."""
    import torch

    x = rgb.float()
    if method == "saturation":
        mx, mn = x.amax(-1), x.amin(-1)
        return torch.where(mx > 0, (mx - mn) / mx.clamp_min(1), torch.zeros_like(mx))
    if method == "od":
        return (-torch.log(x.clamp(1, 255) / 255)).sum(-1)
    raise ValueError(f"unknown tissue method {method!r}; use 'saturation' or 'od'")


def tissue_mask(
    rgb: np.ndarray,
    *,
    method: str = "saturation",
    min_object_px: int = 64,
    max_hole_px: int = 64,
    device=None,
    min_threshold: float | None = None,
) -> np.ndarray:
    """Boolean tissue mask of an ``(H, W, 3)`` uint8 RGB image.

    ``min_threshold`` floors Otsu's threshold (default 0.05 saturation / 0.15 OD) so a slide
    that is all tissue or all glass is not split in two by noise.
    """
    import torch
    from scipy import ndimage

    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) RGB, got {rgb.shape}")
    t = torch.tensor(np.ascontiguousarray(rgb), device=device or "cpu")
    score = tissue_score(t, method)
    floor = min_threshold if min_threshold is not None else (0.05 if method == "saturation" else 0.15)
    thr = max(float(otsu_threshold(score)), floor)
    mask = score > thr
    # remove single-pixel speckle and fill pinholes on the device before the CPU clean-up
    m = mask.float()[None, None]
    opened = -torch.nn.functional.max_pool2d(-torch.nn.functional.max_pool2d(m, 3, 1, 1), 3, 1, 1)
    mask = (opened[0, 0] > 0.5).cpu().numpy()
    log.debug("tissue threshold %.4f (%s), %.1f%% tissue before clean-up", thr, method, 100 * mask.mean())
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_object_px
        keep[0] = False
        mask = keep[labels]
    holes = ndimage.binary_fill_holes(mask) & ~mask
    hl, hn = ndimage.label(holes)
    if hn:
        hsizes = np.bincount(hl.ravel())
        small = hsizes <= max_hole_px
        small[0] = False
        mask = mask | small[hl]
    return mask


def slide_tissue_mask(slide, *, mask_mpp: float = 8.0, method: str = "saturation", min_object_um2: float = 20000.0, device=None):
    """Tissue mask of a slide at about ``mask_mpp`` microns per pixel.

    Returns ``(mask (h, w) bool, thumbnail (h, w, 3) uint8, downsample)`` where
    ``downsample`` maps mask pixels to level-0 pixels.
    """
    w0, h0 = slide.dimensions
    max_side = max(64, int(round(max(w0, h0) * slide.mpp / mask_mpp)))
    thumb, ds = slide.read_thumbnail(max_side=max_side)
    px_area_um2 = (ds * slide.mpp) ** 2
    min_px = max(4, int(min_object_um2 / px_area_um2))
    mask = tissue_mask(thumb, method=method, min_object_px=min_px, max_hole_px=min_px, device=device)
    return mask, thumb, ds
