"""The study's privacy-utility arms and table: test Dice against ε for both DP modes.

``fedimg study --dp-epsilon 1 3 8 inf`` adds, for every finite target ε, federated arms
trained on the **same** split, seeds and initial weights as the non-private arms (they run
inside :func:`fedimg.study.runner.run_seed`, after the non-private federated arm):

* **sample-level DP** (``federated (DP-SGD ε=E)``): every site trains with Opacus DP-SGD
  (:mod:`fedimg.privacy.dpsgd`), the noise solved so that each site's whole run (all
  ``max_checks`` rounds x local epochs) spends at most ε; the protected unit is one
  training case (patient) of a site;
* **client-level DP** (``federated (client DP ε=E)``): DP-FedAvg
  (:class:`fedimg.fl.server.dp_strategy.ClientDP`), the noise multiplier solved so that all
  ``max_checks`` rounds spend at most ε (q = 1: every site every round, no amplification);
  the protected unit is one whole site.

``inf`` stands for the non-private federated arm, which the study always runs. ε is stated
for the whole run; the kept (best-validation) model was trained on a prefix of it and spent
at most that. Validation scores, sample counts and metrics travel in the clear and are not
covered by either guarantee. :func:`privacy_table` turns the study's results into the table
(``results.json`` key ``privacy_utility``) and :func:`privacy_lines` into the report's section.

>>> sweep = PrivacySweep(epsilons=(8.0, 1.0, float("inf")))
>>> sweep.finite, sweep.modes, arm_name("client", 8.0)
((1.0, 8.0), ('sample', 'client'), 'federated (client DP ε=8)')
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import ConfigError
from fedimg.study.intervals import bootstrap_ratio
from fedimg.study.summary import case_scores, common_cases

__all__ = ["PrivacySweep", "arm_name", "dp_configs", "run_privacy_arms", "privacy_table", "privacy_lines"]

log = logging.getLogger(__name__)

MODES = ("sample", "client")
_LABEL = {"sample": "DP-SGD", "client": "client DP"}


def arm_name(mode: str, epsilon: float) -> str:
    """The study arm of one DP mode at one target ε."""
    return f"federated ({_LABEL[mode]} ε={epsilon:g})"


@dataclass(frozen=True, kw_only=True)
class PrivacySweep:
    """Which DP arms the study adds: target ``epsilons`` (``inf``: the non-private arm), the
    ``modes`` (``sample``: DP-SGD at every site; ``client``: DP-FedAvg), δ, the per-sample
    clipping norm of DP-SGD (``max_grad_norm``), the clipping norm of a site's whole update
    (``clip``) and the DP-SGD ``accountant``."""

    epsilons: tuple[float, ...]
    modes: tuple[str, ...] = MODES
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    clip: float = 0.5
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))
        object.__setattr__(self, "modes", tuple(self.modes))
        if not self.finite:
            raise ConfigError("--dp-epsilon needs at least one positive finite target epsilon (inf is the "
                              "non-private arm, always run)")
        if any(not (e > 0) for e in self.epsilons):
            raise ConfigError(f"--dp-epsilon values must be > 0 (or inf), got {list(self.epsilons)}")
        if not self.modes or any(m not in MODES for m in self.modes):
            raise ConfigError(f"--dp-mode must name sample, client or both, got {list(self.modes)}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"--dp-delta must be in (0, 1), got {self.delta}")
        if not (0 < self.max_grad_norm < math.inf) or not (0 < self.clip < math.inf):
            raise ConfigError("--dp-max-grad-norm and --clip must be positive finite norms under a privacy sweep")

    @property
    def finite(self) -> tuple[float, ...]:
        """The finite target ε values, ascending, without repeats."""
        return tuple(sorted({e for e in self.epsilons if math.isfinite(e)}))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["epsilons"] = [e if math.isfinite(e) else "inf" for e in self.epsilons]
        return d


def dp_configs(sweep: PrivacySweep, fed: Any, seed: int) -> list[tuple[str, str, float, Any]]:
    """``[(arm name, mode, target ε, FederationConfig)]`` of the DP arms (validated here, so a
    bad combination is refused before any arm trains). ``fed.rounds`` is the run's rounds."""
    from fedimg.privacy import DPConfig, client_noise_for

    out = []
    for eps in sweep.finite:
        for mode in sweep.modes:
            if mode == "sample":
                dp = DPConfig(epsilon=eps, delta=sweep.delta, max_grad_norm=sweep.max_grad_norm,
                              accountant=sweep.accountant, seed=seed).to_dict()
                f = dataclasses.replace(fed, dp=dp, client_dp={}, name="")
            else:
                if fed.send != "diff" or fed.strategy.buffered:
                    raise ConfigError("the client-level DP arms need a mean-based --strategy (fedavg, fedavgm, fedprox, "
                                      f"fedadam, fedyogi) and --send diff, not {fed.strategy.name} / {fed.send}: change them or "
                                      "use --dp-mode sample")
                z = client_noise_for(epsilon=eps, rounds=fed.rounds, delta=sweep.delta)
                f = dataclasses.replace(fed, dp={}, name="", client_dp={
                    "noise_multiplier": z, "clip": sweep.clip, "delta": sweep.delta, "seed": seed})
            out.append((arm_name(mode, eps), mode, eps, f))
    return out


