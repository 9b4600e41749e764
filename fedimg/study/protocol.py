"""The study's protocol: per-site train / validation / test splits and early stopping.

Every site's cases are split three ways for each seed: :func:`hold_out_test` puts a share of
them aside as **test** cases (no arm trains or selects on them), and the task's own split
(:func:`fedimg.engine.cache.split_cases`, ``val_fraction`` and the seed) divides the rest
into **train** and **validation**. :func:`make_views` writes, per seed, a data folder
``VIEW/site-k/`` that links only the train+validation cases, so the federated sites (NVFlare
processes) and the local arms read the same cases without copying them.

Every arm trains until its own validation metric stops improving: it is checked every
``check_every`` epochs per case, and :class:`EarlyStopping` stops it ``patience`` checks
after its best one (or at ``max_epochs``); the model of the best check is the arm's model.

>>> ProtocolConfig(max_epochs=24, check_every=6, patience=2).max_checks
4
>>> stop = EarlyStopping(patience=2)
>>> [stop.update(v) for v in (0.1, 0.3, 0.2, 0.25)], stop.best_index
([False, False, False, True], 1)
>>> hold_out_test(["c1", "c2", "c3", "c4"], 0.25, seed=0)
(['c1', 'c2', 'c3'], ['c4'])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedimg.errors import ConfigError, InputError

__all__ = ["ProtocolConfig", "EarlyStopping", "hold_out_test", "three_way_split", "stop_point", "make_views"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ProtocolConfig:
    """How the study compares arms.

    ``test_fraction``: share of every site's cases kept aside for the final test.
    ``max_epochs``: the most epochs per case any arm may train (the stated maximum budget;
    also the length of every arm's learning-rate schedule). ``check_every``: epochs per case
    between validation checks (the federated arm checks once a round, so the study sets it
    to ``local_epochs``). ``patience``: checks without a new best before an arm stops.
    ``seeds``: repetitions (seed ``base_seed + i`` picks the split and the initial weights).
    ``n_boot``: bootstrap resamples for the intervals.
    """

    test_fraction: float = 0.25
    max_epochs: int = 96
    check_every: int = 6
    patience: int = 4
    seeds: int = 1
    base_seed: int = 0
    n_boot: int = 2000

    def __post_init__(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")
        for name in ("max_epochs", "check_every", "patience", "seeds", "n_boot"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.max_epochs % self.check_every:
            raise ConfigError(f"max_epochs ({self.max_epochs}) must be a multiple of check_every "
                              f"({self.check_every}, the local epochs per round)")
        if self.base_seed < 0:
            raise ConfigError(f"base_seed must be >= 0, got {self.base_seed}")

    @property
    def max_checks(self) -> int:
        """Validation checks (federated rounds) in the maximum budget."""
        return self.max_epochs // self.check_every


class EarlyStopping:
    """Feed it one validation score per check; :meth:`update` says when to stop.

    Stops once ``patience`` checks in a row bring no score above the best so far (never
    before a first finite score). ``best_index`` is the 0-based check whose model the arm
    keeps (-1 until a finite score arrives).
    """

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ConfigError(f"patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self.best = -np.inf
        self.best_index = -1
        self.count = 0

    def update(self, score: float) -> bool:
        """Record the next check's score; True when the arm should stop now."""
        if np.isfinite(score) and score > self.best:
            self.best, self.best_index = float(score), self.count
        self.count += 1
        if self.best_index < 0:  # no finite score yet: keep going (the maximum budget still ends it)
            return False
        return self.count - 1 - self.best_index >= self.patience


def stop_point(scores: Sequence[float], patience: int) -> tuple[int, int]:
    """``(best check, last check run)`` that :class:`EarlyStopping` gives on ``scores`` (0-based).

    Used on the federated arm's per-round validation curve: the rounds after the stop do
    not change the rounds before it, so stopping there gives the same model.
    """
    stop = EarlyStopping(patience)
    for i, s in enumerate(scores):
        if stop.update(float(s)):
            return stop.best_index, i
    return max(0, stop.best_index), len(scores) - 1


def hold_out_test(case_ids: Sequence[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``(train+validation ids, test ids)``: at least one test case and two others per site."""
    ids = sorted(case_ids)
    n = len(ids)
    if n < 3:
        raise ConfigError(f"a site needs at least 3 cases for train/validation/test, it has {n}")
    n_test = min(max(1, int(round(n * test_fraction))), n - 2)
    perm = np.random.default_rng([seed, 7]).permutation(n)
    test = {ids[i] for i in perm[:n_test]}
    return [c for c in ids if c not in test], [c for c in ids if c in test]


def three_way_split(case_ids: Sequence[str], test_fraction: float, val_fraction: float,
                    seed: int) -> tuple[list[str], list[str], list[str]]:
    """``(train, validation, test)`` ids of one site, exactly as the study splits them."""
    from fedimg.engine.cache import split_cases

    rest, test = hold_out_test(case_ids, test_fraction, seed)

    class _Id:
        def __init__(self, case_id: str) -> None:
            self.case_id = case_id

    train, val = split_cases([_Id(c) for c in rest], val_fraction, seed)
    return [c.case_id for c in train], [c.case_id for c in val], test


def _case_entry(case: object, site: Path) -> str:
    """The top-level entry of ``site`` that holds ``case``'s files."""
    files = [Path(p) for p in (*case.images, case.label) if p is not None]  # type: ignore[attr-defined]
    tops = {f.resolve().relative_to(site.resolve()).parts[0] for f in files}
    if len(tops) != 1 or (site / next(iter(tops))).is_file():
        raise InputError(site, "the study needs one sub-folder per case (BraTS layout); move each case's files "
                               "into its own folder")
    return next(iter(tops))


def make_views(sites: dict[str, Path], view: Path, test_fraction: float, seed: int,
               allow_identifiable: bool) -> dict[str, dict[str, list]]:
    """Write ``view/site-k/`` (links to the train+validation case folders of every site).

    Returns ``{site: {"trainval": [case ids], "test": [Case]}}``; the test cases stay
    where they are and are read only for the final evaluation.
    """
    from fedimg.data import discover

    out: dict[str, dict[str, list]] = {}
    for name, site in sites.items():
        cases = discover(site, require_labels=True, allow_identifiable=allow_identifiable)
        keep, test = hold_out_test([c.case_id for c in cases], test_fraction, seed)
        entries = {c.case_id: _case_entry(c, site) for c in cases}
        test_entries = {entries[c] for c in test}
        dest = view / name
        dest.mkdir(parents=True, exist_ok=True)
        for entry in sorted(os.listdir(site)):
            if entry not in test_entries and not (dest / entry).exists():
                os.symlink((site / entry).resolve(), dest / entry)
        out[name] = {"trainval": keep, "test": [c for c in cases if c.case_id in set(test)]}
        log.info("%s, seed %d: %d train+validation, %d test cases", name, seed, len(keep), len(test))
    return out
