"""FedimgAggregator driven directly through NVFlare's ModelAggregator API (no processes)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nvflare")

from nvflare.apis.event_type import EventType  # noqa: E402
from nvflare.apis.fl_context import FLContext  # noqa: E402
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType  # noqa: E402
from nvflare.app_common.abstract.model import make_model_learnable  # noqa: E402
from nvflare.app_common.app_constant import AppConstants  # noqa: E402
from nvflare.app_common.app_event_type import AppEventType  # noqa: E402

from fedimg.fl.aggregator import FedimgAggregator  # noqa: E402
from fedimg.fl.state import load_params, read_metrics  # noqa: E402

GLOBAL = {"w": np.array([1.0, 2.0, 3.0], np.float32), "n": np.array(4, np.int64)}


def _start(agg, rnd=0, global_=GLOBAL):
    ctx = FLContext()
    agg.handle_event(EventType.START_RUN, ctx)
    ctx.set_prop(AppConstants.CURRENT_ROUND, rnd, private=True, sticky=False)
    ctx.set_prop(AppConstants.GLOBAL_MODEL, make_model_learnable({k: v.copy() for k, v in global_.items()}, {}),
                 private=True, sticky=False)
    agg.handle_event(AppEventType.ROUND_STARTED, ctx)
    agg.reset_stats()
    return ctx


def _result(site, w, n=1, samples=10, params_type=ParamsType.DIFF, metrics=None):
    return FLModel(params={"w": np.asarray(w, np.float32), "n": np.array(n, np.int64)}, params_type=params_type,
                   metrics=metrics or {"val_dice_mean": 0.5}, meta={"client_name": site, "NUM_STEPS_CURRENT_ROUND": samples})


def test_fedavg_round_checkpoints_and_logs(tmp_path):
    agg = FedimgAggregator(strategy="fedavg", run_dir=str(tmp_path), min_sites=1)
    _start(agg)
    agg.accept_model(_result("site-1", [1, 1, 1], samples=10, metrics={"val_dice_mean": 0.2, "train_loss": 1.0}))
    agg.accept_model(_result("site-2", [4, 4, 4], samples=30, metrics={"val_dice_mean": 0.6}))
    agg.accept_model(_result("site-3", [np.nan, 0, 0]))
    out = agg.aggregate_model()
    assert out.params_type == ParamsType.DIFF
    np.testing.assert_allclose(out.params["w"], [3.25, 3.25, 3.25])  # (10*1 + 30*4) / 40
    assert out.params["n"] == 1  # integer buffers: max of the differences
    assert out.metrics["dice_mean"] == pytest.approx((10 * 0.2 + 30 * 0.6) / 40)
    params, meta = load_params(tmp_path / "rounds" / "round-001.safetensors")
    np.testing.assert_allclose(params["w"], GLOBAL["w"] + 3.25)
    assert params["n"].dtype == np.int64 and params["n"] == 5 and meta["round"] == 1
    (entry,) = read_metrics(tmp_path)
    assert entry["accepted"] == ["site-1", "site-2"] and entry["sites"]["site-1"]["samples"] == 10
    assert entry["rejected"][0]["site"] == "site-3" and "non-finite" in entry["rejected"][0]["reason"]
    assert entry["validation"]["per_site"]["site-2"]["dice_mean"] == 0.6 and entry["aggregation_seconds"] > 0


def test_full_weights_are_turned_into_differences(tmp_path):
    agg = FedimgAggregator(run_dir=str(tmp_path))
    _start(agg)
    agg.accept_model(_result("site-1", GLOBAL["w"] + 2, n=6, params_type=ParamsType.FULL))
    out = agg.aggregate_model()
    np.testing.assert_allclose(out.params["w"], [2, 2, 2])


def test_too_few_valid_updates_leave_the_model_unchanged(tmp_path):
    agg = FedimgAggregator(run_dir=str(tmp_path), min_sites=2)
    _start(agg)
    agg.accept_model(_result("site-1", [1, 1, 1]))
    agg.accept_model(_result("site-2", [1e9, 1e9, 1e9]))  # norm outlier vs the global model
    out = agg.aggregate_model()
    np.testing.assert_array_equal(out.params["w"], 0)
    (entry,) = read_metrics(tmp_path)
    assert entry["skipped"] and "norm outlier" in entry["rejected"][0]["reason"]


def test_fedadam_moments_survive_a_server_restart(tmp_path):
    agg = FedimgAggregator(strategy="fedadam", server_lr=0.1, run_dir=str(tmp_path))
    _start(agg)
    agg.accept_model(_result("site-1", [1, -1, 0.5]))
    first = agg.aggregate_model().params["w"]
    np.testing.assert_allclose(first, 0.1 * 0.1 * np.array([1, -1, 0.5]) / (0.1 * np.abs([1, -1, 0.5]) + 1e-3), rtol=1e-5)
    restarted = FedimgAggregator(strategy="fedadam", server_lr=0.1, run_dir=str(tmp_path))
    _start(restarted, rnd=1)
    restarted.accept_model(_result("site-1", [1, -1, 0.5]))
    _start(agg, rnd=1)
    agg.accept_model(_result("site-1", [1, -1, 0.5]))
    np.testing.assert_allclose(restarted.aggregate_model().params["w"], agg.aggregate_model().params["w"], rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("strategy", ["fedavg", "fedadam", "median"])
def test_gpu_server_matches_cpu(tmp_path, strategy):
    rng = np.random.default_rng(0)
    ups = [rng.standard_normal(3).astype(np.float32) for _ in range(3)]
    outs = []
    for device in ("cpu", "cuda"):
        agg = FedimgAggregator(strategy=strategy, server_lr=0.1, device=device, run_dir=str(tmp_path / device))
        _start(agg)
        for i, u in enumerate(ups):
            agg.accept_model(_result(f"site-{i}", u, samples=5 + i))
        outs.append(agg.aggregate_model().params["w"])
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-7)
