"""``fedimg bench aggregate``: FedAvg server aggregation, fedimg kernels vs Flower and NVFlare.

For each model size P (real MONAI state-dict shapes: SegResNet16 3-D 4.7 M in 83 tensors,
DenseNet121 7.0 M in 606 float tensors; and a synthetic 50 M) and each K updates, in one
process, round-robin, median of ``--repeats`` (>= 5):

* Flower 1.x ``flwr.serverapp.strategy.strategy_utils.aggregate_arrayrecords`` fed one
  ``RecordDict({"arrays": ArrayRecord, "metrics": MetricRecord({"num-examples": n})})`` per
  site, as Flower's ``FedAvg.aggregate_train`` does;
* NVFlare ``WeightedAggregationHelper`` (``add`` per site + ``get_result``), the helper behind
  ``InTimeAccumulateWeightedAggregator``;
* fedimg ``fedavg`` fused (each update read once), fused into a result buffer kept across
  rounds (``out=``: no fresh allocation / page faults), blocked (4 per pass), streaming
  (``WeightedAccumulator``: add per site, then ``result``), and the numpy reference.

The physical limit is measured in the same round-robin. CPU: a read-only chunked sum over the K
updates and a triad ``a = b + s*c``; a method's limit time is ``reads/read_bw +
writes/write_bw`` with ``write_bw`` derived from the triad, for the bytes the method itself
must move (``traffic`` below). GPU (updates already on the device as torch CUDA tensors):
a device-to-device copy. Peak extra memory: tracemalloc (host) or the CUDA allocators.

    fedimg bench aggregate --quick --json bench-results/aggregate.json
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import time
from typing import Any, Callable

import numpy as np

__all__ = ["DESCRIPTION", "add_arguments", "run", "model_shapes", "traffic"]

log = logging.getLogger(__name__)

DESCRIPTION = "FedAvg aggregation GB/s and memory: fedimg kernels vs Flower aggregate_arrayrecords and NVFlare"
SIZES = ("segresnet", "densenet", "50m")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", nargs="+", choices=SIZES, default=None, help="model sizes (default all; --quick segresnet)")
    p.add_argument("--ks", type=int, nargs="+", default=None, help="updates per round (default 4 16; --quick 16)")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions per method (default 7, --quick 5)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:n] (auto: updates on the GPU if there is one)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for numba/torch (default: all usable)")
    p.add_argument("--no-peers", action="store_true", help="skip Flower and NVFlare")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="SegResNet size, K=16, 5 repeats (< 2 minutes on 2 cores)")


def model_shapes(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """Float tensor names/shapes of the model behind a size name (built on the meta device)."""
    if name == "50m":
        return [(f"layer{i}.weight", (625, 1250)) for i in range(64)]
    import torch
    from monai.networks.nets import DenseNet121, SegResNet

    with torch.device("meta"):
        if name == "segresnet":
            net = SegResNet(spatial_dims=3, init_filters=16, in_channels=4, out_channels=3)
        else:
            net = DenseNet121(spatial_dims=2, in_channels=3, out_channels=2)
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items() if v.is_floating_point()]


def traffic(method: str, k: int) -> tuple[int, int]:
    """(reads, writes) in model-sized float32 arrays that ``method`` itself moves for K updates."""
    if method in ("fedimg_fused", "fedimg_fused_out", "fedimg_numpy"):
        return k, 1
    if method == "fedimg_blocked":
        g = math.ceil(k / 4)
        return k + g - 1, g
    if method == "fedimg_streaming":  # K adds (acc read after the first) + result (read acc, write out)
        return 2 * k, k + 1
    if method == "nvflare":  # v*w temp, total + temp -> new total, final divide
        return 3 * k - 1, 2 * k
    if method == "flower":  # Array.numpy() copy, *w temp, += ; final ArrayRecord serialisation
        return 4 * k - 1, 3 * k
    raise ValueError(method)


# ----------------------------------------------------------------- limits ------------


def _probes(flats: list[Any], on_gpu: bool) -> dict[str, Callable[[], Any]]:
    """Bandwidth probes, timed in the same round-robin as the methods (same machine load).

    CPU: read-only chunked sum over the K updates, and a triad ``a = b + s*c``; GPU: a
    device-to-device copy of each update.
    """
    if on_gpu:
        import torch

        dst = torch.empty_like(flats[0])
        return {"probe_copy": lambda: [dst.copy_(f) for f in flats]}
    from fedimg.kernels._cpu import read_sum, triad

    a = np.empty(flats[0].size, np.float32)
    b, c = flats[0], flats[1 % len(flats)]
    return {
        "probe_read": lambda: [read_sum(f) for f in flats],
        "probe_triad": lambda: triad(a, b, c, np.float32(0.5)),
    }


def _limits(times: dict[str, list[float]], k: int, n: int) -> dict[str, float]:
    nbytes = n * 4
    if "probe_copy" in times:
        return {"d2d_copy_GBps": 2 * k * nbytes / float(np.median(times["probe_copy"])) / 1e9}
    t_read = float(np.median(times["probe_read"]))
    t_triad = float(np.median(times["probe_triad"]))
    read_bw = k * nbytes / t_read
    t_write = t_triad - 2 * nbytes / read_bw  # triad = 2 reads + 1 write
    triad_bw = 3 * nbytes / t_triad
    write_bw = nbytes / t_write if t_write > 0.05 * t_triad else triad_bw
    return {"read_GBps": read_bw / 1e9, "triad_GBps": triad_bw / 1e9, "write_GBps": write_bw / 1e9}


def _limit_time(method: str, k: int, n: int, limits: dict[str, float]) -> float:
    r, w = traffic(method, k)
    if "d2d_copy_GBps" in limits:
        return (r + w) * n * 4 / (limits["d2d_copy_GBps"] * 1e9)
    return r * n * 4 / (limits["read_GBps"] * 1e9) + w * n * 4 / (limits["write_GBps"] * 1e9)


# ---------------------------------------------------------------- methods ------------


def _methods(flats, dicts, records, weights, on_gpu: bool, peers: bool) -> dict[str, Callable[[], Any]]:
    from fedimg.kernels import WeightedAccumulator, fedavg

    n = int(flats[0].shape[0])
    dev = str(flats[0].device) if on_gpu else None

    def streaming():
        acc = WeightedAccumulator(n, device=dev)
        for f, w in zip(flats, weights):
            acc.add(f, w)
        return acc.result()

    out: dict[str, Callable[[], Any]] = {}
    if peers:
        from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
        from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper

        def nvflare():
            h = WeightedAggregationHelper()
            for i, (d, w) in enumerate(zip(dicts, weights)):
                h.add(d, w, f"site-{i}", 0)
            return h.get_result()

        out["flower"] = lambda: aggregate_arrayrecords(records, "num-examples")
        out["nvflare"] = nvflare
    out["fedimg_fused"] = lambda: fedavg(flats, weights, mode="fused")
    buf = flats[0].new_empty(n) if on_gpu else np.empty(n, np.float32)
    out["fedimg_fused_out"] = lambda: fedavg(flats, weights, mode="fused", out=buf)
    out["fedimg_blocked"] = lambda: fedavg(flats, weights, mode="blocked", block=4)
    out["fedimg_streaming"] = streaming
    if not on_gpu:
        out["fedimg_numpy"] = lambda: fedavg(flats, weights, backend="numpy")
    return out


def _sync(on_gpu: bool) -> None:
    if on_gpu:
        import torch

        torch.cuda.synchronize()


def _peak_extra(fn: Callable[[], Any], on_gpu: bool, host_method: bool) -> int:
    gc.collect()
    if on_gpu and not host_method:
        import torch

        pool = None
        try:
            import cupy

            pool = cupy.get_default_memory_pool()
            pool.free_all_blocks()
        except Exception:
            pass
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        res = fn()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base + (pool.total_bytes() if pool is not None else 0)
        del res
        return int(extra)
    import tracemalloc

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    res = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del res
    return int(peak - base)


def _check(results: dict[str, Any], ref: np.ndarray, names: list[tuple[str, tuple[int, ...]]]) -> None:
    """Every method must give the same average (so no method is timed doing less work)."""
    for name, res in results.items():
        if name == "flower":
            flat = np.concatenate([res[k].numpy().reshape(-1) for k, _ in names])
        elif name == "nvflare":
            flat = np.concatenate([np.asarray(_host(res[k])).reshape(-1) for k, _ in names])
        else:
            flat = _host(res)
        np.testing.assert_allclose(flat, ref, rtol=1e-4, atol=1e-5, err_msg=name)


def _host(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)


def bench_case(size: str, k: int, repeats: int, on_gpu: bool, device: Any, peers: bool) -> dict[str, Any]:
    names = model_shapes(size)
    n = sum(int(np.prod(s)) for _, s in names)
    rng = np.random.default_rng(0)
    base = rng.standard_normal(n, dtype=np.float32)
    host_flats = [base + np.float32(0.01 * i) for i in range(k)]
    weights = [float(100 + 10 * i) for i in range(k)]
    offs = np.concatenate([[0], np.cumsum([int(np.prod(s)) for _, s in names])])
    records = None
    if on_gpu:
        import torch

        flats = [torch.from_numpy(f).to(device) for f in host_flats]
    else:
        flats = host_flats
    dicts = [{nm: f[offs[j] : offs[j + 1]].reshape(s) for j, (nm, s) in enumerate(names)} for f in flats]
    if peers:
        from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

        host_dicts = [{nm: f[offs[j] : offs[j + 1]].reshape(s) for j, (nm, s) in enumerate(names)} for f in host_flats]
        records = [
            RecordDict({"arrays": ArrayRecord({nm: Array(v) for nm, v in d.items()}),
                        "metrics": MetricRecord({"num-examples": int(w)})})
            for d, w in zip(host_dicts, weights)
        ]
    methods = _methods(flats, dicts, records, weights, on_gpu, peers)
    probes = _probes(flats, on_gpu)
    ref = sum(np.float64(w) * f.astype(np.float64) for w, f in zip(weights, host_flats)) / sum(weights)
    first = {}
    for name, fn in methods.items():  # warm-up (numba compile, CuPy build) and correctness check
        first[name] = fn()
        _sync(on_gpu)
    _check(first, ref, names)
    del first
    for fn in probes.values():
        fn()
    timed = {**methods, **probes}
    times: dict[str, list[float]] = {m: [] for m in timed}
    for _ in range(repeats):  # round-robin, probes included
        for name, fn in timed.items():
            _sync(on_gpu)
            t0 = time.perf_counter()
            res = fn()
            _sync(on_gpu)
            times[name].append(time.perf_counter() - t0)
            del res
    limits = _limits(times, k, n)
    rows = {}
    for name, fn in methods.items():
        t = float(np.median(times[name]))
        r, w = traffic(name, k)
        peak = _peak_extra(fn, on_gpu, host_method=(name == "flower"))
        rows[name] = {
            "median_s": t,
            "times_s": times[name],
            "own_traffic_bytes": (r + w) * n * 4,
            "own_GBps": (r + w) * n * 4 / t / 1e9,
            "pct_of_limit_own_traffic": 100 * _limit_time(name, k, n, limits) / t,
            "pct_of_limit_min_traffic": 100 * _limit_time("fedimg_fused", k, n, limits) / t,
            "peak_extra_bytes": peak,
            "peak_extra_x_model": peak / (n * 4),
        }
    if "flower" in rows:
        for row in rows.values():
            row["speedup_vs_flower"] = rows["flower"]["median_s"] / row["median_s"]
    if "nvflare" in rows:
        for row in rows.values():
            row["speedup_vs_nvflare"] = rows["nvflare"]["median_s"] / row["median_s"]
    from fedimg.kernels._backend import choose_backend, kind_of

    backend = choose_backend(kind_of(flats[0]), n)
    return {"size": size, "params": n, "tensors": len(names), "k": k, "fedimg_backend": backend, "limits": limits,
            "methods": rows}


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
    import os
    import platform

    from fedimg.device import configure_threads, resolve_device
    from fedimg.io import write_json

    threads = configure_threads(args.threads)
    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    sizes = args.sizes or (["segresnet"] if args.quick else list(SIZES))
    ks = args.ks or ([16] if args.quick else [4, 16])
    repeats = max(5, args.repeats or (5 if args.quick else 7))
    peers = not args.no_peers
    if peers:
        try:
            import flwr  # noqa: F401
            import nvflare  # noqa: F401
        except ImportError as exc:
            log.warning("peer missing (%s): install the bench extra, pip install 'fedimg[bench]'; running without peers", exc)
            peers = False
    cases = []
    for size in sizes:
        for k in ks:
            log.info("aggregate: %s K=%d on %s", size, k, device)
            case = bench_case(size, k, repeats, on_gpu, device, peers)
            _print(case)
            cases.append(case)
            gc.collect()
    meta = {
        "benchmark": "aggregate",
        "device": str(device),
        "device_name": _device_name(device),
        "cpu_threads": threads,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "repeats": repeats,
        "quick": bool(args.quick),
        "versions": _versions(),
        "cases": cases,
    }
    if args.json:
        write_json(args.json, meta)
        log.info("wrote %s", args.json)
    return 0


def _device_name(device: Any) -> str:
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return platform_cpu()


def platform_cpu() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("numpy", "numba", "torch", "cupy", "flwr", "nvflare"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            continue
    return out
