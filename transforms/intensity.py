"""MONAI-style transforms for per-case landmark intensity standardisation (Nyúl–Udupa style).

The maths — each channel's foreground mapped piecewise-linearly from the case's own percentile
landmarks onto the standard normal's quantiles at those percentiles, a fixed scale, so no site
statistic is needed — is :func:`fedimg.kernels.landmark.landmark_standardize` (re-exported here), the
one op the engine's preprocessing also calls. This module adds its array transform
:class:`LandmarkStandardize` and the dictionary twin :class:`LandmarkStandardized`.

>>> import numpy as np
>>> img = np.random.default_rng(0).gamma(4.0, 50.0, size=(2, 16, 16, 16)).astype(np.float32)
>>> out = LandmarkStandardized(keys="image")({"image": img, "label": 1})
>>> out["image"].shape, out["label"]
((2, 16, 16, 16), 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type

from fedimg.kernels.landmark import LANDMARKS, check_percentiles, landmark_standardize, standard_scale

__all__ = ["LANDMARKS", "standard_scale", "landmark_standardize", "LandmarkStandardize", "LandmarkStandardized"]


class LandmarkStandardize(Transform):
    """Array transform: :func:`landmark_standardize` on a channel-first image (numpy or torch).

    ``nonzero=True`` (default) takes the foreground as the voxels non-zero in any channel (MONAI's
    ``NormalizeIntensity(nonzero=True)`` convention); ``False`` uses every voxel.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(self, percentiles: Sequence[float] = LANDMARKS, clip: float = 6.0, nonzero: bool = True) -> None:
        check_percentiles(percentiles)
        self.percentiles, self.clip, self.nonzero = tuple(float(p) for p in percentiles), float(clip), bool(nonzero)

    def __call__(self, img: Any) -> Any:
        mask = (img != 0).any(0) if self.nonzero else None
        out = landmark_standardize(img, mask, percentiles=self.percentiles, clip=self.clip)
        return convert_to_dst_type(out, img, dtype=out.dtype)[0]  # a MetaTensor keeps its affine and meta


class LandmarkStandardized(MapTransform):
    """Dictionary twin of :class:`LandmarkStandardize` (image keys only; never label keys)."""

    backend = LandmarkStandardize.backend

    def __init__(self, keys: KeysCollection, percentiles: Sequence[float] = LANDMARKS, clip: float = 6.0,
                 nonzero: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = LandmarkStandardize(percentiles, clip, nonzero)

    def __call__(self, data: Any) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d
