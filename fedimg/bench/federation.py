"""``fedimg bench federation``: federated round time split, server aggregation vs NVFlare, server memory.

Three measurements, peers run in the same process on the same inputs:

1. **Round time split** (3 sites): from a real ``fedimg simulate`` run's ``metrics.json``
   (``--run RUN``, or a fresh SimEnv run of ``--task`` on synthetic sites): per round the
   server's wall time, the slowest site's local training and evaluation, the server's
   aggregation, and the rest (model transfer both ways + NVFlare scheduling).
2. **Server aggregation time** for K updates of a real model's shapes (MONAI SegResNet,
   ``init_filters=16``, 4.7 M parameters): fedimg's :class:`FedimgAggregator` (validation +
   streaming ``WeightedAccumulator``; ``accept_model`` per update, ``aggregate_model``) vs
   NVFlare's stock ``InTimeAccumulateWeightedAggregator`` (``accept`` per Shareable,
   ``aggregate``), same difference arrays and weights, median of ``--repeats``.
3. **Server peak memory** vs number of sites (K = 4, 16): updates arrive one at a time (each
   dropped after ``accept``), tracemalloc peak of the aggregator's own allocations.

    fedimg bench federation --quick --json bench-results/federation.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DESCRIPTION", "add_arguments", "run", "round_split"]

log = logging.getLogger(__name__)

DESCRIPTION = "federated round time split (3 sites), server aggregation vs NVFlare InTimeAccumulateWeightedAggregator, server memory vs sites"


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
    p.add_argument("--quick", action="store_true", help="toy-task SimEnv run of 2 rounds, K=4 16, 3 repeats (~2 min)")


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


def _fresh_run(task: str, rounds: int, tmp: Path) -> Path:
    from fedimg.fl.nvflare.job import FederationConfig
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


# -- 2./3. aggregation ------------------------------------------------------------------------
def _model_params(init_filters: int) -> dict[str, np.ndarray]:
    import torch
    from monai.networks.nets import SegResNet

    torch.manual_seed(0)
    net = SegResNet(spatial_dims=3, init_filters=init_filters, in_channels=4, out_channels=3)
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def _updates(params: dict[str, np.ndarray], k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(k):
        yield f"site-{i + 1}", {n: (rng.standard_normal(v.shape, dtype=np.float32) * 1e-3) for n, v in params.items()}, 10 + i


def _fedimg_round(params, k: int, device: str) -> float:
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
    from nvflare.app_common.abstract.model import make_model_learnable
    from nvflare.app_common.app_constant import AppConstants
    from nvflare.app_common.app_event_type import AppEventType

    from fedimg.fl.nvflare.aggregator import FedimgAggregator

    agg = FedimgAggregator(device=device, audit_payloads=False)
    ctx = FLContext()
    ctx.set_prop(AppConstants.GLOBAL_MODEL, make_model_learnable(params, {}), private=True, sticky=False)
    ctx.set_prop(AppConstants.CURRENT_ROUND, 0, private=True, sticky=False)
    agg.handle_event(AppEventType.ROUND_STARTED, ctx)
    agg.fl_ctx = ctx
    busy = 0.0
    for site, upd, n in _updates(params, k):
        model = FLModel(params=upd, params_type=ParamsType.DIFF, metrics={"val_dice_mean": 0.5},
                        meta={"client_name": site, "NUM_STEPS_CURRENT_ROUND": n})
        t0 = time.perf_counter()
        agg.accept_model(model)
        busy += time.perf_counter() - t0
        del model, upd
    t0 = time.perf_counter()
    out = agg.aggregate_model()
    busy += time.perf_counter() - t0
    assert len(out.params) == len(params)
    return busy


def _nvflare_round(params, k: int) -> float:
    from nvflare.apis.dxo import DXO, DataKind, MetaKey
    from nvflare.apis.fl_constant import ReservedKey
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import InTimeAccumulateWeightedAggregator
    from nvflare.app_common.app_constant import AppConstants

    from nvflare.apis.event_type import EventType

    agg = InTimeAccumulateWeightedAggregator(expected_data_kind=DataKind.WEIGHT_DIFF)
    ctx = FLContext()
    agg.handle_event(EventType.START_RUN, ctx)  # builds its per-DXO aggregators, as in a real run
    ctx.set_prop(AppConstants.CURRENT_ROUND, 0, private=True, sticky=False)
    busy = 0.0
    for site, upd, n in _updates(params, k):
        sh = DXO(data_kind=DataKind.WEIGHT_DIFF, data=upd, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: n}).to_shareable()
        sh.set_peer_props({ReservedKey.IDENTITY_NAME: site})
        sh.add_cookie(AppConstants.CONTRIBUTION_ROUND, 0)
        t0 = time.perf_counter()
        ok = agg.accept(sh, ctx)
        busy += time.perf_counter() - t0
        assert ok, "NVFlare aggregator refused an update"
        del sh, upd
    t0 = time.perf_counter()
    out = agg.aggregate(ctx)
    busy += time.perf_counter() - t0
    assert out is not None
    return busy


def _peak(fn, *a) -> float:
    gc.collect()
    tracemalloc.start()
    fn(*a)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def _peak_aggregator_only(fn, params, k, *a) -> float:
    """Peak of a round minus the peak of just generating the same updates (the aggregator's own memory)."""
    def gen_only(params, k):
        for _, upd, _ in _updates(params, k):
            del upd

    return _peak(fn, params, k, *a) - _peak(gen_only, params, k)


def _alternate(k: int, repeats: int, params, device: str) -> tuple[float, float]:
    """Median fedimg and NVFlare round times, the two run one after the other each repeat."""
    t_f, t_n = [], []
    for _ in range(repeats):
        t_f.append(_fedimg_round(params, k, device))
        t_n.append(_nvflare_round(params, k))
    return statistics.median(t_f), statistics.median(t_n)


def run(args: argparse.Namespace) -> int:
    from fedimg.device import configure_threads, resolve_device
    from fedimg.fl.server.state import read_metrics

    logging.getLogger("nvflare").setLevel(logging.CRITICAL)  # its per-update warnings would cost it time
    logging.getLogger("fedimg.fl.nvflare.aggregator").setLevel(logging.WARNING)
    if args.quick:
        args.task, args.rounds, args.repeats = "toy", 2, 3
    device = "cuda" if str(resolve_device(args.device)).startswith("cuda") else "cpu"
    threads = configure_threads(args.threads)
    results: dict[str, Any] = {"device": device, "ks": args.ks, "threads": threads}

    if not args.skip_round:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(args.run) if args.run else _fresh_run(args.task, args.rounds, Path(tmp))
            rows = round_split(read_metrics(run_dir))
            results["round_split"] = {"run": str(args.run or f"fresh {args.task} SimEnv run"), "rounds": rows}
        print(f"\nround time split (3 sites, {results['round_split']['run']})")
        print(f"{'round':>5} {'wall s':>8} {'train s':>8} {'eval s':>7} {'aggr s':>8} {'transfer+sched s':>17}")
        for r in rows:
            print(f"{r['round']:>5} {r['wall_s']:8.2f} {r['local_train_s']:8.2f} {r['local_eval_s']:7.2f} "
                  f"{r['aggregation_s']:8.4f} {r['transfer_and_overhead_s']:17.2f}")

    params = _model_params(args.init_filters)
    n_params = int(sum(v.size for v in params.values()))
    results["model"] = {"name": f"SegResNet(init_filters={args.init_filters})", "parameters": n_params,
                        "tensors": len(params)}
    print(f"\nserver aggregation, {results['model']['name']}: {n_params / 1e6:.1f} M parameters, {len(params)} tensors, "
          f"fedimg on {device} with {threads} thread(s), median of {args.repeats}")
    print(f"{'K':>3} {'fedimg s':>9} {'NVFlare s':>10} {'speed-up':>9} {'fedimg MB':>10} {'NVFlare MB':>11} {'model MB':>9}")
    agg_rows = []
    for k in args.ks:
        _fedimg_round(params, k, device)  # warm-ups: numba compiles or loads its cache, first-touch of buffers
        _nvflare_round(params, k)
        t_f, t_n = _alternate(k, args.repeats, params, device)
        m_f = _peak_aggregator_only(_fedimg_round, params, k, "cpu") / 2**20
        m_n = _peak_aggregator_only(_nvflare_round, params, k) / 2**20
        row = {"k": k, "fedimg_s": t_f, "nvflare_s": t_n, "speedup": t_n / t_f, "fedimg_peak_mb": m_f,
               "nvflare_peak_mb": m_n, "model_mb": n_params * 4 / 2**20}
        agg_rows.append(row)
        print(f"{k:>3} {t_f:9.3f} {t_n:10.3f} {t_n / t_f:8.2f}x {m_f:10.1f} {m_n:11.1f} {row['model_mb']:9.1f}")
    results["aggregation"] = agg_rows
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
