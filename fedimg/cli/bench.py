"""``fedimg bench <name>``: measure fedimg's own throughput on this machine (or all benchmarks).

Each benchmark is a module ``fedimg.bench.<name>`` exposing ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> int`` (it prints a table and writes JSON with
``--json``). Comparisons with peers are the scripts in the repository's ``benchmarks/``
folder (not installed), which call the same modules' measurement functions.
"""

from __future__ import annotations

import argparse
import importlib
import logging

__all__ = ["BENCHMARKS", "register"]

log = logging.getLogger(__name__)

BENCHMARKS = ["train", "aggregate", "deface", "federation", "tiles"]


def _load(name: str):
    try:
        return importlib.import_module(f"fedimg.bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"fedimg.bench.{name}":
            raise
        return None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure fedimg's own throughput on this machine")
    bsub = p.add_subparsers(dest="bench_name", metavar="NAME")
    for name in BENCHMARKS:
        mod = _load(name)
        if mod is None:
            continue
        bp = bsub.add_parser(name, help=mod.DESCRIPTION)
        mod.add_arguments(bp)
        bp.set_defaults(func=mod.run)
    allp = bsub.add_parser("all", help="run every benchmark in quick mode")
    allp.add_argument("--json-dir", default="bench-results", help="folder for the JSON files")
    allp.add_argument("--quick", action="store_true", help="accepted for symmetry: `all` always runs quick mode")
    allp.set_defaults(func=_run_all)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _run_all(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = Path(args.json_dir)
    for name in BENCHMARKS:
        mod = _load(name)
        if mod is None:
            continue
        bp = argparse.ArgumentParser()
        mod.add_arguments(bp)
        argv = ["--json", str(out / f"{name}.json")]
        if any(a.dest == "quick" for a in bp._actions):
            argv.append("--quick")
        log.info("benchmark %s", name)
        mod.run(bp.parse_args(argv))
    return 0
