"""``fedimg poc``: the federated job as separate server and site processes (NVFlare POC, mutual TLS).

    fedimg poc --data data/ --rounds 5 --out runs/poc --allow-identifiable
    fedimg poc --data data/ --rounds 2 --out runs/poc-he --he     # CKKS-encrypted updates
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "poc", help="run the federated job on a local NVFlare POC system (processes, gRPC, mutual TLS)",
        description="Provision a POC project (one certificate per participant), start the server and one process "
                    "per DATA/site-*/ on localhost, submit the job through the admin kit, wait, stop. "
                    "Writes the same files as `fedimg simulate` (OUT/crossval/ included); the POC workspace is OUT/nvflare/, "
                    "NVFlare's output OUT/nvflare.log.",
    )
    p.add_argument("--data", required=True, help="folder holding one site-*/ sub-folder per site")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from the last completed round in --out")
    p.add_argument("--keep-running", action="store_true", help="leave the POC system running afterwards")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the job (default 3600)")
    p.add_argument("--no-crossval", action="store_true", help="skip cross-site validation at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per round)")
    from fedimg.cli._federation import add_federation_arguments, add_he_argument

    add_federation_arguments(p, rounds=5)
    add_he_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedimg.cli import env_threads
    from fedimg.cli._federation import federation_config_from_args
    from fedimg.fl.nvflare.poc import run_poc
    from fedimg.fl.server.federation import discover_sites
    from fedimg.study.crossval import cross_validate

    config = federation_config_from_args(args, threads=args.threads or env_threads())
    summary = run_poc(args.data, args.out, config, resume=args.resume, keep_running=args.keep_running,
                      timeout=args.timeout, progress=not args.no_progress)
    log.info("POC job %s: %s, %d rounds in %.0fs", summary["job_id"], summary["status"], summary["rounds"],
             summary["seconds"])
    if config.he:
        he = summary["he"]
        log.info("secure aggregation: every update was CKKS-encrypted at its site; server-side checks off: %s; "
                 "each site screened its own update before encrypting it", "; ".join(he["server_checks_off"]))
        log.info("the global model stays encrypted on the server (no plain checkpoint, no cross-site validation); "
                 "what the aggregator received: %s/he_audit.jsonl", args.out)
    elif not args.no_crossval:  # the sites' data are on this machine: evaluate every model on every site here
        table = cross_validate(args.out, discover_sites(args.data), config)
        log.info("cross-site validation: %s", table["csv"])

    from fedimg.cli._federation import log_privacy

    log_privacy(args.out, log)
    return 0
