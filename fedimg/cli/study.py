"""``fedimg study``: centralised vs each site alone vs federated, one report.

    fedimg study --data data/ --out study/ --rounds 10 --local-epochs 2 --allow-identifiable
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study", help="centralised vs each site alone vs federated, with report.md",
        description="Train centralised (pooled training cases), each site alone and federated (NVFlare SimEnv) "
                    "with the same epoch budget, evaluate all on every site's held-out cases; writes OUT/report.md, "
                    "OUT/results.json and PNGs.",
    )
    p.add_argument("--data", required=True, help="folder holding one site-*/ sub-folder per site")
    p.add_argument("--out", required=True, help="study folder")
    p.add_argument("--fl-run", default=None,
                   help="reuse this finished `fedimg simulate` run (same task/rounds/epochs/config) as the federated arm")
    p.add_argument("--no-progress", action="store_true")
    from fedimg.cli._federation import add_federation_arguments

    add_federation_arguments(p, rounds=10, local_epochs=2, dp=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedimg.cli import env_threads
    from fedimg.cli._federation import federation_config_from_args
    from fedimg.device import configure_threads
    from fedimg.study.runner import run_study

    threads = args.threads or env_threads()
    configure_threads(threads)
    config = federation_config_from_args(args, threads=threads)
    if args.fl_run:  # otherwise the federated arm's simulation checks every site first
        from fedimg.fl.nvflare.simulate import check_before_start
        from fedimg.fl.server.federation import discover_sites

        check_before_start(discover_sites(args.data), config)
    res = run_study(args.data, args.out, config, fl_run=args.fl_run, progress=not args.no_progress)
    s = res["summary"]
    means = s["mean_" + res["key_metric"]]
    log.info("study: %s", ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    log.info("report: %s/report.md", args.out)
    return 0
