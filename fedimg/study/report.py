"""The study's ``report.md`` and plots, from its ``results.json`` dict (no training here).

Usage (``fedimg study`` calls it)::

    write_report(Path("study"), read_json("study/results.json"))
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.io import atomic_path, write_bytes

__all__ = ["write_report"]

log = logging.getLogger(__name__)

_REGIONS = ("dice_tc", "dice_wt", "dice_et")


def _fmt(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.3f}"


def write_report(out: Path, results: dict[str, Any]) -> Path:
    """Write ``out/report.md``, ``out/per_site.png`` and ``out/dice_per_round.png``."""
    key, sites, evals = results["key_metric"], results["sites"], results["evaluations"]
    b = results["budget"]
    s = results["summary"]
    arms = ["centralised", "federated", *[f"{x} alone" for x in sites]]
    arms = [a for a in arms if a in evals]
    counts = ", ".join(f"{x}: {results['train_cases'][x]} training cases" for x in sites)
    lines = [
        "# fedimg study: centralised vs each site alone vs federated",
        "",
        f"Task **{results['task']}**, {len(sites)} sites ({counts}).",
        "",
        f"**Budget (same for every arm):** every training case is seen {b['epochs_per_case']} times "
        f"(epochs). Centralised: {b['epochs_per_case']} epochs on the pooled training cases of all sites. "
        f"Site alone: {b['epochs_per_case']} epochs on that site's training cases. Federated ({b['strategy']}, "
        f"NVFlare SimEnv): {b['rounds']} rounds x {b['local_epochs']} local epochs per site. All models start from "
        "the same seeded weights; the final model of each arm is evaluated (no model selection on the held-out cases).",
        "",
        "**Evaluation:** every model on every site's held-out cases (each site's validation split, which no arm "
        f"trains on). Key metric: `{key}`.",
        "",
        f"## {key} per evaluation site",
        "",
        "| model | " + " | ".join(sites) + " | mean |",
        "|---|" + "---|" * (len(sites) + 1),
    ]
    for a in arms:
        vals = [evals[a][x].get(key) for x in sites]
        lines.append(f"| {a} | " + " | ".join(_fmt(v) for v in vals) + f" | **{_fmt(float(np.mean(vals)))}** |")
    if "site_alone_mean" in s:
        lines.append("| mean of single-site models | " + " | ".join([""] * len(sites)) + f" | **{_fmt(s['site_alone_mean'])}** |")
    first_site = evals[arms[0]][sites[0]]
    if all(r in first_site for r in _REGIONS):
        lines += ["", "## Dice per region (mean over evaluation sites)", "", "| model | TC | WT | ET |", "|---|---|---|---|"]
        for a in arms:
            lines.append(f"| {a} | " + " | ".join(_fmt(float(np.mean([evals[a][x][r] for x in sites]))) for r in _REGIONS) + " |")
    lines += ["", "## Summary", "", *_summary_lines(s, results.get("seconds", {}))]
    lines += [
        "",
        "These are the numbers measured in this run, whatever they show; small synthetic data and short "
        "training make them noisy.",
        "",
        "![per-site](per_site.png)",
        "",
        "![dice per round](dice_per_round.png)",
        "",
    ]
    _bars(out / "per_site.png", evals, arms, sites, key)
    _rounds(out / "dice_per_round.png", results, key, arms, sites)
    write_bytes(out / "report.md", "\n".join(lines).encode())
    return out / "report.md"


def _summary_lines(s: dict[str, Any], secs: dict[str, float]) -> list[str]:
    """The report's summary bullets from the results' ``summary`` and ``seconds``."""
    lines = []
    if "federated_minus_centralised" in s:
        rel = s.get("federated_relative_to_centralised")
        pct = f" ({100 * rel:.1f}% of centralised)" if rel else ""
        lines.append(f"- Federated − centralised: {s['federated_minus_centralised']:+.3f}{pct}.")
    if "federated_minus_site_alone_mean" in s:
        lines.append(f"- Federated − mean single-site model: {s['federated_minus_site_alone_mean']:+.3f}.")
    if "own_site_alone_mean" in s:
        lines.append(f"- Single-site models on their own site's held-out cases: {_fmt(s['own_site_alone_mean'])} (mean).")
    if secs:
        lines.append("- Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()) + ".")
    return lines


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)


def _bars(path: Path, evals, arms, sites, key) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(sites), 3.6))
    w = 0.8 / len(arms)
    for i, a in enumerate(arms):
        ax.bar(np.arange(len(sites)) + i * w, [evals[a][x][key] for x in sites], w, label=a)
    ax.set_xticks(np.arange(len(sites)) + 0.4 - w / 2, sites)
    ax.set_xlabel("evaluated on the held-out cases of")
    ax.set_ylabel(key)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("per-site results")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _rounds(path: Path, results, key, arms, sites) -> None:
    plt = _plt()
    rows = [r for r in results.get("federated_rounds", []) if key in r]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    evals = results["evaluations"]
    final_x = results["budget"]["rounds"]
    xs, ys = [r["model_round"] for r in rows], [r[key] for r in rows]
    if "federated" in evals and (not xs or xs[-1] < final_x):
        xs.append(final_x)  # the final global model, evaluated by the study
        ys.append(float(np.mean([evals["federated"][x][key] for x in sites])))
    if xs:
        ax.plot(xs, ys, "o-", label="federated global model (sites' held-out cases)")
        ax.set_xticks(range(0, final_x + 1))
    for a, color, ls in (("centralised", "k", "--"), ("federated", "C0", ":")):
        if a in evals:
            ax.axhline(float(np.mean([evals[a][x][key] for x in sites])), color=color, linestyle=ls, lw=1,
                       label=f"{a} (final, all sites)")
    alone = [a for a in arms if a.endswith(" alone")]
    if alone:
        ax.axhline(float(np.mean([evals[a][x][key] for a in alone for x in sites])), color="C3", linestyle="-.", lw=1,
                   label="site alone (final, mean)")
    ax.set_xlim(-0.2, final_x + 0.2)
    ax.set_xlabel("round (model after N rounds)")
    ax.set_ylabel(key)
    ax.legend(fontsize=7)
    ax.set_title(f"{key} per round")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
