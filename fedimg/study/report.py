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
from fedimg.study.summary import arm_names

__all__ = ["write_report"]

log = logging.getLogger(__name__)


def _fmt(x: Any, nd: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"


def _strategy_words(strategy: dict[str, Any]) -> str:
    """The report's words for the federated arm's strategy (a StrategyConfig dict).

    >>> _strategy_words({"name": "fedavgm", "beta1": 0.8, "nesterov": True, "local_norms": True})
    'strategy `fedavgm`, Nesterov server momentum 0.8, site-local normalisation layers (personalised)'
    """
    words = f"strategy `{strategy['name']}`"
    if strategy["name"] == "fedavgm":
        words += f", {'Nesterov ' if strategy.get('nesterov') else ''}server momentum {strategy.get('beta1', 0.9):g}"
    if strategy.get("lr_plateau"):
        words += (f", the server lr halved and the model sent back to its best after {strategy['lr_plateau']} "
                  "round(s) without a better federated validation")
    if strategy.get("local_norms"):
        words += ", site-local normalisation layers (personalised)"
    return words


def _ci(d: dict[str, float]) -> str:
    return f"**{_fmt(d['mean'])}** [{_fmt(d['low'])}, {_fmt(d['high'])}]"


def _protocol_words(p: dict[str, Any], fed: dict[str, Any], batch: Any = None) -> str:
    """The report's protocol paragraph (``p``: the protocol record, ``fed``: the federation record,
    ``batch``: the batch size of the centralised and single-site arms)."""
    lr_words = (f"; the federated arms' sites train at {fed['lr_scale']:g} x the other arms' peak lr "
                "(--federated-lr-scale)") if fed.get("lr_scale", 1.0) != 1.0 else ""
    if fed.get("batch_size") is not None:
        other = f", the other arms with batch {batch}" if batch is not None else ""
        lr_words += f"; the federated arms' sites train with batch {fed['batch_size']}{other} (--federated-batch-size)"
    return (f"**Protocol.** Every arm trains until its own validation Dice stops improving: checked every "
            f"{p['check_every']} epochs per case (one federated round of {fed['local_epochs']} local epochs), stopped "
            f"after {p['patience']} checks without a new best, at most **{p['max_epochs']} epochs per case** "
            f"({fed['max_rounds']} rounds); the best-validation model is kept and evaluated **once** on every site's "
            "test cases. Centralised validates on the pooled validation cases, a site alone on its own, the federated "
            f"arm on every site's (NVFlare SimEnv, {_strategy_words(fed['strategy'])}). Learning-rate schedules span "
            f"the maximum budget in every arm{lr_words}.")


def write_report(out: Path, results: dict[str, Any]) -> Path:
    """Write ``out/report.md``, ``out/per_site.png`` and ``out/learning_curves.png``."""
    s, p, sites = results["summary"], results["protocol"], results["sites"]
    fed = results["federation"]
    arms = arm_names(results["seeds"][0])
    scored = [a for a in [*arms, "site alone (mean)"] if a in s["arms"]]
    split = results["seeds"][0]["split"]
    counts = ", ".join(f"{x}: {len(split[x]['train'])}/{len(split[x]['val'])}/{len(split[x]['test'])}" for x in sites)
    lines = [
        "# fedimg study: federated vs centralised vs each site alone",
        "",
        f"{len(sites)} sites, train/validation/test cases per site (seed {results['seeds'][0]['seed']}): {counts}. "
        f"{s['seeds']} seed(s) (each: its own split and initial weights); {sum(s['num_test_cases'])} test scores in all.",
        "",
        _protocol_words(p, fed, results.get("train_config", {}).get("batch_size")),
        "",
        "## Test Dice (mean and 95 % bootstrap interval over test cases and seeds)",
        "",
        "| model | mean [95 % CI] | " + " | ".join(sites) + " |",
        "|---|---|" + "---|" * len(sites),
    ]
    for a in scored:
        d = s["arms"][a]
        lines.append(f"| {a} | {_ci(d)} | " + " | ".join(_fmt(d['per_site'][x]) for x in sites) + " |")
    personal = [a for a in arms if results["seeds"][0]["arms"][a].get("personalised")]
    if personal:
        lines += ["", f"Personalised (FedBN-style: normalisation layers stay at each site): {', '.join(personal)}. Each "
                  "site's own model (the kept round's shared layers + that site's norm layers) is validated and "
                  "tested on that site's own cases only; its row is not one model evaluated everywhere."]
    lines += ["", "## Headline", "", *_headline(s)]
    lines += ["", "## Compute (mean over seeds)", "",
              "| model | kept model at epochs/case | stopped at epochs/case | optimizer steps | training samples "
              "(summed over sites) | samples to 95 % of own final | seconds (federated: simulator wall-clock) |",
              "|---|---|---|---|---|---|---|"]
    for a in arms:
        c = s["arms"][a]["compute"]
        lines.append(f"| {a} | {c['best_epochs_per_case']:.0f} | {c['stop_epochs_per_case']:.0f} | "
                     f"{c['steps_to_stop']:.0f} | {c['samples_to_stop']:.0f} | {_fmt(c['samples_to_95'], 0)} | "
                     f"{c['seconds_to_stop']:.0f} |")
    eq = s["equal_budget"]
    lines += ["", "## Equal-budget table (validation Dice at equal epochs per case; not the protocol's result)", "",
              "Each arm's own validation cases, mean over seeds; – where an arm had stopped (in some seed).", "",
              "| epochs/case | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for e, row in eq.items():
        lines.append(f"| {e} | " + " | ".join(_fmt(row[a]) for a in arms) + " |")
    from fedimg.study.privacy import privacy_lines

    lines += privacy_lines(results, out)
    lines += ["", "These are the numbers measured, whatever they show.", "",
              "![per-site](per_site.png)", "", "![learning curves](learning_curves.png)", ""]
    _bars(out / "per_site.png", s, scored, sites)
    _curves(out / "learning_curves.png", results, arms)
    write_bytes(out / "report.md", "\n".join(lines).encode())
    return out / "report.md"


def _headline(s: dict[str, Any]) -> list[str]:
    lines = []
    if "ratio" in s:
        lines.append(f"- Federated / centralised: {_ci(s['ratio'])} (target ≥ 0.97).")
    for a, d in s["arms"].items():
        if "ratio_to_centralised" in d:
            lines.append(f"- {a} / centralised: {_ci(d['ratio_to_centralised'])}.")
    if "site alone (mean)" in s["arms"] and "federated" in s["arms"]:
        f, m = s["arms"]["federated"]["mean"], s["arms"]["site alone (mean)"]["mean"]
        b = s["best_single_site"]
        lines.append(f"- Federated − mean single-site model: {f - m:+.3f} (target ≥ +0.05); "
                     f"best single site ({b['arm']}): {_fmt(b['mean'])}, federated − best: {f - b['mean']:+.3f}.")
    if s.get("compute_ratio_to_95") is not None:
        lines.append(f"- Compute to reach 95 % of its own final validation Dice, federated / centralised "
                     f"(training samples, summed over sites): {s['compute_ratio_to_95']:.2f}x (target ≤ 1.5x).")
    c = s["arms"].get("federated", {}).get("compute", {})
    if "slowest_site_seconds_to_stop" in c:
        lines.append(f"- Federated wall-clock estimate (sites in parallel: the slowest site's training time summed "
                     f"over rounds): {c['slowest_site_seconds_to_stop']:.0f} s; slowest site's samples per round "
                     f"{c['slowest_site_samples_per_round']:.0f}.")
    capped = [f"{a} ({c['at_budget'] * s['seeds']:.0f}/{s['seeds']})" for a, d in s["arms"].items()
              if (c := d.get("compute", {})).get("at_budget")]
    if capped:
        lines.append("- **Budget-limited, not converged**: the kept model was the last check (validation still "
                     "improving at the maximum budget) in " + ", ".join(capped) + " seed(s); a larger budget may "
                     "change these arms' numbers.")
    for k, v in s.get("targets", {}).items():
        lines.append(f"- Target {k}: {'met' if v else '**not met**'}.")
    return lines


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)


def _bars(path: Path, s: dict[str, Any], arms: list[str], sites: list[str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(sites), 3.6))
    w = 0.8 / len(arms)
    for i, a in enumerate(arms):
        ax.bar(np.arange(len(sites)) + i * w, [s["arms"][a]["per_site"][x] for x in sites], w, label=a)
    ax.set_xticks(np.arange(len(sites)) + 0.4 - w / 2, sites)
    ax.set_xlabel("evaluated on the test cases of")
    ax.set_ylabel("Dice (mean over test cases and seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _curves(path: Path, results: dict[str, Any], arms: list[str]) -> None:
    """Validation Dice of every arm vs epochs per case (left) and vs seconds (right), seed 0."""
    plt = _plt()
    rec = results["seeds"][0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for a in arms:
        c = rec["arms"][a]["curve"]
        style = "-" if a.startswith("federated") or a == "centralised" else ":"
        x = [q["epochs_per_case"] for q in c]
        axes[0].plot(x, [q["val"] for q in c], style, marker=".", label=a)
        t = [q.get("slowest_site_seconds", q["seconds"]) for q in c]
        axes[1].plot(t, [q["val"] for q in c], style, marker=".", label=a)
    axes[0].set_xlabel("epochs per case")
    axes[1].set_xlabel("training seconds (federated: slowest site per round, summed)")
    for ax in axes:
        ax.set_ylabel("validation Dice")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"learning curves (seed {rec['seed']})")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
