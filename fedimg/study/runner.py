"""``fedimg study``: centralised vs each site alone vs federated, compared like with like.

For each seed (``ProtocolConfig.seeds``; seed ``i`` picks the splits and initial weights):

1. every site's cases are split into train / validation / test
   (:mod:`fedimg.study.protocol`; no case in two);
2. every arm trains until its own validation metric stops improving (patience, at most
   ``max_epochs`` epochs per case) and keeps its best-validation model
   (:mod:`fedimg.study.arms`): **centralised** (pooled cases), **each site alone**, and
   **federated** (NVFlare SimEnv) with the chosen strategy and any ``compare`` strategies;
3. each kept model is evaluated once on every site's test cases.

Then :mod:`fedimg.study.summary` gives means with 95 % bootstrap intervals (over test cases
and seeds) and :mod:`fedimg.study.report` writes ``report.md``, ``results.json`` and plots.

Usage (``fedimg study`` does this; it trains every arm)::

    run_study("data/", "study/", FederationConfig(rounds=16, local_epochs=6), ProtocolConfig(seeds=3))
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from fedimg.errors import ConfigError, InputError
from fedimg.fl.server.federation import FederationConfig, discover_sites
from fedimg.fl.server.strategy_config import StrategyConfig
from fedimg.io import write_json
from fedimg.study.protocol import ProtocolConfig, make_views

__all__ = ["run_study", "run_seed", "load_test_data", "merge_studies", "federated_lr", "federated_batch",
           "federated_sites"]

log = logging.getLogger(__name__)


def load_test_data(cases: list, config: Any, device: Any, source: str) -> Any:
    """A site's test cases, preprocessed once, as site data whose ``val`` are the test cases."""
    from fedimg.engine.cache import Preprocessed, SiteData, load_and_preprocess

    norm = str(getattr(config, "intensity_norm", "zscore"))
    pre = []
    for c in cases:
        p, _ = load_and_preprocess(c, norm)
        pre.append(Preprocessed(p.image.to(device), p.regions.to(device), p.bbox, p.shape))
    return SiteData(train_ids=[], val_ids=[c.case_id for c in cases], train_images=[], train_regions=[],
                    train_fg=[], val=pre, device=device, source=source, intensity_norm=norm)


def federated_lr(fed: FederationConfig, lr: float, scale: float) -> FederationConfig:
    """``fed`` with the sites' peak learning rate ``scale`` x ``lr`` (the lr every other arm trains with).

    >>> from fedimg.fl.server.federation import FederationConfig
    >>> federated_lr(FederationConfig(task="toy", train={"lr": 0.002}), 0.002, 2.0).train["lr"]
    0.004
    """
    if not scale > 0:
        raise ConfigError(f"--federated-lr-scale must be > 0, got {scale}; 1 trains every arm at the same lr")
    return fed if scale == 1.0 else dataclasses.replace(fed, train={**fed.train, "lr": lr * scale})


def federated_batch(fed: FederationConfig, batch_size: int | None) -> FederationConfig:
    """``fed`` with the sites' batch size ``batch_size`` (None: the batch every other arm trains with).

    >>> from fedimg.fl.server.federation import FederationConfig
    >>> federated_batch(FederationConfig(task="toy", train={"batch_size": 2}), 1).train["batch_size"]
    1
    """
    if batch_size is None:
        return fed
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--federated-batch-size must be a whole number >= 1, got {batch_size!r}; give it "
                          "--batch-size's value to train every arm with the same batch")
    return dataclasses.replace(fed, train={**fed.train, "batch_size": batch_size})


def federated_sites(fed: FederationConfig, lr: float, scale: float = 1.0,
                    batch_size: int | None = None) -> FederationConfig:
    """``fed`` as the federated arms' sites train it: :func:`federated_lr` then :func:`federated_batch`."""
    return federated_batch(federated_lr(fed, lr, scale), batch_size)


