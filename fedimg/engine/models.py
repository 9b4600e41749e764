"""Model registry: name → factory for 3-D brain-tumour segmentation networks.

Every model takes 4 input channels (T1, T1ce, T2, FLAIR) and returns 3 logit channels
(TC, WT, ET); apply a sigmoid for the three overlapping region probabilities.

>>> import torch
>>> net = build_model("segresnet", init_filters=8)
>>> net(torch.zeros(1, 4, 32, 32, 32)).shape
torch.Size([1, 3, 32, 32, 32])
>>> sorted(MODELS)
['segresnet', 'unet']
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fedimg.errors import ConfigError

__all__ = ["MODELS", "build_model", "model_kwargs", "IN_CHANNELS", "OUT_CHANNELS"]

log = logging.getLogger(__name__)

IN_CHANNELS = 4
OUT_CHANNELS = 3


def _segresnet(*, init_filters: int = 8, dropout: float = 0.0, in_channels: int = IN_CHANNELS,
               out_channels: int = OUT_CHANNELS) -> Any:
    """MONAI SegResNet as in the BraTS tutorial (blocks_down 1,2,2,4; blocks_up 1,1,1)."""
    from monai.networks.nets import SegResNet

    return SegResNet(
        spatial_dims=3,
        init_filters=init_filters,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob=dropout or None,
        blocks_down=(1, 2, 2, 4),
        blocks_up=(1, 1, 1),
    )


def _unet(*, init_filters: int = 8, dropout: float = 0.0, in_channels: int = IN_CHANNELS,
          out_channels: int = OUT_CHANNELS) -> Any:
    """MONAI UNet with 4 down-sampling levels, channels init_filters × (1, 2, 4, 8, 16)."""
    from monai.networks.nets import UNet

    f = init_filters
    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=(f, 2 * f, 4 * f, 8 * f, 16 * f),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        norm="INSTANCE",
        dropout=dropout,
    )


MODELS: dict[str, Callable[..., Any]] = {"segresnet": _segresnet, "unet": _unet}


def model_kwargs(config: Any) -> dict[str, Any]:
    """The factory keyword arguments a :class:`fedimg.engine.config.TrainConfig` implies."""
    return {"init_filters": int(config.init_filters), "dropout": float(config.dropout)}


def build_model(name: str, **kwargs: Any):
    """Build the registered model ``name`` (``"segresnet"`` or ``"unet"``) on the CPU.

    Keyword arguments go to the factory: ``init_filters`` (default 8, small for CPUs),
    ``dropout``, ``in_channels`` (4), ``out_channels`` (3).
    """
    key = str(name).strip().lower()
    if key not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    init_filters = kwargs.get("init_filters", 8)
    if not isinstance(init_filters, int) or init_filters < 1:
        raise ConfigError(f"init_filters must be a positive integer, got {init_filters!r}")
    if key == "segresnet" and init_filters % 8:
        raise ConfigError(f"segresnet uses GroupNorm with 8 groups: init_filters must be a multiple of 8, got {init_filters}")
    return MODELS[key](**kwargs)
