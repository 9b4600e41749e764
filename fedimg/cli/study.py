"""``fedimg study``: federated vs centralised vs each site alone, compared like with like.

    fedimg study --data data/ --out study/ --seeds 3 --rounds 16 --local-epochs 6 --patience 4 \\
        --compare fedprox,fedadam --allow-identifiable
    fedimg study --data data/ --out study/ --dp-epsilon 1 3 8 inf     # + the privacy-utility table

Per seed: a train / validation / test split of every site, early stopping of every arm on
its own validation Dice (at most ``rounds x local_epochs`` epochs per case), one test
evaluation; then means with 95 % bootstrap intervals (``OUT/report.md``, ``results.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

__all__ = ["register", "run", "CONTRAST_AUG", "STUDY_STRATEGY", "STUDY_NESTEROV", "STUDY_MOMENTUM", "STUDY_FEDERATED_BATCH",
           "study_federation_config", "with_contrast_aug"]

#: The study's default federated strategy (``--strategy``; ``--compare fedavg`` adds plain FedAvg).
STUDY_STRATEGY = "fedavgm"
#: ... with Nesterov server momentum unless ``--no-nesterov`` (chosen on the development split: README).
STUDY_NESTEROV = True
#: ... and server momentum 0.8 unless ``--server-momentum`` (0.9 before the fifth wave; development split: README).
STUDY_MOMENTUM = 0.8
#: The federated arms' sites train with batch 1 unless ``--federated-batch-size`` (the centralised and
#: single-site arms keep ``--batch-size``, default 2: batch 1 did not help them); tenth wave, development split (README).
STUDY_FEDERATED_BATCH = 1

#: The study's contrast augmentation (``--contrast-aug on``): MONAI-typical ranges
#: (gamma 1/1.5-1.5 as nnU-Net, a weak degree-3 bias field, 3-10 histogram control points).
CONTRAST_AUG = {"contrast_gamma": 0.5, "contrast_bias": 0.2, "contrast_hist": 10, "contrast_prob": 0.5}

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study", help="federated vs centralised vs each site alone: early stopping, seeds, 95%% intervals",
        description="Split every site's cases into train/validation/test; train centralised (pooled cases), each "
                    "site alone and federated (NVFlare SimEnv) until each arm's own validation Dice stops improving "
                    "(at most --rounds x --local-epochs epochs per case); evaluate each kept model once on every "
                    "site's test cases; repeat for --seeds seeds; write OUT/report.md, OUT/results.json and PNGs.",
    )
    p.add_argument("--data", default=None, help="folder holding one site-*/ sub-folder per site")
    p.add_argument("--merge", nargs="+", default=None, metavar="STUDY",
                   help="instead of training: pool the seeds of finished study folders (e.g. one per --base-seed, "
                        "run in parallel) into --out, with intervals recomputed")
    p.add_argument("--out", required=True, help="study folder")
    p.add_argument("--seeds", type=int, default=3, help="repetitions with their own split and initial weights (default 3)")
    p.add_argument("--base-seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--patience", type=int, default=4, help="checks (rounds) without a new best before an arm stops (default 4)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="share of every site's cases kept for the test (default 0.25)")
    p.add_argument("--compare", default="",
                   help="more federated arms, comma-separated strategies (e.g. fedprox,fedadam,fedyogi)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--contrast-aug", choices=["on", "off"], default="on",
                   help="contrast augmentation at every site and arm (bias field, gamma, histogram shift; "
                        f"{CONTRAST_AUG}); on by default, chosen on a development split (README); "
                        "fields set in --config win")
    p.add_argument("--federated-lr-scale", type=float, default=1.0, metavar="F",
                   help="the federated arms' sites train at F x the lr of the centralised and single-site arms "
                        "(default 1: the same lr)")
    p.add_argument("--federated-batch-size", type=int, default=STUDY_FEDERATED_BATCH, metavar="B",
                   help="the federated arms' sites (DP arms included) train with batch B; the centralised and "
                        f"single-site arms keep --batch-size (default {STUDY_FEDERATED_BATCH}: more local steps for the "
                        "same samples, chosen on a development split, README; give --batch-size's value for one batch "
                        "in every arm)")
    p.add_argument("--no-progress", action="store_true")
    from fedimg.cli._federation import add_federation_arguments

    add_federation_arguments(p, rounds=16, local_epochs=6, dp=False)
    # the study's federated arm: FedAvg with Nesterov server momentum 0.8 (chosen on the development split: README)
    p.set_defaults(strategy=STUDY_STRATEGY)
    from fedimg.cli._study_privacy import add_privacy_sweep_arguments

    add_privacy_sweep_arguments(p)
    p.set_defaults(func=run)


def _compare(text: str, headline: str) -> tuple:
    from fedimg.fl.server.strategy_config import StrategyConfig

    out = []
    for name in (x.strip().replace("-", "_") for x in text.split(",") if x.strip()):
        if name != headline and name not in [s.name for s in out]:
            out.append(StrategyConfig(name=name, server_lr=0.01 if name in ("fedadam", "fedyogi") else 1.0))
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    from fedimg.cli import env_threads
    from fedimg.device import configure_threads
    from fedimg.study.protocol import ProtocolConfig
    from fedimg.study.runner import run_study

    from fedimg.errors import ConfigError
    from fedimg.study.runner import merge_studies

    if args.merge:
        _log(merge_studies(args.merge, args.out), args.out)
        return 0
    if not args.data:
        raise ConfigError("fedimg study needs --data (the folder of site-*/ folders) or --merge")
    if args.seed is not None:
        raise ConfigError("fedimg study seeds each repetition itself (split and initial weights): use --base-seed, not --seed")
    threads = args.threads or env_threads()
    configure_threads(threads)
    config = study_federation_config(args, threads)
    proto = ProtocolConfig(test_fraction=args.test_fraction, max_epochs=args.rounds * args.local_epochs,
                           check_every=args.local_epochs, patience=args.patience, seeds=args.seeds,
                           base_seed=args.base_seed, n_boot=args.bootstrap)
    from fedimg.cli._study_privacy import log_privacy_table, privacy_sweep_from_args

    res = run_study(args.data, args.out, config, proto, compare=_compare(args.compare, config.strategy.name),
                    progress=not args.no_progress, privacy=privacy_sweep_from_args(args),
                    federated_lr_scale=args.federated_lr_scale, federated_batch_size=args.federated_batch_size)
    _log(res, args.out)
    log_privacy_table(res, log)
    return 0


def study_federation_config(args: argparse.Namespace, threads: int | None = None) -> Any:
    """The study's FederationConfig: the federation options, Nesterov momentum for ``fedavgm`` unless
    ``--no-nesterov`` (:data:`STUDY_NESTEROV`), at :data:`STUDY_MOMENTUM` unless ``--server-momentum``,
    contrast augmentation per ``--contrast-aug``."""
    from fedimg.cli._federation import federation_config_from_args

    fedavgm = args.strategy.replace("-", "_") == "fedavgm"
    if getattr(args, "nesterov", None) is None:
        args = argparse.Namespace(**{**vars(args), "nesterov": STUDY_NESTEROV and fedavgm})
    if getattr(args, "server_momentum", None) is None and fedavgm:
        args = argparse.Namespace(**{**vars(args), "server_momentum": STUDY_MOMENTUM})
    return with_contrast_aug(federation_config_from_args(args, threads=threads), args.contrast_aug == "on")


def with_contrast_aug(config: Any, on: bool) -> Any:
    """``config`` (a FederationConfig) with :data:`CONTRAST_AUG` under its training fields when ``on``."""
    if not on:
        return config
    return dataclasses.replace(config, train={**CONTRAST_AUG, **config.train})


def _log(res: dict, out: str) -> None:
    s = res["summary"]
    log.info("study (test Dice, mean [95%% CI]): %s", "; ".join(
        f"{a} {d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}]" for a, d in s["arms"].items()))
    if "ratio" in s:
        r = s["ratio"]
        log.info("federated / centralised: %.3f [%.3f, %.3f]", r["mean"], r["low"], r["high"])
    log.info("report: %s/report.md", out)
