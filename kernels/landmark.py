"""Per-case landmark intensity standardisation (Nyúl–Udupa style): the maths, numpy and torch.

Each channel's foreground intensities are mapped piecewise-linearly from the case's own
percentile landmarks (default 1, 10, 20, …, 90, 99) onto a fixed standard scale: the standard
normal's quantiles at the same percentiles, so the output looks like a z-score (median 0, the
1st / 99th percentiles at ∓2.33) but is unchanged, at the landmarks exactly and between them up to
the piecewise-linear approximation, by any increasing scanner mapping (scale, offset, gamma, a
per-tissue gain that keeps the tissues' order). Beyond the end landmarks the end segments are
extended linearly and clipped to ``±clip``; a constant channel maps to 0. Unlike TorchIO's
``HistogramStandardization`` or the original Nyúl–Udupa method, the standard scale is fixed, not
learned from a training set, so no site statistic is needed (nothing leaves a site). Background
voxels (outside ``mask``) are 0.

One op, dispatched on its input as every kernel here: numpy input takes the numpy path (no torch
import), a torch tensor stays on its device. The engine's preprocessing and contrast augmentation
call it; the MONAI-style transforms :class:`fedimg.transforms.intensity.LandmarkStandardize` and
``LandmarkStandardized`` wrap it.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> img = rng.gamma(4.0, 50.0, size=(2, 16, 16, 16)).astype(np.float32)
>>> out = landmark_standardize(img)
>>> out.shape, out.dtype, abs(round(float(np.median(out[0])), 2))
((2, 16, 16, 16), dtype('float32'), 0.0)
>>> bool(np.allclose(landmark_standardize(3.0 * img + 100.0), out, atol=1e-4))
True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["LANDMARKS", "standard_scale", "check_percentiles", "landmark_standardize"]

log = logging.getLogger(__name__)

#: Default percentile landmarks (TorchIO's / Nyúl–Udupa's deciles plus the 1st and 99th).
LANDMARKS: tuple[float, ...] = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)


def check_percentiles(percentiles: Sequence[float]) -> np.ndarray:
    p = np.asarray(percentiles, dtype=np.float64)
    if p.ndim != 1 or p.size < 2 or not np.all(np.diff(p) > 0) or p[0] <= 0 or p[-1] >= 100:
        raise ValueError(f"percentile landmarks {list(percentiles)!r}: give at least two strictly increasing "
                         "values inside (0, 100), e.g. 1 10 20 ... 90 99")
    return p


def standard_scale(percentiles: Sequence[float] = LANDMARKS) -> np.ndarray:
    """The fixed standard values of ``percentiles``: the standard normal's quantiles there.

    >>> [round(float(v), 3) for v in standard_scale((1, 50, 99))]
    [-2.326, 0.0, 2.326]
    """
    p = check_percentiles(percentiles)
    nd = NormalDist()
    return np.array([nd.inv_cdf(float(q) / 100.0) for q in p], dtype=np.float64)


def _percentiles(sorted_vals: Any, p: Any) -> Any:
    """numpy's default (linear) percentiles ``p`` of already sorted 1-D torch values."""
    import torch

    pos = p / 100.0 * (sorted_vals.numel() - 1)
    lo = pos.floor().long()
    hi = torch.clamp(lo + 1, max=sorted_vals.numel() - 1)
    frac = pos - lo.to(pos.dtype)
    return sorted_vals[lo] + frac * (sorted_vals[hi] - sorted_vals[lo])


def _map_channel(values: Any, lm: Any, std: Any, clip: float) -> Any:
    """``values`` mapped through the piecewise-linear function ``lm -> std`` (tied landmarks merged into
    one point at their mean standard value, end segments extended, clipped to ``±clip``); torch."""
    import torch

    xs, inv = torch.unique(lm, return_inverse=True)
    ys = torch.zeros_like(xs).index_add_(0, inv, std) / torch.bincount(inv, minlength=xs.numel()).to(xs.dtype)
    if xs.numel() == 1:  # a constant channel carries no contrast: 0, as its z-score would be
        return torch.zeros_like(values)
    i = torch.bucketize(values, xs).clamp(1, xs.numel() - 1)  # below / above the ends: the end segments
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return (y0 + (values - x0) * (y1 - y0) / (x1 - x0)).clamp(-clip, clip)


