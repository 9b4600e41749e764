"""The tile benchmark: ``fedimg bench tiles`` (fedimg alone, GPU lines absent on a CPU) and the
per-run summary of ``benchmarks/tiles.py`` (its end-to-end dry run is in test_gpu_script.py)."""

from __future__ import annotations

import json

import pytest


def test_fedimg_bench_tiles_on_cpu_has_no_gpu_numbers(tmp_path, capsys):
    from fedimg.cli import main

    out = tmp_path / "tiles.json"
    assert main(["-q", "bench", "tiles", "--quick", "--steps", "1", "--batch-size", "4", "--threads", "1",
                 "--device", "cpu", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert [r["stage"] for r in res["stages"]] == ["extract", "normalize", "train", "pipeline"]
    assert all(r["tiles_per_s"] > 0 for r in res["stages"]) and res["tiles_extracted"] == 46
    tel = res["telemetry"]
    assert tel["available"] is False and not any(k.startswith(("gpu_", "mem_", "torch_")) for k in tel)
    assert "GPU:" not in table and "tiles/s" in table


def _run(peer: tuple[float, float, float], fed: tuple[float, float, float]) -> dict:
    """One run's seconds per tile (wall = CPU here) for extract, normalise, train."""
    return {side: {st: (v, v) for st, v in zip(("extract", "normalize", "train"), vals)}
            for side, vals in (("peer", peer), ("fedimg", fed))}


def test_summarise_takes_median_min_max_of_per_run_ratios(benchmark_script):
    tiles = benchmark_script("tiles")
    runs = [_run((1.0, 1.0, 2.0), (0.5, 0.1, 1.0)),   # train 2x, pipeline 4 / 1.6 = 2.5x
            _run((1.0, 1.0, 3.0), (0.5, 0.1, 1.0)),   # train 3x
            _run((1.0, 1.0, 1.0), (0.5, 0.1, 1.0))]   # train 1x
    rows = {r["stage"]: r for r in tiles.summarise(runs)}
    assert rows["train"]["ratio"] == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert rows["train"]["runs_ratio"] == [2.0, 3.0, 1.0]
    assert rows["normalize"]["ratio"]["median"] == pytest.approx(10.0)
    assert rows["pipeline"]["ratio"]["median"] == pytest.approx(4.0 / 1.6)
    # without normalisation the pipeline ratio falls back towards the training ratio
    assert rows["extract+train"]["ratio"]["median"] == pytest.approx(3.0 / 1.5)
    assert rows["train"]["peer_tiles_per_s"]["median"] == pytest.approx(0.5)
