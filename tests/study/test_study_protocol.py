"""The study's splits (no case in two of train/validation/test) and its early-stopping rule."""

from __future__ import annotations

import os

import pytest

from fedimg.errors import ConfigError
from fedimg.study.protocol import EarlyStopping, ProtocolConfig, make_views, stop_point, hold_out_test, three_way_split


@pytest.mark.parametrize("n", [3, 4, 7, 10, 14, 40])
@pytest.mark.parametrize("seed", [0, 1, 5])
def test_three_way_split_is_disjoint_and_complete(n, seed):
    ids = [f"case{i:03d}" for i in range(n)]
    train, val, test = three_way_split(ids, 0.25, 0.25, seed)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert sorted(train + val + test) == ids
    assert len(test) >= 1 and len(train) >= 1 and len(val) >= 1
    # the same seed gives the same split; the test share is what was asked for
    assert three_way_split(list(reversed(ids)), 0.25, 0.25, seed) == (train, val, test)
    assert len(test) == min(max(1, round(n * 0.25)), n - 2)


def test_seeds_give_different_test_cases():
    ids = [f"c{i}" for i in range(12)]
    assert len({tuple(hold_out_test(ids, 0.25, s)[1]) for s in range(6)}) > 1
    with pytest.raises(ConfigError, match="at least 3 cases"):
        hold_out_test(["a", "b"], 0.25, 0)


def test_early_stopping_by_hand():
    # best 0.5 at check 2; patience 2 stops at check 4 (two checks without a new best)
    stop = EarlyStopping(patience=2)
    assert [stop.update(v) for v in (0.1, 0.3, 0.5, 0.5, 0.4)] == [False, False, False, False, True]
    assert stop.best_index == 2 and stop.best == 0.5
    assert stop_point([0.1, 0.3, 0.5, 0.5, 0.4, 0.9], patience=2) == (2, 4)  # 0.9 comes too late
    assert stop_point([0.1, 0.2, 0.3], patience=2) == (2, 2)  # never stops: the maximum budget ends it
    assert stop_point([float("nan"), 0.2, float("nan"), 0.1], patience=1) == (1, 2)  # NaN is never a best
    with pytest.raises(ConfigError):
        EarlyStopping(patience=0)


def test_protocol_config():
    p = ProtocolConfig(max_epochs=24, check_every=3, patience=2, seeds=3)
    assert p.max_checks == 8
    with pytest.raises(ConfigError, match="multiple"):
        ProtocolConfig(max_epochs=10, check_every=3)
    with pytest.raises(ConfigError, match="test_fraction"):
        ProtocolConfig(test_fraction=0.0)
    with pytest.raises(ConfigError, match="seeds"):
        ProtocolConfig(seeds=0)


def test_views_leave_the_test_cases_out(tmp_path):
    from fedimg.data import discover
    from fedimg.data.synth import synthesize
    from fedimg.engine.cache import split_cases

    synthesize(tmp_path / "data", sites=2, cases_per_site=[4, 5], seed=0, spacing=4.0, workers=1)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*") if p.is_file()}
    sites = {s: tmp_path / "data" / s for s in ("site-1", "site-2")}
    split = make_views(sites, tmp_path / "view", 0.25, seed=3, allow_identifiable=True)
    for s, path in sites.items():
        test = {c.case_id for c in split[s]["test"]}
        seen = {c.case_id for c in discover(tmp_path / "view" / s, require_labels=True, allow_identifiable=True)}
        assert seen == set(split[s]["trainval"]) and not seen & test
        assert len(seen | test) == len(discover(path, require_labels=True, allow_identifiable=True))
        assert all(os.path.islink(p) for p in (tmp_path / "view" / s).iterdir())
        # the task's own train/validation split of the view, as the study uses it: three disjoint sets
        train, val = split_cases(discover(tmp_path / "view" / s, require_labels=True, allow_identifiable=True), 0.25, 3)
        assert {c.case_id for c in train} | {c.case_id for c in val} == seen
        assert three_way_split(sorted(seen | test), 0.25, 0.25, 3)[2] == sorted(test)
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*") if p.is_file()}
