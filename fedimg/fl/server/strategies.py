"""Server-side aggregation strategies on flat update vectors (no NVFlare here).

Every site sends a *difference* ``local - global`` (flattened with
:func:`fedimg.kernels.pack`). A :class:`Strategy` folds the round's accepted differences
into one server step ``delta`` that the server adds to the global model. Its whole
interface (after Flower's ``Strategy.aggregate_train``): :meth:`~Strategy.begin_round`,
:meth:`~Strategy.add_checked` per arriving update (:meth:`~Strategy.add` when the update
needs no check), :meth:`~Strategy.finish` for the step, :meth:`~Strategy.state` /
:meth:`~Strategy.load_state` for resume. One class per strategy, built by
:func:`make_strategy` from a :class:`fedimg.fl.server.strategy_config.StrategyConfig`:

* :class:`FedAvg` / :class:`FedProx` — ``delta = server_lr * sum_k n_k d_k / sum_k n_k``,
  streamed through :class:`fedimg.kernels.WeightedAccumulator` (constant memory: one
  accumulator, whatever the number of sites). FedProx differs only on the client
  (proximal term).
* :class:`FedAvgM` — FedAvg with server momentum (Hsu et al., 2019, "Measuring the Effects
  of Non-Identical Data Distribution"): ``u = beta1 * u + mean; delta = server_lr * u``, the
  momentum buffer ``u`` kept across rounds.
* :class:`FedAdam` / :class:`FedYogi` — the weighted mean ``d`` is the pseudo-gradient (Δ);
  :func:`fedimg.kernels.fedopt_step` keeps the server moments ``m, v`` across rounds
  (Reddi et al., 2021, "Adaptive Federated Optimization").
* :class:`Median` / :class:`TrimmedMean` — coordinate-wise robust statistics; these must
  buffer the round's updates (memory grows with the number of sites) and ignore sample counts.

Integer buffers (e.g. BatchNorm ``num_batches_tracked``) sit at the end of the packed
vector; they take the element-wise maximum of the differences in every strategy.
Aggregation is pure: no input array is modified or kept beyond the round.

>>> import numpy as np
>>> s = make_strategy(StrategyConfig(name="fedavg"), size=3)
>>> s.add(np.array([1., 2., 3.], np.float32), 1.0)
>>> s.add(np.array([3., 2., 1.], np.float32), 3.0)
>>> s.finish()
array([2.5, 2. , 1.5], dtype=float32)
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from fedimg.fl.server.plateau import LrPlateau
from fedimg.fl.server.strategy_config import STRATEGIES, StrategyConfig

__all__ = [
    "STRATEGIES",
    "StrategyConfig",
    "Strategy",
    "FedAvg",
    "FedProx",
    "FedAvgM",
    "FedAdam",
    "FedYogi",
    "Median",
    "TrimmedMean",
    "make_strategy",
]

log = logging.getLogger(__name__)


class Strategy(ABC):
    """One round at a time: fold accepted updates, then :meth:`finish` gives the server step.

    ``size``: length of the packed update; ``float_size``: how many of those values are
    floating point (the rest are integer buffers, max-combined). ``device``: ``None`` or
    ``"cpu"`` for host memory, ``"cuda[:n]"`` to keep the accumulator on a GPU.
    ``count`` / ``total_weight``: accepted updates and their summed weights this round.
    """

    name: ClassVar[str]

    def __init__(self, config: StrategyConfig, size: int, *, float_size: int | None = None, device: Any = None) -> None:
        self.config = config
        self.size = int(size)
        self.float_size = self.size if float_size is None else int(float_size)
        self.device = device
        self._tail: np.ndarray | None = None
        self.count = 0
        self.total_weight = 0.0

    # -- the interface ------------------------------------------------------------------
    def begin_round(self) -> None:
        """Forget the previous round's updates (server optimiser state is kept)."""
        self._reset()
        self._tail = None
        self.count = 0
        self.total_weight = 0.0

    def add(self, update: Any, weight: float) -> None:
        """Fold one accepted update (a 1-D array of ``size`` values) with its sample count."""
        n = int(np.prod(update.shape))
        if n != self.size:
            raise ValueError(f"update has {n} values, expected {self.size}")
        self._fold(update, weight)
        self._count([update], weight)

    def add_checked(self, update: Any, weight: float, check: Callable[[float], bool]) -> bool:
        """:meth:`add` only if ``check(norm)`` accepts the update's L2 norm; returns that answer.

        ``update``: a 1-D array or a list of 1-D arrays that one after the other make it (a
        state dict's tensors in pack order, :func:`fedimg.kernels.layout.flat_parts`). A
        refused update leaves the round untouched.
        """
        parts = list(update) if isinstance(update, (list, tuple)) else [update]
        n = sum(math.prod(p.shape) for p in parts)
        if n != self.size:
            raise ValueError(f"update has {n} values, expected {self.size}")
        if not self._fold_checked(parts, weight, check):
            return False
        self._count(parts, weight)
        return True

    def finish(self) -> Any:
        """The server step to add to the global model (a new 1-D float32 array)."""
        if self.count == 0:
            raise ValueError("no update was accepted this round")
        step = self._combine()
        self._scale(step)
        if self._tail is not None:
            step[self.float_size:] = self._tail
        return step

    def state(self) -> dict[str, np.ndarray]:
        """Server optimiser state to checkpoint (empty for stateless strategies)."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore the state saved by :meth:`state` (resume); stateless strategies ignore it."""

    # -- what each strategy supplies -----------------------------------------------------
    @abstractmethod
    def _reset(self) -> None:
        """Drop this round's folded updates."""

    @abstractmethod
    def _fold(self, update: Any, weight: float) -> None:
        """Fold one flat update."""

    @abstractmethod
    def _fold_checked(self, parts: list[Any], weight: float, check: Callable[[float], bool]) -> bool:
        """Fold the update made of ``parts`` if ``check(norm)`` accepts it."""

    @abstractmethod
    def _combine(self) -> np.ndarray:
        """The round's combined update: a new float32 host array of ``size`` values."""

    def _scale(self, step: np.ndarray) -> None:
        """Turn the combined update into the server step in place (its float part)."""
        if self.config.server_lr != 1.0:
            step[:self.float_size] *= self.config.server_lr

    def _count(self, parts: list[Any], weight: float) -> None:
        from fedimg.kernels.layout import slice_parts

        self.count += 1
        self.total_weight += float(weight)
        if self.float_size < self.size:
            tail = np.concatenate([_host(p).reshape(-1) for p in slice_parts(parts, self.float_size, self.size)])
            tail = tail.astype(np.float64)
            self._tail = tail if self._tail is None else np.maximum(self._tail, tail)


