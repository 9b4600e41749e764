"""The study's summary (means, ratio, compute to 95 %, equal budget), report and merge, on hand-made records."""

from __future__ import annotations

import pytest

from fedimg.errors import InputError
from fedimg.io import read_json, write_json
from fedimg.study.summary import summarise, to_fraction

SITES = ["site-1", "site-2"]


def _arm(scores: dict[str, dict[str, float]], vals: list[float], per_epoch_samples: int, fed: bool = False) -> dict:
    curve = [{"epochs_per_case": 2 * (i + 1), "val": v, "samples": 2 * (i + 1) * per_epoch_samples,
              "steps": (i + 1) * 10, "seconds": float(i + 1)} for i, v in enumerate(vals)]
    if fed:
        for p in curve:
            p.update(slowest_site_seconds=p["seconds"] / 2, slowest_site_samples_per_round=6)
    best = max(range(len(vals)), key=lambda i: vals[i])
    return {"test": scores, "curve": curve, "best_check": best, "stop_check": len(vals) - 1}


def _record(seed: int, bump: float = 0.0) -> dict:
    t = lambda a, b, c: {"site-1": {"c1": a + bump, "c2": b + bump}, "site-2": {"c3": c + bump}}  # noqa: E731
    return {"seed": seed, "split": {s: {"train": ["x"], "val": ["y"], "test": ["z"]} for s in SITES}, "arms": {
        "federated": _arm(t(0.8, 0.6, 0.7), [0.2, 0.5, 0.6, 0.58], 10, fed=True),
        "centralised": _arm(t(0.8, 0.8, 0.8), [0.6, 0.7, 0.65], 10),
        "site-1 alone": _arm(t(0.7, 0.5, 0.3), [0.4, 0.5], 6),
        "site-2 alone": _arm(t(0.3, 0.3, 0.6), [0.3, 0.6], 4),
    }}


def _results(records: list[dict]) -> dict:
    return {"task": "brats", "key_metric": "dice_mean", "sites": SITES, "seeds": records,
            "protocol": {"n_boot": 400, "check_every": 2, "patience": 2, "max_epochs": 8, "test_fraction": 0.25,
                         "seeds": len(records), "base_seed": 0},
            "federation": {"strategy": {"name": "fedavg"}, "compare": [], "local_epochs": 2, "max_rounds": 4},
            "train_config": {"seed": 0, "roi": [32, 32, 32]}, "seconds": 1.0}


def test_summary_by_hand():
    s = summarise(_results([_record(0)]))
    a = s["arms"]
    assert a["federated"]["mean"] == pytest.approx(0.7) and a["centralised"]["mean"] == pytest.approx(0.8)
    assert a["federated"]["per_site"] == pytest.approx({"site-1": 0.7, "site-2": 0.7})
    # per case, the mean of the two single-site models: (0.5, 0.4, 0.45) -> 0.45
    assert a["site alone (mean)"]["mean"] == pytest.approx(0.45)
    assert s["best_single_site"] == {"arm": "site-1 alone", "mean": pytest.approx(0.5)}
    assert s["ratio"]["mean"] == pytest.approx(0.875)
    assert a["federated"]["low"] <= 0.7 <= a["federated"]["high"]
    # federated: best 0.6 at check 2, 95 % of it (0.57) first reached there -> 60 samples;
    # centralised: best 0.7, 0.665 first reached at check 1 -> 40 samples
    assert a["federated"]["compute"]["samples_to_95"] == 60 and a["centralised"]["compute"]["samples_to_95"] == 40
    assert s["compute_ratio_to_95"] == pytest.approx(1.5)
    assert a["federated"]["compute"]["stop_epochs_per_case"] == 8 and a["federated"]["compute"]["steps_to_stop"] == 40
    assert a["federated"]["compute"]["slowest_site_seconds_to_stop"] == 2.0
    # still improving when the budget ran out (kept model = last check): the single-site arms, not the others
    assert [a[x]["compute"]["at_budget"] for x in ("federated", "centralised", "site-1 alone", "site-2 alone")] == \
        [0, 0, 1, 1]
    assert s["targets"] == {"federated >= 97% of centralised": False, "federated >= mean single site + 0.05": True,
                            "federated >= best single site": True, "compute to 95% <= 1.5x centralised": True}
    # equal budget: validation at equal epochs per case; an arm that stopped has no value
    assert s["equal_budget"]["4"] == {"federated": 0.5, "centralised": 0.7, "site-1 alone": 0.5, "site-2 alone": 0.6}
    assert s["equal_budget"]["8"]["centralised"] is None and s["equal_budget"]["8"]["federated"] == 0.58


