"""CT heads: recognise them, and the value removed voxels get (air).

A CT in Hounsfield units has air at -1000 and soft tissue near 0. A CT stored without the
HU offset (e.g. +1024, air 0) is recognised from its head histogram: soft tissue (brain,
muscle) forms one narrow peak and bone a bright tail, while MR heads spread over several
tissue classes. Removed CT voxels are set to air: -1000 HU, or the image's own background
level when it is not in HU. MR keeps 0.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ct = np.full((40, 40, 40), -1000.0); ct[8:32, 8:32, 8:32] = 40 + rng.normal(0, 5, (24, 24, 24))
>>> ct[8:32, 8:32, 8:10] = 1200.0                     # a bone plate
>>> looks_like_hu(ct), detect_modality(ct, np.eye(4)), air_value(ct, "ct")
(True, 'ct', -1000.0)
>>> mr = np.zeros((40, 40, 40)); mr[8:32, 8:32, 8:32] = rng.uniform(50, 400, (24, 24, 24))
>>> detect_modality(mr, np.eye(4)), air_value(mr, "mr")
('mr', 0.0)
"""

from __future__ import annotations

import logging

import numpy as np

from fedimg.errors import ConfigError

__all__ = ["MODALITIES", "looks_like_hu", "detect_modality", "air_value", "resolve_modality"]

log = logging.getLogger(__name__)

MODALITIES = ("auto", "mr", "ct")
HU_AIR = -1000.0


def looks_like_hu(image: np.ndarray) -> bool:
    """True when the background sits near -1000 (air in HU) and tissue near 0."""
    sub = np.asarray(image)[::2, ::2, ::2]
    p1, p50 = np.percentile(sub, [1.0, 50.0])
    return bool(-3100.0 <= p1 <= -850.0 and p50 < 200.0)


def detect_modality(image: np.ndarray, affine: np.ndarray) -> str:
    """``"ct"`` for HU images or a narrow soft-tissue peak with a bright bone tail, else ``"mr"``."""
    from .coarse import block_mean, head_mask

    if looks_like_hu(image):
        return "ct"
    mask, _ = head_mask(image, affine, step_mm=4.0)
    if mask.sum() < 50:
        return "mr"
    small, _ = block_mean(image, affine, 4.0)
    bg = float(np.percentile(small, 0.5))
    v = small[mask] - bg
    p25, p50, p75, p95 = np.percentile(v, [25, 50, 75, 95])
    narrow = (p75 - p25) < 0.3 * p50 and p50 > 0
    bone_tail = p95 > 1.5 * p50
    log.debug("modality: head IQR/median %.2f, p95/median %.2f", (p75 - p25) / max(p50, 1e-6), p95 / max(p50, 1e-6))
    return "ct" if narrow and bone_tail else "mr"


def resolve_modality(name: str, image: np.ndarray, affine: np.ndarray) -> str:
    """``auto`` → detected; ``mr``/``ct`` as given."""
    if name not in MODALITIES:
        raise ConfigError(f"modality {name!r}: choose one of {', '.join(MODALITIES)}")
    return detect_modality(image, affine) if name == "auto" else name


def air_value(image: np.ndarray, modality: str) -> float:
    """Value for removed voxels: 0 for MR; -1000 for CT in HU; else the CT's own background level."""
    if modality != "ct":
        return 0.0
    if looks_like_hu(image):
        return HU_AIR
    return float(np.percentile(np.asarray(image)[::2, ::2, ::2], 0.5))
