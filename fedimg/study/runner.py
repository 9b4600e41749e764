"""``fedimg study``: centralised vs each site alone vs federated, on one multi-site data set.

Three arms, one epoch budget ``B = rounds * local_epochs`` (every training case is seen
``B`` times in every arm):

* **centralised** — one model trained ``B`` epochs on the pooled training cases of all
  sites (what could be done if the data could be moved);
* **site alone** — per site, a model trained ``B`` epochs on that site's training cases;
* **federated** — NVFlare FedAvg (or the chosen strategy) over the sites, ``rounds``
  rounds of ``local_epochs`` epochs (``fedimg simulate``; an existing run can be reused).

All models start from the same seeded initial weights and are evaluated on every site's
held-out cases (the task's validation split, never trained on by any arm). Writes
``report.md``, ``results.json``, ``dice_per_round.png`` and ``per_site.png``.

Usage (``fedimg study`` does this; it trains every arm)::

    run_study("data/", "study/", FederationConfig(rounds=10, local_epochs=2))
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import ConfigError
from fedimg.fl.server.federation import FederationConfig, discover_sites
from fedimg.io import read_json, write_json

__all__ = ["run_study", "pool_sites"]

log = logging.getLogger(__name__)


def pool_sites(datas: list[Any]) -> Any:
    """One site data object holding every site's *training* cases (for the centralised arm).

    Works for dataclass site data whose training fields are named ``train_*`` (lists are
    concatenated) or ``*_train`` (tensors are concatenated); validation fields are those
    of the first site and unused.
    """
    import torch

    first = datas[0]
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(first):
        if f.name.startswith("train_") or f.name.endswith("_train"):
            vals = [getattr(d, f.name) for d in datas]
            changes[f.name] = torch.cat(vals) if isinstance(vals[0], torch.Tensor) else [x for v in vals for x in v]
        elif f.name == "state":
            changes["state"] = {}
        elif f.name == "source":
            changes["source"] = "pooled"
    return dataclasses.replace(first, **changes)


def run_study(data_dir: str | Path, out: str | Path, fed: FederationConfig, *, fl_run: str | Path | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Train and evaluate the three arms; write the report. Returns the results dict."""
    from fedimg.fl.server.state import load_params, read_metrics
    from fedimg.study.crossval import evaluate_models
    from fedimg.study.report import write_report
    from fedimg.tasks import get_task

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sites = discover_sites(data_dir)
    task = get_task(fed.task)
    tcfg = task.config_from_dict(fed.train_config())
    budget = fed.total_epochs
    timings: dict[str, float] = {}

    # (c) federated: reuse a finished `fedimg simulate` run with the same budget, or run one.
    fed, fl_run = _federated_arm(data_dir, out, fed, fl_run, sites, timings, progress)
    models: dict[str, dict[str, np.ndarray]] = {"federated": load_params(fl_run / "global_model.safetensors")[0]}

    # (a) centralised and (b) each site alone, same budget and initial weights.
    n_train = _local_arms(task, tcfg, sites, budget, models, timings)

    # Every model on every site's held-out cases.
    t0 = time.perf_counter()
    evals = evaluate_models(models, sites, fed.task, fed.train_config())
    timings["evaluation"] = time.perf_counter() - t0
    key = task.key_metric
    results = {
        "task": fed.task,
        "key_metric": key,
        "sites": list(sites),
        "train_cases": n_train,
        "budget": {"epochs_per_case": budget, "rounds": fed.rounds, "local_epochs": fed.local_epochs,
                   "strategy": fed.strategy.name},
        "train_config": tcfg.to_dict(),
        "evaluations": evals,
        "summary": _summary(evals, list(sites), key),
        "federated_rounds": [
            {"round": m["round"], "model_round": m["validation"].get("model_round"),
             **{k: v for k, v in m["validation"].items() if isinstance(v, float)}}
            for m in read_metrics(fl_run)
        ],
        "federated_run": str(fl_run),
        "seconds": timings,
    }
    write_json(out / "results.json", results)
    write_report(out, results)
    return results


def _local_arms(task: Any, tcfg: Any, sites: dict[str, Path], budget: int, models: dict[str, Any],
                timings: dict[str, float]) -> dict[str, int]:
    """Train the centralised model (pooled training cases) and each site's own model for
    ``budget`` epochs from the same seeded weights, into ``models``; returns training cases per site."""
    import torch

    from fedimg.device import resolve_device, seed_everything

    seed = int(getattr(tcfg, "seed", 0))
    device = resolve_device(str(getattr(tcfg, "device", "auto")))
    datas = {s: task.load_site(p, tcfg, device) for s, p in sites.items()}
    n_train = {s: int(d.num_train) for s, d in datas.items()}

    def _train(data: Any) -> dict[str, np.ndarray]:
        seed_everything(seed)
        torch.manual_seed(seed)
        model = task.build_model(tcfg)
        task.train_one_round(model, data, tcfg, epochs=budget)
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}

    t0 = time.perf_counter()
    models["centralised"] = _train(pool_sites(list(datas.values())))
    timings["centralised"] = time.perf_counter() - t0
    for s, d in datas.items():
        t0 = time.perf_counter()
        models[f"{s} alone"] = _train(d)
        timings[f"{s} alone"] = time.perf_counter() - t0
    return n_train


def _federated_arm(data_dir: str | Path, out: Path, fed: FederationConfig, fl_run: str | Path | None,
                   sites: dict[str, Path], timings: dict[str, float], progress: bool) -> tuple[FederationConfig, Path]:
    """The federated run to evaluate: ``fl_run`` checked against the study's budget, or a new
    ``fedimg simulate`` run in ``out/federated``. Returns its config and folder; adds its time to ``timings``."""
    from fedimg.fl.nvflare.simulate import run_simulation

    t0 = time.perf_counter()
    if fl_run:
        fl_run = Path(fl_run)
        prev = read_json(fl_run / "run_config.json")["federation"]
        for key in ("task", "rounds", "local_epochs", "train"):
            if prev[key] != fed.to_dict()[key]:
                raise ConfigError(f"{fl_run}: its {key} ({prev[key]}) differs from the study's ({fed.to_dict()[key]}); "
                                  "pass the same options or drop --fl-run")
        summary = fl_run / "summary.json"
        if summary.is_file():
            timings["federated (reused run)"] = float(read_json(summary).get("seconds", 0.0))
        return FederationConfig.from_dict(prev), fl_run
    fl_run = out / "federated"
    run_simulation(data_dir, fl_run, fed, progress=progress, sites=sites)
    timings["federated"] = time.perf_counter() - t0
    return fed, fl_run


def _summary(evals: dict[str, dict[str, dict[str, float]]], sites: list[str], key: str) -> dict[str, Any]:
    """Mean key metric per arm; 'site alone (mean)' averages the single-site models."""
    mean = {m: float(np.mean([evals[m][s][key] for s in sites])) for m in evals}
    alone = [m for m in evals if m.endswith(" alone")]
    out = {"mean_" + key: mean}
    if alone:
        out["site_alone_mean"] = float(np.mean([mean[m] for m in alone]))
        out["own_site_alone_mean"] = float(np.mean([evals[f"{s} alone"][s][key] for s in sites if f"{s} alone" in evals]))
    c, f = mean.get("centralised"), mean.get("federated")
    if c is not None and f is not None:
        out["federated_minus_centralised"] = f - c
        out["federated_relative_to_centralised"] = f / c if c else None
    if alone and f is not None:
        out["federated_minus_site_alone_mean"] = f - out["site_alone_mean"]
    return out