def run_seed(data_dir: Path, out: Path, fed: FederationConfig, proto: ProtocolConfig, seed: int,
             compare: tuple[StrategyConfig, ...] = (), progress: bool = False, privacy: Any = None,
             federated_lr_scale: float = 1.0, federated_batch_size: int | None = None) -> dict[str, Any]:
    """All arms for one seed; returns the seed's record (splits, curves, test scores).

    ``privacy``: a :class:`fedimg.study.privacy.PrivacySweep` (its DP arms run on the same split).
    ``federated_lr_scale``: the federated arms' sites train at this times the lr of the other arms;
    ``federated_batch_size``: ... with this batch size (None: the other arms')."""
    from fedimg.device import resolve_device
    from fedimg.study.arms import federated_arm, pool_sites, tested_arm, train_local_arm
    from fedimg.tasks import get_task

    task = get_task(fed.task)
    fed = dataclasses.replace(fed, rounds=proto.max_checks, train={**fed.train, "seed": seed})
    config = task.config_from_dict(fed.train_config())
    device = resolve_device(str(getattr(config, "device", "auto")))
    sites = discover_sites(data_dir)
    view = out / "view"
    shutil.rmtree(view, ignore_errors=True)
    split = make_views(sites, view, proto.test_fraction, seed, bool(getattr(config, "allow_identifiable", False)))
    vsites = discover_sites(view)
    datas = {s: task.load_site(p, config, device) for s, p in vsites.items()}
    tests = {s: load_test_data(split[s]["test"], config, device, str(sites[s])) for s in sites}
    record: dict[str, Any] = {
        "seed": seed,
        "split": {s: {"train": d.train_ids, "val": d.val_ids, "test": [c.case_id for c in split[s]["test"]]}
                  for s, d in datas.items()},
        "arms": {},
    }
    arms = record["arms"]
    for strat in (fed.strategy, *compare):
        name = "federated" if strat == fed.strategy else f"federated ({strat.name})"
        if strat.local_norm and strat != fed.strategy:
            name = f"federated ({strat.name}, personalised)"  # each site's own model on its own test cases
        f = federated_sites(dataclasses.replace(fed, strategy=strat, name=""), float(config.lr), federated_lr_scale,
                            federated_batch_size)
        log.info("seed %d: %s arm (%s, NVFlare SimEnv)", seed, name, strat.name)
        arm = federated_arm(view, out / f"fl-{strat.name}", f, proto, task, datas, progress=progress)
        arms[name] = tested_arm(arm, task, config, tests)
    if privacy is not None:
        from fedimg.study.privacy import run_privacy_arms

        fed_lr = federated_sites(fed, float(config.lr), federated_lr_scale, federated_batch_size)  # DP arms too
        arms.update(run_privacy_arms(privacy, view=view, out=out, fed=fed_lr, proto=proto, task=task, datas=datas,
                                     tests=tests, config=config, seed=seed, progress=progress))
    log.info("seed %d: centralised arm", seed)
    arm = train_local_arm(task, config, pool_sites(list(datas.values())), proto, seed=seed)
    arms["centralised"] = tested_arm(arm, task, config, tests)
    for s, d in datas.items():
        log.info("seed %d: %s alone", seed, s)
        arm = train_local_arm(task, config, d, proto, seed=seed)
        arms[f"{s} alone"] = tested_arm(arm, task, config, tests)
    return record


