"""``benchmarks/study_dev.py --swa-start F``: a tail average of the checked models (SWA), measured beside
each arm on the same training run.

From the check at fraction ``F`` of the maximum budget on, the model an arm would keep is the uniform
average of its checked models from that check to the current one (Izmailov et al. 2018, stochastic weight
averaging, which starts averaging at 75 % of the budget; Caldarola et al. 2022 average the server's global
models the same way in federated learning). Before that check it is the checked model itself. Each check's
model is offered to :class:`TailAverage`; the average is validated as the arm validates its own model, and
its own patience-kept copy (``_PatienceKept``) is tested at the end. The arm's training is not touched: the
average is built and validated with the random number generators forked, so the arm's own numbers are
those of a run without the flag.

>>> import numpy as np
>>> tail = TailAverage(start=1, patience=3)
>>> for i, w in enumerate([0.0, 2.0, 4.0]):
...     _ = tail.offer({"w": np.array([w], dtype=np.float32)}, 0.1 * i, lambda p: float(p["w"][0]))
>>> tail.val, tail.kept.params["w"].tolist(), tail.kept.params["w"].dtype
([0.0, 2.0, 3.0], [3.0], dtype('float32'))
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Callable, Iterator

import numpy as np

from _study_dev_train import _PatienceKept

__all__ = ["TailAverage", "judge_tail", "rng_forked", "start_check"]


def start_check(fraction: float, checks: int) -> int:
    """The 0-based check the average starts at: ``fraction`` of ``checks`` checks, rounded down.

    >>> start_check(0.75, 12), start_check(0.5, 12), start_check(0.0, 12)
    (9, 6, 0)
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--swa-start must be a fraction in [0, 1), not {fraction}")
    return int(fraction * checks)


@contextlib.contextmanager
def rng_forked() -> Iterator[None]:
    """torch's, numpy's global and Python's random state restored on exit."""
    import torch

    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng():
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class TailAverage:
    """The running uniform average of the models offered from check ``start`` on, and the copy
    :class:`_PatienceKept` (``patience``) would keep of the averaged curve."""

    def __init__(self, start: int, patience: int) -> None:
        self.start, self.kept, self.val = int(start), _PatienceKept(patience), []
        self._sum: dict[str, np.ndarray] = {}
        self._n = 0

    def offer(self, params: dict[str, np.ndarray], score: float,
              evaluate: Callable[[dict[str, np.ndarray]], float]) -> float:
        """The next check's model ``params`` (copied here) and its own validation ``score``; returns the
        averaged model's validation (``evaluate`` on the average), or ``score`` before ``start``."""
        check = len(self.val)
        if check < self.start:
            self.val.append(float(score))
            self.kept.add(score, {k: np.array(v, copy=True) for k, v in params.items()})
            return float(score)
        self._n += 1
        for k, v in params.items():
            if np.issubdtype(v.dtype, np.floating):
                self._sum[k] = self._sum.get(k, 0.0) + v.astype(np.float64)
        avg = {k: ((self._sum[k] / self._n).astype(v.dtype) if k in self._sum else np.array(v, copy=True))
               for k, v in params.items()}
        with rng_forked():
            value = float(evaluate(avg))
        self.val.append(value)
        self.kept.add(value, avg)
        return value

    def summary(self, local: int) -> dict[str, Any]:
        """What the JSON records besides the test scores: the start and the averaged curve."""
        return {"start_check": self.start, "start_epochs": self.start * local, "val": self.val,
                "kept_at": (self.kept.check + 1) * local}


def _to95(val: list[float], kept: int) -> int:
    """The first check (0-based) whose validation reaches 95 % of the kept check's
    (:func:`fedimg.study.summary.to_fraction`, as ``fedimg study`` reports it)."""
    from fedimg.study.summary import to_fraction

    return int(to_fraction([{"val": v, "check": i} for i, v in enumerate(val)], kept)["check"])


def judge_tail(paths: list[str], fed: str = "nesterov-b0.8-bs1", cen: str = "central",
               margin: float = 0.01) -> dict[str, Any]:
    """lead11's rule on runs made with ``--swa-start``: step 1 picks the centralised denominator C* (its tail
    average if that beats the arm's own kept model by more than ``margin`` in mean test Dice over every run),
    step 2 judges the federated tail average over C* against the plain pair per generator seed: (a) higher
    mean ratio at every generator seed, (b) federated test Dice above the plain federated arm's on at least
    5 of 8 runs (more than half), (c) samples to 95 %, federated / centralised, at most 1.5 per generator seed."""
    import json
    from pathlib import Path

    runs: dict[tuple[int, int], dict[str, Any]] = {}
    for p in paths:
        d = json.loads(Path(p).read_text())
        for name, arm in d["arms"].items():
            if "swa" not in arm:
                raise SystemExit(f"{p}: arm {name} has no 'swa' record; run it with --swa-start")
            runs.setdefault((int(d["synth_seed"]), int(d["seed"])), {})[name] = (arm, int(d["local_epochs"]))
    pairs = {k: v for k, v in runs.items() if fed in v and cen in v}
    cen_plain = [v[cen][0]["mean_test_patience"] for v in pairs.values()]
    cen_tail = [v[cen][0]["swa"]["mean_test_patience"] for v in pairs.values()]
    use_tail = float(np.mean(cen_tail)) > float(np.mean(cen_plain)) + margin
    out: dict[str, Any] = {"runs": len(pairs), "central_mean": float(np.mean(cen_plain)),
                           "central_swa_mean": float(np.mean(cen_tail)), "c_star": f"{cen}-swa" if use_tail else cen,
                           "generator_seeds": {}}
    beats = 0
    for g in sorted({k[0] for k in pairs}):
        keys = sorted(k for k in pairs if k[0] == g)
        plain, cand, s95 = [], [], [0, 0]
        for k in keys:
            (fa, local), (ca, _) = pairs[k][fed], pairs[k][cen]
            c_star = ca["swa"]["mean_test_patience"] if use_tail else ca["mean_test_patience"]
            plain.append(fa["mean_test_patience"] / ca["mean_test_patience"])
            cand.append(fa["swa"]["mean_test_patience"] / c_star)
            beats += fa["swa"]["mean_test_patience"] > fa["mean_test_patience"]
            c_val, c_kept = (ca["swa"]["val"], ca["swa"]["kept_at"]) if use_tail else (ca["val"], ca["kept_at"])
            s95[0] += _to95(fa["swa"]["val"], fa["swa"]["kept_at"] // local - 1)
            s95[1] += _to95(c_val, c_kept // local - 1)
        out["generator_seeds"][g] = {"seeds": [k[1] for k in keys], "plain_ratio": plain, "cand_ratio": cand,
                                     "plain_mean_ratio": float(np.mean(plain)), "cand_mean_ratio": float(np.mean(cand)),
                                     "samples_to_95_fed_over_cen": (s95[0] + len(keys)) / (s95[1] + len(keys))}
    gs = out["generator_seeds"].values()
    out["fed_swa_beats_plain"] = int(beats)
    out["rule"] = {"a_ratio_higher_every_generator": all(r["cand_mean_ratio"] > r["plain_mean_ratio"] for r in gs),
                   "b_beats_more_than_half": beats > len(pairs) / 2,
                   "c_samples_to_95": all(r["samples_to_95_fed_over_cen"] <= 1.5 for r in gs)}
    out["met"] = all(out["rule"].values())
    return out
