"""``fedimg bench federation``: federated round time split, server aggregation time and memory.

Three measurements of fedimg's federation on this machine:

1. **Round time split** (3 sites): from a real ``fedimg simulate`` run's ``metrics.json``
   (``--run RUN``, or a fresh SimEnv run of ``--task`` on synthetic sites): per round the
   server's wall time, the slowest site's local training and evaluation, the server's
   aggregation, and the rest (model transfer both ways + NVFlare scheduling).
2. **Server aggregation time** for K updates of a real model's shapes (MONAI SegResNet,
   ``init_filters=16``, 4.7 M parameters): what fedimg's server does per round, without
   NVFlare's message objects: :class:`~fedimg.fl.server.validation.UpdateValidator`
   ``screen`` per update, the strategy's ``add_checked`` (fold + norm in one pass, judged by
   the validator), ``finish`` and the unpacked step; median of ``--repeats``, with GB/s of
   update data folded.
3. **Server peak memory** vs number of sites (K = 4, 16): updates arrive one at a time (each
   dropped after it is folded), tracemalloc peak of the aggregation's own allocations.

The comparison with NVFlare's stock ``InTimeAccumulateWeightedAggregator`` (fedimg's
NVFlare aggregator against it, same updates) is ``benchmarks/federation.py``.

    fedimg bench federation --quick --json bench-results/federation.json
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["DESCRIPTION", "add_arguments", "run", "setup", "round_split", "fresh_run", "print_round_split", "model_params",
           "updates", "server_round", "peak_aggregator_only"]

log = logging.getLogger(__name__)

DESCRIPTION = "federated round time split (3 sites), fedimg server aggregation time and GB/s, server memory vs sites"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="analyse this finished `fedimg simulate` run instead of running one")
    p.add_argument("--task", choices=["brats", "toy"], default="brats", help="task of the fresh SimEnv run (default brats)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ks", type=int, nargs="+", default=[4, 16], help="numbers of site updates (default 4 16)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--init-filters", type=int, default=16, help="SegResNet width of the aggregation model (16: 4.7 M)")
    p.add_argument("--device", default="auto", help="fedimg server aggregation device: auto | cpu | cuda[:n]")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for fedimg's numba/torch (default: all usable)")
    p.add_argument("--skip-round", action="store_true", help="skip the SimEnv round-split measurement")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="toy-task SimEnv run of 2 rounds, K=4 16, 3 repeats (~1 min)")


# -- 1. round split -------------------------------------------------------------------------
def round_split(metrics: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per round: server wall, slowest site's train+eval, aggregation, and the rest (transfer + scheduling)."""
    rows = []
    for m in metrics:
        sites = m.get("sites", {})
        if not sites or not m.get("round_seconds"):
            continue
        local = max(s["metrics"].get("train_seconds_train", 0.0) + s["metrics"].get("train_seconds_eval", 0.0)
                    for s in sites.values())
        train = max(s["metrics"].get("train_seconds_train", 0.0) for s in sites.values())
        agg = m["aggregation_seconds"]
        wall = m["round_seconds"]
        rows.append({"round": m["round"], "wall_s": wall, "local_train_s": train, "local_eval_s": local - train,
                     "aggregation_s": agg, "transfer_and_overhead_s": max(wall - local - agg, 0.0)})
    return rows


def fresh_run(task: str, rounds: int, tmp: Path) -> Path:
    """A 3-site SimEnv run of ``task`` on synthetic sites under ``tmp``; returns its run folder."""
    from fedimg.fl.server.federation import FederationConfig
    from fedimg.fl.nvflare.simulate import run_simulation

    if task == "toy":
        from fedimg.tasks.toy import make_sites

        make_sites(tmp / "data", n_sites=3, n=256, features=64)
        cfg = FederationConfig(task="toy", rounds=rounds, local_epochs=1, train={"features": 64, "hidden": 256})
    else:
        from fedimg.data import synthesize

        synthesize(tmp / "data", sites=3, cases_per_site=6, seed=0, spacing=4.0)
        cfg = FederationConfig(task="brats", rounds=rounds, local_epochs=1,
                               train={"roi": [32, 32, 32], "allow_identifiable": True, "device": "cpu"})
    run_simulation(tmp / "data", tmp / "run", cfg, progress=False, tracking=False)
    return tmp / "run"