def run_study(data_dir: str | Path, out: str | Path, fed: FederationConfig, proto: ProtocolConfig, *,
              compare: tuple[StrategyConfig, ...] = (), progress: bool = False, privacy: Any = None,
              federated_lr_scale: float = 1.0, federated_batch_size: int | None = None) -> dict[str, Any]:
    """Run every seed, summarise with intervals, write ``results.json`` and the report.

    ``privacy``: a :class:`fedimg.study.privacy.PrivacySweep` adds DP arms and the privacy-utility table.
    ``federated_lr_scale``: the federated arms' sites train at this times the other arms' lr (default 1);
    ``federated_batch_size``: ... with this batch size (default None: the other arms' batch)."""
    from fedimg.study.report import write_report
    from fedimg.study.summary import summarise
    from fedimg.tasks import get_task

    if fed.task != "brats":
        raise ConfigError(f"fedimg study runs the brats task (per-case Dice on test cases), not {fed.task!r}")
    out = Path(out)
    if any(out.glob("seed-*")):
        raise InputError(out, "already holds a study; choose a new --out (or delete it to run again)")
    from fedimg.fl.nvflare.simulate import check_before_start

    if privacy is not None:  # refuse a bad DP combination before any arm trains
        from fedimg.study.privacy import dp_configs

        dp_configs(privacy, dataclasses.replace(fed, rounds=proto.max_checks), proto.base_seed)
    federated_sites(fed, 1.0, federated_lr_scale, federated_batch_size)  # refused before any arm trains
    check_before_start(discover_sites(data_dir), fed)  # every site's data checked before any arm trains
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seeds = []
    for i in range(proto.seeds):
        seed = proto.base_seed + i
        seeds.append(run_seed(Path(data_dir), out / f"seed-{seed}", fed, proto, seed, compare, progress, privacy,
                              federated_lr_scale, federated_batch_size))
        write_json(out / "results.json", {"partial": True, "seeds": seeds})
    sites = list(discover_sites(data_dir))
    results = {
        "task": fed.task,
        "key_metric": get_task(fed.task).key_metric,
        "sites": sites,
        "protocol": dataclasses.asdict(proto),
        "federation": {"strategy": fed.strategy.to_dict(), "compare": [c.to_dict() for c in compare],
                       "local_epochs": fed.local_epochs, "max_rounds": proto.max_checks,
                       **({"lr_scale": federated_lr_scale} if federated_lr_scale != 1.0 else {}),
                       **({"batch_size": federated_batch_size} if federated_batch_size is not None else {})},
        "train_config": get_task(fed.task).config_from_dict(
            dataclasses.replace(fed, rounds=proto.max_checks).train_config()).to_dict(),
        "seeds": seeds,
        "seconds": time.perf_counter() - t0,
    }
    results["summary"] = summarise(results)
    if privacy is not None:
        from fedimg.study.privacy import privacy_table

        results["privacy"] = privacy.to_dict()
        results["privacy_utility"] = privacy_table(results)
    write_json(out / "results.json", results)
    write_report(out, results)
    return results


def merge_studies(studies: list[str | Path], out: str | Path) -> dict[str, Any]:
    """One study from several finished ones run with other seeds (e.g. one process per seed).

    Their sites, protocol (but ``seeds`` / ``base_seed``) and federation must match; the
    seeds are pooled and the summary and report recomputed into ``out``.
    """
    from fedimg.io import read_json
    from fedimg.study.report import write_report
    from fedimg.study.summary import summarise

    if not studies:
        raise ConfigError("--merge needs at least one study folder")
    parts = []
    for st in studies:
        path = Path(st) / "results.json"
        if not path.is_file():
            raise InputError(path, "is missing; merge only finished `fedimg study` folders")
        parts.append((path, read_json(path)))
    first_path, first = parts[0]
    if first.get("partial"):
        raise InputError(first_path, "is from an unfinished study; let it finish or leave it out")
    same = lambda r: (r["sites"], {k: v for k, v in r["protocol"].items() if k not in ("seeds", "base_seed")},  # noqa: E731
                      r["federation"], r["train_config"] | {"seed": 0}, r.get("privacy"))
    seeds, seen = [], set()
    for path, r in parts:
        if r.get("partial") or same(r) != same(first):
            raise InputError(path, "was run with other sites, protocol or training settings (or is unfinished); "
                                   "merge only studies that differ in their seeds")
        for rec in r["seeds"]:
            if rec["seed"] in seen:
                raise InputError(path, f"repeats seed {rec['seed']}; merge studies with different --base-seed")
            seen.add(rec["seed"])
            seeds.append(rec)
    results = {**first, "seeds": seeds, "merged_from": [str(p.parent) for p, _ in parts],
               "protocol": {**first["protocol"], "seeds": len(seeds)},
               "seconds": sum(float(r.get("seconds", 0.0)) for _, r in parts)}
    results["summary"] = summarise(results)
    if "privacy_utility" in first:
        from fedimg.study.privacy import privacy_table

        results["privacy_utility"] = privacy_table(results)
    out = Path(out)
    write_json(out / "results.json", results)
    write_report(out, results)
    return results
