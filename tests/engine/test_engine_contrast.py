"""Contrast augmentation at each site (fedimg.engine.contrast): another scanner's mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.engine.augment import sample_batch
from fedimg.engine.config import TrainConfig
from fedimg.engine.contrast import contrast_enabled, random_contrast
from fedimg.errors import ConfigError

ON = dict(contrast_gamma=0.5, contrast_bias=0.2, contrast_hist=10, contrast_prob=1.0)


def _case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(4, 36, 36, 36)
    head = torch.zeros(36, 36, 36, dtype=torch.bool)
    head[4:32, 5:31, 6:30] = True
    vals = torch.randn(4, 36, 36, 36, generator=g)
    img = torch.where(head, vals, img)
    reg = torch.zeros(3, 36, 36, 36, dtype=torch.uint8)
    reg[:, 14:22, 14:22, 14:22] = 1
    return img, reg


def test_off_by_default_and_validated() -> None:
    assert not contrast_enabled(TrainConfig())
    assert contrast_enabled(TrainConfig(contrast_gamma=0.3))
    assert contrast_enabled(TrainConfig(contrast_hist=5))
    with pytest.raises(ConfigError, match="contrast_gamma"):
        TrainConfig(contrast_gamma=-0.1)
    with pytest.raises(ConfigError, match="contrast_hist"):
        TrainConfig(contrast_hist=-1)
    with pytest.raises(ConfigError, match="contrast_prob"):
        TrainConfig(contrast_prob=1.5)
    assert TrainConfig.from_dict(TrainConfig(**ON).to_dict()) == TrainConfig(**ON)


def test_remaps_nonlinearly_keeps_background_and_zscore() -> None:
    img, _ = _case()
    out = random_contrast(img, TrainConfig(**ON), torch.Generator().manual_seed(1))
    head = (img != 0).any(0)
    assert bool((out[:, ~head] == 0).all())  # background stays 0
    for c in range(4):
        x, y = img[c][head].numpy(), out[c][head].numpy()
        assert abs(y.mean()) < 1e-4 and abs(y.std() - 1.0) < 1e-3  # z-scored again in the head mask
        # not an affine map of the input (that the z-score would undo): another contrast mapping
        assert np.corrcoef(x, y)[0, 1] < 0.999
        # ...but the order of intensities is kept up to the smooth bias field (same tissue stays similar)
        assert np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1] > 0.8
    # each channel its own mapping
    assert not torch.allclose(out[0][head], out[1][head] * img[0][head].std() / img[1][head].std())


def test_seeded_by_the_generator() -> None:
    img, _ = _case()
    cfg = TrainConfig(**ON)
    a = random_contrast(img, cfg, torch.Generator().manual_seed(3))
    b = random_contrast(img, cfg, torch.Generator().manual_seed(3))
    c = random_contrast(img, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sample_batch_applies_it_only_when_on_and_never_to_labels() -> None:
    img, reg = _case()
    fg = torch.nonzero(reg[1].reshape(-1)).reshape(-1)
    kw = dict(roi=(32, 32, 32), flip_prob=0.0, intensity_scale=0.0, intensity_shift=0.0)
    x_off, y_off = sample_batch([img], [reg], [fg], [0], TrainConfig(**kw), torch.Generator().manual_seed(0))
    x_on, y_on = sample_batch([img], [reg], [fg], [0], TrainConfig(**kw, **ON), torch.Generator().manual_seed(0))
    assert not torch.allclose(x_on, x_off)  # fails if the training chain skips the augmentation
    # the crop itself may move (the generator advanced), but the labels are only cropped, never changed
    assert y_on.sum() > 0 and set(torch.unique(y_on).tolist()) <= {0.0, 1.0}
