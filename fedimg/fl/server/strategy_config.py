"""The strategy's parameters as one frozen value, serialised once as JSON (no NVFlare here).

:class:`StrategyConfig` travels whole from the command line to the server: the CLI builds
it, :class:`fedimg.fl.server.federation.FederationConfig` holds it, the NVFlare job writes
``to_dict()`` (a JSON object) into the aggregator's arguments and the server rebuilds it
(``from_dict()``; ``to_json()`` / ``from_json()`` give the same as text); a new parameter is
one new field here.

>>> cfg = StrategyConfig(name="fedadam", server_lr=0.1)
>>> StrategyConfig.from_json(cfg.to_json()) == cfg
True
>>> StrategyConfig(name="fedprox").prox_mu
0.01
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedimg.errors import ConfigError

__all__ = ["STRATEGIES", "StrategyConfig"]

#: Strategy names, in the order the command line lists them.
STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "median", "trimmed_mean", "scaffold", "fedbn")
_BUFFERED = ("median", "trimmed_mean")


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    """How the server turns a round's updates into a step.

    ``server_lr``: scale of the step (1.0 = plain FedAvg; FedOpt's server learning rate).
    ``beta1``/``beta2``/``tau``: FedOpt moments and adaptivity (``beta1`` is also
    ``fedavgm``'s server momentum). ``trim_ratio``: fraction
    cut from *each* end per coordinate for ``trimmed_mean``. ``prox_mu``: FedProx's
    proximal weight, used by the clients (0 disables; ``fedprox`` defaults to 0.01).
    ``nesterov``: ``fedavgm`` steps ``server_lr * (beta1 * u + d)`` (Nesterov momentum)
    instead of ``server_lr * u``. ``lr_rounds``: ``fedavgm``'s server lr follows a cosine from
    ``server_lr`` (round 1) towards 0 over this many rounds, so momentum built on the early,
    large updates stops carrying the model once the sites' own steps have shrunk (0: constant).
    ``lr_plateau``: ``fedavgm`` only: after this many rounds without a better federated
    validation (``plateau_metric``, the sites' evaluation of the model they received) the
    server goes back to the best model, clears its momentum and halves its lr (0: off).
    ``local_norms``: the normalisation layers stay at each site (FedBN-style, with any
    averaging strategy; personalised models); the strategy ``fedbn`` is FedAvg with it.
    """

    name: str = "fedavg"
    server_lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    trim_ratio: float = 0.1
    prox_mu: float | None = None
    nesterov: bool = False
    lr_rounds: int = 0
    lr_plateau: int = 0
    plateau_metric: str = "dice_mean"
    local_norms: bool = False

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
        if (self.nesterov or self.lr_rounds) and name != "fedavgm":
            raise ConfigError(f"nesterov / lr_rounds shape fedavgm's server momentum, not {name}'s: drop them or use fedavgm")
        if self.lr_plateau and name != "fedavgm":
            raise ConfigError(f"lr_plateau (--server-lr-plateau) restores and slows fedavgm's server step, not {name}'s: "
                              "drop it or use fedavgm")
        if self.lr_plateau < 0:
            raise ConfigError(f"lr_plateau must be >= 0 rounds (0: off), got {self.lr_plateau}")
        if self.local_norms and name == "scaffold":
            raise ConfigError("--local-norms cannot run with scaffold (its controls cover the norm layers): drop one")
        if self.lr_rounds < 0:
            raise ConfigError(f"lr_rounds must be >= 0 (0: constant server lr), got {self.lr_rounds}")
        if name == "scaffold" and self.prox_mu:
            raise ConfigError("strategy scaffold corrects client drift itself: drop --prox-mu (or use fedprox)")

    @property
    def scaffold(self) -> bool:
        """True for SCAFFOLD: sites keep control variates and correct their local steps."""
        return self.name == "scaffold"

    @property
    def local_norm(self) -> bool:
        """True for FedBN and ``local_norms``: normalisation layers stay at each site (personalised models)."""
        return self.name == "fedbn" or self.local_norms

    @property
    def buffered(self) -> bool:
        """True for the robust strategies that keep every update of the round."""
        return self.name in _BUFFERED

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain, JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StrategyConfig:
        return cls(**d)

    def to_json(self) -> str:
        """:meth:`to_dict` as one JSON object."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StrategyConfig:
        """Inverse of :meth:`to_json`; a malformed text is a :class:`~fedimg.errors.ConfigError`."""
        return cls.from_dict(_json_object(text, "strategy"))


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        d = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{what} config is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{what} config must be a JSON object, got {text!r}")
    return d
