"""``benchmarks/study_dev.py --swa-start``: the tail average (``_study_dev_swa.TailAverage``), the forked
random generators that keep each arm's own training unchanged, and lead11's judge (``judge_tail``)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _study_dev_swa import TailAverage, judge_tail, rng_forked, start_check  # noqa: E402


def test_the_average_starts_at_its_check_and_keeps_dtypes_and_integer_entries() -> None:
    tail = TailAverage(start=2, patience=3)
    seen = []
    for i, w in enumerate([1.0, 5.0, 2.0, 4.0, 9.0]):
        params = {"w": np.full(3, w, dtype=np.float32), "count": np.array([i], dtype=np.int64)}
        tail.offer(params, score=-w, evaluate=lambda p: (seen.append(p["w"][0]), float(p["w"][0]))[1])
    assert seen == [2.0, 3.0, 5.0]  # (2), (2+4)/2, (2+4+9)/3: checks 0 and 1 are not averaged
    assert tail.val == [-1.0, -5.0, 2.0, 3.0, 5.0]
    assert tail.kept.check == 4 and tail.kept.params["w"].dtype == np.float32
    assert tail.kept.params["count"].tolist() == [4]  # not a float: the check's own value, not averaged
    assert tail.summary(6) == {"start_check": 2, "start_epochs": 12, "val": tail.val, "kept_at": 30}


def test_an_offered_model_changed_later_does_not_change_the_average() -> None:
    tail = TailAverage(start=0, patience=3)
    w = np.zeros(2)
    tail.offer({"w": w}, 0.0, lambda p: float(p["w"].sum()))
    w += 10.0  # the caller trains on in place
    tail.offer({"w": np.ones(2)}, 0.0, lambda p: float(p["w"].sum()))
    assert tail.val == [0.0, 1.0]


def test_the_validation_of_the_average_leaves_every_generator_where_it_was() -> None:
    import torch

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    with rng_forked():
        torch.rand(5), np.random.rand(5), random.random()
    after = (torch.rand(1).item(), np.random.rand(), random.random())
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    assert after == (torch.rand(1).item(), np.random.rand(), random.random())


def test_the_start_is_a_fraction_of_the_checks() -> None:
    assert start_check(0.75, 12) == 9
    with pytest.raises(ValueError, match="swa-start"):
        start_check(1.0, 12)


def _arm(test: float, swa_test: float, val: list[float], swa_val: list[float], kept: int, swa_kept: int) -> dict:
    return {"mean_test_patience": test, "val": val, "kept_at": kept * 6,
            "swa": {"mean_test_patience": swa_test, "val": swa_val, "kept_at": swa_kept * 6}}


def _write(tmp: Path, g: int, s: int, name: str, arm: dict) -> str:
    p = tmp / f"all{g}-s{s}-{name}.json"
    p.write_text(json.dumps({"synth_seed": g, "seed": s, "local_epochs": 6, "arms": {name: arm}}))
    return str(p)


def test_the_judge_picks_the_denominator_then_judges_the_federated_average(tmp_path: Path) -> None:
    curve = [0.1, 0.5, 0.6]
    files = []
    for g in (3, 5):
        for s in range(3):
            fed_swa = 0.6 if s else 0.4  # beats the plain 0.5 on 2 of 3 runs per generator seed
            files.append(_write(tmp_path, g, s, "nesterov-b0.8-bs1", _arm(0.5, fed_swa, curve, curve, 3, 3)))
            files.append(_write(tmp_path, g, s, "central", _arm(0.6, 0.605, curve, curve, 3, 3)))
    out = judge_tail(files)
    assert out["c_star"] == "central"  # +0.005 is not more than 0.01
    assert out["runs"] == 6 and out["fed_swa_beats_plain"] == 4
    r = out["generator_seeds"][3]
    assert r["plain_mean_ratio"] == pytest.approx(0.5 / 0.6)
    assert r["cand_mean_ratio"] == pytest.approx((0.4 + 0.6 + 0.6) / 3 / 0.6)
    assert r["samples_to_95_fed_over_cen"] == 1.0
    assert out["met"] is True
    files = [f for f in files if "central" not in f] + [
        _write(tmp_path, g, s, "central", _arm(0.6, 0.7, curve, curve, 3, 3)) for g in (3, 5) for s in range(3)]
    out = judge_tail(files)
    assert out["c_star"] == "central-swa" and out["met"] is False  # 0.533 / 0.7 is below 0.5 / 0.6


def test_the_judge_refuses_a_run_without_the_average(tmp_path: Path) -> None:
    p = _write(tmp_path, 3, 0, "central", {"mean_test_patience": 0.5, "val": [0.5], "kept_at": 6})
    with pytest.raises(SystemExit, match="--swa-start"):
        judge_tail([p])
