"""Plumbing shared by the peer-comparison scripts in ``benchmarks/`` (not part of the wheel).

Each script ``benchmarks/<name>.py`` compares fedimg with a named peer in one process and
run, and prints the ratio. fedimg's side comes from its own measurement functions in
:mod:`fedimg.bench` (what ``fedimg bench <name>`` runs on a user's machine); the peer's side
lives in the script. Peers that are not fedimg dependencies (Flower, SimpleITK) come from
the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence

__all__ = ["parser", "main"]


def parser(description: str, *adders: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """An argument parser built by ``adders`` in order; a later adder may redefine a flag."""
    p = argparse.ArgumentParser(description=description, conflict_handler="resolve")
    for add in adders:
        add(p)
    return p


def main(p: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], argv: Sequence[str] | None,
         level: int = logging.INFO) -> int:
    """Parse ``argv``, set up logging as the scripts always did, and ``run``."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return run(p.parse_args(argv))
