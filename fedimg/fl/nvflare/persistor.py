"""Server-side model source for fedimg jobs: builds the task's model, optionally resumed.

NVFlare's stock PyTorch persistor rebuilds the model from a class path and plain
arguments, which fedimg's task models (built by a registry from a config) do not have.
:class:`FedimgPersistor` builds the initial global model with the task's own
``build_model`` (seeded, so every run starts from the same weights) and, to resume, loads
a fedimg checkpoint (``RUN/rounds/round-NNN.safetensors``). Saving is done by
:class:`fedimg.fl.nvflare.aggregator.FedimgAggregator` every round, so ``save_model`` only logs.

>>> weights = initial_weights("toy", {"features": 4}, "")
>>> sorted((k, v.shape) for k, v in weights.items())
[('0.bias', (1,)), ('0.weight', (1, 4))]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import ModelLearnable, make_model_learnable
from nvflare.app_common.abstract.model_persistor import ModelPersistor

__all__ = ["FedimgPersistor", "initial_weights"]


def initial_weights(task_name: str, config: dict[str, Any], checkpoint: str = "") -> dict[str, np.ndarray]:
    """The global model's starting weights: a seeded fresh model, or ``checkpoint``'s."""
    import torch

    from fedimg.fl.server.state import load_params
    from fedimg.tasks import get_task

    task = get_task(task_name)
    cfg = task.config_from_dict(config)
    torch.manual_seed(int(getattr(cfg, "seed", 0)))
    model = task.build_model(cfg)
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    if checkpoint:
        params, _ = load_params(checkpoint)
        if set(params) != set(weights):
            raise ValueError(f"{checkpoint}: tensor names do not match the {task_name} model; resume with the same task/model")
        weights = {k: np.asarray(params[k]).astype(weights[k].dtype).reshape(weights[k].shape) for k in weights}
    return weights


class FedimgPersistor(ModelPersistor):
    """``load_model`` gives the initial (or resumed) global weights as numpy arrays."""

    def __init__(self, task: str = "brats", config: dict | None = None, checkpoint: str = "") -> None:
        super().__init__()
        self.task = task
        self.config = dict(config or {})
        self.checkpoint = checkpoint

    def load_model(self, fl_ctx: FLContext) -> ModelLearnable:
        weights = initial_weights(self.task, self.config, self.checkpoint)
        src = self.checkpoint or "a fresh seeded model"
        self.log_info(fl_ctx, f"initial global model: {len(weights)} tensors from {src}")
        return make_model_learnable(weights, {})

    def save_model(self, model: ModelLearnable, fl_ctx: FLContext) -> None:
        self.log_debug(fl_ctx, "global model checkpoints are written by FedimgAggregator")
