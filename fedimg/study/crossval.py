"""Cross-site validation: every model evaluated on every site's held-out cases.

After a run, each site evaluates the final global model and every site's last local
model (``RUN/local_models/<site>.safetensors``) on its own validation cases; after a FedBN
run also every site's personalised model (the global model with that site's last norm layers). In
``fedimg simulate`` all sites live on this machine, so the evaluations run here, one site
at a time; the table holds only metrics. Writes ``RUN/crossval/crossval.json``,
``crossval.csv`` and ``heatmap.png`` (models x sites, the task's key metric;
:func:`fedimg.fl.server.crossval_table.write_crossval`, shared with exported jobs).

Usage (``fedimg simulate`` calls it after a run)::

    table = cross_validate("runs/fl", discover_sites("data/"), config)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.fl.server.crossval_table import heatmap, write_crossval

__all__ = ["cross_validate", "evaluate_models", "heatmap"]

log = logging.getLogger(__name__)


def evaluate_models(models: dict[str, dict[str, Any]], sites: dict[str, Path], task_name: str,
                    train_config: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``{model: {site: metrics}}`` for state dicts ``models`` on every site's validation cases."""
    import torch

    from fedimg.device import resolve_device
    from fedimg.tasks import get_task

    task = get_task(task_name)
    cfg = task.config_from_dict(train_config)
    device = resolve_device(str(getattr(cfg, "device", "auto")))
    net = task.build_model(cfg)
    results: dict[str, dict[str, dict[str, float]]] = {m: {} for m in models}
    for site, path in sites.items():
        data = task.load_site(path, cfg, device)
        for name, params in models.items():
            net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in params.items()})
            net.to(device)
            results[name][site] = {k: float(v) for k, v in task.evaluate(net, data, cfg).items()}
        del data
    return results


def cross_validate(run_dir: str | Path, sites: dict[str, Path], config: Any) -> dict[str, Any]:
    """Evaluate the global and local models of ``run_dir`` on every site; write table and heatmap."""
    from fedimg.fl.server.state import load_params
    from fedimg.tasks import get_task

    run_dir = Path(run_dir)
    models = {"global": load_params(run_dir / "global_model.safetensors")[0]}
    for site in sites:
        local = run_dir / "local_models" / f"{site}.safetensors"
        if local.is_file():
            models[f"local {site}"] = load_params(local)[0]
        norms = sorted((run_dir / "local_models" / "norms" / site).glob("round-*.safetensors"))
        if norms:  # FedBN: the global model is incomplete without a site's norm layers; its own model is this
            models[f"personalised {site}"] = {**models["global"], **load_params(norms[-1])[0]}
    key = get_task(config.task).key_metric
    results = evaluate_models(models, sites, config.task, config.train_config())
    return write_crossval(run_dir / "crossval", results, list(sites), key)
