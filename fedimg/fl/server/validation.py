"""Checks on every site update before it reaches the aggregator (no NVFlare here).

An update (a dict ``name -> array`` holding ``local - global``) is rejected, with a
reason, when:

* its tensor names differ from the global model's (missing or unexpected names),
* a tensor's shape or dtype differs from the global model's,
* it holds NaN or Inf,
* its L2 norm is an outlier: above ``max_rel_norm`` times the global model's norm, or
  above ``max_norm_ratio`` times the median norm accepted in the previous round; in a
  round with no previous median (the first, or the first after a server restart) the
  server holds the round's updates and compares each to ``max_norm_ratio`` times the
  median of the *other* sites' norms (:meth:`UpdateValidator.judge_round`) before any is
  folded in (that round's updates are then kept in memory together),
* its declared sample count (its aggregation weight) is not a whole number >= 1, exceeds
  ``max_samples``, exceeds the count the site declared when it first took part (its
  registration), or exceeds ``max_samples_ratio`` times the median of the other sites'
  registered counts (:meth:`UpdateValidator.check_samples`),
* its metadata or metrics hold anything unexpected (:meth:`UpdateValidator.audit`):
  metadata keys other than the sample count, the site's stated name and NVFlare's own
  bookkeeping, a metric name
  that is not ``val_``/``train_`` + a name the task reports (:data:`TASK_METRICS`), or a
  value that is not a finite number in its range,
* the site it states it is (``meta["site"]``, the client's own NVFlare identity) is missing or
  is not the site NVFlare delivered it from (``meta["client_name"]``): that process trained
  another site's data (:data:`SITE_MISMATCH`; the run must stop, not go on without the site).

The round goes on with the accepted updates when at least ``min_sites`` remain.

The checks come in two steps so that the server reads each update once:
:meth:`UpdateValidator.screen` checks names, shapes and dtypes (no pass over the values) and
hands back the update's tensors in pack order (``parts``, views, no packed copy);
:meth:`UpdateValidator.judge` applies the value rules to the update's L2 norm, which the
server's accumulator measures in the same pass that folds the update into a scratch sum
(:meth:`fedimg.kernels.WeightedAccumulator.add_checked`), so a rejected update never
touches the aggregate. The norm rules only compare against numbers known before the round
(the global model's norm, last round's median), so each update is judged on arrival. The
finite check is the norm itself: the float64 sum of squares of float32 (or narrower)
values is finite exactly when every value is finite; a float64 update whose squares
overflow is refused the same way. :meth:`UpdateValidator.check` does both steps on its own
(packing the update) for callers without an accumulator.

>>> import numpy as np
>>> v = UpdateValidator(ValidationConfig(min_sites=1))
>>> v.begin_round({"w": np.ones(4, np.float32)})
>>> v.check("site-1", {"w": np.full(4, np.nan, np.float32)}).reason
'non-finite values (NaN or Inf)'
>>> v.check("site-2", {"w": np.full(4, 0.1, np.float32)}).ok
True
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedimg.errors import ConfigError
from fedimg.fl.server.strategy_config import _json_object

__all__ = ["ValidationConfig", "Verdict", "UpdateValidator", "TASK_METRICS", "ALLOWED_META", "SAMPLES_KEY", "SITE_KEY",
           "SITE_MISMATCH", "site_problem"]

log = logging.getLogger(__name__)

#: The metadata key of a site's sample count (NVFlare's name for the aggregation weight).
SAMPLES_KEY = "NUM_STEPS_CURRENT_ROUND"
#: The metadata key in which a site states its own name (its NVFlare identity; not private).
SITE_KEY = "site"
#: How the reason of a rejection for a stated site other than the delivering one starts.
SITE_MISMATCH = "stated site"
#: Metadata a payload may carry: the sample count, the site's name and NVFlare's own bookkeeping.
ALLOWED_META = frozenset({SAMPLES_KEY, SITE_KEY, "client_name", "initial_metrics", "props", "current_round", "total_rounds"})
_TRAIN = ("loss", "lr", "seconds", "epochs", "epoch", "steps", "seconds_train", "seconds_eval", "dp_epsilon",
          "dp_delta", "dp_noise_multiplier", "dp_max_grad_norm", "dp_sample_rate", "dp_steps", "dp_budget_spent",
          "client_clip", "client_update_norm")
#: Metric names each task's sites send (``val_`` of the incoming global model, ``train_`` of local training).
TASK_METRICS: dict[str, frozenset[str]] = {
    task: frozenset([f"val_{v}" for v in val] + [f"train_{t}" for t in _TRAIN + train])
    for task, val, train in (
        ("brats", ("dice_tc", "dice_wt", "dice_et", "dice_mean", "num_cases"), ("voxels_per_s",)),
        ("tiles", ("auc", "accuracy", "loss", "n"), ("tiles_per_s",)),
        ("toy", ("accuracy", "loss"), ()),
    )
}
_UNIT_RANGE = ("dice", "auc", "accuracy")
#: ``props`` NVFlare echoes back from the server's previous result (its own bookkeeping).
ALLOWED_PROPS = frozenset({"fedimg_round", "nr_aggregated", "current_round", "metrics_aggregation_info"})


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, type(None))) and len(str(v)) <= 256


@dataclass(frozen=True, kw_only=True)
class ValidationConfig:
    """Thresholds of :class:`UpdateValidator` (0 disables a rule). ``task``: whose metric
    names the audit expects (:data:`TASK_METRICS`; another task: names are checked by form only)."""

    max_rel_norm: float = 10.0
    max_norm_ratio: float = 20.0
    min_sites: int = 1
    max_samples: float = 1e7
    max_samples_ratio: float = 10.0
    task: str = ""

    def __post_init__(self) -> None:
        if min(self.max_rel_norm, self.max_norm_ratio, self.max_samples, self.max_samples_ratio) < 0:
            raise ConfigError("max_rel_norm, max_norm_ratio, max_samples and max_samples_ratio must be >= 0 "
                              "(0 disables the rule)")
        if self.min_sites < 1:
            raise ConfigError(f"min_sites must be >= 1, got {self.min_sites}")

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain, JSON-able dict (the form the NVFlare job carries)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationConfig:
        return cls(**d)

    def to_json(self) -> str:
        """:meth:`to_dict` as one JSON object."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ValidationConfig:
        """Inverse of :meth:`to_json`; a malformed text is a :class:`~fedimg.errors.ConfigError`."""
        return cls.from_dict(_json_object(text, "validation"))


