"""FedimgAggregator driven directly through NVFlare's ModelAggregator API (no processes)."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.errors import ConfigError

pytest.importorskip("nvflare")

from nvflare.apis.event_type import EventType  # noqa: E402
from nvflare.apis.fl_context import FLContext  # noqa: E402
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType  # noqa: E402
from nvflare.app_common.abstract.model import make_model_learnable  # noqa: E402
from nvflare.app_common.app_constant import AppConstants  # noqa: E402
from nvflare.app_common.app_event_type import AppEventType  # noqa: E402

from fedimg.fl.nvflare.aggregator import FedimgAggregator  # noqa: E402
from fedimg.fl.server.state import load_params, read_metrics  # noqa: E402
from fedimg.fl.server.strategies import StrategyConfig  # noqa: E402
from fedimg.fl.server.validation import ValidationConfig  # noqa: E402

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
                   metrics=metrics or {"val_dice_mean": 0.5}, meta={"client_name": site, "site": site, "NUM_STEPS_CURRENT_ROUND": samples})


def test_fedavg_round_checkpoints_and_logs(tmp_path):
    agg = FedimgAggregator(strategy=StrategyConfig(name="fedavg").to_dict(), run_dir=str(tmp_path),
                           validation=ValidationConfig(min_sites=1).to_dict())
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
    agg = FedimgAggregator(run_dir=str(tmp_path), validation=ValidationConfig(min_sites=2).to_dict())
    _start(agg)
    agg.accept_model(_result("site-1", [1, 1, 1]))
    agg.accept_model(_result("site-2", [1e9, 1e9, 1e9]))  # norm outlier vs the global model
    out = agg.aggregate_model()
    np.testing.assert_array_equal(out.params["w"], 0)
    (entry,) = read_metrics(tmp_path)
    assert entry["skipped"] and "norm outlier" in entry["rejected"][0]["reason"]


def test_fedadam_moments_survive_a_server_restart(tmp_path):
    agg = FedimgAggregator(strategy=StrategyConfig(name="fedadam", server_lr=0.1).to_dict(), run_dir=str(tmp_path))
    _start(agg)
    agg.accept_model(_result("site-1", [1, -1, 0.5]))
    first = agg.aggregate_model().params["w"]
    np.testing.assert_allclose(first, 0.1 * 0.1 * np.array([1, -1, 0.5]) / (0.1 * np.abs([1, -1, 0.5]) + 1e-3), rtol=1e-5)
    restarted = FedimgAggregator(strategy=StrategyConfig(name="fedadam", server_lr=0.1).to_dict(), run_dir=str(tmp_path))
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
        agg = FedimgAggregator(strategy=StrategyConfig(name=strategy, server_lr=0.1), device=device,
                               run_dir=str(tmp_path / device))
        _start(agg)
        for i, u in enumerate(ups):
            agg.accept_model(_result(f"site-{i}", u, samples=5 + i))
        outs.append(agg.aggregate_model().params["w"])
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-7)


def test_nan_and_scaled_sites_never_touch_the_aggregate(tmp_path):
    """Rejected updates are refused after the one pass that folds them into a scratch sum: the
    round's result is bit for bit the round without them. Read-only arrays (as NVFlare
    deserialises them) are taken as they are."""
    rng = np.random.default_rng(3)
    big = {"w": rng.standard_normal(50_000).astype(np.float32), "n": np.array(4, np.int64)}
    ups = [{"w": rng.standard_normal(50_000).astype(np.float32) * 0.01, "n": np.array(i, np.int64)} for i in (1, 2, 3)]
    nan = {k: v.copy() for k, v in ups[0].items()}
    nan["w"][49_999] = np.nan
    scaled = {"w": ups[1]["w"] * np.float32(1e6), "n": np.array(9, np.int64)}
    for u in ups + [nan, scaled]:
        for v in u.values():
            v.flags.writeable = False

    def run(updates, sub):
        agg = FedimgAggregator(run_dir=str(tmp_path / sub))
        _start(agg, global_=big)
        for site, u, samples in updates:
            agg.accept_model(FLModel(params=u, params_type=ParamsType.DIFF, metrics={},
                                     meta={"client_name": site, "site": site, "NUM_STEPS_CURRENT_ROUND": samples}))
        return agg.aggregate_model().params, read_metrics(tmp_path / sub)[0]

    good = [("site-a", ups[0], 10), ("site-b", ups[1], 12), ("site-c", ups[2], 14)]
    clean, _ = run(good, "clean")
    mixed, entry = run([good[0], ("site-nan", nan, 50), good[1], ("site-x1e6", scaled, 50), good[2]], "mixed")
    assert [r["site"] for r in entry["rejected"]] == ["site-nan", "site-x1e6"]
    assert "non-finite" in entry["rejected"][0]["reason"] and "norm outlier" in entry["rejected"][1]["reason"]
    for k in clean:
        np.testing.assert_array_equal(mixed[k], clean[k])
    assert int(mixed["n"]) == 3  # the scaled site's integer buffer (9) did not count either
    w = np.array([10, 12, 14], np.float64)
    np.testing.assert_allclose(mixed["w"], sum(wk * u["w"] for wk, u in zip(w, ups)) / w.sum(), rtol=1e-5, atol=1e-8)
    assert entry["sites"]["site-a"]["update_norm"] == pytest.approx(np.hypot(np.linalg.norm(ups[0]["w"]), 1), rel=1e-6)


def test_strategy_and_checks_arrive_as_one_json_argument_each(tmp_path):
    import json

    strategy = StrategyConfig(name="trimmed_mean", trim_ratio=0.2)
    checks = ValidationConfig(max_rel_norm=3.0, min_sites=2)
    agg = FedimgAggregator(strategy=strategy.to_dict(), validation=checks.to_dict(), run_dir=str(tmp_path))
    # the attributes NVFlare writes into config_fed_server.json are plain JSON objects
    assert json.loads(json.dumps(agg.strategy)) == agg.strategy
    assert StrategyConfig.from_dict(agg.strategy) == strategy and ValidationConfig.from_dict(agg.validation) == checks
    assert FedimgAggregator(strategy=strategy).strategy == agg.strategy  # a config object is taken too
    assert FedimgAggregator(strategy=strategy.to_json()).strategy == agg.strategy  # and its JSON text
    assert StrategyConfig.from_dict(FedimgAggregator().strategy) == StrategyConfig()
    with pytest.raises(ConfigError):
        FedimgAggregator(strategy='{"name": "fedsgd"}')


@pytest.mark.parametrize("threads", [1, 2])
def test_fold_threads_are_set_in_the_thread_that_folds(tmp_path, threads):
    """NVFlare calls accept/aggregate from its own threads: the count is set there, not only in the main thread."""
    import threading

    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("numba has fewer threads")
    agg = FedimgAggregator(run_dir=str(tmp_path), server_threads=threads)
    _start(agg)
    other = 3 - threads if numba.config.NUMBA_NUM_THREADS >= 2 else threads
    seen = {}

    def nvflare_thread():
        numba.set_num_threads(other)  # what this thread had before: not the server's count
        agg.accept_model(_result("site-1", [1, 1, 1]))
        agg.accept_model(_result("site-2", [3, 3, 3]))
        seen["out"] = agg.aggregate_model()  # the first round's updates are held and folded here
        seen["after"] = numba.get_num_threads()

    t = threading.Thread(target=nvflare_thread)
    t.start()
    t.join()
    np.testing.assert_allclose(seen["out"].params["w"], [2, 2, 2])
    (entry,) = read_metrics(tmp_path)
    assert entry["fold_threads"] == threads and seen["after"] == threads


def test_an_update_stating_another_site_is_rejected_and_stops_the_run(tmp_path):
    """The race NVFlare's simulator once lost: site-1's worker ran as site-2 (site-2's data, sent as site-1's)."""
    from fedimg.fl.nvflare.checks import wrong_site_failure

    agg = FedimgAggregator(run_dir=str(tmp_path), validation=ValidationConfig(min_sites=1).to_dict())
    _start(agg)
    panics = []
    agg.system_panic = lambda reason, fl_ctx: panics.append(reason)
    impostor = _result("site-1", [1, 1, 1])
    impostor.meta["site"] = "site-2"
    agg.accept_model(impostor)
    agg.accept_model(_result("site-2", [2, 2, 2]))
    agg.aggregate_model()
    metrics = read_metrics(tmp_path)
    assert metrics[0]["accepted"] == ["site-2"]
    assert [r["site"] for r in metrics[0]["rejected"]] == ["site-1"]
    assert len(panics) == 1 and "stated site 'site-2' is not 'site-1'" in panics[0]
    err = wrong_site_failure(tmp_path, metrics)
    assert err is not None and "round 1: rejected the update from site-1: stated site 'site-2'" in str(err)
    assert wrong_site_failure(tmp_path, [{"round": 1, "rejected": [{"site": "site-3", "reason": "non-finite"}]}]) is None


def test_a_round_of_honest_sites_does_not_stop_the_run(tmp_path):
    agg = FedimgAggregator(run_dir=str(tmp_path), validation=ValidationConfig(min_sites=1).to_dict())
    _start(agg)
    panics = []
    agg.system_panic = lambda reason, fl_ctx: panics.append(reason)
    agg.accept_model(_result("site-1", [1, 1, 1]))
    agg.accept_model(_result("site-2", [np.nan, 0, 0]))  # an ordinary rejection: the run goes on
    agg.aggregate_model()
    assert panics == [] and read_metrics(tmp_path)[0]["accepted"] == ["site-1"]


@pytest.mark.parametrize("first_round", [True, False])
def test_the_sum_does_not_depend_on_which_site_arrives_first(tmp_path, first_round):
    """float32 sums depend on the order of their additions: 1 + 3e-8 + 3e-8 is 1.0 one way and 1.0000001
    the other. Folded in the sites' name order, every arrival order gives the same bits (a seed's run is
    reproducible however the sites' training times race). ``first_round``: the held round, judged
    against itself; otherwise a later round, judged against the previous round's median norm."""
    updates = {"site-1": [1.0, 1.0, 1.0], "site-2": [3e-8, 3e-8, 3e-8], "site-3": [3e-8, 3e-8, 3e-8]}
    results = []
    for order in (["site-1", "site-2", "site-3"], ["site-2", "site-3", "site-1"], ["site-3", "site-1", "site-2"]):
        agg = FedimgAggregator(strategy=StrategyConfig(name="fedavg").to_dict(), run_dir=str(tmp_path / "-".join(order)),
                               validation=ValidationConfig(min_sites=1, max_norm_ratio=1e12).to_dict())
        _start(agg)
        if not first_round:  # a first round sets the reference norm
            for site in order:
                agg.accept_model(_result(site, [1.0, 1.0, 1.0]))
            agg.aggregate_model()
            _start(agg, rnd=1)
        for site in order:
            agg.accept_model(_result(site, updates[site]))
        out = agg.aggregate_model()
        assert sorted(read_metrics(tmp_path / "-".join(order))[-1]["accepted"]) == sorted(updates)
        results.append(out.params["w"].tobytes())
    assert results[0] == results[1] == results[2]