class _Streaming(Strategy):
    """Weighted mean streamed through one :class:`fedimg.kernels.WeightedAccumulator`."""

    def __init__(self, config: StrategyConfig, size: int, *, float_size: int | None = None, device: Any = None) -> None:
        from fedimg.kernels import WeightedAccumulator

        super().__init__(config, size, float_size=float_size, device=device)
        self._acc = WeightedAccumulator(self.size, device=device)

    def _reset(self) -> None:
        self._acc.reset()

    def _fold(self, update: Any, weight: float) -> None:
        self._acc.add(update, weight)

    def _fold_checked(self, parts: list[Any], weight: float, check: Callable[[float], bool]) -> bool:
        # one pass folds the update into a scratch sum and measures its norm
        return bool(self._acc.add_checked(parts, weight, check))

    def _combine(self) -> np.ndarray:
        return _host(self._acc.result()).astype(np.float32, copy=False)  # a new array already


class FedAvg(_Streaming):
    """Sample-weighted mean of the differences, times ``server_lr``."""

    name = "fedavg"


class FedProx(FedAvg):
    """FedAvg on the server; the proximal term (``prox_mu``) lives in the sites' training."""

    name = "fedprox"


class FedAvgM(_Streaming):
    """FedAvg with server momentum: ``u = beta1 * u + d``, step ``server_lr * u`` (``u`` persists).

    ``d`` is the round's sample-weighted mean difference; with ``beta1 = 0`` this is FedAvg.
    With ``nesterov`` the step is ``server_lr * (beta1 * u + d)`` (the new ``u``). With
    ``lr_rounds = R`` round ``r`` (1, 2, ...) steps with ``server_lr * (1 + cos(pi (r-1) / R)) / 2``
    (the round count is saved with ``u``). With ``lr_plateau = P`` the server lr halves, and the
    model goes back to its best, after P rounds without a better validation (:mod:`.plateau`).

    >>> s = make_strategy(StrategyConfig(name="fedavgm", beta1=0.5), size=2)
    >>> for _ in range(2):
    ...     s.begin_round(); s.add(np.array([1., -2.], np.float32), 1.0); step = s.finish()
    >>> step  # 0.5 * [1, -2] + [1, -2]
    array([ 1.5, -3. ], dtype=float32)
    """

    name = "fedavgm"

    def __init__(self, config: StrategyConfig, size: int, *, float_size: int | None = None, device: Any = None) -> None:
        super().__init__(config, size, float_size=float_size, device=device)
        self.u: np.ndarray | None = None
        self.rounds = 0  # server steps taken
        self.plateau = LrPlateau(config.lr_plateau) if config.lr_plateau else None
        self._warned_metric = False

    def server_lr(self) -> float:
        """This round's server lr (``lr_rounds``' cosine, else ``server_lr``)."""
        cfg = self.config
        if not cfg.lr_rounds:
            return cfg.server_lr
        return cfg.server_lr * 0.5 * (1.0 + math.cos(math.pi * min(self.rounds, cfg.lr_rounds) / cfg.lr_rounds))

    def observe(self, val: dict[str, Any]) -> None:
        """The round's validation of the model the sites started from (``lr_plateau``; else ignored)."""
        if self.plateau is not None:
            metric = self.config.plateau_metric
            if metric not in val and any(k != "per_site" for k in val) and not self._warned_metric:
                self._warned_metric = True  # e.g. a StrategyConfig built in Python for a task without Dice
                log.warning("lr on plateau: the sites report no %r (they report %s); set plateau_metric to the "
                            "task's key metric", metric, ", ".join(sorted(k for k in val if k != "per_site")))
            self.plateau.observe(val.get(metric))

    def _scale(self, step: np.ndarray) -> None:
        fs = self.float_size
        back = self.plateau.restore(fs) if self.plateau is not None else None
        if back is not None:  # back to the best model, momentum cleared (the scale is already lowered)
            step[:fs], self.u = back, None
            self.rounds += 1
            return
        d = step[:fs].astype(np.float32, copy=False)
        b = np.float32(self.config.beta1)
        self.u = d.copy() if self.u is None else (b * self.u + d).astype(np.float32)
        lr = self.server_lr() * (self.plateau.scale if self.plateau is not None else 1.0)
        step[:fs] = np.float32(lr) * ((b * self.u + d) if self.config.nesterov else self.u)
        if self.plateau is not None:
            self.plateau.applied(step[:fs])
        self.rounds += 1

    def state(self) -> dict[str, np.ndarray]:
        out = {} if self.u is None else {"u": self.u}
        if self.rounds:
            out["rounds"] = np.array([self.rounds], np.int64)
        return {**out, **(self.plateau.state() if self.plateau is not None else {})}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if "u" in state:
            self.u = np.asarray(state["u"], np.float32).copy()
        if "rounds" in state:
            self.rounds = int(np.asarray(state["rounds"]).reshape(-1)[0])
        if self.plateau is not None:
            self.plateau.load_state(state)


