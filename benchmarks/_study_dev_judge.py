"""``benchmarks/study_dev.py``'s judging: the pre-stated adoption rules of h12f (``compare``: larger
budgets against the smallest) and h12g / h12h (``judge``: a candidate arm against the default
federated arm per split), read from the harness's JSONs; no training.

>>> _kept({"val": [0.5, 0.7, 0.6, 0.6, 0.6], "mean_test": 0.4, "cpu_s": 9.0})["stopped_at"]
30
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["_kept", "compare", "judge", "write_results"]


def _kept(arm: dict, patience: int = 3, local: int = 6) -> dict:
    """An arm's patience-kept numbers, the stop recomputed from its validation curve; an older JSON
    (before ``test_patience``) gives the kept test Dice only where its best check over the budget is
    also the patience-kept one (else None)."""
    from fedimg.study.protocol import stop_point

    val = arm["val"]
    best, last = stop_point(val, patience)
    test = arm.get("mean_test_patience", arm["mean_test"] if best == int(np.argmax(val)) else None)
    return {"mean_test_patience": test, "kept_at": (best + 1) * local,
            "epochs_to_95": (next(i for i, v in enumerate(val) if v >= 0.95 * val[best]) + 1) * local,
            "stopped_at": (last + 1) * local, "stop_reason": "patience" if last - best >= patience else "budget",
            "cpu_s_to_stop": arm.get("cpu_s_to_stop"), "cpu_s": arm["cpu_s"]}


def compare(paths: list[str], fed: str = "nesterov-b0.8", cen: str = "central") -> dict:
    """Read this harness's JSONs (any budgets and seeds of arms ``fed`` and ``cen``) and judge every
    larger budget against the smallest by h12f's pre-stated rule (RESULTS.md): over the seeds both
    budgets have, (a) the mean federated / centralised ratio of the patience-kept models' test Dice
    rises, (b) the federated kept test Dice rises on at least 2 of 3 seeds, (c) samples to 95 % of
    its own final, federated / centralised (ratio of the means over seeds, as ``fedimg study``), <= 1.5."""
    rows: dict = {}
    for path in paths:
        d = json.loads(Path(path).read_text())
        for name, arm in d["arms"].items():
            if name in (fed, cen):
                rows.setdefault(int(d["epochs_per_case"]), {}).setdefault(int(d["seed"]), {})[name] = \
                    _kept(arm, local=int(d.get("local_epochs", 6)))
    out: dict = {"budgets": {}, "rule": {}}
    for e, seeds in sorted(rows.items()):
        both = {s: r for s, r in sorted(seeds.items()) if fed in r and cen in r}
        ratios = {s: r[fed]["mean_test_patience"] / r[cen]["mean_test_patience"] for s, r in both.items()
                  if r[fed]["mean_test_patience"] and r[cen]["mean_test_patience"]}
        e95 = [np.mean([r[a]["epochs_to_95"] for r in both.values()]) for a in (fed, cen)] if both else [np.nan] * 2
        out["budgets"][e] = {"seeds": both, "ratio": ratios, "mean_ratio": float(np.mean(list(ratios.values())))
                             if ratios else None, "compute_ratio_to_95": float(e95[0] / e95[1])}
    base = min(out["budgets"]) if out["budgets"] else None
    for e in (b for b in out["budgets"] if b != base):
        lo, hi = out["budgets"][base], out["budgets"][e]
        common = [s for s in hi["ratio"] if s in lo["ratio"]]
        rises = sum(hi["seeds"][s][fed]["mean_test_patience"] > lo["seeds"][s][fed]["mean_test_patience"] for s in common)
        a = bool(common) and np.mean([hi["ratio"][s] for s in common]) > np.mean([lo["ratio"][s] for s in common])
        out["rule"][e] = {"seeds": common, "a_mean_ratio_rises": bool(a), "b_fed_rises_on": rises,
                          "b": rises * 3 >= 2 * len(common) and bool(common),
                          "c": bool(hi["compute_ratio_to_95"] <= 1.5)}
        out["rule"][e]["raise"] = bool(out["rule"][e]["a_mean_ratio_rises"] and out["rule"][e]["b"] and out["rule"][e]["c"])
    return out


def judge(paths: list[str], cand: str, cand_cen: str = "central", fed: str = "nesterov-b0.8",
          cen: str = "central") -> dict:
    """h12g's / h12h's adoption rule (RESULTS.md) on this harness's JSONs: per split (generator seed;
    0 is the old split) the mean over study seeds of the patience-kept federated / centralised test
    Dice ratio of the candidate (``cand`` over ``cand_cen``) and of the default (``fed`` over ``cen``),
    the runs where the candidate's federated kept test Dice beats the default's, and samples to 95 %
    federated / centralised (ratio of the means over seeds)."""
    runs: dict = {}
    for path in paths:
        d = json.loads(Path(path).read_text())
        norm = d.get("train_config", {}).get("intensity_norm", "zscore")  # h12i: landmark runs are ARM-landmark
        for name, arm in d["arms"].items():
            runs.setdefault((int(d.get("synth_seed", 0)), int(d["seed"])), {})[name if norm == "zscore" else
                                                                              f"{name}-{norm}"] = arm
    out: dict = {}
    for g in sorted({g for g, _ in runs}):
        seeds = {s: r for (gg, s), r in sorted(runs.items()) if gg == g and all(a in r for a in (cand, cand_cen, fed, cen))}
        if not seeds:
            continue
        t = {a: {s: r[a]["mean_test_patience"] for s, r in seeds.items()} for a in {cand, cand_cen, fed, cen}}
        n95 = {a: np.mean([r[a]["samples_to_95"] for r in seeds.values()]) for a in {cand, cand_cen, fed, cen}}
        out[g] = {"seeds": list(seeds), "cand_ratio": {s: t[cand][s] / t[cand_cen][s] for s in seeds},
                  "default_ratio": {s: t[fed][s] / t[cen][s] for s in seeds},
                  "cand_fed": t[cand], "default_fed": t[fed], "fed_beats_default": sum(t[cand][s] > t[fed][s] for s in seeds),
                  "samples_to_95_fed_over_cen": float(n95[cand] / n95[cand_cen])}
        out[g]["cand_cen_mean"], out[g]["default_cen_mean"] = (float(np.mean(list(t[a].values()))) for a in (cand_cen, cen))
        out[g]["cand_mean_ratio"] = float(np.mean(list(out[g]["cand_ratio"].values())))
        out[g]["default_mean_ratio"] = float(np.mean(list(out[g]["default_ratio"].values())))
    return out


def write_results(path: str, out: dict) -> None:
    """Write a benchmark's ``out`` as JSON to ``path`` (its folder made) and say so."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
