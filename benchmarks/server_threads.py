#!/usr/bin/env python
"""The server's fold thread count and OpenMP wait policy on a loaded host (issue 14).

Each case runs in a fresh process, because the wait policy must be in the environment before
any OpenMP runtime loads. That process drives :class:`fedimg.fl.nvflare.aggregator.FedimgAggregator`,
the server's real NVFlare component (validation + streaming fold), from a worker thread, as
NVFlare does. Each round is K SegResNet-sized update dicts (83 tensors, 4.70 M float32 values)
then ``aggregate_model``. A case's number is the median wall time of one such round. No
checkpoints are written.

Cases: ``--server-threads`` 1 and 2, each with ``OMP_WAIT_POLICY`` unset (libgomp's default:
spin a while, then sleep) and ``PASSIVE`` (``--policies`` adds ``ACTIVE``). One process per case
and run (a 1-thread process must not inherit a 2-thread one's spinning workers), the cases'
order rotating each run, ``--runs`` times; a run's number is the median of its ``--rounds``.
``--load N`` busy-looping processes run beside them to stand in for a shared host (default: one per CPU; ``--load 0`` for an unloaded one).
The one command (about 3 minutes on 2 quiet vCPUs; median, min and max of 3 runs):

    python benchmarks/server_threads.py --json benchmarks/cpu-results/server-threads.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time

log = logging.getLogger("benchmarks.server_threads")

POLICIES = ("unset", "ACTIVE", "PASSIVE")


def child(threads: list[int], rounds: int, k: int) -> dict:
    """One wait policy in this (fresh) process: for each thread count, ``rounds`` timed rounds of
    ``k`` updates after one warm-up, the thread counts alternating round by round."""
    import threading

    import numpy as np
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
    from nvflare.app_common.abstract.model import make_model_learnable
    from nvflare.app_common.app_constant import AppConstants
    from nvflare.app_common.app_event_type import AppEventType

    from fedimg.bench.aggregate import model_shapes
    from fedimg.fl.nvflare.aggregator import FedimgAggregator

    rng = np.random.default_rng(0)
    glob = {n: rng.standard_normal(s, dtype=np.float32) for n, s in model_shapes("segresnet")}
    updates = [{n: (0.01 * rng.standard_normal(v.shape)).astype(np.float32) for n, v in glob.items()} for _ in range(k)]
    aggs = {t: FedimgAggregator(server_threads=t, audit_payloads=False) for t in threads}
    times: dict[int, list[float]] = {t: [] for t in threads}
    seen: dict[int, set] = {t: set() for t in threads}

    def one_round(t: int) -> float:
        agg = aggs[t]
        ctx = FLContext()
        ctx.set_prop(AppConstants.GLOBAL_MODEL, make_model_learnable(glob, {}), private=True, sticky=False)
        agg.handle_event(AppEventType.ROUND_STARTED, ctx)
        agg.reset_stats()
        t0 = time.perf_counter()
        for i, u in enumerate(updates):
            agg.accept_model(FLModel(params=u, params_type=ParamsType.DIFF, metrics={"val_loss": 1.0},
                                     meta={"client_name": f"site-{i}", "site": f"site-{i}", "NUM_STEPS_CURRENT_ROUND": 10}))
        agg.aggregate_model()
        seen[t].add(agg._seen_threads)
        return time.perf_counter() - t0

    def serve() -> None:  # NVFlare's own thread: numba's default count until the aggregator sets it
        for t in threads:  # warm-up: numba compile / cache load, the first round's hold
            one_round(t)
        for r in range(rounds):
            for t in threads[r % len(threads):] + threads[:r % len(threads)]:
                times[t].append(one_round(t))

    th = threading.Thread(target=serve)
    th.start()
    th.join()
    return {str(t): {"median_s": statistics.median(times[t]), "round_s": times[t], "fold_threads": sorted(seen[t])}
            for t in threads}


def run(args: argparse.Namespace) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = cpus if args.load is None else args.load
    loaders = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    cases = [(t, p) for p in args.policies for t in args.threads]
    runs: dict[tuple[int, str], list[dict]] = {c: [] for c in cases}
    try:
        for run_i in range(args.runs):
            for threads, policy in cases[run_i % len(cases):] + cases[:run_i % len(cases)]:
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                env.pop("OMP_WAIT_POLICY", None)
                if policy != "unset":
                    env["OMP_WAIT_POLICY"] = policy
                cmd = [sys.executable, os.path.abspath(__file__), "--child", str(threads),
                       "--rounds", str(args.rounds), "--k", str(args.k)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
                if out.returncode:
                    raise RuntimeError(f"case {threads} thread(s), {policy} failed: {out.stderr[-2000:]}")
                rec = json.loads(out.stdout.strip().splitlines()[-1])[str(threads)]
                runs[(threads, policy)].append(rec)
                log.info("run %d, %d thread(s), OMP_WAIT_POLICY %s: %.1f ms per round", run_i + 1, threads, policy,
                         1e3 * rec["median_s"])
    finally:
        for p in loaders:
            p.kill()
            p.wait()
    table = {}
    for (t, policy), recs in runs.items():
        v = [1e3 * r["median_s"] for r in recs]
        table[f"threads={t} OMP_WAIT_POLICY={policy}"] = {
            "median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "runs_ms": v,
            "fold_threads": sorted({n for r in recs for n in r["fold_threads"]})}
    for key, row in table.items():
        print(f"{key:>36}: {row['median_ms']:8.1f} ms per round of {args.k} [{row['min_ms']:.1f}, {row['max_ms']:.1f}]"
              f"  (numba threads in the folding thread: {row['fold_threads']})")
    if args.json:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from aggregate import _commit

        from fedimg.io import write_json

        write_json(args.json, {
            "benchmark": "server_threads", "commit": _commit(),
            "command": "python benchmarks/server_threads.py " + " ".join(sys.argv[1:]),
            "cpus": cpus, "load_processes": load, "loadavg_end": os.getloadavg(), "platform": platform.platform(),
            "k": args.k, "rounds": args.rounds, "runs": args.runs, "values": 4_700_000, "cases": table})
        log.info("wrote %s", args.json)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="--server-threads values (default 1 2)")
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=["unset", "PASSIVE"],
                   help="OMP_WAIT_POLICY cases (default unset PASSIVE; ACTIVE too: add it)")
    p.add_argument("--runs", type=int, default=3, help="interleaved repetitions of every case (default 3)")
    p.add_argument("--rounds", type=int, default=8, help="timed rounds per thread count and run (default 8)")
    p.add_argument("--k", type=int, default=4, help="updates per round (default 4)")
    p.add_argument("--load", type=int, default=None, help="busy-looping processes beside the cases (default: CPUs)")
    p.add_argument("--quick", action="store_true", help="2 runs of 5 rounds per case")
    p.add_argument("--json", default=None)
    p.add_argument("--child", type=int, nargs="+", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.rounds, args.k)))
        return 0
    if args.quick:
        args.runs, args.rounds = 2, 5
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