class _FedOpt(_Streaming):
    """Adaptive server optimiser on the weighted mean difference; moments ``m, v`` persist."""

    method: ClassVar[str]

    def __init__(self, config: StrategyConfig, size: int, *, float_size: int | None = None, device: Any = None) -> None:
        super().__init__(config, size, float_size=float_size, device=device)
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def _scale(self, step: np.ndarray) -> None:
        from fedimg.kernels import fedopt_step

        cfg, fs = self.config, self.float_size
        d = step[:fs]
        if self.m is None:
            self.m = np.zeros(fs, np.float32)
            self.v = np.zeros(fs, np.float32)
        zero = np.zeros(fs, np.float32)
        # Reddi et al.: x' = x + lr * m / (sqrt(v) + tau) with m, v from the mean difference d.
        # The step does not depend on x: start from zero and read it off.
        new, self.m, self.v = fedopt_step(
            zero, d, self.m, self.v,
            method=self.method, lr=cfg.server_lr, beta1=cfg.beta1, beta2=cfg.beta2, tau=cfg.tau,
        )
        self.m, self.v = _host(self.m), _host(self.v)
        step[:fs] = _host(new)

    def state(self) -> dict[str, np.ndarray]:
        return {} if self.m is None else {"m": self.m, "v": self.v}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if "m" in state and "v" in state:
            self.m = np.asarray(state["m"], np.float32).copy()
            self.v = np.asarray(state["v"], np.float32).copy()


