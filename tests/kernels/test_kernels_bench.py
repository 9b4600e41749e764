"""The aggregation benchmark end to end on a tiny model (peers included), not a timing test."""

from __future__ import annotations

import argparse
import json

import pytest

from fedimg.bench import aggregate


def test_traffic_model():
    assert aggregate.traffic("fedimg_fused", 16) == (16, 1)
    assert aggregate.traffic("fedimg_blocked", 16) == (19, 4)
    assert aggregate.traffic("fedimg_streaming", 4) == (8, 5)
    with pytest.raises(ValueError):
        aggregate.traffic("magic", 4)


def test_model_shapes_match_the_issue():
    seg = aggregate.model_shapes("segresnet")
    assert len(seg) == 83 and sum(int(__import__("numpy").prod(s)) for _, s in seg) == 4_702_227
    assert len(aggregate.model_shapes("densenet")) == 606


def test_bench_runs_and_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(aggregate, "model_shapes", lambda name: [("a.weight", (300, 200)), ("a.bias", (7,))] * 1)
    p = argparse.ArgumentParser()
    aggregate.add_arguments(p)
    out = tmp_path / "agg.json"
    args = p.parse_args(["--quick", "--ks", "3", "--device", "cpu", "--threads", "1", "--json", str(out)])
    assert aggregate.run(args) == 0
    data = json.loads(out.read_text())
    case = data["cases"][0]
    assert case["k"] == 3 and case["params"] == 60007
    assert set(case["methods"]) >= {"flower", "nvflare", "fedimg_fused", "fedimg_blocked", "fedimg_streaming"}
    for row in case["methods"].values():
        assert len(row["times_s"]) == 5 and row["median_s"] > 0 and row["peak_extra_bytes"] >= 0
    assert case["methods"]["fedimg_streaming"]["peak_extra_x_model"] < 2.5
    assert "read_GBps" in case["limits"] and "x Flower" in capsys.readouterr().out
