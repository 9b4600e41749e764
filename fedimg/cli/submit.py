"""``fedimg submit``: run an exported job on a provisioned deployment and follow it from the admin kit.

    fedimg export-job --out jobs/brats --sites site-1 site-2 --rounds 20
    fedimg submit --kit kits/fedimg/prod_00/admin@hospital.org --job jobs/brats --out runs/brats
    fedimg submit --kit ... --job-id 1234-... --out runs/brats      # follow a job submitted earlier

The terminal shows rounds, sites and metrics as ``fedimg simulate`` and ``fedimg poc`` do;
NVFlare's output goes to ``OUT/nvflare.log``; a site that fails is named with its error line.
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="run an exported job on a provisioned deployment and follow its rounds",
                       description="Submit a job folder from `fedimg export-job` through an admin startup kit from "
                                   "`fedimg provision` (mutual TLS), show rounds, sites and metrics until it ends, "
                                   "and download the server's run folder (checkpoints, cross-site table) to OUT/server/.")
    p.add_argument("--kit", required=True, help="the admin's startup kit folder (…/prod_NN/admin@org)")
    p.add_argument("--job", help="job folder from `fedimg export-job`")
    p.add_argument("--job-id", help="follow a job already submitted (with --job: its folder gives rounds and sites)")
    p.add_argument("--out", required=True, help="local folder: metrics.json, summary.json, nvflare.log, server/")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the job (default 3600)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per round)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedimg.fl.nvflare.remote import run_kit_job

    summary = run_kit_job(args.kit, args.job, args.out, job_id=args.job_id, timeout=args.timeout,
                          progress=not args.no_progress)
    log.info("job %s: %s, %d rounds in %.0fs", summary["job_id"], summary["status"], summary["rounds"],
             summary["seconds"])
    if summary.get("server_run"):
        log.info("server's run folder: %s (cross-site table and heatmap in crossval/)", summary["server_run"])
    return 0