def print_round_split(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Measure (``--run`` or a fresh run) and print the round split into ``results["round_split"]``."""
    from fedimg.fl.server.state import read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run) if args.run else fresh_run(args.task, args.rounds, Path(tmp))
        rows = round_split(read_metrics(run_dir))
        results["round_split"] = {"run": str(args.run or f"fresh {args.task} SimEnv run"), "rounds": rows}
    print(f"\nround time split (3 sites, {results['round_split']['run']})")
    print(f"{'round':>5} {'wall s':>8} {'train s':>8} {'eval s':>7} {'aggr s':>8} {'transfer+sched s':>17}")
    for r in rows:
        print(f"{r['round']:>5} {r['wall_s']:8.2f} {r['local_train_s']:8.2f} {r['local_eval_s']:7.2f} "
              f"{r['aggregation_s']:8.4f} {r['transfer_and_overhead_s']:17.2f}")


# -- 2./3. aggregation ------------------------------------------------------------------------
def model_params(init_filters: int) -> dict[str, np.ndarray]:
    """A seeded MONAI SegResNet state dict (4 in, 3 out channels) as numpy arrays."""
    import torch
    from monai.networks.nets import SegResNet

    torch.manual_seed(0)
    net = SegResNet(spatial_dims=3, init_filters=init_filters, in_channels=4, out_channels=3)
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def updates(params: dict[str, np.ndarray], k: int, seed: int = 0):
    """``k`` seeded (site name, difference dict, sample count) updates shaped like ``params``, one at a time."""
    rng = np.random.default_rng(seed)
    for i in range(k):
        yield f"site-{i + 1}", {n: (rng.standard_normal(v.shape, dtype=np.float32) * 1e-3) for n, v in params.items()}, 10 + i


def server_round(params: dict[str, np.ndarray], k: int, device: str) -> float:
    """Busy seconds of fedimg's server for one FedAvg round of ``k`` updates (screen, checked fold, finish)."""
    from fedimg.fl.server.strategies import StrategyConfig, make_strategy
    from fedimg.fl.server.validation import UpdateValidator, ValidationConfig
    from fedimg.kernels import unpack

    validator = UpdateValidator(ValidationConfig())
    validator.begin_round(params)
    agg = None
    busy = 0.0
    for site, upd, n in updates(params, k):
        t0 = time.perf_counter()
        verdict = validator.screen(site, upd)
        assert verdict.ok, verdict.reason
        if agg is None:
            lay = validator.layout
            agg = make_strategy(StrategyConfig(name="fedavg"), lay.size, float_size=lay.float_size,
                                device=None if device == "cpu" else device)
        judged = []

        def check(norm: float, site: str = site) -> bool:
            judged.append(validator.judge(site, norm))
            return judged[-1].ok

        agg.add_checked(verdict.parts, n, check)
        busy += time.perf_counter() - t0
        assert judged and judged[0].ok, judged[0].reason if judged else "not judged"
        del upd, verdict
    t0 = time.perf_counter()
    delta = unpack(agg.finish(), validator.layout, as_torch=False, copy=False)
    validator.end_round()
    busy += time.perf_counter() - t0
    assert len(delta) == len(params)
    return busy


def _peak(fn: Callable, *a) -> float:
    gc.collect()
    tracemalloc.start()
    fn(*a)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def peak_aggregator_only(fn: Callable, params, k, *a) -> float:
    """Peak of a round minus the peak of just generating the same updates (the aggregator's own memory)."""
    def gen_only(params, k):
        for _, upd, _ in updates(params, k):
            del upd

    return _peak(fn, params, k, *a) - _peak(gen_only, params, k)


def setup(args: argparse.Namespace, columns: str) -> tuple[str, dict[str, Any], dict[str, Any], int]:
    """What ``fedimg bench federation`` and ``benchmarks/federation.py`` share before timing.

    Applies ``--quick``, resolves the device and threads, runs the round split (unless
    ``--skip-round``), builds the model's parameters and prints the table's header with
    ``columns``. Returns ``(device, results, params, n_params)``.
    """
    from fedimg.device import configure_threads, resolve_device

    if args.quick:
        args.task, args.rounds, args.repeats = "toy", 2, 3
    device = "cuda" if str(resolve_device(args.device)).startswith("cuda") else "cpu"
    threads = configure_threads(args.threads)
    results: dict[str, Any] = {"device": device, "ks": args.ks, "threads": threads}
    if not args.skip_round:
        print_round_split(args, results)
    params = model_params(args.init_filters)
    n_params = int(sum(v.size for v in params.values()))
    results["model"] = {"name": f"SegResNet(init_filters={args.init_filters})", "parameters": n_params,
                        "tensors": len(params)}
    print(f"\nserver aggregation, {results['model']['name']}: {n_params / 1e6:.1f} M parameters, {len(params)} tensors, "
          f"fedimg on {device} with {threads} thread(s), median of {args.repeats}")
    print(columns)
    return device, results, params, n_params


def run(args: argparse.Namespace) -> int:
    from fedimg.io import write_json

    device, results, params, n_params = setup(
        args, f"{'K':>3} {'fedimg s':>9} {'GB/s':>7} {'fedimg MB':>10} {'model MB':>9}")
    agg_rows = []
    for k in args.ks:
        server_round(params, k, device)  # warm-up: numba compiles or loads its cache, first-touch of buffers
        t_f = statistics.median(server_round(params, k, device) for _ in range(args.repeats))
        m_f = peak_aggregator_only(server_round, params, k, "cpu") / 2**20
        row = {"k": k, "fedimg_s": t_f, "fedimg_GBps": k * n_params * 4 / t_f / 1e9, "fedimg_peak_mb": m_f,
               "model_mb": n_params * 4 / 2**20}
        agg_rows.append(row)
        print(f"{k:>3} {t_f:9.3f} {row['fedimg_GBps']:7.2f} {m_f:10.1f} {row['model_mb']:9.1f}")
    results["aggregation"] = agg_rows
    if args.json:
        write_json(args.json, results)
    return 0
