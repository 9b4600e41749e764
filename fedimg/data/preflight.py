"""Pre-flight: check every case of one or more sites before any training starts.

A federated run starts one process per site and fails, minutes later, inside NVFlare when a
site's data are bad. :func:`check_sites` finds those problems first, on the host, and
reports *all* of them as one line each, ``<site>: <file>: <problem and fix>``: the layout
(folders, missing modalities or labels, empty case folders), defacing records, readability
(corrupt, truncated or oversized files, refused from the header), shapes and affines,
label values and content (constant or nearly empty images). :func:`screen_cases` does the
content part for a list of cases and returns the good ones, which is how
``--skip-bad-cases`` skips bad cases explicitly. Files are only read.

>>> import pathlib, tempfile
>>> site = pathlib.Path(tempfile.mkdtemp()) / "site-1"; (site / "case-000").mkdir(parents=True)
>>> problems = check_sites({"site-1": site})
>>> [p.line() for p in problems] == [f"site-1: {site / 'case-000'}: is an empty case folder "
...                                   "(no BraTS-named NIfTI files); add the case's files or remove the folder"]
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from fedimg.data.discover import Case, discover
from fedimg.data.load import load_case
from fedimg.errors import InputError
from fedimg.imageio.provenance import defacing_problem

__all__ = ["Problem", "SiteCheck", "check_site", "check_sites", "screen_cases", "problems_error"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One bad input: the site, the file or folder (when known) and the message naming it."""

    site: str
    path: str | None
    message: str

    @classmethod
    def of(cls, site: str, exc: InputError) -> Problem:
        return cls(site=site, path=exc.path, message=str(exc))

    def line(self) -> str:
        return f"{self.site}: {self.message}" if self.site else self.message

    def to_dict(self) -> dict[str, str | None]:
        return {"site": self.site, "path": self.path, "message": self.message}


@dataclass
class SiteCheck:
    """What :func:`check_site` found: the usable cases, the problems, and what was skipped."""

    site: str
    cases: list[Case] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)


def screen_cases(cases: list[Case], *, site: str = "") -> tuple[list[Case], list[Problem]]:
    """Load every case with every check (:func:`fedimg.data.load_case`); returns ``(good, problems)``."""
    good: list[Case] = []
    bad: list[Problem] = []
    for case in cases:
        try:
            load_case(case)
        except InputError as exc:
            bad.append(Problem.of(site, exc))
            continue
        good.append(case)
    return good, bad


def _identifiable(cases: list[Case], site: str) -> list[Problem]:
    """The defacing gate's own words (no record, a header tag only, a record that does not match the voxels)."""
    out = []
    for case in cases:
        for img in case.images:
            try:
                problem = defacing_problem(img)  # its words already end with the --allow-identifiable way out
            except InputError as exc:  # unreadable image: the error names the file already
                out.append(Problem.of(site, exc))
                continue
            if problem is not None:
                out.append(Problem.of(site, InputError(img, problem)))
    return out


def check_site(path: str | PathLike[str], *, site: str = "", require_labels: bool = True,
               allow_identifiable: bool = False, deep: bool = True, skip_bad_cases: bool = False) -> SiteCheck:
    """Every problem of one site folder; ``deep=False`` checks layout and headers only.

    With ``skip_bad_cases`` bad cases go to ``skipped`` (and are left out of ``cases``),
    otherwise to ``problems``. Missing defacing records are always problems.
    """
    result = SiteCheck(site=site)
    skipped: list[InputError] = []
    try:
        cases = discover(path, require_labels=require_labels, allow_identifiable=True, skipped=skipped)
    except InputError as exc:  # nothing usable: every bad case folder, or the one site-level problem
        result.problems.extend([Problem.of(site, e) for e in skipped] or [Problem.of(site, exc)])
        return result
    (result.skipped if skip_bad_cases else result.problems).extend(Problem.of(site, e) for e in skipped)
    if not allow_identifiable:
        result.problems.extend(_identifiable(cases, site))
    if deep:
        cases, bad = screen_cases(cases, site=site)
        (result.skipped if skip_bad_cases else result.problems).extend(bad)
    result.cases = cases
    if skip_bad_cases and not cases and not result.problems:
        result.problems.append(Problem(site=site, path=str(path), message=f"{path}: holds no usable case "
                                       f"({len(result.skipped)} skipped as bad)"))
    return result


def check_sites(sites: dict[str, Path], **kwargs) -> list[Problem]:
    """Problems of every site (``kwargs`` as for :func:`check_site`), in site order."""
    problems: list[Problem] = []
    for name, path in sites.items():
        found = check_site(path, site=name, **kwargs)
        problems.extend(found.problems)
        log.info("pre-flight %s: %d case(s), %d problem(s), %d skipped", name, len(found.cases),
                 len(found.problems), len(found.skipped))
    return problems


def problems_error(problems: list[Problem], *, what: str = "pre-flight check") -> InputError:
    """One error whose message lists every problem, one line each (nothing was started)."""
    lines = "\n".join("  " + p.line() for p in problems)
    return InputError(None, f"{what} found {len(problems)} problem(s) in the site data; nothing was started:\n{lines}")
