"""``fedimg bench aggregate``: FedAvg server aggregation GB/s and memory of fedimg's kernels.

For each model size P (real MONAI state-dict shapes: SegResNet16 3-D 4.7 M in 83 tensors,
DenseNet121 7.0 M in 606 float tensors; and a synthetic 50 M) and each K updates, in one
process, round-robin, median of ``--repeats`` (>= 5): fedimg ``fedavg`` fused (each update
read once), fused into a result buffer kept across rounds (``out=``: no fresh allocation /
page faults), blocked (4 per pass), streaming (``WeightedAccumulator``: add per site, then
``result``), and the numpy reference.

The physical limit is measured in the same round-robin. CPU: a read-only chunked sum over the K
updates and a triad ``a = b + s*c`` (:mod:`fedimg.bench.probes`); a method's limit time is
``reads/read_bw + writes/write_bw`` with ``write_bw`` derived from the triad, for the bytes
the method itself must move (``traffic`` below). GPU (updates already on the device as torch
CUDA tensors): a device-to-device copy. Peak extra memory: tracemalloc (host) or the CUDA
allocators. The comparison with Flower and NVFlare is ``benchmarks/aggregate.py``, which
runs :func:`bench_case` with its peers added to the same round-robin.

``--path server`` (also part of the default ``both``) times the server's *real* path instead:
per-tensor update dicts, validation and the checked fold
(:mod:`fedimg.bench.aggregate_server`), against a streaming probe that moves the same bytes.

    fedimg bench aggregate --quick --json bench-results/aggregate.json
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["peak_extra", "DESCRIPTION", "SIZES", "add_arguments", "run", "to_host", "model_shapes", "traffic", "limit_time", "PeerMethods",
           "bench_case", "print_case", "server_path_cases", "device_name", "versions"]

log = logging.getLogger(__name__)

DESCRIPTION = "FedAvg aggregation GB/s, percent of the machine's streaming rate and memory of fedimg's kernels"
SIZES = ("segresnet", "densenet", "50m")
PATHS = ("packed", "server", "both")

Methods = dict[str, Callable[[], Any]]


@dataclass(frozen=True, kw_only=True)
class PeerMethods:
    """Methods that :func:`bench_case` times before fedimg's, in the same round-robin.

    ``traffic(method, k)``: (reads, writes) in model-sized arrays; ``flatten(method,
    result)``: the result as one 1-D host array, checked against the reference;
    ``host_side``: methods whose memory is measured on the host even when the updates are
    on a GPU.
    """

    methods: Methods
    traffic: Callable[[str, int], tuple[int, int]]
    flatten: Callable[[str, Any], np.ndarray]
    host_side: frozenset[str] = field(default_factory=frozenset)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", nargs="+", choices=SIZES, default=None, help="model sizes (default all; --quick segresnet)")
    p.add_argument("--ks", type=int, nargs="+", default=None, help="updates per round (default 4 16; --quick 16)")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions per method (default 7, --quick 5)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:n] (auto: updates on the GPU if there is one)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for numba/torch (default: all usable)")
    p.add_argument("--no-peers", action="store_true", help=argparse.SUPPRESS)  # peers live in benchmarks/ now
    p.add_argument("--path", choices=PATHS, default="both",
                   help="packed: fedavg on pre-packed flat updates; server: the server's real path on per-tensor "
                        "dicts (validation + fold; SegResNet); both (default)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="SegResNet size, K=16, 5 repeats (< 1 minute on 2 cores)")


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
    """(reads, writes) in model-sized float32 arrays that fedimg's ``method`` itself moves for K updates."""
    if method in ("fedimg_fused", "fedimg_fused_out", "fedimg_numpy"):
        return k, 1
    if method == "fedimg_blocked":
        g = math.ceil(k / 4)
        return k + g - 1, g
    if method == "fedimg_streaming":  # K adds (acc read after the first) + result (read acc, write out)
        return 2 * k, k + 1
    raise ValueError(method)


# ----------------------------------------------------------------- limits ------------


