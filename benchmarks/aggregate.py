#!/usr/bin/env python
"""FedAvg aggregation: fedimg kernels vs Flower and NVFlare, in one process and round-robin.

For each model size and K updates (see :mod:`fedimg.bench.aggregate`, which times fedimg's
methods and the bandwidth probes), the peers join the same round-robin:

* Flower 1.x ``flwr.serverapp.strategy.strategy_utils.aggregate_arrayrecords`` fed one
  ``RecordDict({"arrays": ArrayRecord, "metrics": MetricRecord({"num-examples": n})})`` per
  site, as Flower's ``FedAvg.aggregate_train`` does;
* NVFlare ``WeightedAggregationHelper`` (``add`` per site + ``get_result``), the helper behind
  ``InTimeAccumulateWeightedAggregator``.

Prints fedimg's table with the speed-ups over both peers; writes JSON with ``--json``.

``--path server`` (part of the default ``both``) compares the server's *real* path instead:
the same per-tensor update dicts go to fedimg's validating fold
(:mod:`fedimg.bench.aggregate_server`), to Flower's ``aggregate_arrayrecords``, to the in-time
aggregation of NVFlare's ``FedAvg`` controller and to NVFlare's
``InTimeAccumulateWeightedAggregator`` (:func:`server_peers`), interleaved with a streaming
probe that moves the validating fold's bytes. The one command for RESULTS.md:

    python benchmarks/aggregate.py --path server --json benchmarks/cpu-results/aggregate-server.json
Needs the bench extra (``pip install -e '.[bench]'``); without it, or with ``--no-peers``,
only fedimg's methods run (as ``fedimg bench aggregate``). Run as a script it sets
``OMP_WAIT_POLICY=PASSIVE`` unless the environment has one (see the comment below the imports).

    python benchmarks/aggregate.py --quick --json bench-results/aggregate.json
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import sys
from typing import Any

# GNU OpenMP (numba's default "omp" threading layer, and torch's) lets idle workers sleep instead
# of spinning between parallel launches. On a shared host a spinning 2-thread fold waits at every
# launch for a descheduled worker (about 16x slower at load 14 on 2 vCPUs, RESULTS.md); set before
# any OpenMP runtime loads (run as a script only); an OMP_WAIT_POLICY already set wins; in the JSON.
if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import _common  # noqa: E402
from fedimg.bench import aggregate  # noqa: E402

__all__ = ["add_arguments", "run", "traffic", "peers", "server_peers"]

log = logging.getLogger("benchmarks.aggregate")

DESCRIPTION = "FedAvg aggregation GB/s and memory: fedimg kernels vs Flower aggregate_arrayrecords and NVFlare"


def add_arguments(p: argparse.ArgumentParser) -> None:
    aggregate.add_arguments(p)
    p.add_argument("--no-peers", action="store_true", help="skip Flower and NVFlare")
    p.add_argument("--quick", action="store_true", help="SegResNet size, K=16, 5 repeats (< 2 minutes on 2 cores)")


def traffic(method: str, k: int) -> tuple[int, int]:
    """(reads, writes) in model-sized float32 arrays that a method itself moves for K updates."""
    if method == "nvflare":  # v*w temp, total + temp -> new total, final divide
        return 3 * k - 1, 2 * k
    if method == "flower":  # Array.numpy() copy, *w temp, += ; final ArrayRecord serialisation
        return 4 * k - 1, 3 * k
    return aggregate.traffic(method, k)


def peers(*, names, offsets, flats, host_flats, weights) -> aggregate.PeerMethods:
    """Flower's and NVFlare's FedAvg on the same updates (Flower's records are built on the host)."""
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
    from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper

    def split(f):
        return {nm: f[offsets[j] : offsets[j + 1]].reshape(s) for j, (nm, s) in enumerate(names)}

    dicts = [split(f) for f in flats]
    records = [
        RecordDict({"arrays": ArrayRecord({nm: Array(v) for nm, v in split(f).items()}),
                    "metrics": MetricRecord({"num-examples": int(w)})})
        for f, w in zip(host_flats, weights)
    ]

    def nvflare():
        h = WeightedAggregationHelper()
        for i, (d, w) in enumerate(zip(dicts, weights)):
            h.add(d, w, f"site-{i}", 0)
        return h.get_result()

    def flatten(name: str, res: Any) -> np.ndarray:
        if name == "flower":
            return np.concatenate([res[k].numpy().reshape(-1) for k, _ in names])
        return np.concatenate([np.asarray(aggregate.to_host(res[k])).reshape(-1) for k, _ in names])

    methods = {"flower": lambda: aggregate_arrayrecords(records, "num-examples"), "nvflare": nvflare}
    return aggregate.PeerMethods(methods=methods, traffic=traffic, flatten=flatten, host_side=frozenset({"flower"}))


def server_peers(*, glob, updates, weights, shapes) -> Any:
    """Flower's and NVFlare's FedAvg on the same per-tensor update dicts as fedimg's server path.

    * ``flower``: ``aggregate_arrayrecords`` on one ``RecordDict`` per site (each tensor an
      ``Array``, i.e. the serialised bytes a Flower server receives; it deserialises them);
    * ``nvflare_fedavg``: ``WeightedAggregationHelper.add(result.params, weight)`` per site and
      ``get_result()``: the in-time aggregation of NVFlare 2.9's ``FedAvg`` controller (what
      ``FedAvgRecipe`` runs when no aggregator is given);
    * ``nvflare_intime``: ``InTimeAccumulateWeightedAggregator`` (``WEIGHT_DIFF``), ``accept``
      per site ``Shareable`` (DXO built before timing, no copy of the arrays) and ``aggregate``:
      the stock aggregator of NVFlare's ``ScatterAndGather`` workflow.

    None of them checks the updates' values; fedimg's path validates every update.
    """
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
    from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
    from nvflare.apis.event_type import EventType
    from nvflare.apis.fl_constant import ReservedKey
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import InTimeAccumulateWeightedAggregator
    from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper
    from nvflare.app_common.app_constant import AppConstants

    logging.getLogger("nvflare").setLevel(logging.CRITICAL)  # its per-update log lines would cost it time
    records = [RecordDict({"arrays": ArrayRecord({nm: Array(v) for nm, v in u.items()}),
                           "metrics": MetricRecord({"num-examples": int(w)})}) for u, w in zip(updates, weights)]
    shareables = []
    for i, (u, w) in enumerate(zip(updates, weights)):
        sh = DXO(data_kind=DataKind.WEIGHT_DIFF, data=u, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: w}).to_shareable()
        sh.set_peer_props({ReservedKey.IDENTITY_NAME: f"site-{i + 1}"})
        sh.add_cookie(AppConstants.CONTRIBUTION_ROUND, 0)
        shareables.append(sh)

    def nvflare_fedavg():
        h = WeightedAggregationHelper()
        for i, (u, w) in enumerate(zip(updates, weights)):
            h.add(data=u, weight=w, contributor_name=f"site-{i + 1}", contribution_round=0)
        return h.get_result()

    def nvflare_intime():
        agg = InTimeAccumulateWeightedAggregator(expected_data_kind=DataKind.WEIGHT_DIFF)
        ctx = FLContext()
        agg.handle_event(EventType.START_RUN, ctx)
        ctx.set_prop(AppConstants.CURRENT_ROUND, 0, private=True, sticky=False)
        for sh in shareables:
            if not agg.accept(sh, ctx):
                raise RuntimeError("NVFlare's aggregator refused an update")
        return from_shareable(agg.aggregate(ctx)).data

    def flatten(name: str, res: Any) -> np.ndarray:
        get = (lambda k: res[k].numpy()) if name == "flower" else (lambda k: np.asarray(res[k]))
        return np.concatenate([get(nm).reshape(-1) for nm, _ in shapes])

    import flwr
    import nvflare

    numpy_note = "numpy arrays on the host; numpy ops single-threaded"
    settings = {
        "flower": {"version": flwr.__version__, "call": "flwr.serverapp.strategy.strategy_utils.aggregate_arrayrecords",
                   "input": "RecordDict per site: ArrayRecord of Array (serialised, as received) + MetricRecord "
                            "num-examples", "as_in": "FedAvg.aggregate_train", "note": numpy_note},
        "nvflare_fedavg": {"version": nvflare.__version__, "call": "WeightedAggregationHelper.add + get_result",
                           "input": "dict name -> array per site (FLModel.params)",
                           "as_in": "nvflare.app_common.workflows.fedavg.FedAvg in-time aggregation (FedAvgRecipe "
                                    "default)", "note": numpy_note},
        "nvflare_intime": {"version": nvflare.__version__,
                           "call": "InTimeAccumulateWeightedAggregator(expected_data_kind=WEIGHT_DIFF).accept + aggregate",
                           "input": "Shareable of a DXO holding the dict per site", "as_in": "ScatterAndGather",
                           "note": numpy_note},
    }
    methods = {"flower": lambda: aggregate_arrayrecords(records, "num-examples"), "nvflare_fedavg": nvflare_fedavg,
               "nvflare_intime": nvflare_intime}
    from fedimg.bench.aggregate_server import ServerPeers

    return ServerPeers(methods=methods, flatten=flatten, settings=settings)


