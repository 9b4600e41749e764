"""Deterministic preprocessing, done once per case and kept as tensors on the device.

Each case is cropped to its foreground (the head/brain, union over the four contrasts),
normalised per channel over foreground voxels (background set to 0): z-scored by default, like
MONAI's ``NormalizeIntensity(nonzero=True, channel_wise=True)``, or, with
``intensity_norm="landmark"``, mapped from the case's own percentile landmarks onto a fixed scale
(:func:`fedimg.kernels.landmark.landmark_standardize`), and stored as a float32 image and
uint8 TC/WT/ET regions on the training device. A site's cases are split into train/val
deterministically from ``config.val_fraction`` and ``config.seed``.

>>> import numpy as np
>>> img = np.zeros((4, 40, 40, 40), np.float32); img[:, 5:35, 8:30, 10:20] = 3.0
>>> img[:, 10:20, 10:20, 12:18] = 5.0
>>> p = preprocess(img, None)
>>> tuple(p.image.shape), p.bbox
((4, 34, 26, 14), ((3, 37), (6, 32), (8, 22)))
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Preprocessed", "SiteData", "preprocess", "foreground_mask", "split_cases", "prepare_site_data",
           "data_fingerprint", "load_and_preprocess", "INTENSITY_NORMS"]

#: Per-case intensity normalisations (``TrainConfig.intensity_norm``; the first is the default).
INTENSITY_NORMS = ("zscore", "landmark")

log = logging.getLogger(__name__)


@dataclass
class Preprocessed:
    """One case after deterministic preprocessing (tensors; regions may be ``None``)."""

    image: Any  # torch.float32 (4, x, y, z)
    regions: Any  # torch.uint8 (3, x, y, z) or None
    bbox: tuple[tuple[int, int], ...]  # crop window in the original voxel grid
    shape: tuple[int, int, int]  # original spatial shape


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = (w0 * w1 * (m0 - m1) ** 2)[:-1]
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a flat optimum: take its middle
    return float(edges[1 + int(best[len(best) // 2])])


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Boolean head/brain mask: union over channels of voxels above the background level.

    Per channel, voxels at the channel minimum (zeros of skull-stripping or defacing) are
    background. If the remaining voxels still hold a dark mode near the minimum (noisy or
    offset scanner background: the lower Otsu class is >10 % of them with a mean within
    15 % of the range above the minimum) in most channels, per-channel Otsu thresholds
    remove it too. Only the largest
    connected component is kept, so stray noise does not widen the crop.
    """
    from scipy import ndimage

    lows, otsus, dark = [], [], []
    for ch in image:
        lo = float(ch.min())
        above = ch[::2, ::2, ::2]
        above = above[above > lo]
        t = _otsu(above) if above.size else lo
        low = above[above <= t]
        hi = float(np.percentile(above, 99)) if above.size else lo
        lows.append(lo)
        otsus.append(t)
        dark.append(bool(low.size > 0.1 * above.size and float(low.mean()) < lo + 0.15 * (hi - lo)))
    # one scanner, one background: decide by majority over the channels
    noisy = sum(dark) * 2 >= len(dark)
    mask = np.zeros(image.shape[1:], bool)
    for ch, lo, t in zip(image, lows, otsus):
        mask |= ch > (t if noisy else lo)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return mask


def preprocess(image: np.ndarray, regions: np.ndarray | None, *, margin: int = 2,
               intensity_norm: str = "zscore") -> Preprocessed:
    """Crop ``image`` (C, X, Y, Z) to its foreground and normalise it per channel over the foreground
    voxels: ``"zscore"`` (default) or ``"landmark"`` (percentile landmarks onto a fixed scale)."""
    import torch

    if intensity_norm not in INTENSITY_NORMS:
        raise ValueError(f"intensity_norm {intensity_norm!r}: choose one of {', '.join(INTENSITY_NORMS)}")
    image = np.asarray(image, dtype=np.float32)
    shape = tuple(int(s) for s in image.shape[1:])
    mask = foreground_mask(image)
    if not mask.any():
        mask = np.ones(shape, bool)
    bbox = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        bbox.append((max(0, int(idx[0]) - margin), min(shape[axis], int(idx[-1]) + 1 + margin)))
    sl = tuple(slice(a, b) for a, b in bbox)
    img = image[(slice(None), *sl)].copy()
    m = mask[sl]
    if intensity_norm == "landmark":
        from fedimg.kernels.landmark import landmark_standardize

        img = landmark_standardize(img, m)
    else:
        for c in range(img.shape[0]):
            vals = img[c][m]
            mean = float(vals.mean())
            std = float(vals.std())
            img[c] = np.where(m, (img[c] - mean) / (std if std > 1e-8 else 1.0), 0.0)
    reg = None if regions is None else torch.from_numpy(np.ascontiguousarray(np.asarray(regions)[(slice(None), *sl)], dtype=np.uint8))
    return Preprocessed(torch.from_numpy(img), reg, tuple(bbox), shape)  # type: ignore[arg-type]


