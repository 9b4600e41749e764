"""``benchmarks/gpu/run.sh``: the prepared GPU check. ``--dry-run`` runs its steps on the CPU with
tiny settings and writes device.json, the pytest report and the tiles JSON (the plumbing the lead
relies on when a GPU is lent); every benchmark command it would run, on the GPU and in the dry
run, parses with that script's own current flags; the step limits fit in 8 minutes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GPU = REPO / "benchmarks" / "gpu"
BENCH = {"bench-train": "train_throughput", "bench-aggregate": "aggregate", "bench-deface": "deface",
         "bench-tiles": "tiles"}
# The dry run in CI: the steps this project's files own (the other benchmarks' commands are
# checked by parsing below; running them tiny costs ~30 CPU-s more).
DRY_STEPS = "device pytest-gpu bench-tiles"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-out")
    env = {**os.environ, "OUT": str(out), "PY": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO), "FEDIMG_GPU_STEPS": DRY_STEPS}
    t0 = time.perf_counter()
    r = subprocess.run(["bash", str(GPU / "run.sh"), "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=240)
    return out, r, time.perf_counter() - t0


def test_dry_run_writes_device_json_pytest_report_and_tiles_json(dry_run):
    out, r, wall = dry_run
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert r.returncode == 0, r.stderr + log[-3000:]
    summary = (out / "summary.txt").read_text()
    assert "dry run" in summary and "total" in summary
    assert "bench-train      skipped (not in FEDIMG_GPU_STEPS)" in summary
    dev = json.loads((out / "device.json").read_text())
    assert dev["dry_run"] is True and dev["gpus"] == [] and dev["python"]
    assert dev["commit"] and dev["source"], "commit hash not recorded"
    assert dev["numba_cuda"]["ok"] is False and dev["numba_cuda"]["error"]
    assert dev["versions"]["torch"] and "torch_cuda_available" in dev["versions"]
    assert "testsuite" in (out / "pytest-gpu.xml").read_text()
    assert (out / "tiles.json").exists(), f"summary:\n{summary}\nlog tail:\n{log[-3000:]}"
    assert "timed out" not in summary and "skipped (deadline" not in summary


def _commands(*flags: str) -> list[tuple[str, int, list[str]]]:
    r = subprocess.run(["bash", str(GPU / "run.sh"), "--print-commands", *flags], cwd=REPO, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "OUT": "/nonexistent-out"})
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines() if "\t" in line]
    return [(name, int(secs), cmd.split()) for name, secs, cmd in rows]


@pytest.mark.parametrize("mode", ["gpu", "dry-run"])
def test_every_benchmark_command_parses_with_the_scripts_current_flags(mode, benchmark_script):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import _common

    steps = _commands(*(["--dry-run"] if mode == "dry-run" else []))
    names = [n for n, _, _ in steps]
    assert names == ["device", "pytest-gpu", *BENCH], names
    limits = {n: s for n, s, _ in steps}
    if mode == "gpu":
        assert sum(limits.values()) <= 470, "the steps must fit in < 8 minutes with install and probes"
        pytest_cmd = dict((n, c) for n, _, c in steps)["pytest-gpu"]
        assert "-m" in pytest_cmd and "gpu" in pytest_cmd and pytest_cmd[-1] == "tests"
    for name, _, cmd in steps:
        if name not in BENCH:
            continue
        assert cmd[1] == f"benchmarks/{BENCH[name]}.py" and "--json" in cmd
        mod = benchmark_script(BENCH[name])
        args = _common.parser(mod.DESCRIPTION, mod.add_arguments).parse_args(cmd[2:])
        assert args.device == ("cuda" if mode == "gpu" else "cpu")


def test_dry_run_tiles_json_has_interleaved_runs_and_peer_settings(dry_run):
    out, _, _ = dry_run
    res = json.loads((out / "tiles.json").read_text())
    assert res["device"] == "cpu" and res["runs"] == 1 and res["interleaved"]
    stages = {s["stage"]: s for s in res["stages"]}
    assert set(stages) == {"extract", "normalize", "train", "pipeline", "extract+train"}
    for s in stages.values():
        for key in ("ratio", "peer_tiles_per_s", "fedimg_tiles_per_s", "cpu_ratio"):
            assert s[key]["min"] <= s[key]["median"] <= s[key]["max"] and s[key]["median"] > 0
    assert res["train_ratio"] == stages["train"]["ratio"] and res["pipeline_ratio"] == stages["pipeline"]["ratio"]
    peer = res["peer_settings"]
    assert peer["train"]["num_workers"] == 0 and peer["train"]["pin_memory"] is False
    assert peer["normalize"]["peer"] in ("torchstain", "fedimg.transforms.stain_reference (numpy, per tile)")
    assert set(res["setup_s"]) == {"peer.normalize", "fedimg.normalize", "peer.train", "fedimg.train"}
    assert res["normalize_mean_abs_diff_0_255"] < 40  # both normalise to the same target
    assert res["telemetry"]["available"] is False and "torch_max_allocated_mib" not in res["telemetry"]


def test_make_wheels_rejects_unknown_option():
    r = subprocess.run(["bash", str(GPU / "make_wheels.sh"), "--bogus"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr


def test_run_sh_rejects_unknown_option(tmp_path):
    r = subprocess.run(["bash", str(GPU / "run.sh"), "--bogus"], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "OUT": str(tmp_path)})
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