def _spent(run: Path, mode: str) -> dict[str, float]:
    """ε spent over the whole run and the noise multiplier, from the run's last metrics.json round."""
    from fedimg.fl.server.state import read_metrics

    rounds = read_metrics(run)
    if not rounds:
        return {"epsilon": float("nan"), "noise_multiplier": float("nan")}
    last = rounds[-1]
    if mode == "client":
        dp = last.get("client_dp", {})
        return {"epsilon": float(dp.get("epsilon", np.nan)), "noise_multiplier": float(dp.get("noise_multiplier", np.nan)),
                "rounds": float(dp.get("rounds", np.nan))}
    ms = [s.get("metrics", {}) for s in last.get("sites", {}).values()]
    eps = [float(m["train_dp_epsilon"]) for m in ms if "train_dp_epsilon" in m]
    z = [float(m["train_dp_noise_multiplier"]) for m in ms if "train_dp_noise_multiplier" in m]
    return {"epsilon": max(eps) if eps else float("nan"), "noise_multiplier": float(np.mean(z)) if z else float("nan"),
            "budget_spent_sites": float(sum(float(m.get("train_dp_budget_spent", 0.0)) for m in ms))}


def run_privacy_arms(sweep: PrivacySweep, *, view: Path, out: Path, fed: Any, proto: Any, task: Any,
                     datas: dict[str, Any], tests: dict[str, Any], config: Any, seed: int,
                     progress: bool = False) -> dict[str, dict[str, Any]]:
    """Train and test every DP arm of one seed (``fed`` as :func:`run_seed` set it up); returns
    ``{arm name: arm record}`` with ``privacy`` (mode, target ε, ε spent, noise) in each."""
    from fedimg.study.arms import federated_arm, tested_arm

    arms: dict[str, dict[str, Any]] = {}
    for name, mode, eps, f in dp_configs(sweep, fed, seed):
        run = out / f"fl-dp-{mode}-eps{eps:g}"
        log.info("seed %d: %s arm (NVFlare SimEnv)", seed, name)
        arm = tested_arm(federated_arm(view, run, f, proto, task, datas, progress=progress), task, config, tests)
        arm["privacy"] = {"mode": mode, "target_epsilon": eps, "delta": sweep.delta, **_spent(run, mode),
                          "clip": sweep.clip if mode == "client" else sweep.max_grad_norm}
        arms[name] = arm
    return arms