@dataclass(frozen=True)
class Verdict:
    """Outcome of one check: ``ok``, else ``reason``.

    Accepted: ``norm`` (from :meth:`~UpdateValidator.judge` / :meth:`~UpdateValidator.check`),
    ``flat`` (the packed update, from ``check``) or ``parts`` (its tensors in pack order, from
    :meth:`~UpdateValidator.screen`).
    """

    site: str
    ok: bool
    reason: str | None = None
    norm: float | None = None
    flat: Any = field(default=None, repr=False)
    parts: Any = field(default=None, repr=False)


class UpdateValidator:
    """Validates updates against the round's global model; remembers accepted norms.

    Call :meth:`begin_round` with the global model (``name -> array``) at the start of a
    round (or ``None`` when it is not known: the first update's names/shapes then become
    the reference), :meth:`check` per update, :meth:`end_round` after aggregation.
    """

    def __init__(self, config: ValidationConfig | None = None) -> None:
        self.config = config or ValidationConfig()
        self.reference: dict[str, tuple[tuple[int, ...], str]] | None = None
        self.global_norm: float | None = None
        self.previous_median: float | None = None
        self._accepted: list[float] = []
        self.layout = None
        self._norm_layout: tuple[list, Any] | None = None  # (reference items, layout) of the global model
        self.registered: dict[str, int] = {}  # site -> the sample count it declared when it first took part

    def begin_round(self, global_params: Mapping[str, Any] | None) -> None:
        self._accepted = []
        if global_params:
            from fedimg.kernels.layout import flat_parts, layout_of

            self.reference = {k: (tuple(np.shape(v)), _dtype(v)) for k, v in global_params.items()}
            key = list(self.reference.items())  # the same model as last round: its layout is known
            if self._norm_layout is None or self._norm_layout[0] != key:
                self._norm_layout = (key, layout_of(global_params))
            self.global_norm = _norm(flat_parts(global_params, self._norm_layout[1]))

    def check(self, site: str, params: Mapping[str, Any]) -> Verdict:
        """Accept or reject one update (:meth:`screen`, pack, norm, :meth:`judge`); never raises for bad content."""
        screened = self.screen(site, params)
        if not screened.ok:
            return screened
        flat = np.concatenate(screened.parts, dtype=self.layout.flat_dtype)
        verdict = self.judge(site, _norm([flat]))
        return dataclasses.replace(verdict, flat=flat) if verdict.ok else verdict

    def screen(self, site: str, params: Mapping[str, Any]) -> Verdict:
        """Names, shapes and dtypes against the reference, without reading the values.

        Accepted: ``parts`` holds the update's values in :attr:`layout` order as 1-D arrays
        (views of ``params``; integer buffers cast to float), ready for
        :meth:`fedimg.kernels.WeightedAccumulator.add_checked`; then call :meth:`judge`.
        """
        from fedimg.kernels.layout import flat_parts, layout_of

        if not params:
            return self._reject(site, "empty update")
        if self.reference is None:
            self.reference = {k: (tuple(np.shape(v)), _dtype(v)) for k, v in params.items()}
        names, expected = set(params), set(self.reference)
        if names != expected:
            missing, extra = sorted(expected - names), sorted(names - expected)
            parts = []
            if missing:
                parts.append(f"missing tensors {_short(missing)}")
            if extra:
                parts.append(f"unexpected tensors {_short(extra)}")
            return self._reject(site, "name mismatch: " + "; ".join(parts))
        ref = self.reference
        for name, value in params.items():
            shape, dtype = ref[name]
            if (value.shape if type(value) is np.ndarray else tuple(np.shape(value))) != shape:
                return self._reject(site, f"shape mismatch for {name}: {tuple(np.shape(value))} != {shape}")
            if _dtype(value) != dtype:
                return self._reject(site, f"dtype mismatch for {name}: {_dtype(value)} != {dtype}")
        try:
            if self.layout is None:
                self.layout = layout_of({k: params[k] for k in self.reference})
            parts = flat_parts(params, self.layout)
        except (ValueError, TypeError) as exc:
            return self._reject(site, f"cannot read update: {exc}")
        return Verdict(site=site, ok=True, parts=parts)

    def judge(self, site: str, norm: float) -> Verdict:
        """The value rules, on the update's L2 norm (NaN/Inf when a value is NaN/Inf).

        Accepted norms are remembered for :meth:`end_round`.
        """
        if not np.isfinite(norm):
            return self._reject(site, "non-finite values (NaN or Inf)")
        cfg = self.config
        if cfg.max_rel_norm and self.global_norm and norm > cfg.max_rel_norm * self.global_norm:
            return self._reject(
                site, f"norm outlier: update norm {norm:.4g} > {cfg.max_rel_norm:g} x global model norm {self.global_norm:.4g}"
            )
        if cfg.max_norm_ratio and self.previous_median and norm > cfg.max_norm_ratio * self.previous_median:
            return self._reject(
                site,
                f"norm outlier: update norm {norm:.4g} > {cfg.max_norm_ratio:g} x last round's median {self.previous_median:.4g}",
            )
        self._accepted.append(norm)
        return Verdict(site=site, ok=True, norm=norm)

    @staticmethod
    def norm_of(parts: list[np.ndarray]) -> float:
        """L2 norm of an update given as its tensors (:meth:`screen`'s ``parts``)."""
        return _norm(parts)

    def judge_round(self, norms: Mapping[str, float]) -> dict[str, str]:
        """Round-median screening of a held round: ``{site: reason}`` of the sites whose norm
        exceeds ``max_norm_ratio`` times the median of the other sites' norms (logged)."""
        ratio, out = self.config.max_norm_ratio, {}
        for site, norm in norms.items():
            others = [n for s, n in norms.items() if s != site and np.isfinite(n)]
            if ratio and others and norm > ratio * float(np.median(others)):
                out[site] = (f"norm outlier: update norm {norm:.4g} > {ratio:g} x the median of the other sites' "
                             f"norms this round {float(np.median(others)):.4g}")
                log.warning("rejected update from %s: %s", site, out[site])
        return out

    def check_samples(self, site: str, value: Any, *, others: list[float] | None = None) -> tuple[Verdict, int]:
        """The declared sample count (aggregation weight): ``(verdict, count)``.

        ``others``: the other sites' counts to compare with (default: their registered counts).
        An accepted count is registered on first sight; :meth:`register` can do it later.
        """
        cfg = self.config
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            return self._reject(site, f"sample count {value!r} is not a number"), 0
        if not (np.isfinite(value) and value >= 1 and float(value).is_integer()):
            return self._reject(site, f"sample count {value!r} is not a whole number >= 1"), 0
        n = int(value)
        if cfg.max_samples and n > cfg.max_samples:
            return self._reject(site, f"sample count {n} exceeds the cap max_samples={cfg.max_samples:g}"), n
        if site in self.registered and n > self.registered[site]:
            return self._reject(site, f"sample count {n} exceeds the {self.registered[site]} it registered "
                                      "when it first took part"), n
        others = [c for s, c in self.registered.items() if s != site] if others is None else others
        if cfg.max_samples_ratio and others and n > cfg.max_samples_ratio * float(np.median(others)):
            return self._reject(site, f"sample count {n} exceeds {cfg.max_samples_ratio:g} x the median of the other "
                                      f"sites' counts {float(np.median(others)):g}"), n
        return Verdict(site=site, ok=True), n

    def register(self, site: str, n: int) -> None:
        """Remember ``n`` as ``site``'s registered count (first time only)."""
        self.registered.setdefault(site, int(n))

    def audit(self, site: str, meta: Mapping[str, Any], metrics: Mapping[str, Any]) -> Verdict:
        """Every metadata key and metric name and value (see the module docstring)."""
        extra = sorted(str(k) for k in meta if k not in ALLOWED_META)
        if extra:
            return self._reject(site, f"unexpected metadata field(s) {_short(extra)}")
        name = meta.get("client_name")
        if name is not None and not (isinstance(name, str) and len(name) <= 128):
            return self._reject(site, "metadata client_name is not a short string")
        problem = site_problem(site, meta.get(SITE_KEY))
        if problem:
            return self._reject(site, problem)
        props = meta.get("props")
        if props is not None and not (isinstance(props, dict) and set(props) <= ALLOWED_PROPS and all(
                _scalar(v) or (isinstance(v, dict) and all(map(_scalar, v.values()))) for v in props.values())):
            return self._reject(site, f"metadata props holds something other than NVFlare's bookkeeping "
                                      f"({_short(sorted(str(k) for k in props))})" if isinstance(props, dict) else
                                "metadata props is not a dict")
        for label, values in (("metrics", metrics), ("initial_metrics", meta.get("initial_metrics") or {})):
            if not isinstance(values, Mapping):
                return self._reject(site, f"{label} is not a dict")
            for k, v in values.items():
                problem = self._metric_problem(str(k), v)
                if problem:
                    return self._reject(site, f"{label} {str(k)[:60]!r}: {problem}")
        return Verdict(site=site, ok=True)

    def _metric_problem(self, name: str, v: Any) -> str | None:
        known = TASK_METRICS.get(self.config.task)
        if known is not None and name not in known:
            return f"not a metric the {self.config.task} task reports"
        if not (name.startswith(("val_", "train_")) and len(name) <= 48 and name.replace("_", "").isalnum()):
            return "metric names are val_/train_ + letters, digits and underscores"
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            return f"value of type {type(v).__name__} is not a number"
        if not (np.isfinite(v) and abs(v) <= 1e12):
            return f"value {v!r} is not finite or out of range"
        if name.startswith("val_") and any(u in name for u in _UNIT_RANGE) and not 0 <= v <= 1:
            return f"value {v!r} is outside [0, 1]"
        return None

    def enough(self, n_accepted: int) -> bool:
        """Whether ``n_accepted`` updates meet ``min_sites``."""
        return n_accepted >= self.config.min_sites

    def end_round(self) -> None:
        """Remember the median accepted norm as the next round's reference."""
        if self._accepted:
            self.previous_median = float(np.median(self._accepted))

    def _reject(self, site: str, reason: str) -> Verdict:
        log.warning("rejected update from %s: %s", site, reason)
        return Verdict(site=site, ok=False, reason=reason)


