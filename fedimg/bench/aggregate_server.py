"""The server's real aggregation path, timed against the machine's streaming rate for its bytes.

What fedimg's NVFlare aggregator does with each arriving update (a dict ``name -> array``,
one array per tensor, as NVFlare and Flower hand them to a server), per round:
:meth:`~fedimg.fl.server.validation.UpdateValidator.begin_round` (the global model's norm),
per update :meth:`~fedimg.fl.server.validation.UpdateValidator.screen` (names, shapes,
dtypes; views, no packed copy), the strategy's ``add_checked`` (one pass folds the update into
a scratch sum and measures its norm), :meth:`~fedimg.fl.server.validation.UpdateValidator.judge`
(NaN/Inf, norm outliers), then ``finish`` and the step unpacked to a dict (views). The strategy
and its buffers live across rounds, as in a server.

The limit (``probe_stream``) moves exactly the same bytes with plain streaming kernels
(:mod:`fedimg.bench.probes`, same threads): one read of the global model, ``a = w*u`` for the
first update, ``K - 1`` triads ``scratch = acc + w*u`` and the result's scaling; it runs on
packed copies of the same updates in the same round-robin. ``pct_of_stream`` is the probe's
time over the method's, per repetition (``pct_of_stream_nt_cpu``: the same with CPU times, steadier
on a shared machine where wall time includes waiting for a core). ``probe_stream_nt`` is the same probe writing with
streaming (non-temporal) stores into aligned buffers, as fedimg's fold and result scaling
write (:mod:`fedimg.kernels.stream`): the higher bar, ``pct_of_stream_nt``. ``benchmarks/aggregate.py --path server`` adds
Flower's and NVFlare's FedAvg fed the same dicts to the round-robin.

>>> case = server_case(2, 5, shapes=[("w", (64, 64)), ("b", (64,))])
>>> sorted(case["methods"]), case["params"], len(case["methods"]["fedimg_server"]["times_s"])
(['fedimg_server'], 4160, 5)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedimg.bench.aggregate import peak_extra  # host peak as the packed benchmark measures it
from fedimg.bench.train import spread

__all__ = ["ServerPath", "ServerPeers", "make_updates", "stream_probe", "server_case", "print_server_case"]

log = logging.getLogger(__name__)

Update = dict[str, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class ServerPeers:
    """Peer methods for :func:`server_case` (``benchmarks/aggregate.py``): each callable runs
    one round on the prepared updates; ``flatten(name, result)`` gives the result as one 1-D
    array in the updates' tensor order; ``settings`` describes each peer for the JSON."""

    methods: dict[str, Callable[[], Any]]
    flatten: Callable[[str, Any], np.ndarray]
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


def make_updates(shapes: list[tuple[str, tuple[int, ...]]], k: int, seed: int = 0) -> tuple[Update, list[Update], list[float]]:
    """``(global model, k updates, weights)``: seeded float32 tensors, one array each (as deserialised)."""
    rng = np.random.default_rng(seed)
    glob = {n: rng.standard_normal(s, dtype=np.float32) for n, s in shapes}
    ups = [{n: rng.standard_normal(s, dtype=np.float32) * np.float32(0.01) for n, s in shapes} for _ in range(k)]
    return glob, ups, [float(100 + 10 * i) for i in range(k)]


class ServerPath:
    """fedimg's server path for FedAvg on update dicts, state kept across rounds (see the module)."""

    def __init__(self, device: Any = None) -> None:
        from fedimg.fl.server.validation import UpdateValidator, ValidationConfig

        self.validator = UpdateValidator(ValidationConfig())
        self.device = device
        self.strategy = None

    def round(self, glob: Update, updates: list[Update], weights: list[float]) -> Update:
        """One round: every update screened, folded with its norm judged; the step as a dict."""
        from fedimg.fl.server.strategies import StrategyConfig, make_strategy
        from fedimg.kernels import unpack

        v = self.validator
        v.begin_round(glob)
        if self.strategy is not None:
            self.strategy.begin_round()
        for i, (upd, w) in enumerate(zip(updates, weights)):
            site = f"site-{i + 1}"
            verdict = v.screen(site, upd)
            if not verdict.ok:
                raise RuntimeError(f"{site} refused: {verdict.reason}")
            if self.strategy is None:
                self.strategy = make_strategy(StrategyConfig(name="fedavg"), v.layout.size,
                                              float_size=v.layout.float_size, device=self.device)
            if not self.strategy.add_checked(verdict.parts, w, lambda norm, s=site: v.judge(s, norm).ok):
                raise RuntimeError(f"{site} refused by the norm rules")
        step = unpack(self.strategy.finish(), v.layout, as_torch=False, copy=False)
        v.end_round()
        return step


def stream_probe(glob_flat: np.ndarray, flats: list[np.ndarray], weights: list[float], *,
                 nt: bool = False) -> Callable[[], np.ndarray]:
    """The validating fold's bytes at the streaming rate (see the module docstring); the probe
    returns the weighted mean it computed (its buffers are reused across calls). ``nt``: its
    writes are streaming stores into aligned buffers, as fedimg's fold writes."""
    from fedimg.bench import probes
    from fedimg.kernels.stream import aligned_zeros

    read_sum = probes.read_sum
    scale_copy, triad = (probes.scale_copy_nt, probes.triad_nt) if nt else (probes.scale_copy, probes.triad)
    acc, scratch, out = (aligned_zeros(glob_flat.size, np.float32) for _ in range(3))
    ws = [np.float32(w) for w in weights]

    def probe() -> np.ndarray:
        a, b = acc, scratch
        read_sum(glob_flat)
        scale_copy(a, flats[0], ws[0])
        for f, w in zip(flats[1:], ws[1:]):
            triad(b, a, f, w)
            a, b = b, a
        scale_copy(out, a, np.float32(1.0 / sum(weights)))
        return out

    return probe