def load_and_preprocess(case: Any, intensity_norm: str = "zscore") -> tuple[Preprocessed, Any]:
    """``fedimg.data.load_case`` then :func:`preprocess`; returns ``(preprocessed, case_arrays)``."""
    from fedimg.data import load_case

    arrays = load_case(case)
    return preprocess(arrays.image, arrays.regions, intensity_norm=intensity_norm), arrays


def split_cases(cases: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic train/val split: sort by ``case_id``, permute with ``seed``.

    At least one validation case when ``val_fraction > 0`` and there are ≥ 2 cases, and
    always at least one training case.
    """
    ordered = sorted(cases, key=lambda c: c.case_id)
    n = len(ordered)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, n - 1) if n else 0
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(perm[:n_val].tolist())
    train = [c for i, c in enumerate(ordered) if i not in val_idx]
    val = [c for i, c in enumerate(ordered) if i in val_idx]
    return train, val


def data_fingerprint(cases: list, intensity_norm: str = "zscore") -> str:
    """SHA-256 over case ids and the bytes of every image and label file (order-independent), and
    the intensity normalisation when it is not the default z-score (so z-scored data and its
    fingerprint are never taken for landmark-standardised data; the default's value is unchanged)."""
    from fedimg.io import sha256_file

    h = hashlib.sha256()
    if intensity_norm != "zscore":
        h.update(f"intensity_norm={intensity_norm};".encode())
    for case in sorted(cases, key=lambda c: c.case_id):
        h.update(case.case_id.encode())
        for p in (*case.images, *([case.label] if case.label is not None else [])):
            h.update(sha256_file(p).encode())
    return h.hexdigest()


@dataclass
class SiteData:
    """A site's cached train/val tensors (built once, reused every round).

    ``state`` holds the per-site trainer (optimizer, schedule position, RNG) so that
    successive :func:`fedimg.engine.loop.train_one_round` calls continue one schedule.
    """

    train_ids: list[str]
    val_ids: list[str]
    train_images: list[Any]
    train_regions: list[Any]
    train_fg: list[Any]  # flat indices of whole-tumour voxels per training case (CPU int64)
    val: list[Preprocessed]
    device: Any
    fingerprint: str = ""
    source: str = ""
    intensity_norm: str = "zscore"  # how the cached images were normalised (evaluation checks it)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def num_train(self) -> int:
        return len(self.train_images)

    @property
    def num_val(self) -> int:
        return len(self.val)

    def __repr__(self) -> str:
        return f"SiteData(train={self.num_train}, val={self.num_val}, device={self.device}, source={self.source!r})"


def _pad_to(t: Any, roi: tuple[int, int, int]) -> Any:
    import torch.nn.functional as F

    pads: list[int] = []
    for size, r in zip(reversed(t.shape[1:]), reversed(roi)):
        extra = max(0, r - size)
        pads += [extra // 2, extra - extra // 2]
    return F.pad(t, pads) if any(pads) else t


def prepare_site_data(cases: list, config: Any, device: Any, *, source: str = "") -> SiteData:
    """Load, preprocess and cache a site's cases on ``device`` (a ``torch.device``).

    Training volumes are zero-padded to at least ``config.roi`` so every random crop fits.
    """
    import torch
    from monai.data import set_track_meta

    from fedimg.errors import InputError

    set_track_meta(False)  # plain tensors from here on: no metadata is needed for training
    if not cases:
        raise InputError(source or None, "contains no cases; point --data at a folder of BraTS case folders")
    missing = [c.case_id for c in cases if getattr(c, "label", None) is None]
    if missing:
        raise InputError(source or None, f"cases without a segmentation label: {', '.join(missing[:5])}; training needs labels")
    train, val = split_cases(list(cases), config.val_fraction, config.seed)
    norm = str(getattr(config, "intensity_norm", "zscore"))
    images, regions, fgs = [], [], []
    for case in train:
        p = load_and_preprocess(case, norm)[0]  # the loaded arrays go now, not while the next case loads
        img, reg = _pad_to(p.image, config.roi), _pad_to(p.regions, config.roi)
        fgs.append(torch.nonzero(reg[1].reshape(-1)).reshape(-1))
        images.append(img.to(device))
        regions.append(reg.to(device))
    vals = []
    for case in val:
        p = load_and_preprocess(case, norm)[0]
        vals.append(Preprocessed(p.image.to(device), p.regions.to(device), p.bbox, p.shape))
    data = SiteData(
        train_ids=[c.case_id for c in train],
        val_ids=[c.case_id for c in val],
        train_images=images,
        train_regions=regions,
        train_fg=fgs,
        val=vals,
        device=device,
        fingerprint=data_fingerprint(cases, norm),
        source=str(source),
        intensity_norm=norm,
    )
    log.info("cached %d train / %d val cases on %s (%s intensities)", data.num_train, data.num_val, device, norm)
    return data
