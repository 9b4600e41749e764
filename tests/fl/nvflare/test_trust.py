"""A server that trusts nothing it can check: the aggregator driven through NVFlare's
ModelAggregator API with the brats and tiles metric sets (no processes)."""

from __future__ import annotations

import logging
import zlib

import numpy as np
import pytest

pytest.importorskip("nvflare")

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType  # noqa: E402

from fedimg.fl.nvflare.aggregator import FedimgAggregator  # noqa: E402
from fedimg.fl.server.state import read_metrics  # noqa: E402
from fedimg.fl.server.validation import ValidationConfig  # noqa: E402

from test_aggregator import _start  # noqa: E402  (pytest puts tests/fl/nvflare on sys.path; torchstain ships a top-level `tests` package)

BRATS_METRICS = {"val_dice_mean": 0.4, "val_dice_tc": 0.3, "val_dice_wt": 0.5, "val_dice_et": 0.4, "val_num_cases": 2.0,
                 "train_loss": 0.8, "train_lr": 1e-3, "train_voxels_per_s": 1e5, "train_dp_epsilon": 3.2}
TILE_METRICS = {"val_auc": 0.7, "val_accuracy": 0.6, "val_loss": 0.6, "val_n": 20.0, "train_loss": 0.6,
                "train_tiles_per_s": 300.0, "train_seconds_train": 2.0}


def _update(site, scale=1.0, samples=10, metrics=None, meta_extra=None, task="brats"):
    rng = np.random.default_rng(zlib.crc32(site.encode()))  # not hash(): it changes with PYTHONHASHSEED
    w = rng.normal(size=3)
    w = (w / np.linalg.norm(w) * 0.01 * scale).astype(np.float32)  # every site's norm 0.01 x scale, exactly
    metrics = dict(metrics if metrics is not None else (BRATS_METRICS if task == "brats" else TILE_METRICS))
    meta = {"client_name": site, "site": site, "NUM_STEPS_CURRENT_ROUND": samples, "initial_metrics": dict(metrics), "props": {},
            **(meta_extra or {})}
    return FLModel(params={"w": w, "n": np.array(0, np.int64)}, params_type=ParamsType.DIFF, metrics=metrics, meta=meta)


def _agg(tmp_path, task="brats"):
    agg = FedimgAggregator(run_dir=str(tmp_path), validation=ValidationConfig(min_sites=1, task=task).to_dict())
    _start(agg)
    return agg


def _rejected(tmp_path, rnd=1):
    return {r["site"]: r["reason"] for r in read_metrics(tmp_path)[rnd - 1]["rejected"]}


@pytest.mark.parametrize("task", ["brats", "tiles"])
def test_a_site_claiming_1e9_samples_is_rejected(tmp_path, caplog, task):
    agg = _agg(tmp_path, task)
    with caplog.at_level(logging.WARNING):
        for site, n in (("site-1", 10), ("site-2", 12), ("site-3", int(1e9))):
            agg.accept_model(_update(site, samples=n, task=task))
        out = agg.aggregate_model()
    reasons = _rejected(tmp_path)
    assert set(reasons) == {"site-3"} and "exceeds the cap" in reasons["site-3"]
    assert "rejected update from site-3: sample count 1000000000" in caplog.text
    assert np.isfinite(out.params["w"]).all()


def test_sample_count_above_the_median_of_the_others_or_above_registration(tmp_path):
    agg = _agg(tmp_path)
    for site, n in (("site-1", 10), ("site-2", 12), ("site-3", 5000)):  # under the cap, 500x the others
        agg.accept_model(_update(site, samples=n))
    agg.aggregate_model()
    assert "median of the other sites' counts" in _rejected(tmp_path)["site-3"]
    # round 2: site-1 now declares more than it registered in round 1
    _start(agg, rnd=1)
    agg.accept_model(_update("site-1", samples=11))
    agg.accept_model(_update("site-2", samples=12))
    agg.aggregate_model()
    assert "registered" in _rejected(tmp_path, 2)["site-1"] and "site-2" not in _rejected(tmp_path, 2)


