"""Server-side aggregation strategies on flat update vectors (no NVFlare here).

Every site sends a *difference* ``local - global`` (flattened with
:func:`fedimg.kernels.pack`). A :class:`RoundAggregator` folds the round's accepted
differences into one server step ``delta`` that the server adds to the global model:

* ``fedavg`` / ``fedprox`` — ``delta = server_lr * sum_k n_k d_k / sum_k n_k``, streamed
  through :class:`fedimg.kernels.WeightedAccumulator` (constant memory: one accumulator,
  whatever the number of sites). FedProx differs only on the client (proximal term).
* ``fedadam`` / ``fedyogi`` — the weighted mean ``d`` is the pseudo-gradient (Δ);
  :func:`fedimg.kernels.fedopt_step` keeps the server moments ``m, v`` across rounds
  (Reddi et al., 2021, "Adaptive Federated Optimization").
* ``median`` / ``trimmed_mean`` — coordinate-wise robust statistics; these must buffer
  the round's updates (memory grows with the number of sites) and ignore sample counts.

Integer buffers (e.g. BatchNorm ``num_batches_tracked``) sit at the end of the packed
vector; they take the element-wise maximum of the differences in every strategy.

>>> import numpy as np
>>> agg = RoundAggregator(StrategyConfig(name="fedavg"), size=3)
>>> agg.add(np.array([1., 2., 3.], np.float32), 1.0)
>>> agg.add(np.array([3., 2., 1.], np.float32), 3.0)
>>> agg.finish()
array([2.5, 2. , 1.5], dtype=float32)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedimg.errors import ConfigError

__all__ = ["STRATEGIES", "StrategyConfig", "RoundAggregator"]

log = logging.getLogger(__name__)

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "median", "trimmed_mean")
_BUFFERED = ("median", "trimmed_mean")
_FEDOPT = ("fedadam", "fedyogi")


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    """How the server turns a round's updates into a step.

    ``server_lr``: scale of the step (1.0 = plain FedAvg; FedOpt's server learning rate).
    ``beta1``/``beta2``/``tau``: FedOpt moments and adaptivity. ``trim_ratio``: fraction
    cut from *each* end per coordinate for ``trimmed_mean``. ``prox_mu``: FedProx's
    proximal weight, used by the clients (0 disables; ``fedprox`` defaults to 0.01).
    """

    name: str = "fedavg"
    server_lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    trim_ratio: float = 0.1
    prox_mu: float | None = None

    def __post_init__(self) -> None:
        name = self.name.replace("-", "_").lower()
        if name not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.name!r}; choose one of {', '.join(STRATEGIES)}")
        object.__setattr__(self, "name", name)
        if not (self.server_lr > 0 and np.isfinite(self.server_lr)):
            raise ConfigError(f"server_lr must be > 0, got {self.server_lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("beta1 and beta2 must lie in [0, 1)")
        if not self.tau > 0:
            raise ConfigError(f"tau must be > 0, got {self.tau}")
        if not 0 <= self.trim_ratio < 0.5:
            raise ConfigError(f"trim_ratio must lie in [0, 0.5), got {self.trim_ratio}")
        if self.prox_mu is None:
            object.__setattr__(self, "prox_mu", 0.01 if name == "fedprox" else 0.0)
        if self.prox_mu < 0:
            raise ConfigError(f"prox_mu must be >= 0, got {self.prox_mu}")
        if name == "fedprox" and self.prox_mu == 0:
            raise ConfigError("strategy fedprox needs prox_mu > 0")

    @property
    def buffered(self) -> bool:
        """True for the robust strategies that keep every update of the round."""
        return self.name in _BUFFERED

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StrategyConfig:
        return cls(**d)


class RoundAggregator:
    """Aggregates one round at a time; FedOpt moments persist across rounds.

    ``size``: length of the packed update; ``float_size``: how many of those values are
    floating point (the rest are integer buffers, max-combined). ``device``: ``None`` or
    ``"cpu"`` for host memory, ``"cuda[:n]"`` to keep the accumulator on a GPU.
    """

    def __init__(self, config: StrategyConfig, size: int, *, float_size: int | None = None, device: Any = None) -> None:
        from fedimg.kernels import WeightedAccumulator

        self.config = config
        self.size = int(size)
        self.float_size = self.size if float_size is None else int(float_size)
        self.device = device
        self._acc = None if config.buffered else WeightedAccumulator(self.size, device=device)
        self._buffer: list[np.ndarray] = []
        self._tail: np.ndarray | None = None
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None
        self.count = 0
        self.total_weight = 0.0

    def begin_round(self) -> None:
        """Forget the previous round's updates (FedOpt moments are kept)."""
        if self._acc is not None:
            self._acc.reset()
        self._buffer = []
        self._tail = None
        self.count = 0
        self.total_weight = 0.0

    def add(self, update: Any, weight: float) -> None:
        """Fold one accepted update (a 1-D array of ``size`` values) with its sample count."""
        if int(np.prod(update.shape)) != self.size:
            raise ValueError(f"update has {int(np.prod(update.shape))} values, expected {self.size}")
        if self._acc is not None:
            self._acc.add(update, weight)
        else:
            self._buffer.append(update)
        self._count([update], weight)

    def add_checked(self, update: Any, weight: float, check: Callable[[float], bool]) -> bool:
        """:meth:`add` only if ``check(norm)`` accepts the update's L2 norm; returns that answer.

        ``update``: a 1-D array or a list of 1-D arrays that one after the other make it (a
        state dict's tensors in pack order, :func:`fedimg.kernels.layout.flat_parts`). Streaming
        strategies fold and measure it in one pass
        (:meth:`fedimg.kernels.WeightedAccumulator.add_checked`); a refused update leaves the
        round untouched. Buffered strategies keep a packed copy of accepted updates.
        """
        parts = list(update) if isinstance(update, (list, tuple)) else [update]
        n = sum(math.prod(p.shape) for p in parts)
        if n != self.size:
            raise ValueError(f"update has {n} values, expected {self.size}")
        if self._acc is not None:
            if not self._acc.add_checked(parts, weight, check):
                return False
        else:
            from fedimg.kernels import l2_norms

            flat = np.concatenate([_host(p).reshape(-1) for p in parts])
            if not check(float(l2_norms([flat])[0])):
                return False
            self._buffer.append(flat)
        self._count(parts, weight)
        return True

    def _count(self, parts: list[Any], weight: float) -> None:
        from fedimg.kernels.layout import slice_parts

        self.count += 1
        self.total_weight += float(weight)
        if self.float_size < self.size:
            tail = np.concatenate([_host(p).reshape(-1) for p in slice_parts(parts, self.float_size, self.size)])
            tail = tail.astype(np.float64)
            self._tail = tail if self._tail is None else np.maximum(self._tail, tail)

    def finish(self) -> Any:
        """The server step to add to the global model (a new 1-D float array)."""
        if self.count == 0:
            raise ValueError("no update was accepted this round")
        cfg = self.config
        fs = self.float_size
        if cfg.buffered:
            from fedimg.kernels import coordinate_median, trimmed_mean

            if cfg.name == "median":
                mean = coordinate_median(self._buffer)
            else:
                mean = trimmed_mean(self._buffer, cfg.trim_ratio)
        else:
            mean = self._acc.result()
        mean = _host(mean).astype(np.float32, copy=False)  # a new array already
        if cfg.name in _FEDOPT:
            from fedimg.kernels import fedopt_step

            d = mean[:fs]
            if self.m is None:
                self.m = np.zeros(fs, np.float32)
                self.v = np.zeros(fs, np.float32)
            zero = np.zeros(fs, np.float32)
            # Reddi et al.: x' = x + lr * m / (sqrt(v) + tau) with m, v from the mean difference d.
            # The step does not depend on x: start from zero and read it off.
            step, self.m, self.v = fedopt_step(
                zero, d, self.m, self.v,
                method=cfg.name[3:], lr=cfg.server_lr, beta1=cfg.beta1, beta2=cfg.beta2, tau=cfg.tau,
            )
            self.m, self.v = _host(self.m), _host(self.v)
            mean[:fs] = _host(step)
        elif cfg.server_lr != 1.0:
            mean[:fs] *= cfg.server_lr
        if self._tail is not None:
            mean[fs:] = self._tail
        return mean

    def state(self) -> dict[str, np.ndarray]:
        """Server optimiser state to checkpoint (empty for stateless strategies)."""
        return {} if self.m is None else {"m": self.m, "v": self.v}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore FedOpt moments saved by :meth:`state` (resume)."""
        if "m" in state and "v" in state:
            self.m = np.asarray(state["m"], np.float32).copy()
            self.v = np.asarray(state["v"], np.float32).copy()


def _host(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)