def _probes(flats: list[Any], on_gpu: bool) -> Methods:
    """Bandwidth probes, timed in the same round-robin as the methods (same machine load).

    CPU: read-only chunked sum over the K updates, and a triad ``a = b + s*c``; GPU: a
    device-to-device copy of each update.
    """
    if on_gpu:
        import torch

        dst = torch.empty_like(flats[0])
        return {"probe_copy": lambda: [dst.copy_(f) for f in flats]}
    from .probes import read_sum, triad

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


def limit_time(reads_writes: tuple[int, int], n: int, limits: dict[str, float]) -> float:
    """Seconds the machine needs at its measured limit to move (reads, writes) arrays of ``n`` float32."""
    r, w = reads_writes
    if "d2d_copy_GBps" in limits:
        return (r + w) * n * 4 / (limits["d2d_copy_GBps"] * 1e9)
    return r * n * 4 / (limits["read_GBps"] * 1e9) + w * n * 4 / (limits["write_GBps"] * 1e9)


# ---------------------------------------------------------------- methods ------------


def _methods(flats, weights, on_gpu: bool) -> Methods:
    from fedimg.kernels import WeightedAccumulator, fedavg

    n = int(flats[0].shape[0])
    dev = str(flats[0].device) if on_gpu else None

    def streaming():
        acc = WeightedAccumulator(n, device=dev)
        for f, w in zip(flats, weights):
            acc.add(f, w)
        return acc.result()

    out: Methods = {"fedimg_fused": lambda: fedavg(flats, weights, mode="fused")}
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


def peak_extra(fn: Callable[[], Any], on_gpu: bool, host_method: bool) -> int:
    """Bytes ``fn`` allocates at its peak beyond what was live before: device memory, or host (tracemalloc)."""
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


def to_host(x: Any) -> np.ndarray:
    """A numpy view or copy of a numpy, torch or CuPy array."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)


def _round_robin(timed: Methods, repeats: int, on_gpu: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {m: [] for m in timed}
    for _ in range(repeats):  # round-robin, probes included
        for name, fn in timed.items():
            _sync(on_gpu)
            t0 = time.perf_counter()
            res = fn()
            _sync(on_gpu)
            times[name].append(time.perf_counter() - t0)
            del res
    return times


def bench_case(size: str, k: int, repeats: int, on_gpu: bool, device: Any, *,
               peers: Callable[..., PeerMethods] | None = None) -> dict[str, Any]:
    """Time every method on K updates of model ``size``, round-robin with the bandwidth probes.

    ``peers(names=, offsets=, flats=, host_flats=, weights=)``, when given, returns the
    :class:`PeerMethods` to time in the same round-robin (``benchmarks/aggregate.py``).
    """
    names = model_shapes(size)
    n = sum(int(np.prod(s)) for _, s in names)
    rng = np.random.default_rng(0)
    base = rng.standard_normal(n, dtype=np.float32)
    host_flats = [base + np.float32(0.01 * i) for i in range(k)]
    weights = [float(100 + 10 * i) for i in range(k)]
    offs = np.concatenate([[0], np.cumsum([int(np.prod(s)) for _, s in names])])
    if on_gpu:
        import torch

        flats = [torch.from_numpy(f).to(device) for f in host_flats]
    else:
        flats = host_flats
    peer = PeerMethods(methods={}, traffic=traffic, flatten=lambda name, res: to_host(res)) if peers is None else peers(
        names=names, offsets=offs, flats=flats, host_flats=host_flats, weights=weights)
    peer_methods = peer.methods
    methods = {**peer_methods, **_methods(flats, weights, on_gpu)}
    probes = _probes(flats, on_gpu)
    ref = sum(np.float64(w) * f.astype(np.float64) for w, f in zip(weights, host_flats)) / sum(weights)
    for name, fn in methods.items():  # warm-up (numba compile, CuPy build) and correctness check:
        res = fn()  # every method must give the same average (so no method is timed doing less work)
        _sync(on_gpu)
        flat = peer.flatten(name, res) if name in peer_methods else to_host(res)
        np.testing.assert_allclose(flat, ref, rtol=1e-4, atol=1e-5, err_msg=name)
        del res
    for fn in probes.values():
        fn()
    times = _round_robin({**methods, **probes}, repeats, on_gpu)
    limits = _limits(times, k, n)
    rows = {}
    for name, fn in methods.items():
        t = float(np.median(times[name]))
        r, w = peer.traffic(name, k) if name in peer_methods else traffic(name, k)
        peak = peak_extra(fn, on_gpu, host_method=name in peer.host_side)
        rows[name] = {
            "median_s": t,
            "times_s": times[name],
            "own_traffic_bytes": (r + w) * n * 4,
            "own_GBps": (r + w) * n * 4 / t / 1e9,
            "pct_of_limit_own_traffic": 100 * limit_time((r, w), n, limits) / t,
            "pct_of_limit_min_traffic": 100 * limit_time(traffic("fedimg_fused", k), n, limits) / t,
            "peak_extra_bytes": peak,
            "peak_extra_x_model": peak / (n * 4),
        }
    from fedimg.kernels import choose_backend, kind_of

    backend = choose_backend(kind_of(flats[0]), n)
    return {"size": size, "params": n, "tensors": len(names), "k": k, "fedimg_backend": backend, "limits": limits,
            "methods": rows}


def print_case(case: dict[str, Any]) -> None:
    """fedimg's table for one case: time, own GB/s, % of the streaming limit, memory."""
    lim = ", ".join(f"{k} {v:.1f}" for k, v in case["limits"].items())
    print(f"\n{case['size']}: P={case['params']:,} in {case['tensors']} tensors, K={case['k']}, "
          f"fedimg backend {case['fedimg_backend']}  (limits GB/s: {lim})")
    print(f"{'method':18s} {'ms':>9s} {'GB/s own':>9s} {'% limit':>8s} {'% min':>7s} {'mem x model':>11s}")
    for name, r in case["methods"].items():
        print(f"{name:18s} {r['median_s'] * 1e3:9.2f} {r['own_GBps']:9.2f} {r['pct_of_limit_own_traffic']:7.0f}% "
              f"{r['pct_of_limit_min_traffic']:6.0f}% {r['peak_extra_x_model']:11.2f}")


