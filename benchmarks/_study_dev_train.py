"""``benchmarks/study_dev.py``'s training: the development split, the IID re-deal, and the
centralised and in-process federated loops (see ``study_dev``'s docstring for what is measured).

Each arm runs the whole budget; the model ``fedimg study`` keeps (the best check up to the
``patience`` stop) is copied on the way and tested next to the best check over the budget.

>>> late_ratio([{"a": 2.0, "b": 1.0, "server_step": 3.0}])
[1.5]
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from _study_dev_arms import DEV_HEADS

__all__ = ["_setup", "_sites_drawn", "iid_redeal", "_PatienceKept", "_CheckWatch", "_mean_test", "_central", "_fedavg", "late_ratio"]


def _setup(root: Path, cfg: dict, seed: int, heads: tuple[str, ...] = DEV_HEADS, synth_seed: int = 0):
    from fedimg.data.anatomy import HEADS
    from fedimg.data.synth import synthesize
    from fedimg.fl.server.federation import discover_sites
    from fedimg.study.protocol import make_views
    from fedimg.study.runner import load_test_data
    from fedimg.tasks import get_task

    if synth_seed == 7:
        raise SystemExit("study_dev: generator seed 7 is the held-aside setting; pick another --synth-seed")
    heads = tuple(HEADS) if tuple(heads) == ("all",) else tuple(heads)
    synthesize(root / "dev", sites=3, cases_per_site=[6, 8, 10], seed=synth_seed, spacing=4.0, heads=heads, hard=True)
    task = get_task("brats")
    config = task.config_from_dict(cfg)
    import torch

    dev = torch.device("cpu")
    sites = discover_sites(root / "dev")
    split = make_views(sites, root / "view", 0.25, seed, True)
    datas = {s: task.load_site(p, config, dev) for s, p in discover_sites(root / "view").items()}
    tests = {s: load_test_data(split[s]["test"], config, dev, str(sites[s])) for s in sites}
    return task, datas, tests, _sites_drawn(root / "dev")


def _sites_drawn(root: Path) -> dict:
    """What the generator drew per site (``site-k/site.json``): heads and shares, the contrast
    mapping (tissue gains), scale, gamma, noise, blur, tumour sizes, and each case's head."""
    out = {}
    for f in sorted(root.glob("site-*/site.json")):
        d = json.loads(f.read_text())
        out[f.parent.name] = d
    return out


def iid_redeal(datas: dict, seed: int) -> dict:
    """The sites' training cases pooled and dealt back at random (``numpy.random.default_rng(seed)``),
    each site keeping its number of training cases; validation cases, trainer state and everything
    else stay with their site. New site objects; ``datas`` is not changed.

    Works for site data with ``train_ids``, ``train_images``, ``train_regions`` and ``train_fg``
    lists (:class:`fedimg.engine.cache.SiteData`).
    """
    import dataclasses

    fields = ("train_ids", "train_images", "train_regions", "train_fg")
    pool = {f: [x for d in datas.values() for x in getattr(d, f)] for f in fields}
    order = np.random.default_rng(seed).permutation(len(pool["train_ids"]))
    out, i = {}, 0
    for s, d in datas.items():
        take = order[i:i + len(d.train_ids)]
        i += len(take)
        out[s] = dataclasses.replace(d, **{f: [pool[f][j] for j in take] for f in fields}, state={})
    return out


