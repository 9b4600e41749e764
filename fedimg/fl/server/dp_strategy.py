"""Client-level DP on the server: :class:`ClientDP` wraps a strategy (never inside FedAvg).

DP-FedAvg (McMahan et al. 2018; :mod:`fedimg.privacy.clientdp` for the site's half and the
accounting). Each accepted update is bounded to norm C (a site's own clipping is checked,
not trusted: an update above C is scaled down to C before it is folded), every site weighs
the same, the round's sum is divided by the **fixed** number of sites N (not by the number
that arrived), Gaussian noise of σ = z·C/N is added to the float part, and the wrapped
strategy's server step (FedAvg's ``server_lr``, FedAdam/FedYogi's moments) applies to that
noisy mean. :meth:`ClientDP.report` gives ε after the rounds done (RDP, q = 1: no
amplification) for ``metrics.json`` and the log.

>>> import numpy as np
>>> from fedimg.fl.server.strategies import StrategyConfig, make_strategy
>>> from fedimg.privacy import ClientDPConfig
>>> s = ClientDP(make_strategy(StrategyConfig(name="fedavg"), 2), ClientDPConfig(noise_multiplier=0.0, clip=1.0, sites=4))
>>> s.add(np.array([3.0, 4.0], np.float32), 100.0)  # clipped to norm 1, weight ignored
>>> s.finish().tolist()  # [0.6, 0.8] / 4 sites
[0.15000000596046448, 0.20000000298023224]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from fedimg.errors import ConfigError
from fedimg.fl.server.strategies import Strategy
from fedimg.privacy.clientdp import ClientDPConfig, client_dp_epsilon, statement

__all__ = ["ClientDP"]

log = logging.getLogger(__name__)


class ClientDP(Strategy):
    """DP-FedAvg around ``inner`` (a streaming strategy: fedavg, fedprox, fedadam, fedyogi)."""

    name = "client_dp"

    def __init__(self, inner: Strategy, dp: ClientDPConfig) -> None:
        if inner.config.buffered:
            raise ConfigError(f"client-level DP needs a mean-based strategy, not {inner.config.name}")
        super().__init__(inner.config, inner.size, float_size=inner.float_size, device=inner.device)
        self.inner, self.dp = inner, dp
        self.rounds = 0
        self.rng = np.random.default_rng(dp.seed)

    # the interface, delegated with equal weights and the clipping bound
    def begin_round(self) -> None:
        self.inner.begin_round()

    def add(self, update: Any, weight: float) -> None:
        self.add_checked(update, weight, lambda norm: True)

    def add_checked(self, update: Any, weight: float, check: Callable[[float], bool]) -> bool:
        from fedimg.kernels import l2_norms

        parts = list(update) if isinstance(update, (list, tuple)) else [update]
        floats = _float_parts(parts, self.float_size)
        norm = float(np.sqrt(sum(float(l2_norms([p])[0]) ** 2 for p in floats if p.size)))
        # weight = the clipping factor: the accumulator folds min(1, C/norm) * update
        scale = min(1.0, self.dp.clip / norm) if norm > 0 and np.isfinite(norm) else 1.0
        if scale < 1.0 - 1e-6:
            log.warning("client-level DP: an update of norm %.4g above the clip %g was scaled down (the site did "
                        "not clip)", norm, self.dp.clip)
        ok = self.inner.add_checked(parts, scale, check)
        self.count, self.total_weight = self.inner.count, self.inner.total_weight
        return ok

    def finish(self) -> np.ndarray:
        inner = self.inner
        if inner.count == 0:
            raise ValueError("no update was accepted this round")
        step = inner._combine()  # sum_k s_k d_k / sum_k s_k
        fs = self.float_size
        step[:fs] *= inner.total_weight / self.dp.sites  # -> sum_k s_k d_k / N: the fixed denominator
        if self.dp.noise_std > 0:
            step[:fs] += self.rng.normal(0.0, self.dp.noise_std, fs).astype(np.float32)
        inner._scale(step)
        if inner._tail is not None:
            step[fs:] = inner._tail
        self.rounds += 1
        log.info("%s", statement(self.dp, self.rounds))
        return step

    def report(self) -> dict[str, Any]:
        """ε after the rounds done, the settings and the one-sentence statement."""
        eps = client_dp_epsilon(noise_multiplier=self.dp.noise_multiplier, rounds=self.rounds, delta=self.dp.delta)
        return {"epsilon": eps, "delta": self.dp.delta, "noise_multiplier": self.dp.noise_multiplier,
                "clip": self.dp.clip, "sites": self.dp.sites, "rounds": self.rounds, "noise_std": self.dp.noise_std,
                "amplification": False, "statement": statement(self.dp, self.rounds)}

    def state(self) -> dict[str, np.ndarray]:
        return {**self.inner.state(), "client_dp_rounds": np.array([self.rounds], np.int64)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        state = dict(state)
        if "client_dp_rounds" in state:
            self.rounds = int(np.asarray(state.pop("client_dp_rounds")).reshape(-1)[0])
        self.inner.load_state(state)

    # the abstract hooks: everything goes through the wrapped strategy
    def _reset(self) -> None:
        self.inner._reset()

    def _fold(self, update: Any, weight: float) -> None:  # pragma: no cover - add() goes through add_checked
        self.inner._fold(update, weight)

    def _fold_checked(self, parts: list[Any], weight: float, check: Callable[[float], bool]) -> bool:  # pragma: no cover
        return self.inner._fold_checked(parts, weight, check)

    def _combine(self) -> np.ndarray:  # pragma: no cover - finish() is overridden
        return self.inner._combine()


def _float_parts(parts: list[Any], float_size: int) -> list[Any]:
    """The parts' floating-point values (the first ``float_size`` of the packed order)."""
    from fedimg.kernels.layout import slice_parts

    return list(slice_parts(parts, 0, float_size)) if float_size < sum(int(np.prod(p.shape)) for p in parts) else parts
