"""The aggregation benchmark end to end on a tiny model: ``fedimg bench aggregate`` (fedimg
only) and ``benchmarks/aggregate.py`` (peers included). Not timing tests."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from fedimg.bench import aggregate

TINY = [("a.weight", (300, 200)), ("a.bias", (7,))]


def test_traffic_model():
    assert aggregate.traffic("fedimg_fused", 16) == (16, 1)
    assert aggregate.traffic("fedimg_blocked", 16) == (19, 4)
    assert aggregate.traffic("fedimg_streaming", 4) == (8, 5)
    with pytest.raises(ValueError):
        aggregate.traffic("magic", 4)


def test_peer_traffic_model(benchmark_script):
    script = benchmark_script("aggregate")
    assert script.traffic("nvflare", 4) == (11, 8) and script.traffic("flower", 4) == (15, 12)
    assert script.traffic("fedimg_fused", 16) == (16, 1)
    with pytest.raises(ValueError):
        script.traffic("magic", 4)


def test_model_shapes_match_the_issue():
    seg = aggregate.model_shapes("segresnet")
    assert len(seg) == 83 and sum(int(np.prod(s)) for _, s in seg) == 4_702_227
    assert len(aggregate.model_shapes("densenet")) == 606


def test_probes_read_and_write():
    from fedimg.bench.probes import read_sum, triad

    b, c = np.ones(10_000, np.float32), np.arange(10_000, dtype=np.float32)
    a = np.empty_like(b)
    triad(a, b, c, np.float32(0.5))
    np.testing.assert_allclose(a, 1 + 0.5 * c)
    assert float(read_sum(b)) == 10_000.0


def test_fedimg_bench_runs_without_peers(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(aggregate, "model_shapes", lambda name: TINY)
    p = argparse.ArgumentParser()
    aggregate.add_arguments(p)
    out = tmp_path / "agg.json"
    args = p.parse_args(["--quick", "--path", "packed", "--ks", "3", "--device", "cpu", "--threads", "1", "--json", str(out)])
    assert aggregate.run(args) == 0
    data = json.loads(out.read_text())
    case = data["cases"][0]
    assert case["k"] == 3 and case["params"] == 60007
    assert set(case["methods"]) == {"fedimg_fused", "fedimg_fused_out", "fedimg_blocked", "fedimg_streaming", "fedimg_numpy"}
    for row in case["methods"].values():
        assert len(row["times_s"]) == 5 and row["median_s"] > 0 and row["peak_extra_bytes"] >= 0
        assert row["pct_of_limit_own_traffic"] > 0 and "speedup_vs_flower" not in row
    assert case["methods"]["fedimg_streaming"]["peak_extra_x_model"] < 2.5
    assert "read_GBps" in case["limits"] and "flwr" not in data["versions"]
    table = capsys.readouterr().out
    assert "% limit" in table and "Flower" not in table and "NVFlare" not in table


def test_bench_runs_and_writes_json(tmp_path, monkeypatch, capsys, benchmark_script):
    """``benchmarks/aggregate.py``: fedimg and both peers in one round-robin (the peers from the bench extra)."""
    script = benchmark_script("aggregate")
    monkeypatch.setattr(aggregate, "model_shapes", lambda name: TINY)
    out = tmp_path / "agg.json"
    assert script.main(["--quick", "--path", "packed", "--ks", "3", "--device", "cpu", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    case = data["cases"][0]
    assert case["k"] == 3 and case["params"] == 60007
    assert set(case["methods"]) >= {"flower", "nvflare", "fedimg_fused", "fedimg_blocked", "fedimg_streaming"}
    for row in case["methods"].values():
        assert len(row["times_s"]) == 5 and row["median_s"] > 0 and row["peak_extra_bytes"] >= 0
    assert case["methods"]["fedimg_streaming"]["peak_extra_x_model"] < 2.5
    assert "read_GBps" in case["limits"] and "x Flower" in capsys.readouterr().out