def _map_channel_np(values: np.ndarray, lm: np.ndarray, std: np.ndarray, clip: float) -> np.ndarray:
    """:func:`_map_channel` in numpy (the CPU path: ``np.percentile`` selects, it does not sort)."""
    xs, inv = np.unique(lm, return_inverse=True)
    if xs.size == 1:
        return np.zeros(values.shape, np.float64)
    ys = np.bincount(inv, weights=std) / np.bincount(inv)
    out = np.interp(values, xs, ys)
    lo, hi = values < xs[0], values > xs[-1]
    out[lo] = ys[0] + (values[lo] - xs[0]) * ((ys[1] - ys[0]) / (xs[1] - xs[0]))
    out[hi] = ys[-1] + (values[hi] - xs[-1]) * ((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
    return np.clip(out, -clip, clip, out=out)


#: The warning for an all-background mask (both paths).
_EMPTY_MASK = "landmark_standardize: empty foreground mask; every voxel set to 0"


def _check_image(shape: tuple[int, ...], clip: float) -> None:
    """Refuse an image without a channel axis and a non-positive ``clip`` (numpy and torch paths alike)."""
    if len(shape) < 2:
        raise ValueError(f"image of shape {shape}: give (channels, *spatial)")
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")


def _levels(mask_shape: tuple[int, ...], shape: tuple[int, ...],
            percentiles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Check the mask's shape against the image's spatial shape; the checked percentiles and their standard values."""
    if mask_shape != shape[1:]:
        raise ValueError(f"mask of shape {mask_shape} does not match the image's spatial shape {shape[1:]}")
    return check_percentiles(percentiles), standard_scale(percentiles)


def _check_finite(channel: int, finite: bool) -> None:
    """Refuse a channel whose foreground holds NaN or Inf (``finite``: the path's own test of its values)."""
    if not finite:
        raise ValueError(f"channel {channel} holds NaN or Inf voxels; fix or drop the case before standardising")


def landmark_standardize(image: Any, mask: Any = None, *, percentiles: Sequence[float] = LANDMARKS,
                         clip: float = 6.0) -> Any:
    """Standardise every channel of ``image`` ``(C, *spatial)`` from its own foreground landmarks.

    ``mask`` (``spatial``, bool; default every voxel) marks the foreground: the landmarks are its
    voxels' percentiles (numpy's linear rule), per channel; voxels outside it are set to 0. Takes
    numpy or torch (any device) and returns the same kind: float32 of ``image``'s shape, foreground
    values in ``[-clip, clip]``.
    """
    if not hasattr(image, "detach"):  # numpy (or a list): the CPU path needs no torch
        return _standardize_np(np.asarray(image), mask, percentiles, clip)
    import torch

    img = image.detach().to(torch.float64)
    _check_image(tuple(img.shape), clip)
    if mask is None:
        m = torch.ones(img.shape[1:], dtype=torch.bool, device=img.device)
    else:
        m = (mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask))).to(img.device).bool()
    p_np, std_np = _levels(tuple(m.shape), tuple(img.shape), percentiles)
    p = torch.as_tensor(p_np, dtype=torch.float64, device=img.device)
    std = torch.as_tensor(std_np, dtype=torch.float64, device=img.device)
    out = torch.zeros(img.shape, dtype=torch.float32, device=img.device)
    if not bool(m.any()):
        log.warning(_EMPTY_MASK)
    else:
        for c in range(img.shape[0]):
            vals = img[c][m]
            _check_finite(c, bool(torch.isfinite(vals).all()))
            lm = _percentiles(torch.sort(vals).values, p)
            out[c][m] = _map_channel(vals, lm, std, clip).to(torch.float32)
    return out


def _standardize_np(img: np.ndarray, mask: Any, percentiles: Sequence[float], clip: float) -> np.ndarray:
    """:func:`landmark_standardize` for numpy input (same checks, same map)."""
    _check_image(img.shape, clip)
    m = np.ones(img.shape[1:], bool) if mask is None else np.asarray(mask, dtype=bool)
    p, std = _levels(m.shape, img.shape, percentiles)
    out = np.zeros(img.shape, dtype=np.float32)
    if not m.any():
        log.warning(_EMPTY_MASK)
        return out
    for c in range(img.shape[0]):
        vals = img[c][m].astype(np.float64)
        _check_finite(c, bool(np.all(np.isfinite(vals))))
        out[c][m] = _map_channel_np(vals, np.percentile(vals, p), std, clip)
    return out
