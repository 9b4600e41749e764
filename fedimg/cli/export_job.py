"""``fedimg export-job``: an NVFlare job folder to submit to a real deployment.

    fedimg export-job --out jobs/brats-fedavg --sites site-1 site-2 --rounds 20
    nvflare job submit -j jobs/brats-fedavg        # from an admin startup kit
    fedimg export-job --out jobs/brats-he --he     # CKKS-encrypted updates (kits from `fedimg provision --he`)

Sites read their data folder from ``--site-data NAME=PATH`` or, at run time, from the
site's ``FEDIMG_SITE_DATA`` environment variable. Every participant needs fedimg
installed and ``fedimg.fl.`` in its ``class_allow_list`` (``fedimg provision`` does that).
After training the job runs cross-site validation (``--crossval``); the table and heatmap land
in the server's job workspace, ``<job run folder>/fedimg/crossval/``.
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-job", help="write an NVFlare job folder (submit with `nvflare job submit`)",
                       description="Write the federated job (fedimg client script, fedimg aggregator, configs) as "
                                   "an NVFlare job folder.")
    p.add_argument("--out", required=True, help="job folder to write")
    p.add_argument("--sites", nargs="+", default=["site-1", "site-2", "site-3"], help="site names (as provisioned)")
    p.add_argument("--site-data", nargs="*", default=[], metavar="NAME=PATH",
                   help="data folder on each site's machine (default: the site's $FEDIMG_SITE_DATA)")
    p.add_argument("--crossval", choices=["all", "global", "off"], default=None,
                   help="cross-site validation after training, written to the server's run folder crossval/: "
                        "every site evaluates the global model and every site's local model (all; the default), "
                        "the global model only (global; the default with client-level DP) or nothing (off)")
    from fedimg.cli._federation import add_federation_arguments

    add_federation_arguments(p)
    from fedimg.cli._federation import add_he_argument

    add_he_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fedimg.cli._federation import federation_config_from_args
    from fedimg.errors import ConfigError
    from fedimg.fl.nvflare.job import build_recipe, export_job
    from fedimg.fl.nvflare.simulate import check_before_start

    config = federation_config_from_args(args)
    paths: dict[str, Path | None] = {s: None for s in args.sites}
    for item in args.site_data:
        name, sep, path = item.partition("=")
        if not sep or name not in paths:
            raise ConfigError(f"--site-data {item!r}: expected NAME=PATH with NAME one of {', '.join(args.sites)}")
        paths[name] = Path(path)
    check_before_start(paths, config)  # site data on this machine are checked now, others at the site
    if config.he:  # the server holds only ciphertexts: no plain models to cross-validate
        from fedimg.fl.nvflare.he import build_he_recipe

        if args.crossval not in (None, "off"):
            raise ConfigError(f"--crossval {args.crossval} needs plain models on the server; with --he use --crossval off")
        cross = "off"
        recipe = build_he_recipe(config, paths, run_dir=None)
    else:
        cross = args.crossval or ("global" if config.client_dp else "all")
        recipe = build_recipe(config, paths, run_dir=None, cross_site="" if cross == "off" else cross)
    out = export_job(recipe, args.out)
    log.info("job written to %s (%d sites, %d rounds, %s, cross-site validation: %s); "
             "submit it with `nvflare job submit -j %s`%s",
             out, len(paths), config.rounds, config.strategy.name, cross, out,
             " (HE: every kit needs its TenSEAL context, from `fedimg provision --he`)" if config.he else "")
    return 0
