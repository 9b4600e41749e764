#!/usr/bin/env python
"""Federated round split, server aggregation vs NVFlare, server memory.

Three measurements, the peer run in the same process on the same inputs:

1. **Round time split** (3 sites), as ``fedimg bench federation`` (:func:`fedimg.bench.federation.round_split`).
2. **Server aggregation time** for K updates of a real model's shapes (MONAI SegResNet,
   ``init_filters=16``, 4.7 M parameters): fedimg's :class:`FedimgAggregator` (validation +
   streaming ``WeightedAccumulator``; ``accept_model`` per update, ``aggregate_model``) vs
   NVFlare's stock ``InTimeAccumulateWeightedAggregator`` (``accept`` per Shareable,
   ``aggregate``), same difference arrays and weights, median of ``--repeats``, the two run
   one after the other each repeat.
3. **Server peak memory** vs number of sites (K = 4, 16): updates arrive one at a time (each
   dropped after ``accept``), tracemalloc peak of the aggregator's own allocations.

    python benchmarks/federation.py --quick --json bench-results/federation.json
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time

import _common
from fedimg.bench import federation

__all__ = ["add_arguments", "run"]

DESCRIPTION = "federated round time split (3 sites), server aggregation vs NVFlare InTimeAccumulateWeightedAggregator, server memory vs sites"


def add_arguments(p: argparse.ArgumentParser) -> None:
    federation.add_arguments(p)
    p.add_argument("--quick", action="store_true", help="toy-task SimEnv run of 2 rounds, K=4 16, 3 repeats (~2 min)")


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
    for site, upd, n in federation.updates(params, k):
        model = FLModel(params=upd, params_type=ParamsType.DIFF, metrics={"val_dice_mean": 0.5},
                        meta={"client_name": site, "site": site, "NUM_STEPS_CURRENT_ROUND": n})
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
    from nvflare.apis.event_type import EventType
    from nvflare.apis.fl_constant import ReservedKey
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import InTimeAccumulateWeightedAggregator
    from nvflare.app_common.app_constant import AppConstants

    agg = InTimeAccumulateWeightedAggregator(expected_data_kind=DataKind.WEIGHT_DIFF)
    ctx = FLContext()
    agg.handle_event(EventType.START_RUN, ctx)  # builds its per-DXO aggregators, as in a real run
    ctx.set_prop(AppConstants.CURRENT_ROUND, 0, private=True, sticky=False)
    busy = 0.0
    for site, upd, n in federation.updates(params, k):
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


def _alternate(k: int, repeats: int, params, device: str) -> tuple[float, float]:
    """Median fedimg and NVFlare round times, the two run one after the other each repeat."""
    t_f, t_n = [], []
    for _ in range(repeats):
        t_f.append(_fedimg_round(params, k, device))
        t_n.append(_nvflare_round(params, k))
    return statistics.median(t_f), statistics.median(t_n)


def run(args: argparse.Namespace) -> int:
    from fedimg.io import write_json

    logging.getLogger("nvflare").setLevel(logging.CRITICAL)  # its per-update warnings would cost it time
    logging.getLogger("fedimg.fl.nvflare.aggregator").setLevel(logging.WARNING)
    device, results, params, n_params = federation.setup(
        args, f"{'K':>3} {'fedimg s':>9} {'NVFlare s':>10} {'speed-up':>9} {'fedimg MB':>10} {'NVFlare MB':>11} {'model MB':>9}")
    agg_rows = []
    for k in args.ks:
        _fedimg_round(params, k, device)  # warm-ups: numba compiles or loads its cache, first-touch of buffers
        _nvflare_round(params, k)
        t_f, t_n = _alternate(k, args.repeats, params, device)
        m_f = federation.peak_aggregator_only(_fedimg_round, params, k, "cpu") / 2**20
        m_n = federation.peak_aggregator_only(_nvflare_round, params, k) / 2**20
        row = {"k": k, "fedimg_s": t_f, "nvflare_s": t_n, "speedup": t_n / t_f, "fedimg_peak_mb": m_f,
               "nvflare_peak_mb": m_n, "model_mb": n_params * 4 / 2**20}
        agg_rows.append(row)
        print(f"{k:>3} {t_f:9.3f} {t_n:10.3f} {t_n / t_f:8.2f}x {m_f:10.1f} {m_n:11.1f} {row['model_mb']:9.1f}")
    results["aggregation"] = agg_rows
    if args.json:
        write_json(args.json, results)
    return 0


def main(argv=None) -> int:
    return _common.main(_common.parser(DESCRIPTION, add_arguments), run, argv, level=logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
