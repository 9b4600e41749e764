"""The run store's commit order: a server killed half-way through a round never leaves a
'latest round' whose metrics or server optimiser state are missing."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.fl.server import state


def _round(run, rnd, **kw):
    return state.save_round(run, rnd, {"w": np.full(2, rnd, np.float32)}, {"strategy": "fedadam"}, **kw)


def test_round_is_complete_only_after_its_metrics_and_server_state(tmp_path, monkeypatch):
    _round(tmp_path, 1, server_state={"m": np.ones(2, np.float32)}, metrics={"round": 1})
    assert state.load_latest(tmp_path)[0] == 1

    def killed(*a, **k):
        raise KeyboardInterrupt("server killed")

    monkeypatch.setattr(state, "append_metrics", killed)
    with pytest.raises(KeyboardInterrupt):
        _round(tmp_path, 2, server_state={"m": np.full(2, 2, np.float32)}, metrics={"round": 2})
    monkeypatch.undo()
    done, params, _ = state.load_latest(tmp_path)
    assert done == 1 and params["w"].tolist() == [1.0, 1.0]  # round 2 is not marked complete
    assert [m["round"] for m in state.read_metrics(tmp_path)] == [1]
    # the server state written for round 2 does not belong to round 1's model: dropped, not mixed in
    assert state.load_server_state(tmp_path) == {}


def test_server_state_of_the_latest_round_is_restored(tmp_path):
    _round(tmp_path, 1, server_state={"m": np.full(3, 7, np.float32)}, metrics={"round": 1})
    restored = state.load_server_state(tmp_path)
    assert restored["m"].tolist() == [7.0, 7.0, 7.0]
    assert [m["round"] for m in state.read_metrics(tmp_path)] == [1]