class _PatienceKept:
    """The model ``fedimg study`` keeps, picked by :func:`~fedimg.study.protocol.stop_point` on the
    validation curve so far (``patience``): every check offers a copy of its model with its score,
    and only the copy of the check ``stop_point`` keeps now is held (two at most). The arm itself
    runs the whole budget; checks after the stop never change the kept one.

    >>> kept = _PatienceKept(1)
    >>> for i, v in enumerate([0.2, 0.5, 0.4, 0.9]):
    ...     kept.add(v, f"model {i}")
    >>> kept.check, kept.params, kept.val
    (1, 'model 1', [0.2, 0.5, 0.4, 0.9])
    """

    def __init__(self, patience: int) -> None:
        self.patience, self.val, self._copies = int(patience), [], {}

    def add(self, score: float, copy: Any) -> None:
        """Record the next check's validation ``score`` and its model's ``copy``."""
        from fedimg.study.protocol import stop_point

        self.val.append(float(score))
        self._copies[len(self.val) - 1] = copy
        best, _ = stop_point(self.val, self.patience)
        self._copies = {best: self._copies[best]}

    @property
    def check(self) -> int:
        """The kept check (0-based)."""
        return next(iter(self._copies))

    @property
    def params(self) -> Any:
        """The kept check's copy."""
        return next(iter(self._copies.values()))


class _CheckWatch:
    """The task, seen through :func:`fedimg.study.arms.train_local_arm`'s eyes: every ``evaluate``
    after a check offers a copy of the model to ``kept`` (:class:`_PatienceKept`, ``patience``) and
    stamps the check's CPU time. Everything else is the real task's."""

    def __init__(self, task, patience: int, tail: Any = None) -> None:
        self._task, self.kept, self.cpu, self.tail = task, _PatienceKept(patience), [], tail

    def __getattr__(self, name):
        return getattr(self._task, name)

    def evaluate(self, model, data, config):
        res = self._task.evaluate(model, data, config)
        self.cpu.append(time.process_time())
        params = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
        self.kept.add(float(res[self._task.key_metric]), params)
        if self.tail is not None:  # --swa-start: the tail average validated on the same cases
            self.tail.offer(params, float(res[self._task.key_metric]),
                            lambda p: _validate(self._task, config, p, [(data, 1)]))
        return res


def _validate(task, config, params: dict, datas: list) -> float:
    """The validation Dice of ``params``: the ``num_val``-weighted mean over ``datas`` (``(data, weight)``),
    on a network built with the random generators forked (the arms' own draws are not moved)."""
    import torch

    from _study_dev_swa import rng_forked

    with rng_forked():
        net = task.build_model(config)
        net.load_state_dict({k: torch.as_tensor(v) for k, v in params.items()})
        scores = [(float(task.evaluate(net, d, config)[task.key_metric]), w) for d, w in datas]
    return sum(a * b for a, b in scores) / max(1, sum(b for _, b in scores))


def _mean_test(task, config, params, tests, cases: dict | None = None) -> dict:
    """``{site: mean test Dice over its cases}`` of the model ``params`` (each case's Dice into ``cases``)."""
    from fedimg.study.arms import evaluate_cases

    res = evaluate_cases(task, config, params, tests)
    if cases is not None:
        cases.update({s: {c: float(d) for c, d in v.items()} for s, v in res.items()})
    return {s: float(np.nanmean(list(v.values()))) for s, v in res.items()}