def run(args: argparse.Namespace) -> int:
    import platform

    from fedimg.device import available_cpus, configure_threads, resolve_device
    from fedimg.io import write_json

    threads = configure_threads(args.threads)
    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    sizes = args.sizes or (["segresnet"] if args.quick else list(SIZES))
    ks = args.ks or ([16] if args.quick else [4, 16])
    repeats = max(5, args.repeats or (5 if args.quick else 7))
    cases = []
    for size in sizes if args.path in ("packed", "both") else ():
        for k in ks:
            log.info("aggregate: %s K=%d on %s", size, k, device)
            case = bench_case(size, k, repeats, on_gpu, device)
            print_case(case)
            cases.append(case)
            gc.collect()
    server_cases = server_path_cases(args.path, ks, repeats, on_gpu, device)
    meta = {
        "benchmark": "aggregate",
        "device": str(device),
        "device_name": device_name(device),
        "cpu_threads": threads,
        "cpus": available_cpus(),
        "platform": platform.platform(),
        "repeats": repeats,
        "quick": bool(args.quick),
        "versions": versions(),
        "cases": cases,
        "server_cases": server_cases,
    }
    if args.json:
        write_json(args.json, meta)
        log.info("wrote %s", args.json)
    return 0


def server_path_cases(path: str, ks: list[int], repeats: int, on_gpu: bool, device: Any,
                      peers: Callable[..., Any] | None = None) -> list[dict[str, Any]]:
    """The server's real path (:mod:`fedimg.bench.aggregate_server`) for each K, when ``path`` asks for it."""
    from .aggregate_server import print_server_case, server_case

    out = []
    for k in ks if path in ("server", "both") else ():
        log.info("aggregate: server path, SegResNet K=%d on %s", k, device)
        case = server_case(k, repeats, peers=peers, device=str(device) if on_gpu else None)
        print_server_case(case)
        out.append(case)
        gc.collect()
    return out


def device_name(device: Any) -> str:
    """The GPU's name for a CUDA device, else the CPU model."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    from fedimg.telemetry import cpu_name

    return cpu_name()


def versions(modules: tuple[str, ...] = ("numpy", "numba", "torch", "cupy")) -> dict[str, str]:
    """``__version__`` of each importable module in ``modules``."""
    out = {}
    for mod in modules:
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            continue
    return out
