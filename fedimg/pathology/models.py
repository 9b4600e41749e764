"""Tile classifiers: MONAI DenseNet121 / ResNet for 2-D RGB tiles, by name.

>>> import torch
>>> from fedimg.pathology.config import TileTrainConfig
>>> build_tile_model(TileTrainConfig(model="resnet10", width=0.25))(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 2])
>>> MODELS
('densenet121', 'resnet18', 'resnet10')
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MODELS", "build_tile_model"]

#: the tile classifiers :func:`build_tile_model` knows
MODELS = ("densenet121", "resnet18", "resnet10")


def build_tile_model(config: Any):
    """MONAI ``DenseNet121`` or ``ResNet`` (2-D, 3 input channels, ``num_classes`` logits) on the CPU.

    ``config`` is a :class:`fedimg.pathology.config.TileTrainConfig` (``model``, ``width``,
    ``num_classes``). torchvision is not used: its PyPI wheels do not import beside the CPU
    torch build here.
    """
    from monai.networks import nets

    w = config.width
    if config.model == "densenet121":
        return nets.DenseNet121(spatial_dims=2, in_channels=3, out_channels=config.num_classes,
                                init_features=max(4, round(64 * w)), growth_rate=max(2, round(32 * w)))
    factory = {"resnet18": nets.resnet18, "resnet10": nets.resnet10}[config.model]
    # torchvision-style stem: 7x7 stride-2 conv then max-pool
    model = factory(spatial_dims=2, n_input_channels=3, num_classes=config.num_classes, conv1_t_size=7,
                    conv1_t_stride=2, widen_factor=w)
    if getattr(config, "norm", "batch") == "group":
        _group_norm(model)
    return model


def _group_norm(module: Any) -> None:
    """Swap every BatchNorm2d for a GroupNorm (4 groups) in place: per-sample normalisation,
    which DP-SGD needs (BatchNorm mixes a batch's samples). MONAI's ResNet ``norm=`` argument
    does not reach its residual layers, hence the swap."""
    from torch import nn

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            setattr(module, name, nn.GroupNorm(math.gcd(c, 4), c))
        else:
            _group_norm(child)
