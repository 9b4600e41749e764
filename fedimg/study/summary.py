"""The study's numbers from its per-seed records: intervals, compute, equal-budget table.

:func:`summarise` takes ``results`` (``{"sites", "seeds": [record, ...], "protocol"}``, the
records of :func:`fedimg.study.runner.run_seed`) and returns, for every arm, the mean test
score and its 95 % bootstrap interval (over test cases and seeds,
:mod:`fedimg.study.intervals`), the federated / centralised ratio with its interval, the
mean and best single-site model, per-evaluation-site means, the compute each arm needed
(epochs per case, optimizer steps, training samples) and the validation score of every arm
at equal epochs per case (the equal-budget table).

>>> rec = {"arms": {a: {"test": {"site-1": {"c1": v, "c2": v}}, "best_check": 0, "stop_check": 0,
...        "curve": [{"epochs_per_case": 2, "val": v, "samples": 8, "steps": 4, "seconds": 1.0}]}
...        for a, v in (("federated", 0.6), ("centralised", 0.8), ("site-1 alone", 0.4))}}
>>> s = summarise({"sites": ["site-1"], "seeds": [rec], "protocol": {"n_boot": 50}})
>>> s["arms"]["federated"]["mean"], round(s["ratio"]["mean"], 6)
(0.6, 0.75)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedimg.study.intervals import bootstrap_mean, bootstrap_ratio

__all__ = ["summarise", "arm_names", "case_scores", "common_cases", "to_fraction"]


def arm_names(record: dict[str, Any]) -> list[str]:
    """Arms in report order: federated arms, centralised, then each site alone."""
    names = list(record["arms"])
    fed = [a for a in names if a.startswith("federated")]
    alone = sorted(a for a in names if a.endswith(" alone"))
    return [*fed, *(["centralised"] if "centralised" in names else []), *alone]


def case_scores(record: dict[str, Any], arm: str, sites: list[str], cases: list[tuple[str, str]]) -> list[float]:
    """``arm``'s test scores of one seed on ``cases`` (``(site, case_id)`` pairs, in order)."""
    if arm == "site alone (mean)":
        alone = [f"{s} alone" for s in sites if f"{s} alone" in record["arms"]]
        return [float(np.mean([record["arms"][a]["test"][s][c] for a in alone])) for s, c in cases]
    test = record["arms"][arm]["test"]
    return [float(test[s][c]) for s, c in cases]


def common_cases(record: dict[str, Any], sites: list[str]) -> list[tuple[str, str]]:
    """Test cases that every arm scored with a finite value (so every mean covers the same cases)."""
    arms = record["arms"].values()
    first = next(iter(arms))["test"]
    return [(s, c) for s in sites for c in sorted(first.get(s, {}))
            if all(np.isfinite(a["test"].get(s, {}).get(c, np.nan)) for a in arms)]


def to_fraction(curve: list[dict[str, float]], best: int, fraction: float = 0.95) -> dict[str, float] | None:
    """The first point of ``curve`` whose validation reaches ``fraction`` of the kept model's."""
    target = fraction * curve[best]["val"]
    for p in curve[: best + 1]:
        if np.isfinite(p["val"]) and p["val"] >= target:
            return p
    return None


def _compute(records: list[dict[str, Any]], arm: str) -> dict[str, float]:
    """Mean over seeds of the compute an arm took (to its kept model, to its stop, to 95 %)."""
    rows = []
    for r in records:
        a = r["arms"][arm]
        c, b, s = a["curve"], a["best_check"], a["stop_check"]
        p95 = to_fraction(c, b)
        row = {"best_epochs_per_case": c[b]["epochs_per_case"], "stop_epochs_per_case": c[s]["epochs_per_case"],
               "steps_to_stop": c[s]["steps"], "samples_to_stop": c[s]["samples"], "seconds_to_stop": c[s]["seconds"],
               "samples_to_95": p95["samples"] if p95 else np.nan, "val_best": c[b]["val"],
               "at_budget": float(b == s)}  # kept model = last check: still improving when the budget ran out
        if "slowest_site_seconds" in c[s]:
            row["slowest_site_seconds_to_stop"] = c[s]["slowest_site_seconds"]
            row["slowest_site_samples_per_round"] = c[s]["slowest_site_samples_per_round"]
        rows.append(row)
    return {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}


def _equal_budget(records: list[dict[str, Any]], arms: list[str]) -> dict[str, dict[str, float | None]]:
    """Mean validation score per arm at each epochs-per-case point every seed of it reached."""
    points = sorted({p["epochs_per_case"] for r in records for a in arms for p in r["arms"][a]["curve"]})
    table: dict[str, dict[str, float | None]] = {}
    for e in points:
        row: dict[str, float | None] = {}
        for a in arms:
            vals = [p["val"] for r in records for p in r["arms"][a]["curve"] if p["epochs_per_case"] == e]
            row[a] = float(np.mean(vals)) if len(vals) == len(records) and np.all(np.isfinite(vals)) else None
        table[str(e)] = row
    return table


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Every headline number of the study (see the module docstring)."""
    sites, records = results["sites"], results["seeds"]
    n_boot = int(results.get("protocol", {}).get("n_boot", 2000))
    arms = arm_names(records[0])
    cases = [common_cases(r, sites) for r in records]
    alone = [a for a in arms if a.endswith(" alone")]
    scored = arms + (["site alone (mean)"] if alone else [])
    scores = {a: [case_scores(r, a, sites, cs) for r, cs in zip(records, cases)] for a in scored}
    out: dict[str, Any] = {"arms": {}, "num_test_cases": [len(c) for c in cases], "seeds": len(records)}
    for a in scored:
        m, lo, hi = bootstrap_mean(scores[a], n_boot=n_boot)
        per_site = {s: float(np.mean([v for sc, cs in zip(scores[a], cases) for v, (si, _) in zip(sc, cs) if si == s]))
                    for s in sites}
        out["arms"][a] = {"mean": m, "low": lo, "high": hi, "per_site": per_site}
    for a in arms:
        out["arms"][a]["compute"] = _compute(records, a)
    if alone:
        best = max(alone, key=lambda a: out["arms"][a]["mean"])
        out["best_single_site"] = {"arm": best, "mean": out["arms"][best]["mean"]}
    if "federated" in scores and "centralised" in scores:
        r, lo, hi = bootstrap_ratio(scores["federated"], scores["centralised"], n_boot=n_boot)
        out["ratio"] = {"mean": r, "low": lo, "high": hi}
        fed, cen = out["arms"]["federated"]["compute"], out["arms"]["centralised"]["compute"]
        out["compute_ratio_to_95"] = fed["samples_to_95"] / cen["samples_to_95"] if cen["samples_to_95"] else None
        out["targets"] = {
            "federated >= 97% of centralised": bool(r >= 0.97),
            "federated >= mean single site + 0.05": bool(alone) and bool(
                out["arms"]["federated"]["mean"] >= out["arms"]["site alone (mean)"]["mean"] + 0.05),
            "federated >= best single site": bool(alone) and bool(
                out["arms"]["federated"]["mean"] >= out["best_single_site"]["mean"]),
            "compute to 95% <= 1.5x centralised": bool(out["compute_ratio_to_95"] is not None
                                                       and out["compute_ratio_to_95"] <= 1.5),
        }
    for a in (x for x in arms if x.startswith("federated (")):
        r, lo, hi = bootstrap_ratio(scores[a], scores["centralised"], n_boot=n_boot)
        out["arms"][a]["ratio_to_centralised"] = {"mean": r, "low": lo, "high": hi}
    out["equal_budget"] = _equal_budget(records, arms)
    return out
