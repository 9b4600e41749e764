"""``benchmarks/study_dev.py``'s patience-kept model: the check it keeps, the check it stops at and the
stop reason are :func:`fedimg.study.protocol.stop_point`'s, on every committed JSON's validation curves.

The reference is the incremental rule the harness applied up to the eighth wave (``_PatienceWatch``
and ``_fedavg``: feed :class:`~fedimg.study.protocol.EarlyStopping` until it says stop, copy the model
at each new best before that); the JSONs also record ``kept_at`` / ``stopped_at`` / ``stop_reason``
and, where the patience-kept check is the best over the budget, the same test Dice for both models.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedimg.study.protocol import EarlyStopping, stop_point

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu-results"
PATIENCE = 3  # study_dev's default; no committed run changed it
#: written before 8ffa6d1, when a patience stop at the budget's last check was labelled "budget"
OLD_LABEL = {"study-dev-h12f-s2-72-central-shared.json:central"}


def incremental_rule(val: list[float], patience: int) -> tuple[int | None, int, str]:
    """``(kept check or None, stop check, reason)`` as the harness's watch computed them while training."""
    stop, stopped, kept, last = EarlyStopping(patience), False, None, len(val) - 1
    for i, v in enumerate(val):
        if not stopped:
            stopped = stop.update(float(v))
            if stop.best_index == stop.count - 1:
                kept = i
            if stopped:
                last = i
    return kept, last, "patience" if stopped else "budget"


def _curves() -> list[tuple[str, str, dict, int]]:
    """``(file, arm, arm record, epochs between checks)`` of every committed arm with a curve."""
    import sys

    sys.path.insert(0, str(RESULTS.parent))
    from _study_dev_arms import ARMS

    out = []
    for f in sorted(RESULTS.glob("study-dev-*.json")):
        d = json.loads(f.read_text())
        for name, arm in d.get("arms", {}).items():
            if arm.get("val"):
                out.append((f.name, name, arm, int(ARMS.get(name, {}).get("local", d.get("local_epochs", 6)))))
    return out


CURVES = _curves()


def test_there_are_committed_curves() -> None:
    assert len(CURVES) >= 100  # 127 JSONs at the eighth wave; a glob gone wrong must not pass empty
    assert sum("stop_reason" in a for _, _, a, _ in CURVES) >= 100


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_stop_point_is_the_incremental_rule_on_every_curve(patience: int) -> None:
    bad = []
    for f, name, arm, _ in CURVES:
        best, last = stop_point(arm["val"], patience)
        mine = (best, last, "patience" if last - best >= patience else "budget")
        if incremental_rule(arm["val"], patience) != mine:
            bad.append(f"{f}:{name} {incremental_rule(arm['val'], patience)} != {mine}")
    assert not bad, "\n".join(bad)


def test_recorded_kept_stop_and_reason_are_stop_points() -> None:
    bad = []
    for f, name, arm, local in CURVES:
        if "stop_reason" not in arm:
            continue
        kept, last, reason = incremental_rule(arm["val"], PATIENCE)
        if f"{f}:{name}" in OLD_LABEL and last == len(arm["val"]) - 1:
            reason = "budget"
        if (arm["kept_at"], arm["stopped_at"], arm["stop_reason"]) != ((kept + 1) * local, (last + 1) * local, reason):
            bad.append(f"{f}:{name} recorded {arm['kept_at']}, {arm['stopped_at']}, {arm['stop_reason']}")
    assert not bad, "\n".join(bad)


def test_the_old_label_is_only_the_last_check() -> None:
    for f, name, arm, _ in CURVES:
        if f"{f}:{name}" in OLD_LABEL:
            kept, last, reason = incremental_rule(arm["val"], PATIENCE)
            assert (reason, last, arm["stop_reason"]) == ("patience", len(arm["val"]) - 1, "budget")


def test_the_kept_model_is_the_budget_best_where_their_checks_agree() -> None:
    """Where the patience-kept check is the best over the budget the two tested models are one model,
    so their test Dice agree: the copy was taken at the check ``kept_at`` names."""
    agree = 0
    for f, name, arm, _ in CURVES:
        if "test_patience" in arm and arm["kept_at"] == arm["kept_at_budget"]:
            assert all(math.isclose(arm["test_patience"][s], arm["test"][s], abs_tol=1e-12) for s in arm["test"]), \
                f"{f}:{name}"
            agree += 1
    assert agree >= 10


@pytest.mark.parametrize("patience", [1, 3])
def test_the_harness_keeps_the_incremental_rules_check_on_every_curve(patience: int) -> None:
    """``_PatienceKept`` (what the centralised watch and the federated loop now use) holds the copy of
    the check the incremental rule kept, on every committed curve; a copy is its check's index."""
    from _study_dev_train import _PatienceKept

    for f, name, arm, _ in CURVES:
        kept = _PatienceKept(patience)
        for i, v in enumerate(arm["val"]):
            kept.add(v, i)
            assert len(kept._copies) == 1
        assert (kept.check, kept.params) == (incremental_rule(arm["val"], patience)[0],) * 2, f"{f}:{name}"


def test_a_better_check_after_the_stop_is_not_kept() -> None:
    from _study_dev_train import _PatienceKept

    kept = _PatienceKept(2)
    for i, v in enumerate([0.3, 0.6, 0.5, 0.55, 0.9, 0.95]):
        kept.add(v, f"copy {i}")
    assert (kept.check, kept.params) == (1, "copy 1")
    assert incremental_rule(kept.val, 2) == (1, 3, "patience")