def privacy_table(results: dict[str, Any]) -> dict[str, Any]:
    """The privacy-utility table from a finished study's ``results`` (with ``summary``).

    One row per (mode, target ε): test Dice with its 95 % interval (the summary's), its
    ratio to the non-private federated arm (paired bootstrap over the same test cases and
    seeds), and ε spent / noise multiplier (mean over seeds; sample-level: the largest site ε).
    """
    s, records, sites = results["summary"], results["seeds"], results["sites"]
    names = sorted({a for r in records for a in r["arms"] if "privacy" in r["arms"][a]})
    if any({a for a in r["arms"] if "privacy" in r["arms"][a]} != set(names) for r in records):
        raise ConfigError("the seeds of this study ran different DP arms; merge only studies with the same --dp-epsilon")
    n_boot = int(results.get("protocol", {}).get("n_boot", 2000))
    cases = [common_cases(r, sites) for r in records]
    base = [case_scores(r, "federated", sites, c) for r, c in zip(records, cases)]
    rows = [{"mode": "none", "target_epsilon": "inf", "dice": _pick(s["arms"]["federated"])}]
    for a in names:
        p = [r["arms"][a]["privacy"] for r in records]
        ratio = bootstrap_ratio([case_scores(r, a, sites, c) for r, c in zip(records, cases)], base, n_boot=n_boot)
        rows.append({"arm": a, "mode": p[0]["mode"], "target_epsilon": p[0]["target_epsilon"],
                     "epsilon_spent": float(np.mean([q["epsilon"] for q in p])),
                     "noise_multiplier": float(np.mean([q["noise_multiplier"] for q in p])),
                     "clip": p[0]["clip"], "dice": _pick(s["arms"][a]),
                     "ratio_to_non_private": dict(zip(("mean", "low", "high"), ratio))})
    rows[1:] = sorted(rows[1:], key=lambda r: (MODES.index(r["mode"]), r["target_epsilon"]))
    return {"delta": records[0]["arms"][names[0]]["privacy"]["delta"] if names else None,
            "rounds": results.get("federation", {}).get("max_rounds"), "rows": rows}


def _pick(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(d[k]) for k in ("mean", "low", "high")}


def _f(x: Any, nd: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"


def privacy_lines(results: dict[str, Any], out: Path | None = None) -> list[str]:
    """The report's privacy-utility section (and ``out/privacy_utility.png`` when ``out`` is given)."""
    t = results.get("privacy_utility")
    if not t:
        return []
    lines = ["", "## Privacy-utility: test Dice against ε (federated arms with DP)", "",
             f"Same split, seeds and initial weights as the non-private arms; δ = {t['delta']:g}; ε is each guarantee "
             f"over the whole run ({t['rounds']} rounds; the kept model spent at most that). **Sample-level** "
             "(DP-SGD at every site, Opacus, Poisson sampling): protects one training case of a site; ε spent is the "
             "largest site's. **Client-level** (DP-FedAvg: sites clip, the server adds noise, fixed denominator): "
             "protects whether one whole site took part; every site takes part every round, so there is no "
             "amplification by sampling. Validation scores, sample counts and metrics travel in the clear and are "
             "not covered by either.", "",
             "| DP mode | target ε | ε spent | noise multiplier | clip | test Dice [95 % CI] | / non-private [95 % CI] |",
             "|---|---|---|---|---|---|---|"]
    for r in t["rows"]:
        d, q = r["dice"], r.get("ratio_to_non_private")
        ratio = f"{_f(q['mean'])} [{_f(q['low'])}, {_f(q['high'])}]" if q else "1"
        lines.append(f"| {'none' if r['mode'] == 'none' else _LABEL[r['mode']]} | "
                     f"{'∞' if r['mode'] == 'none' else format(r['target_epsilon'], 'g')} | "
                     f"{_f(r.get('epsilon_spent'), 2)} | {_f(r.get('noise_multiplier'), 3)} | {_f(r.get('clip'), 2)} | "
                     f"**{_f(d['mean'])}** [{_f(d['low'])}, {_f(d['high'])}] | {ratio} |")
    if out is not None:
        _plot(Path(out) / "privacy_utility.png", t)
        lines += ["", "![privacy-utility](privacy_utility.png)"]
    return lines


def _plot(path: Path, t: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedimg.io import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    base = t["rows"][0]["dice"]
    ax.axhspan(base["low"], base["high"], color="0.9")
    ax.axhline(base["mean"], color="0.4", label="no DP (95 % CI shaded)")
    for mode in MODES:
        rows = [r for r in t["rows"] if r["mode"] == mode]
        if rows:
            x = [r["target_epsilon"] for r in rows]
            m = np.array([r["dice"]["mean"] for r in rows])
            err = [m - [r["dice"]["low"] for r in rows], [r["dice"]["high"] for r in rows] - m]
            ax.errorbar(x, m, yerr=err, marker="o", capsize=3, label=_LABEL[mode])
    ax.set_xscale("log")
    ax.set_xlabel("target ε (whole run)")
    ax.set_ylabel("test Dice (mean, 95 % CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
