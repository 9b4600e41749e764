"""The site's half of client-level DP: clipping before anything is sent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.errors import ConfigError
from fedimg.privacy import ClientDPConfig, clip_update


def test_clip_update_bounds_the_float_tensors_and_leaves_integer_buffers():
    params = {"w": torch.tensor([3.0, 0.0]), "b": np.array([4.0], np.float32), "n": torch.tensor(7)}
    clipped, norm = clip_update(params, 0.5)
    assert norm == pytest.approx(5.0)
    total = np.sqrt(float((clipped["w"] ** 2).sum()) + float((clipped["b"] ** 2).sum()))
    assert total == pytest.approx(0.5, rel=1e-6) and int(clipped["n"]) == 7
    same, _ = clip_update(params, 10.0)
    assert same["w"] is params["w"]  # under the bound: untouched


def test_config_checks():
    assert ClientDPConfig(noise_multiplier=1.0, clip=0.5, sites=4).noise_std == pytest.approx(0.125)
    with pytest.raises(ConfigError):
        ClientDPConfig(clip=0.0)
    with pytest.raises(ConfigError):
        ClientDPConfig(sites=0)
