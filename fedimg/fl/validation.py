"""Checks on every site update before it reaches the aggregator (no NVFlare here).

An update (a dict ``name -> array`` holding ``local - global``) is rejected, with a
reason, when:

* its tensor names differ from the global model's (missing or unexpected names),
* a tensor's shape or dtype differs from the global model's,
* it holds NaN or Inf,
* its L2 norm is an outlier: above ``max_rel_norm`` times the global model's norm, or
  above ``max_norm_ratio`` times the median norm accepted in the previous round.

The round goes on with the accepted updates when at least ``min_sites`` remain.

>>> import numpy as np
>>> v = UpdateValidator(ValidationConfig(min_sites=1))
>>> v.begin_round({"w": np.ones(4, np.float32)})
>>> v.check("site-1", {"w": np.full(4, np.nan, np.float32)}).reason
'non-finite values (NaN or Inf)'
>>> v.check("site-2", {"w": np.full(4, 0.1, np.float32)}).ok
True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedimg.errors import ConfigError

__all__ = ["ValidationConfig", "Verdict", "UpdateValidator"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ValidationConfig:
    """Thresholds of :class:`UpdateValidator` (0 disables a norm rule)."""

    max_rel_norm: float = 10.0
    max_norm_ratio: float = 20.0
    min_sites: int = 1

    def __post_init__(self) -> None:
        if self.max_rel_norm < 0 or self.max_norm_ratio < 0:
            raise ConfigError("max_rel_norm and max_norm_ratio must be >= 0 (0 disables the rule)")
        if self.min_sites < 1:
            raise ConfigError(f"min_sites must be >= 1, got {self.min_sites}")


@dataclass(frozen=True)
class Verdict:
    """Outcome of one check: ``ok``; the packed update and its norm if accepted, else ``reason``."""

    site: str
    ok: bool
    reason: str | None = None
    norm: float | None = None
    flat: Any = field(default=None, repr=False)


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

    def begin_round(self, global_params: Mapping[str, Any] | None) -> None:
        self._accepted = []
        if global_params:
            from fedimg.kernels import l2_norms, pack

            self.reference = {k: (tuple(np.shape(v)), _dtype(v)) for k, v in global_params.items()}
            flat, _ = pack(dict(global_params))
            self.global_norm = float(l2_norms([flat])[0])

    def check(self, site: str, params: Mapping[str, Any]) -> Verdict:
        """Accept or reject one update; never raises for bad content."""
        from fedimg.kernels import l2_norms, pack

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
        for name, value in params.items():
            shape, dtype = self.reference[name]
            if tuple(np.shape(value)) != shape:
                return self._reject(site, f"shape mismatch for {name}: {tuple(np.shape(value))} != {shape}")
            if _dtype(value) != dtype:
                return self._reject(site, f"dtype mismatch for {name}: {_dtype(value)} != {dtype}")
        try:
            flat, layout = pack({k: params[k] for k in self.reference})
        except (ValueError, TypeError) as exc:
            return self._reject(site, f"cannot read update: {exc}")
        if self.layout is None:
            self.layout = layout
        norm = _norm(flat, l2_norms)
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
        return Verdict(site=site, ok=True, norm=norm, flat=flat)

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


def _norm(flat: Any, l2_norms: Any) -> float:
    """L2 norm in one pass; NaN/Inf anywhere gives a non-finite norm.

    Host float32 vectors use BLAS (float32 accumulation is ample for outlier tests); if that
    overflows or is not finite, or for device arrays, :func:`fedimg.kernels.l2_norms` decides.
    """
    if isinstance(flat, np.ndarray) and flat.dtype == np.float32:
        with np.errstate(over="ignore", invalid="ignore"):
            n = float(np.dot(flat, flat))
        if np.isfinite(n):
            return float(np.sqrt(n))
    return float(l2_norms([flat])[0])


def _dtype(x: Any) -> str:
    dt = getattr(x, "dtype", None)
    if dt is None:
        return np.asarray(x).dtype.name
    return str(dt).replace("torch.", "")


def _short(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")
