"""The server's real aggregation path in the benchmark: per-tensor dicts, validation, fold, and
the streaming probe that moves the same bytes. Tiny shapes; not timing tests."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from fedimg.bench import aggregate
from fedimg.bench.aggregate_server import ServerPath, make_updates, server_case, stream_probe

TINY = [("a.weight", (300, 200)), ("a.bias", (7,)), ("b.weight", (5000,))]


def _flat(d):
    return np.concatenate([d[n].reshape(-1) for n, _ in TINY])


def test_probe_computes_the_weighted_mean():
    """The probe does the fold's work (so its time is a fair limit), not just touches memory."""
    glob, ups, w = make_updates(TINY, 3)
    flats = [_flat(u) for u in ups]
    probe = stream_probe(_flat(glob), flats, w)
    want = sum(np.float64(x) * f for x, f in zip(w, flats)) / sum(w)
    for _ in range(2):  # buffers reused across repetitions
        np.testing.assert_allclose(probe(), want, rtol=1e-5, atol=1e-8)


def test_server_path_validates_and_keeps_its_state():
    glob, ups, w = make_updates(TINY, 3)
    server = ServerPath()
    step = server.round(glob, ups, w)
    want = sum(np.float64(x) * _flat(u) for x, u in zip(w, ups)) / sum(w)
    np.testing.assert_allclose(_flat(step), want, rtol=1e-5, atol=1e-8)
    acc = server.strategy
    assert server.round(glob, ups, w) is not None and server.strategy is acc  # buffers kept across rounds
    bad = [dict(u) for u in ups]
    bad[1]["a.bias"] = np.full(7, np.nan, np.float32)
    with pytest.raises(RuntimeError, match="site-2 refused by the norm rules"):
        server.round(glob, bad, w)
    bad[1] = {k: v for k, v in ups[1].items() if k != "a.bias"}
    with pytest.raises(RuntimeError, match="site-2 refused: name mismatch"):
        ServerPath().round(glob, bad, w)


def test_server_case_with_peers(benchmark_script):
    """Flower, NVFlare's FedAvg in-time helper and its InTime aggregator on the same dicts, interleaved."""
    script = benchmark_script("aggregate")
    case = server_case(3, 5, shapes=TINY, peers=script.server_peers)
    assert set(case["methods"]) == {"flower", "nvflare_fedavg", "nvflare_intime", "fedimg_server"}
    assert set(case["peers"]) == {"flower", "nvflare_fedavg", "nvflare_intime"}
    assert all(p["version"] and p["call"] and p["input"] for p in case["peers"].values())
    row = case["methods"]["fedimg_server"]
    assert len(row["times_s"]) == 5 and row["wall_s"]["min"] <= row["wall_s"]["median"] <= row["wall_s"]["max"]
    assert row["pct_of_stream"]["median"] > 0 and row["speedup_vs_nvflare_fedavg"]["median"] > 0
    assert case["probe_stream"]["bytes"] == case["params"] * 4 * (1 + 2 + 3 * 2 + 2)


def test_cli_server_path_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(aggregate, "model_shapes", lambda name: TINY)
    p = argparse.ArgumentParser()
    aggregate.add_arguments(p)
    out = tmp_path / "agg.json"
    args = p.parse_args(["--path", "server", "--ks", "2", "--repeats", "5", "--device", "cpu", "--threads", "1",
                         "--json", str(out)])
    assert aggregate.run(args) == 0
    data = json.loads(out.read_text())
    assert data["cases"] == [] and [c["k"] for c in data["server_cases"]] == [2]
    assert set(data["server_cases"][0]["methods"]) == {"fedimg_server"}
    assert "server path" in capsys.readouterr().out