def _print(case: dict[str, Any]) -> None:
    lim = ", ".join(f"{k} {v:.1f}" for k, v in case["limits"].items())
    print(f"\n{case['size']}: P={case['params']:,} in {case['tensors']} tensors, K={case['k']}, "
          f"fedimg backend {case['fedimg_backend']}  (limits GB/s: {lim})")
    print(f"{'method':18s} {'ms':>9s} {'GB/s own':>9s} {'% limit':>8s} {'% min':>7s} {'x Flower':>9s} {'x NVFlare':>9s} {'mem x model':>11s}")
    for name, r in case["methods"].items():
        print(
            f"{name:18s} {r['median_s'] * 1e3:9.2f} {r['own_GBps']:9.2f} {r['pct_of_limit_own_traffic']:7.0f}% "
            f"{r['pct_of_limit_min_traffic']:6.0f}% {r.get('speedup_vs_flower', float('nan')):9.2f} "
            f"{r.get('speedup_vs_nvflare', float('nan')):9.2f} {r['peak_extra_x_model']:11.2f}"
        )


def run(args: argparse.Namespace) -> int:
    from fedimg.device import configure_threads, resolve_device
    from fedimg.io import write_json

    threads = configure_threads(args.threads)
    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    sizes = args.sizes or (["segresnet"] if args.quick else list(aggregate.SIZES))
    ks = args.ks or ([16] if args.quick else [4, 16])
    repeats = max(5, args.repeats or (5 if args.quick else 7))
    with_peers = not args.no_peers
    if with_peers:
        try:
            import flwr  # noqa: F401
            import nvflare  # noqa: F401
        except ImportError as exc:
            log.warning("peer missing (%s): install the bench extra, pip install 'fedimg[bench]'; running without peers", exc)
            with_peers = False
    cases = []
    for size in sizes if args.path in ("packed", "both") else ():
        for k in ks:
            log.info("aggregate: %s K=%d on %s", size, k, device)
            case = aggregate.bench_case(size, k, repeats, on_gpu, device, peers=peers if with_peers else None)
            rows = case["methods"]
            for peer in ("flower", "nvflare"):
                if peer in rows:
                    for row in rows.values():
                        row[f"speedup_vs_{peer}"] = rows[peer]["median_s"] / row["median_s"]
            _print(case)
            cases.append(case)
            gc.collect()
    server_cases = aggregate.server_path_cases(args.path, ks, repeats, on_gpu, device,
                                               peers=server_peers if with_peers else None)
    meta = {
        "benchmark": "aggregate",
        "commit": _commit(),
        "command": "python benchmarks/aggregate.py " + " ".join(sys.argv[1:]),
        "device": str(device),
        "device_name": aggregate.device_name(device),
        "cpu_threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "repeats": repeats,
        "quick": bool(args.quick),
        "versions": aggregate.versions(("numpy", "numba", "torch", "cupy", "flwr", "nvflare")),
        "cases": cases,
        "server_cases": server_cases,
    }
    if args.json:
        write_json(args.json, meta)
        log.info("wrote %s", args.json)
    return 0


def _commit() -> str:
    """The repository's commit (with ``-dirty`` when files differ from it), for the JSON."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def main(argv=None) -> int:
    return _common.main(_common.parser(DESCRIPTION, add_arguments), run, argv)


if __name__ == "__main__":
    sys.exit(main())
