"""``--skip-bad-cases`` for the commands that read one site's cases (``train``, ``evaluate``).

Without the flag the first bad case stops the command with one line naming the file. With
it every case is checked first (:func:`fedimg.data.preflight.check_site`: layout, readability,
shapes, labels, content); bad cases are left out *explicitly*: each is logged as a warning,
counted in the command's summary line and listed in ``skipped_cases.json`` of its output.
Missing defacing records are never skipped over.

>>> import argparse
>>> p = argparse.ArgumentParser(); add_skip_argument(p)
>>> p.parse_args(["--skip-bad-cases"]).skip_bad_cases
True
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

__all__ = ["add_skip_argument", "site_cases", "write_skipped"]

log = logging.getLogger(__name__)


def add_skip_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-bad-cases", action="store_true",
                   help="check every case first and skip (and list) bad ones instead of stopping at the first")


def site_cases(data_dir: Path, *, skip: bool, allow_identifiable: bool = True) -> tuple[list, list]:
    """``(cases, skipped problems)`` of one site folder."""
    from fedimg.data import discover
    from fedimg.data.preflight import check_site, problems_error

    if not skip:
        return discover(data_dir, require_labels=True, allow_identifiable=allow_identifiable), []
    found = check_site(data_dir, require_labels=True, allow_identifiable=allow_identifiable, skip_bad_cases=True)
    if found.problems:
        raise problems_error(found.problems, what="checking the cases")
    for p in found.skipped:
        log.warning("skipped bad case: %s", p.message)
    return found.cases, found.skipped


def write_skipped(out_dir: Path, skipped: list[Any]) -> Path | None:
    """``OUT/skipped_cases.json`` listing every skipped case (none written when nothing was skipped)."""
    from fedimg.io import write_json

    if not skipped:
        return None
    path = Path(out_dir) / "skipped_cases.json"
    write_json(path, {"skipped": [p.to_dict() for p in skipped]})
    log.warning("%d bad case(s) skipped; listed in %s", len(skipped), path)
    return path
