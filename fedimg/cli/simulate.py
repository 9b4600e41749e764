"""``fedimg simulate``: a whole federation on this machine (NVFlare SimEnv).

    fedimg simulate --data data/ --rounds 20 --local-epochs 2 --strategy fedavg --out runs/fl
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="federated training of every data/site-*/ on NVFlare's simulator",
        description="Every DATA/site-*/ folder is a site. Writes OUT/global_model.safetensors, "
                    "OUT/rounds/round-NNN.safetensors, OUT/metrics.json, OUT/crossval/ and the NVFlare workspace OUT/nvflare/.",
    )
    p.add_argument("--data", required=True, help="folder holding one site-*/ sub-folder per site")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last completed round")
    p.add_argument("--no-crossval", action="store_true", help="skip cross-site validation at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--site-nproc", action="append", default=[], metavar="SITE=N",
                   help="train SITE's local loop on N processes (DDP under torchrun; brats task; repeatable)")
    from fedimg.cli._federation import add_federation_arguments, add_he_argument

    add_federation_arguments(p)
    add_he_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedimg.cli import env_threads
    from fedimg.cli._federation import federation_config_from_args
    from fedimg.fl.nvflare.simulate import run_simulation
    from fedimg.fl.server.federation import discover_sites
    from fedimg.study.crossval import cross_validate

    config = federation_config_from_args(args, threads=args.threads or env_threads())
    sites = discover_sites(args.data)
    summary = run_simulation(args.data, args.out, config, resume=args.resume, progress=not args.no_progress, sites=sites,
                             site_nproc=_site_nproc(args.site_nproc))
    val = summary.get("final_validation") or {}
    log.info("federated run done: %d rounds, %d sites, %.0fs; %s", summary["rounds"], len(summary["sites"]),
             summary["seconds"], ", ".join(f"{k}={v:.3f}" for k, v in val.items() if isinstance(v, float)))
    for r in summary["rejected"]:
        log.warning("round %d: rejected %s: %s", r["round"], r["site"], r["reason"])
    from fedimg.cli._federation import log_privacy

    log_privacy(args.out, log)
    if not args.no_crossval:
        table = cross_validate(args.out, sites, config)
        log.info("cross-site validation: %s", table["csv"])
    return 0


def _site_nproc(values: list[str]) -> dict[str, int]:
    """``["site-2=2"]`` -> ``{"site-2": 2}`` (one clear line on a malformed value)."""
    from fedimg.errors import ConfigError

    out = {}
    for v in values:
        name, _, n = v.partition("=")
        if not name or not n.strip().isdigit():
            raise ConfigError(f"--site-nproc {v!r}: write SITE=N, e.g. site-2=2")
        out[name.strip()] = int(n)
    return out
