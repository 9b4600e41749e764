"""fedimg.kernels.landmark: the numpy and torch paths refuse bad input with the same one-line errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fedimg.kernels.landmark import landmark_standardize


def _case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    img = rng.gamma(4.0, 50.0, size=(2, 6, 5, 4)).astype(np.float32)
    mask = np.zeros((6, 5, 4), bool)
    mask[1:5, 1:4, :] = True
    return img, mask


def _nan_in_channel_1(img: np.ndarray) -> np.ndarray:
    bad = img.copy()
    bad[1, 2, 2, 1] = np.inf
    return bad


BAD = {
    "no channel axis": (lambda img, mask: (img[0, 0, 0], None, {}), "image of shape (4,): give (channels"),
    "clip": (lambda img, mask: (img, mask, {"clip": 0.0}), "clip must be > 0, got 0.0"),
    "mask shape": (lambda img, mask: (img, mask[:-1], {}),
                   "mask of shape (5, 5, 4) does not match the image's spatial shape (6, 5, 4)"),
    "percentiles order": (lambda img, mask: (img, mask, {"percentiles": (50, 10)}), "strictly increasing"),
    "percentiles range": (lambda img, mask: (img, mask, {"percentiles": (0, 50)}), "inside (0, 100)"),
    "non-finite": (lambda img, mask: (_nan_in_channel_1(img), mask, {}), "channel 1 holds NaN or Inf voxels"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_numpy_and_torch_refuse_bad_input_alike(name):
    make, expected = BAD[name]
    img, mask, kw = make(*_case())
    with pytest.raises(ValueError) as np_err:
        landmark_standardize(img, mask, **kw)
    t_mask = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))
    with pytest.raises(ValueError) as t_err:
        landmark_standardize(torch.from_numpy(np.ascontiguousarray(img)), t_mask, **kw)
    assert expected in str(np_err.value)
    assert str(t_err.value) == str(np_err.value)


def test_empty_mask_warns_alike_and_gives_zeros(caplog):
    img, mask = _case()
    empty = np.zeros_like(mask)
    with caplog.at_level(logging.WARNING, logger="fedimg.kernels.landmark"):
        a = landmark_standardize(img, empty)
        b = landmark_standardize(torch.from_numpy(img), torch.from_numpy(empty))
    warnings = [r.getMessage() for r in caplog.records if r.name == "fedimg.kernels.landmark"]
    assert len(warnings) == 2 and warnings[0] == warnings[1] and "empty foreground mask" in warnings[0]
    assert not a.any() and not b.any() and a.shape == tuple(b.shape) == img.shape
