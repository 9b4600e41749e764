"""``fedimg provision``: NVFlare startup kits (certificates, mutual TLS) for real hospitals.

    fedimg provision --sample project.yml --sites site-1 site-2 site-3   # write a starting project.yml
    fedimg provision --project project.yml --out kits/
    fedimg provision --project project.yml --out kits/ --he   # + TenSEAL CKKS contexts (export-job --he)
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("provision", help="startup kits for a real deployment (nvflare provision)",
                       description="Run NVFlare provisioning on a project.yml and let every participant run "
                                   "fedimg's job components. --sample writes a starting project.yml instead.")
    p.add_argument("--project", help="NVFlare project.yml")
    p.add_argument("--out", help="folder for the startup kits")
    p.add_argument("--force", action="store_true", help="allow a non-empty --out")
    p.add_argument("--he", action="store_true",
                   help="add NVFlare's HE builder: CKKS contexts in every kit (sites: secret key; server: none) for "
                        "jobs exported with `fedimg export-job --he`")
    p.add_argument("--sample", metavar="PATH", help="write a sample project.yml to PATH and exit")
    p.add_argument("--sites", nargs="+", default=["site-1", "site-2", "site-3"], help="site names for --sample")
    p.add_argument("--server", default="server1", help="server host name (FQDN) for --sample")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedimg.errors import ConfigError
    from fedimg.fl.nvflare.provision import provision, sample_project

    if args.sample:
        path = sample_project(args.sample, sites=args.sites, server=args.server)
        log.info("wrote %s; edit it, then run `fedimg provision --project %s --out kits/`", path, path)
        return 0
    if not args.project or not args.out:
        raise ConfigError("pass --project and --out (or --sample PATH)")
    kits = provision(args.project, args.out, force=args.force, he=args.he)
    log.info("%d startup kits written under %s", len(kits), args.out)
    return 0