def server_case(k: int, repeats: int, *, shapes: list[tuple[str, tuple[int, ...]]] | None = None,
                peers: Callable[..., ServerPeers] | None = None, device: Any = None) -> dict[str, Any]:
    """Time fedimg's server path (and ``peers(glob=, updates=, weights=, shapes=)``) on K updates.

    Long because it prepares the inputs, checks every method against a float64 reference,
    runs the round-robin with the probe and derives the per-repetition ratios in one place.
    """
    if shapes is None:
        from fedimg.bench.aggregate import model_shapes

        shapes = model_shapes("segresnet")
    glob, ups, weights = make_updates(shapes, k)
    n = sum(int(np.prod(s)) for _, s in shapes)
    peer = ServerPeers(methods={}, flatten=lambda name, r: r) if peers is None else peers(
        glob=glob, updates=ups, weights=weights, shapes=shapes)
    server = ServerPath(device)
    methods = {**peer.methods, "fedimg_server": lambda: server.round(glob, ups, weights)}
    flats = [np.concatenate([u[nm].reshape(-1) for nm, _ in shapes]) for u in ups]
    glob_flat = np.concatenate([glob[nm].reshape(-1) for nm, _ in shapes])
    probe, probe_nt = (stream_probe(glob_flat, flats, weights, nt=nt) for nt in (False, True))
    ref = sum(np.float64(w) * f.astype(np.float64) for w, f in zip(weights, flats)) / sum(weights)
    for name, fn in methods.items():  # warm-up (numba cache, first touch) and the same answer from everyone
        res = fn()
        flat = np.concatenate([np.asarray(res[nm]).reshape(-1) for nm, _ in shapes]) if name == "fedimg_server" \
            else peer.flatten(name, res)
        np.testing.assert_allclose(flat, ref, rtol=1e-4, atol=1e-6 * float(np.abs(ref).max()), err_msg=name)
        del res
    for pr in (probe, probe_nt):
        np.testing.assert_allclose(pr(), ref, rtol=1e-4, atol=1e-6 * float(np.abs(ref).max()), err_msg="probe")
    timed = {**methods, "probe_stream": probe, "probe_stream_nt": probe_nt}
    wall: dict[str, list[float]] = {m: [] for m in timed}
    cpu: dict[str, list[float]] = {m: [] for m in timed}
    for _ in range(repeats):  # interleaved: every method and the probe once per repetition
        for name, fn in timed.items():
            c0, t0 = time.process_time(), time.perf_counter()
            res = fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            del res
    probe_bytes = n * 4 * (1 + 2 + 3 * (k - 1) + 2)
    rows: dict[str, Any] = {}
    for name in methods:
        row = {"times_s": wall[name], "cpu_s": cpu[name], "wall_s": spread(wall[name]), "cpu_time_s": spread(cpu[name]),
               "pct_of_stream": spread([100 * p / t for p, t in zip(wall["probe_stream"], wall[name])]),
               "pct_of_stream_nt": spread([100 * p / t for p, t in zip(wall["probe_stream_nt"], wall[name])]),
               "pct_of_stream_nt_cpu": spread([100 * p / t for p, t in zip(cpu["probe_stream_nt"], cpu[name])]),
               "peak_extra_x_model": peak_extra(methods[name], on_gpu=False, host_method=True) / (n * 4)}
        for other in peer.methods:
            row[f"speedup_vs_{other}"] = spread([o / t for o, t in zip(wall[other], wall[name])])
        rows[name] = row
    stream = spread([probe_bytes / t / 1e9 for t in wall["probe_stream"]])
    stream_nt = spread([probe_bytes / t / 1e9 for t in wall["probe_stream_nt"]])
    return {"path": "server", "fedimg_device": str(device or "cpu"), "probe_device": "cpu", "params": n, "tensors": len(shapes), "k": k, "repeats": repeats, "methods": rows,
            "probe_stream": {"wall_s": spread(wall["probe_stream"]), "cpu_time_s": spread(cpu["probe_stream"]),
                             "GBps": stream, "bytes": probe_bytes},
            "probe_stream_nt": {"wall_s": spread(wall["probe_stream_nt"]), "cpu_time_s": spread(cpu["probe_stream_nt"]),
                                "GBps": stream_nt, "bytes": probe_bytes,
                                "stores": "non-temporal (streaming), 64-byte aligned"},
            "peers": peer.settings}


def print_server_case(case: dict[str, Any]) -> None:
    """One table: median wall time [min, max], % of the streaming probe, speed-ups over the peers."""
    peers = list(case["peers"])
    print(f"\nserver path: P={case['params']:,} in {case['tensors']} tensors, K={case['k']}, "
          f"median of {case['repeats']} interleaved; streaming probe {case['probe_stream']['GBps']['median']:.1f} GB/s "
          f"({case['probe_stream_nt']['GBps']['median']:.1f} GB/s with streaming stores)")
    print(f"{'method':16s} {'ms [min, max]':>22s} {'% stream':>9s} {'% nt':>6s}" + "".join(f" {'x ' + p:>16s}" for p in peers))
    for name, r in case["methods"].items():
        w = r["wall_s"]
        cols = "".join(f" {r['speedup_vs_' + p]['median']:16.2f}" for p in peers)
        print(f"{name:16s} {w['median'] * 1e3:8.1f} [{w['min'] * 1e3:5.1f}, {w['max'] * 1e3:5.1f}] "
              f"{r['pct_of_stream']['median']:8.0f}% {r['pct_of_stream_nt']['median']:5.0f}%{cols}")
