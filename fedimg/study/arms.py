"""The study's arms, each trained until its own validation metric stops improving.

* :func:`train_local_arm` — centralised (the pooled training cases of every site,
  validated on the pooled validation cases) or one site alone (its own cases): trained
  ``check_every`` epochs at a time, validated after each, stopped by
  :class:`fedimg.study.protocol.EarlyStopping`; the best check's weights are kept.
* :func:`federated_arm` — an NVFlare SimEnv run (``fedimg simulate``) of up to
  ``max_epochs / local_epochs`` rounds; each round the sites validate the incoming global
  model, and the same early-stopping rule, applied to that per-round curve, picks the round
  (:func:`fedimg.study.protocol.stop_point`). Compute is counted to the stopping round.
* :func:`evaluate_cases` — a model's Dice on every test case (one score per case);
  :func:`tested_arm` — an arm's record with those scores, its weights left out. A FedBN arm
  (strategy ``fedbn``) is *personalised*: each site's model is the kept round's shared layers
  with that site's own norm layers (:func:`site_params`), validated and tested on that site's
  own cases only (``"personalised": True`` in its record).

Every learning-curve point records epochs per case, training samples processed (summed
over sites), optimizer steps and seconds. Usage (``fedimg study`` does this)::

    arm = train_local_arm(task, cfg, pool_sites(datas), ProtocolConfig(), seed=0)
    arm["curve"][-1]["epochs_per_case"], arm["best_check"]

>>> from types import SimpleNamespace
>>> steps_per_epoch(5, SimpleNamespace(batch_size=2, samples_per_case=1))
3
>>> case_score({"dice_tc": 0.5, "dice_wt": 0.7, "dice_et": float("nan")})  # a case without enhancing tumour
0.6
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.study.protocol import EarlyStopping, ProtocolConfig, stop_point

__all__ = ["pool_sites", "train_local_arm", "federated_arm", "evaluate_cases", "tested_arm", "case_score",
           "steps_per_epoch", "site_params"]

log = logging.getLogger(__name__)


def pool_sites(datas: list[Any]) -> Any:
    """One site data object holding every site's training *and* validation cases.

    Works for dataclass site data whose case fields are named ``train_*`` / ``*_train`` /
    ``val*`` / ``*_val`` (lists are concatenated, tensors ``torch.cat``-ed).
    """
    import torch

    first = datas[0]
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(first):
        if f.name.startswith(("train_", "val")) or f.name.endswith(("_train", "_val")):
            vals = [getattr(d, f.name) for d in datas]
            changes[f.name] = torch.cat(vals) if isinstance(vals[0], torch.Tensor) else [x for v in vals for x in v]
        elif f.name == "state":
            changes["state"] = {}
        elif f.name == "source":
            changes["source"] = "pooled"
    return dataclasses.replace(first, **changes)


def steps_per_epoch(num_train: int, config: Any) -> int:
    """Optimizer steps in one epoch over ``num_train`` cases (``samples_per_case`` draws each)."""
    spc = int(getattr(config, "samples_per_case", 1))
    return math.ceil(num_train * spc / int(getattr(config, "batch_size", 1)))


def _state(model: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def train_local_arm(task: Any, config: Any, data: Any, proto: ProtocolConfig, *, seed: int) -> dict[str, Any]:
    """Train one local arm with early stopping; returns its curve, stop and best weights (``params``)."""
    from fedimg.device import seed_everything

    seed_everything(seed)  # seeds torch too
    model = task.build_model(config)
    data.state = {}
    stop = EarlyStopping(proto.patience)
    spc = int(getattr(config, "samples_per_case", 1))
    curve: list[dict[str, float]] = []
    best: dict[str, np.ndarray] = _state(model)
    seconds = 0.0
    for check in range(proto.max_checks):
        t0 = time.perf_counter()
        task.train_one_round(model, data, config, epochs=proto.check_every)
        seconds += time.perf_counter() - t0
        score = float(task.evaluate(model, data, config)[task.key_metric])
        epochs = (check + 1) * proto.check_every
        curve.append({"epochs_per_case": epochs, "val": score, "seconds": seconds,
                      "samples": epochs * data.num_train * spc, "steps": epochs * steps_per_epoch(data.num_train, config)})
        done = stop.update(score)
        log.info("%d epochs per case: validation %s %.3f (best %.3f at %d)", epochs, task.key_metric, score,
                 stop.best, (stop.best_index + 1) * proto.check_every)
        if stop.best_index == check:
            best = _state(model)
        if done:
            break
    data.state = {}
    return {"curve": curve, "best_check": max(0, stop.best_index), "stop_check": len(curve) - 1, "params": best,
            "num_train": int(data.num_train), "num_val": int(getattr(data, "num_val", 0))}


def _fed_curve(metrics: list[dict[str, Any]], key: str, final_val: float, local_epochs: int,
               site_train: dict[str, int], spc: int, config: Any) -> list[dict[str, float]]:
    """Per-round points of the federated arm (model after round r, validated by the sites)."""
    val = {int(m["validation"]["model_round"]): float(m["validation"][key])
           for m in metrics if key in m.get("validation", {})}
    rounds = [int(m["round"]) for m in metrics]
    steps_round = local_epochs * sum(steps_per_epoch(n, config) for n in site_train.values())
    curve, seconds, slowest, steps = [], 0.0, 0.0, 0
    for m in sorted(metrics, key=lambda m: m["round"]):
        r = int(m["round"])
        secs = [float(s.get("metrics", {}).get("train_seconds", 0.0)) for s in m.get("sites", {}).values()]
        slowest += max(secs, default=0.0)
        seconds += float(m.get("round_seconds", 0.0))
        steps += steps_round
        epochs = r * local_epochs
        curve.append({"epochs_per_case": epochs, "val": val.get(r, final_val if r == max(rounds) else float("nan")),
                      "seconds": seconds, "slowest_site_seconds": slowest,
                      "samples": epochs * sum(site_train.values()) * spc, "steps": steps,
                      "slowest_site_samples_per_round": local_epochs * max(site_train.values()) * spc})
    return curve


def federated_arm(view: Path, out: Path, fed: Any, proto: ProtocolConfig, task: Any, datas: dict[str, Any],
                  progress: bool = False) -> dict[str, Any]:
    """Run the federation on ``view`` into ``out``; early-stop on its per-round validation curve."""
    import torch

    from fedimg.fl.nvflare.simulate import run_simulation
    from fedimg.fl.server.federation import discover_sites
    from fedimg.fl.server.state import load_params, read_metrics, round_path

    t0 = time.perf_counter()
    run_simulation(view, out, fed, progress=progress, sites=discover_sites(view), preflight=False)  # run_study checked
    wall = time.perf_counter() - t0
    config = task.config_from_dict(fed.train_config())
    final, _ = load_params(out / "global_model.safetensors")
    net = task.build_model(config)
    metrics = read_metrics(out)
    last = max(int(m["round"]) for m in metrics)
    scores = []
    for site, d in datas.items():  # FedBN: each site with its own norm layers
        own = site_params(out, site, last, final, fed.strategy.local_norm)
        net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in own.items()})
        scores.append((task.evaluate(net, d, config)[task.key_metric], getattr(d, "num_val", 1)))
    final_val = float(sum(s * n for s, n in scores) / max(1, sum(n for _, n in scores)))
    spc = int(getattr(config, "samples_per_case", 1))
    curve = _fed_curve(metrics, task.key_metric, final_val, fed.local_epochs,
                       {s: int(d.num_train) for s, d in datas.items()}, spc, config)
    best, last = stop_point([p["val"] for p in curve], proto.patience)
    params = load_params(round_path(out, best + 1))[0] if best + 1 < len(curve) else final
    return {"curve": curve, "best_check": best, "stop_check": last, "params": params, "simulator_seconds": wall,
            "num_train": sum(int(d.num_train) for d in datas.values()), "run": str(out),
            **({"personalised": True} if fed.strategy.local_norm else {})}


def site_params(run: Path, site: str, rnd: int, params: dict[str, np.ndarray],
                personalised: bool) -> dict[str, np.ndarray]:
    """The model ``site`` uses after round ``rnd`` of the run in ``run``: ``params`` (the global
    model), with the site's own norm layers when ``personalised`` (FedBN; kept by the site)."""
    if not personalised:
        return params
    from fedimg.fl.nvflare.site_strategy import norms_path
    from fedimg.fl.server.state import load_params

    return {**params, **load_params(norms_path(Path(run) / "local_models", site, rnd))[0]}