def site_problem(site: str, stated: Any) -> str | None:
    """Why an update delivered from ``site`` whose metadata states ``stated`` (:data:`SITE_KEY`)
    is refused, or ``None``: the stated site must be given and be ``site``.

    >>> site_problem("site-1", "site-1") is None
    True
    >>> site_problem("site-1", "site-2").startswith(SITE_MISMATCH)
    True
    """
    if not (isinstance(stated, str) and 0 < len(stated) <= 128):
        return (f"the update does not state its site (metadata {SITE_KEY!r}); "
                "run the site with the same fedimg version as the server")
    if stated != site:
        return (f"{SITE_MISMATCH} {stated[:64]!r} is not {site!r}, the site NVFlare delivered it from: "
                f"NVFlare's {site} process ran as {stated[:64]} and trained its data, not {site}'s; "
                "the run cannot go on (run it again)")
    return None


def _norm(parts: list[np.ndarray]) -> float:
    """L2 norm (float64) of the values of ``parts`` taken together; NaN/Inf when one is NaN/Inf."""
    from fedimg.kernels import parts_norm

    return parts_norm(parts)  # one pass over all tensors, not one kernel launch per tensor


_DTYPE_NAMES: dict[Any, str] = {}


def _dtype(x: Any) -> str:
    dt = getattr(x, "dtype", None)
    if dt is None:
        return np.asarray(x).dtype.name
    name = _DTYPE_NAMES.get(dt)  # str(dtype) costs microseconds per tensor, per update
    if name is None:
        name = _DTYPE_NAMES[dt] = str(dt).replace("torch.", "")
    return name


def _short(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")