@pytest.mark.parametrize("first", [True, False])
def test_a_first_round_update_50x_the_others_is_rejected_whatever_its_arrival(tmp_path, caplog, first):
    agg = _agg(tmp_path)
    order = [("site-3", 50.0), ("site-1", 1.0), ("site-2", 1.0)]
    order = order if first else order[::-1]
    with caplog.at_level(logging.WARNING):
        for site, scale in order:
            agg.accept_model(_update(site, scale=scale))
        agg.aggregate_model()
    reasons = _rejected(tmp_path)
    assert set(reasons) == {"site-3"} and "median of the other sites' norms" in reasons["site-3"]
    assert "rejected update from site-3: norm outlier" in caplog.text
    (entry,) = read_metrics(tmp_path)
    assert entry["accepted"] == ["site-1", "site-2"]


UNIT = {"brats": "val_dice_mean", "tiles": "val_auc"}


@pytest.mark.parametrize("task", ["brats", "tiles"])
@pytest.mark.parametrize("bad", [
    lambda m, t: {"meta_extra": {"case_ids": ["BraTS_001"]}},           # an extra metadata field
    lambda m, t: {"metrics": {**m, "val_patient_age": 54.0}},          # a metric the task does not report
    lambda m, t: {"metrics": {**m, "train_loss": "0.1 /data/site-1"}},  # a string smuggled as a metric
    lambda m, t: {"metrics": {**m, UNIT[t]: 7.0}},                     # a Dice / AUC out of [0, 1]
    lambda m, t: {"samples": 2.5},                                     # not a whole count
    lambda m, t: {"meta_extra": {"props": {"site_path": "/data/site-1"}}},  # an unknown prop
], ids=["meta-field", "metric-name", "metric-string", "metric-range", "samples", "props"])
def test_a_payload_with_anything_unexpected_is_rejected_and_logged(tmp_path, caplog, task, bad):
    agg = _agg(tmp_path, task)
    base = BRATS_METRICS if task == "brats" else TILE_METRICS
    with caplog.at_level(logging.WARNING):
        agg.accept_model(_update("site-1", task=task))
        agg.accept_model(_update("site-2", task=task, **bad(base, task)))
        agg.aggregate_model()
    reasons = _rejected(tmp_path)
    assert set(reasons) == {"site-2"}
    assert "rejected update from site-2" in caplog.text


# what NVFlare 2.9 echoes back in ``props`` from round 2 on (seen in a real SimEnv run of the tile task)
ROUND2_PROPS = {"fedimg_round": 1, "nr_aggregated": 2, "current_round": 0,
                "metrics_aggregation_info": {"metric_source": "custom_aggregator_flmodel_metrics",
                                             "use_contribution_sites": False}}


def test_honest_brats_and_tile_payloads_pass_the_audit(tmp_path):
    for task in ("brats", "tiles"):
        agg = _agg(tmp_path / task, task)
        agg.accept_model(_update("site-1", task=task))
        agg.accept_model(_update("site-2", task=task, samples=20, meta_extra={"props": ROUND2_PROPS}))
        agg.aggregate_model()
        assert read_metrics(tmp_path / task)[0]["rejected"] == []


def test_client_dp_round_is_clipped_noised_and_accounted(tmp_path):
    agg = FedimgAggregator(run_dir=str(tmp_path), validation=ValidationConfig(min_sites=1, task="brats").to_dict(),
                           client_dp={"noise_multiplier": 1.0, "clip": 0.01, "sites": 3, "seed": 0})
    _start(agg)
    for site in ("site-1", "site-2"):
        agg.accept_model(_update(site))
    out = agg.aggregate_model()
    (entry,) = read_metrics(tmp_path)
    rep = entry["client_dp"]
    assert rep["rounds"] == 1 and rep["sites"] == 3 and rep["amplification"] is False
    assert rep["epsilon"] > 0 and "no privacy amplification" in rep["statement"]
    assert np.isfinite(out.params["w"]).all()
