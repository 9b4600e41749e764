"""Scaling of ``fedimg train --nproc N`` (DDP through torchrun) against one process, same global batch.

Three arms, run interleaved (the order rotates every run), each a real ``fedimg train`` in a
subprocess on the same synthetic site, same model, crop, global batch, epochs and seed:

* ``1proc-1thr``: one process, one thread (the classical baseline of scaling efficiency);
* ``1proc-Nthr``: one process, ``--cores`` threads (all the cores one process can use);
* ``Nproc``: ``--nproc N`` processes, ``--cores / N`` threads each (DDP, gloo on the CPU).

Throughput is the voxels/s of the training epochs after the first (rank 0's epoch time; the
ranks run in step), from each run's ``metrics.json``; the wall time includes start-up. It
prints the median (min, max) of each arm, the speed-up of ``Nproc`` over both one-process
arms and the scaling efficiency ``speed-up over 1proc-1thr / N``, and writes them as JSON.

    python benchmarks/ddp_scaling.py                 # 3 interleaved runs (about 3 min on a quiet 2-core CPU)
    python benchmarks/ddp_scaling.py --quick         # 1 run, 2 epochs
    python benchmarks/ddp_scaling.py --runs 5 --nproc 2 --cores 2 --json benchmarks/cpu-results/ddp-scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

ROOT = Path(__file__).resolve().parents[1]


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=3, help="interleaved runs per arm (default 3)")
    p.add_argument("--quick", action="store_true", help="1 run, 2 epochs")
    p.add_argument("--nproc", type=int, default=2, help="processes of the DDP arm (default 2)")
    p.add_argument("--cores", type=int, default=min(2, os.cpu_count() or 1), help="CPU cores in all (default 2)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is warm-up; default 3)")
    p.add_argument("--batch-size", type=int, default=4, help="global batch (default 4)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "cpu-results" / "ddp-scaling.json"))


def _train(site: Path, out: Path, *, nproc: int, threads: int, epochs: int, batch: int) -> dict:
    cmd = [sys.executable, "-m", "fedimg", "-q", "train", "--data", str(site), "--out", str(out), "--roi", "32", "32",
           "32", "--epochs", str(epochs), "--batch-size", str(batch), "--val-fraction", "0", "--amp", "fp32",
           "--no-progress", "--allow-identifiable", "--threads", str(threads), "--nproc", str(nproc), "--seed", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    t0, c0 = time.perf_counter(), os.times()
    subprocess.run(cmd, check=True, env=env)
    wall, c1 = time.perf_counter() - t0, os.times()
    epochs_rows = json.loads((out / "metrics.json").read_text())["epochs"][1:] or \
        json.loads((out / "metrics.json").read_text())["epochs"]
    return {"voxels_per_s": statistics.median(e["voxels_per_s"] for e in epochs_rows), "wall_s": wall,
            "cpu_s": (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)}


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def run(args: argparse.Namespace) -> int:
    from fedimg.data import synthesize

    runs, epochs = (1, 2) if args.quick else (args.runs, args.epochs)
    n, cores = args.nproc, args.cores
    if args.batch_size % n or cores % n:
        raise SystemExit(f"--batch-size {args.batch_size} and --cores {cores} must be multiples of --nproc {n}")
    arms = {"1proc-1thr": (1, 1), f"1proc-{cores}thr": (1, cores), f"{n}proc": (n, cores // n)}
    results: dict[str, list[dict]] = {a: [] for a in arms}
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ddp-scaling-") as tmp:
        site = synthesize(Path(tmp) / "data", sites=1, cases_per_site=8, seed=0, spacing=4.0)[0]
        names = list(arms)
        for r in range(runs):
            for k in range(len(names)):
                arm = names[(r + k) % len(names)]  # rotate the order every run
                nproc, threads = arms[arm]
                res = _train(site, Path(tmp) / f"{arm}-{r}", nproc=nproc, threads=threads, epochs=epochs,
                             batch=args.batch_size)
                results[arm].append(res)
                print(f"run {r + 1}/{runs} {arm}: {res['voxels_per_s']:.4g} vox/s, wall {res['wall_s']:.1f} s", flush=True)
    table = {a: {k: _summary([x[k] for x in v]) for k in ("voxels_per_s", "wall_s", "cpu_s")} for a, v in results.items()}
    ddp = [x["voxels_per_s"] for x in results[f"{n}proc"]]
    one = [x["voxels_per_s"] for x in results["1proc-1thr"]]
    full = [x["voxels_per_s"] for x in results[f"1proc-{cores}thr"]]
    speedup_1 = [d / o for d, o in zip(ddp, one)]  # paired by run (interleaved)
    speedup_full = [d / f for d, f in zip(ddp, full)]
    report = {
        "benchmark": "ddp_scaling", "arms": {a: {"nproc": p, "threads_per_process": t} for a, (p, t) in arms.items()},
        "settings": {"runs": runs, "epochs": epochs, "global_batch": args.batch_size, "roi": [32, 32, 32],
                     "model": "segresnet (init_filters 8)", "amp": "fp32", "backend": "gloo",
                     "site": "fedimg synth, 8 cases at 4 mm", "throughput": "median voxels/s of epochs 2.."},
        "results": table, "speedup_vs_1proc_1thr": _summary(speedup_1), "speedup_vs_1proc_all_threads": _summary(speedup_full),
        "scaling_efficiency": _summary([s / n for s in speedup_1]),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "loadavg_start": load0, "loadavg_end": os.getloadavg(),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    e = report["scaling_efficiency"]
    print(f"{n} processes vs 1 process 1 thread: speed-up {report['speedup_vs_1proc_1thr']['median']:.2f}x, "
          f"scaling efficiency {e['median']:.2f} (min {e['min']:.2f}, max {e['max']:.2f}); "
          f"vs 1 process {cores} threads: {report['speedup_vs_1proc_all_threads']['median']:.2f}x; JSON {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_common.main(_common.parser(__doc__.splitlines()[0], _args), run, None))
