"""Per-site training engine: the one epoch loop and epoch driver of every task, plus the 3-D
segmentation task's config, cached on-device data, trainer, evaluation and checkpoints.

>>> from fedimg.engine import TrainConfig, build_model
>>> TrainConfig(epochs=1).model, type(build_model("unet")).__name__
('segresnet', 'UNet')
"""

from fedimg.engine.cache import SiteData, prepare_site_data
from fedimg.engine.checkpoint import load_checkpoint, save_checkpoint
from fedimg.engine.config import TrainConfig
from fedimg.engine.evaluate import evaluate
from fedimg.engine.loop import EpochTrainer, Trainer, train_one_round
from fedimg.engine.models import build_model

__all__ = ["TrainConfig", "SiteData", "prepare_site_data", "EpochTrainer", "Trainer", "train_one_round", "evaluate",
           "save_checkpoint", "load_checkpoint", "build_model"]