def case_score(row: dict[str, float]) -> float:
    """One case's score: the mean of its finite region Dice values (NaN when none is)."""
    vals = [v for k, v in row.items() if k.startswith("dice_") and isinstance(v, float) and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate_cases(task: Any, config: Any, params: dict[str, np.ndarray], tests: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{site: {case_id: score}}`` for the model ``params`` on each site's test data."""
    import torch

    from fedimg.engine.evaluate import evaluate

    net = task.build_model(config)
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in params.items()})
    out: dict[str, dict[str, float]] = {}
    for site, data in tests.items():
        net.to(data.device)
        res = evaluate(net, data, config, device=data.device)
        out[site] = {r["case_id"]: case_score(r) for r in res["per_case"]}
    return out


def tested_arm(arm: dict[str, Any], task: Any, config: Any, tests: dict[str, Any]) -> dict[str, Any]:
    """The arm's record for ``results.json``: its test scores (:func:`evaluate_cases`) added, its ``params`` left out.

    A personalised arm's scores on a site's test cases are those of that site's own model."""
    if arm.get("personalised"):
        rnd = arm["best_check"] + 1
        scores = {s: evaluate_cases(task, config, site_params(Path(arm["run"]), s, rnd, arm["params"], True),
                                    {s: t})[s] for s, t in tests.items()}
        return {**{k: v for k, v in arm.items() if k != "params"}, "test": scores}
    scores = evaluate_cases(task, config, arm["params"], tests)
    return {**{k: v for k, v in arm.items() if k != "params"}, "test": scores}