class FedAdam(_FedOpt):
    """FedAdam (Reddi et al., 2021)."""

    name = "fedadam"
    method = "adam"


class FedYogi(_FedOpt):
    """FedYogi (Reddi et al., 2021)."""

    name = "fedyogi"
    method = "yogi"


class _Buffered(Strategy):
    """Keeps a packed copy of every accepted update of the round (robust statistics)."""

    def __init__(self, config: StrategyConfig, size: int, *, float_size: int | None = None, device: Any = None) -> None:
        super().__init__(config, size, float_size=float_size, device=device)
        self._buffer: list[Any] = []

    def _reset(self) -> None:
        self._buffer = []

    def _fold(self, update: Any, weight: float) -> None:
        self._buffer.append(update)

    def _fold_checked(self, parts: list[Any], weight: float, check: Callable[[float], bool]) -> bool:
        from fedimg.kernels import l2_norms

        flat = np.concatenate([_host(p).reshape(-1) for p in parts])
        if not check(float(l2_norms([flat])[0])):
            return False
        self._buffer.append(flat)
        return True

    def _combine(self) -> np.ndarray:
        return _host(self._robust()).astype(np.float32, copy=False)  # a new array already

    @abstractmethod
    def _robust(self) -> Any:
        """The coordinate-wise statistic of the buffered updates."""


class Median(_Buffered):
    """Coordinate-wise median (sample counts are ignored)."""

    name = "median"

    def _robust(self) -> Any:
        from fedimg.kernels import coordinate_median

        return coordinate_median(self._buffer)


class TrimmedMean(_Buffered):
    """Coordinate-wise mean after cutting ``trim_ratio`` of the values at each end."""

    name = "trimmed_mean"

    def _robust(self) -> Any:
        from fedimg.kernels import trimmed_mean

        return trimmed_mean(self._buffer, self.config.trim_ratio)


#: One class per name of :data:`STRATEGIES` (a test keeps the two in step).
_CLASSES: dict[str, type[Strategy]] = {c.name: c for c in (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, Median, TrimmedMean)}


def make_strategy(config: StrategyConfig, size: int, float_size: int | None = None, device: Any = None) -> Strategy:
    """The :class:`Strategy` that ``config.name`` names, for packed updates of ``size`` values."""
    if config.name in ("scaffold", "fedbn"):  # defined in .scaffold (subclasses of FedAvg)
        from fedimg.fl.server import scaffold

        return getattr(scaffold, {"scaffold": "Scaffold", "fedbn": "FedBN"}[config.name])(
            config, size, float_size=float_size, device=device)
    return _CLASSES[config.name](config, size, float_size=float_size, device=device)


def _host(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)
