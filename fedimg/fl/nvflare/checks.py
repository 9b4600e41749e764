"""Before and after a federated run: pre-flight checks on the host, site errors read back.

:func:`preflight_sites` validates every site's data on this machine before NVFlare starts
(``fedimg simulate / study / poc / export-job``): for the ``brats`` task every case is
checked as the site would (:mod:`fedimg.data.preflight`: layout, defacing records,
readability, shapes, labels, content); other tasks load each site once on the CPU. Every
problem is one line naming the site and the file.

:func:`site_errors` reads a failed run's site logs (NVFlare writes each site's output to a
``log.txt`` in its workspace) and returns, per site, the one line of the error that stopped
it, e.g. ``site-2: /data/site-2/c1/c1_t1.nii.gz: is constant ...``, so the user's terminal
shows it instead of "Logs are in per-site subdirectories".

:func:`wrong_site_failure` turns a round's rejection of an update whose stated site was not
the site NVFlare delivered it from (:data:`fedimg.fl.server.validation.SITE_MISMATCH`) into
the run's error: such a run trained one site's data twice and another's never.

>>> import pathlib, tempfile
>>> ws = pathlib.Path(tempfile.mkdtemp()); (ws / "job" / "site-2").mkdir(parents=True)
>>> _ = (ws / "job" / "site-2" / "log.txt").write_text(
...     "2026-01-01 INFO - Traceback (most recent call last):\\n"
...     "2026-01-01 INFO - fedimg.errors.InputError: /d/site-2/toy.npz: is not a toy data file\\n")
>>> site_errors(ws, ["site-1", "site-2"])
{'site-2': '/d/site-2/toy.npz: is not a toy data file'}
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from fedimg.data.preflight import Problem, check_sites
from fedimg.errors import FedimgError

__all__ = ["preflight_sites", "site_errors", "site_failure", "wrong_site_failure"]

log = logging.getLogger(__name__)

#: An error line in a site's log: fedimg's own errors first, then any other exception.
_FEDIMG = re.compile(r"fedimg\.errors\.\w+: (.+?)\s*$")
_SYSEXIT = re.compile(r"SystemExit: (.+?)\s*$")
_OTHER = re.compile(r"(?:^|\s)((?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception)): (.+?)\s*$")


def preflight_sites(sites: dict[str, Path | None], task: str, train: dict[str, Any]) -> list[Problem]:
    """Every problem of every site's data (sites whose path is None or not on this machine are skipped)."""
    local = {s: Path(p) for s, p in sites.items() if p is not None and Path(p).exists()}
    for s, p in sites.items():
        if p is not None and s not in local:
            log.info("pre-flight: %s's data folder %s is not on this machine; the site checks it when the job starts", s, p)
    if task == "brats":
        return check_sites(local, require_labels=True, allow_identifiable=bool(train.get("allow_identifiable", False)))
    import torch

    from fedimg.tasks import get_task

    t = get_task(task)
    cfg = t.config_from_dict(train)
    problems = []
    for name, path in local.items():
        try:
            t.load_site(path, cfg, torch.device("cpu"))
        except FedimgError as exc:
            problems.append(Problem(site=name, path=getattr(exc, "path", None), message=str(exc)))
    return problems


def _last_error(text: str) -> tuple[str, bool] | None:
    """The last error line of a log and whether it is the site's own (fedimg error, exit) or a consequence."""
    for pattern in (_FEDIMG, _SYSEXIT):
        found = [m.group(1) for m in map(pattern.search, text.splitlines()) if m]
        if found:
            return found[-1], True
    found = [f"{m.group(1)}: {m.group(2)}" for line in text.splitlines() if (m := _OTHER.search(line))]
    return (found[-1], False) if found else None


def _errors(workspace: Path, sites: list[str], since: float = 0.0) -> dict[str, tuple[str, bool]]:
    errors: dict[str, tuple[str, bool]] = {}
    for site in sites:
        logs = [p for d in workspace.rglob(site) if d.is_dir() for p in d.rglob("log*.txt") if p.stat().st_mtime >= since]
        for path in sorted(set(logs), key=lambda p: p.stat().st_mtime):
            try:
                err = _last_error(path.read_text(errors="replace"))
            except OSError:
                continue
            if err and (err[1] or not errors.get(site, ("", False))[1]):
                errors[site] = err
    return errors


def site_errors(workspace: str | Path, sites: list[str], *, since: float = 0.0, own_only: bool = False) -> dict[str, str]:
    """``{site: the line of the error that stopped it}`` from the site logs under ``workspace``
    (only logs written at or after ``since``, a ``time.time()``: not an earlier run's).
    ``own_only``: only a site's own error (fedimg's or its exit), not an abort it suffered."""
    return {s: e for s, (e, own) in _errors(Path(workspace), sites, since).items() if own or not own_only}


def site_failure(workspace: str | Path, sites: list[str], what: str, *, since: float = 0.0) -> FedimgError | None:
    """One error with a line per site that failed (``None`` when no site log names an error).

    Sites whose only error is a consequence (the job was aborted because another site
    failed) are named on one extra line.
    """
    errors = _errors(Path(workspace), sites, since)
    if not errors:
        return None
    own = {s: e for s, (e, primary) in errors.items() if primary} or {s: e for s, (e, _) in errors.items()}
    lines = [f"  {s}: {e}" for s, e in own.items()]
    others = [s for s in errors if s not in own]
    if others:
        lines.append(f"  ({', '.join(others)} stopped because the job was aborted)")
    return FedimgError(f"{what} failed in {len(own)} site(s):\n" + "\n".join(lines) + f"\n(full logs under {workspace})")


def wrong_site_failure(out: str | Path, metrics: list[dict[str, Any]]) -> FedimgError | None:
    """The run's error when a round rejected an update for its stated site (``None`` otherwise).

    >>> wrong_site_failure("run", [{"round": 1, "rejected": [{"site": "site-1", "reason": "stated site 'site-2' ..."}]}])
    FedimgError("run: round 1: rejected the update from site-1: stated site 'site-2' ...")
    """
    from fedimg.fl.server.validation import SITE_MISMATCH

    for m in metrics:
        for r in m.get("rejected") or []:
            if str(r.get("reason", "")).startswith(SITE_MISMATCH):
                return FedimgError(f"{out}: round {m.get('round')}: rejected the update from {r.get('site')}: {r['reason']}")
    return None