def test_to_fraction():
    curve = [{"val": v, "samples": i} for i, v in enumerate([0.1, 0.96, 0.5, 1.0])]
    assert to_fraction(curve, 3)["samples"] == 1 and to_fraction(curve, 0)["samples"] == 0


def test_report_and_merge(tmp_path):
    from fedimg.study.report import write_report
    from fedimg.study.runner import merge_studies

    for seed, bump in ((0, 0.0), (1, 0.05)):
        r = _results([_record(seed, bump)])
        r["protocol"]["base_seed"] = seed
        r["summary"] = summarise(r)
        write_json(tmp_path / f"s{seed}" / "results.json", r)
    merged = merge_studies([tmp_path / "s0", tmp_path / "s1"], tmp_path / "m")
    assert merged["summary"]["seeds"] == 2 and merged["summary"]["num_test_cases"] == [3, 3]
    assert merged["summary"]["arms"]["federated"]["mean"] == pytest.approx(0.725)
    report = (tmp_path / "m" / "report.md").read_text()
    assert "| federated | **0.725** [" in report and "Equal-budget table" in report and "95 %" in report
    (capped,) = [ln for ln in report.splitlines() if "Budget-limited, not converged" in ln]
    assert "site-1 alone (2/2)" in capped and "site-2 alone (2/2)" in capped and "federated" not in capped
    assert (tmp_path / "m" / "learning_curves.png").stat().st_size > 1000
    assert read_json(tmp_path / "m" / "results.json")["protocol"]["seeds"] == 2
    with pytest.raises(InputError, match="repeats seed"):
        merge_studies([tmp_path / "s0", tmp_path / "s0"], tmp_path / "m2")
    other = read_json(tmp_path / "s1" / "results.json")
    other["protocol"]["patience"] = 5
    write_json(tmp_path / "s2" / "results.json", other)
    with pytest.raises(InputError, match="other sites, protocol"):
        merge_studies([tmp_path / "s0", tmp_path / "s2"], tmp_path / "m3")
    write_report(tmp_path / "m", merged)  # idempotent


def test_report_names_a_federated_lr_scale(tmp_path):
    """`--federated-lr-scale F` (results' federation.lr_scale): the report says the federated arms used F x the lr."""
    from fedimg.study.report import write_report

    r = _results([_record(0, 0.0)])
    r["summary"] = summarise(r)
    assert "federated-lr-scale" not in write_report(tmp_path / "a", r).read_text()
    r["federation"]["lr_scale"] = 2.0
    assert "2 x the other arms' peak lr" in write_report(tmp_path / "b", r).read_text()


def test_report_names_a_federated_batch_size(tmp_path):
    """`--federated-batch-size B` (results' federation.batch_size): the report names both batches."""
    from fedimg.study.report import write_report

    r = _results([_record(0, 0.0)])
    r["summary"] = summarise(r)
    assert "federated-batch-size" not in write_report(tmp_path / "a", r).read_text()
    r["federation"]["batch_size"] = 1
    r["train_config"] = {**r.get("train_config", {}), "batch_size": 2}
    text = write_report(tmp_path / "b", r).read_text()
    assert "sites train with batch 1, the other arms with batch 2 (--federated-batch-size)" in text
