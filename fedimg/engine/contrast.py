"""Contrast augmentation at each site: another scanner's contrast mapping, then per-case z-score.

Sites differ by scanner: per-contrast gamma, tissue signal, smooth bias field. The per-case
z-score of :mod:`fedimg.engine.cache` removes scale and offset, not these. So that no site's
mapping is foreign to the global model, :func:`random_contrast` re-maps a cached training
case (C, X, Y, Z; z-scored, background 0) the way another scanner would, with MONAI's
transforms, and z-scores it again inside its head mask (as a test case is preprocessed):

1. each channel's head voxels are min-max scaled to [0, 1] (the "raw signal");
2. ``RandBiasField`` (one smooth multiplicative field for every channel, like a coil), then
   per channel ``RandAdjustContrast`` (gamma in ``[1/(1+g), 1+g]``) and
   ``RandHistogramShift`` (a random monotone piecewise-linear intensity mapping);
3. per-channel z-score over the head voxels (or, with ``intensity_norm="landmark"``, the same
   landmark standardisation as the cached cases: then gamma and histogram shift, being monotone,
   mostly cancel and the bias field is what remains); background stays 0.

Each transform is applied with probability ``config.contrast_prob`` and seeded from the
trainer's ``torch.Generator``, so a run is reproducible. Off when ``contrast_gamma``,
``contrast_bias`` and ``contrast_hist`` are all 0 (:func:`contrast_enabled`).

>>> import torch
>>> from fedimg.engine.config import TrainConfig
>>> img = torch.zeros(2, 20, 20, 20); img[:, 4:16, 4:16, 4:16] = torch.randn(2, 12, 12, 12)
>>> cfg = TrainConfig(roi=(32, 32, 32), contrast_gamma=0.5, contrast_prob=1.0)
>>> out = random_contrast(img, cfg, torch.Generator().manual_seed(0))
>>> tuple(out.shape), bool((out[:, 0] == 0).all()), round(float(out[0, 4:16, 4:16, 4:16].std()), 2)
((2, 20, 20, 20), True, 1.0)
"""

from __future__ import annotations

from typing import Any

__all__ = ["contrast_enabled", "random_contrast"]


def contrast_enabled(config: Any) -> bool:
    """True when ``config`` asks for any contrast augmentation."""
    return bool(getattr(config, "contrast_gamma", 0.0) or getattr(config, "contrast_bias", 0.0)
                or getattr(config, "contrast_hist", 0))


def _seed(gen: Any) -> int:
    import torch

    return int(torch.randint(2**31 - 1, (), generator=gen))


def _apply(transform: Any, x: Any, gen: Any) -> Any:
    """Run a MONAI randomisable transform on ``x`` with a seed drawn from ``gen``; plain tensor back."""
    import torch

    transform.set_random_state(seed=_seed(gen))
    y = transform(x)
    return torch.as_tensor(y.as_tensor() if hasattr(y, "as_tensor") else y, dtype=x.dtype, device=x.device)


def random_contrast(image: Any, config: Any, gen: Any) -> Any:
    """``image`` (C, X, Y, Z) re-mapped as by another scanner and z-scored again in its head mask."""
    import torch
    from monai.transforms import RandAdjustContrast, RandBiasField, RandHistogramShift

    mask = (image != 0).any(dim=0)
    if not bool(mask.any()):
        return image
    prob = float(config.contrast_prob)
    m = mask.unsqueeze(0)
    big = torch.finfo(image.dtype).max
    lo = torch.where(m, image, big).amin(dim=(1, 2, 3), keepdim=True)
    hi = torch.where(m, image, -big).amax(dim=(1, 2, 3), keepdim=True)
    x = torch.where(m, (image - lo) / (hi - lo).clamp_min(1e-6), 0.0)
    if config.contrast_bias:
        x = _apply(RandBiasField(prob=prob, coeff_range=(0.0, float(config.contrast_bias)), degree=3), x, gen)
    chans = []
    for c in range(x.shape[0]):
        xc = x[c:c + 1]
        if config.contrast_gamma:
            g = 1.0 + float(config.contrast_gamma)
            xc = _apply(RandAdjustContrast(prob=prob, gamma=(1.0 / g, g)), xc, gen)
        if config.contrast_hist:
            xc = _apply(RandHistogramShift(num_control_points=(3, max(3, int(config.contrast_hist))), prob=prob), xc, gen)
        chans.append(xc)
    x = torch.cat(chans)
    if getattr(config, "intensity_norm", "zscore") == "landmark":  # as the cached cases were normalised
        from fedimg.kernels.landmark import landmark_standardize

        return landmark_standardize(x, mask).to(image.dtype)
    n = m.sum()
    mean = torch.where(m, x, 0.0).sum(dim=(1, 2, 3), keepdim=True) / n
    var = torch.where(m, (x - mean) ** 2, 0.0).sum(dim=(1, 2, 3), keepdim=True) / n
    return torch.where(m, (x - mean) / var.sqrt().clamp_min(1e-6), 0.0)