def _central(task, config, datas, tests, epochs: int, local: int, seed: int, patience: int,
             swa_start: float | None = None) -> dict:
    import torch

    from _study_dev_swa import TailAverage, start_check
    from fedimg.study.arms import pool_sites, train_local_arm
    from fedimg.study.protocol import ProtocolConfig

    proto = ProtocolConfig(max_epochs=epochs, check_every=local, patience=10**6)  # the whole budget
    tail = None if swa_start is None else TailAverage(start_check(swa_start, epochs // local), patience)
    watch = _CheckWatch(task, patience, tail)
    arm = train_local_arm(watch, config, pool_sites(list(datas.values())), proto, seed=seed)
    if len(watch.cpu) != len(arm["curve"]):  # the watch assumes one task.evaluate per check
        raise RuntimeError(f"train_local_arm evaluated {len(watch.cpu)} times in {len(arm['curve'])} checks")
    net = task.build_model(config)  # the kept model's validation Dice on each site's own validation cases
    net.load_state_dict({k: torch.as_tensor(v) for k, v in arm["params"].items()})
    kept_sites = {s: float(task.evaluate(net, d, config)["dice_mean"]) for s, d in datas.items()}
    return {"val": [c["val"] for c in arm["curve"]], "kept_val_sites": kept_sites, "check_cpu": watch.cpu,
            "test": _mean_test(task, config, arm["params"], tests),  # its best check over the whole budget
            "test_patience": _mean_test(task, config, watch.kept.params, tests, cases := {}),  # the model the study keeps
            "test_patience_cases": cases, **_tail_result(task, config, tail, tests, local)}


def _tail_result(task, config, tail, tests, local: int) -> dict:
    """``{"swa": ...}``: the tail average's curve, kept check and patience-kept test Dice per site (and per
    case); ``{}`` without ``--swa-start``. ``tail.kept.params`` is one model, or ``{site: model}``."""
    if tail is None:
        return {}
    kept, cases = tail.kept.params, {}
    per_site = kept if all(isinstance(v, dict) for v in kept.values()) else {s: kept for s in tests}
    test = {s: _mean_test(task, config, per_site[s], {s: tests[s]}, cases)[s] for s in tests}
    return {"swa": {**tail.summary(local), "test_patience": test, "test_patience_cases": cases,
                    "mean_test_patience": float(np.mean(list(test.values())))}}


def _fedavg(task, config, datas, tests, epochs: int, local: int, seed: int, patience: int, *, strategy: dict | None = None,
            local_norm: bool = False, reset: bool = False, uniform: bool = False, scaffold: bool = False,
            swa_start: float | None = None) -> dict:
    """In-process federation: fedimg's own server :class:`~fedimg.fl.server.strategies.Strategy`
    (``strategy``: StrategyConfig fields, default FedAvg) on the sites' packed float differences,
    optionally with site-local norm layers (FedBN-style), the sites' AdamW moments reset every
    round (``reset``), uniform instead of sample-count site weights (``uniform``), FedProx
    (the strategy's ``prox_mu``, as ``fedimg study --prox-mu``) and SCAFFOLD's control variates
    (``scaffold``: :class:`~fedimg.fl.server.scaffold.SiteControl` per site, the strategy's
    global control, as the NVFlare client does). Records
    each site's validation Dice and the L2 norm of its update every round (diagnosis)."""
    import torch

    from fedimg.device import seed_everything
    import contextlib

    from fedimg.engine.loop import train_one_round
    from fedimg.fl.server.scaffold import SiteControl
    from fedimg.fl.server.strategies import StrategyConfig, make_strategy
    seed_everything(seed)
    torch.manual_seed(seed)
    kept_p, check_cpu = _PatienceKept(patience), []  # the model the study keeps
    from _study_dev_swa import TailAverage, start_check

    if swa_start is not None and local_norm:  # the average would hold the shared layers only
        raise SystemExit("study_dev: --swa-start with site-local norm layers is not measured")
    tail = None if swa_start is None else TailAverage(start_check(swa_start, epochs // local), patience)
    glob = {k: v.clone() for k, v in task.build_model(config).state_dict().items()}
    nets = {s: task.build_model(config) for s in datas}
    norm_keys = [k for k in glob if "norm" in k] if local_norm else []
    norms = {s: {k: glob[k].clone() for k in norm_keys} for s in datas}
    keys = [k for k, v in glob.items() if v.is_floating_point()]
    scfg = StrategyConfig(**(strategy or {}))
    server = make_strategy(scfg, size=sum(glob[k].numel() for k in keys))
    ctl = {s: SiteControl() for s in datas} if scaffold else {}
    val, val_sites, norms_round = [], [], []
    for _ in range(epochs // local):
        server.begin_round()
        norms_round.append({})
        for s, d in datas.items():
            start = {k: v.numpy() for k, v in {**glob, **norms[s]}.items()}
            if reset and "trainer" in d.state:  # fresh AdamW moments against the new global model
                d.state["trainer"].optimizer.state.clear()
            if ctl:
                ctl[s].begin(nets[s], server.controls())
            with ctl[s].attached(nets[s]) if ctl else contextlib.nullcontext():
                train_one_round(nets[s], d, config, epochs=local, global_params=start, prox_mu=scfg.prox_mu)
            new = {k: v.detach().clone() for k, v in nets[s].state_dict().items()}
            norms[s] = {k: new[k].clone() for k in norm_keys}
            diff = torch.cat([(new[k].float() - glob[k].float()).reshape(-1) for k in keys]).numpy()
            norms_round[-1][s] = float(np.linalg.norm(diff))
            server.add(diff, 1.0 if uniform else float(d.num_train))
            if ctl:
                server.add_controls(ctl[s].finish(nets[s], start), float(d.num_train))
        if val_sites and hasattr(server, "observe"):  # as the aggregator: train-sample-weighted mean of the sites'
            w = {s: float(d.num_train) for s, d in datas.items()}  # validation of this round's start model
            server.observe({"dice_mean": sum(val_sites[-1][s] * w[s] for s in datas) / sum(w.values())})
        step, i = torch.from_numpy(server.finish()), 0
        norms_round[-1]["server_step"] = float(step.norm())
        if getattr(server, "plateau", None) is not None:
            norms_round[-1]["server_lr_scale"] = server.plateau.scale
        for k in keys:
            n = glob[k].numel()
            glob[k] = (glob[k].float() + step[i:i + n].reshape(glob[k].shape)).to(glob[k].dtype)
            i += n
        scores = []
        for s, d in datas.items():
            nets[s].load_state_dict({**glob, **norms[s]})
            scores.append((task.evaluate(nets[s], d, config)["dice_mean"], d.num_val))
        val_sites.append({s: float(v) for s, (v, _) in zip(datas, scores)})
        val.append(sum(a * b for a, b in scores) / max(1, sum(b for _, b in scores)))
        print(f"  {len(val) * local} epochs per case: validation {val[-1]:.3f}", flush=True)
        check_cpu.append(time.process_time())
        if val[-1] >= max(val):  # the best validation over the whole budget
            kept = {s: {k: v.clone() for k, v in {**glob, **norms[s]}.items()} for s in datas}
        kept_p.add(val[-1], {s: {k: v.clone() for k, v in {**glob, **norms[s]}.items()} for s in datas})
        if tail is not None:  # --swa-start: the tail average of the global models
            tail.offer({k: v.numpy() for k, v in glob.items()}, val[-1],
                       lambda p: _validate(task, config, p, [(d, d.num_val) for d in datas.values()]))
    test = {s: _mean_test(task, config, {k: v.numpy() for k, v in kept[s].items()}, {s: tests[s]})[s] for s in datas}
    cases: dict = {}
    test_p = {s: _mean_test(task, config, {k: v.numpy() for k, v in kept_p.params[s].items()}, {s: tests[s]}, cases)[s]
              for s in datas}
    return {"val": val, "test": test, "test_patience": test_p, "test_patience_cases": cases, "val_sites": val_sites, "update_norms": norms_round,
            "check_cpu": check_cpu, **_tail_result(task, config, tail, tests, local)}


def late_ratio(update_norms: list[dict], last: int = 2) -> list[float]:
    """The server step's L2 norm over the largest site update's, in each of the ``last`` rounds.

    >>> late_ratio([{"a": 2.0, "b": 1.0, "server_step": 3.0}, {"a": 0.5, "server_step": 2.0}])
    [1.5, 4.0]
    """
    out = []
    for r in update_norms[-last:]:
        sites = [v for k, v in r.items() if k not in ("server_step", "server_lr_scale")]
        out.append(round(r["server_step"] / max(sites), 3))
    return out

