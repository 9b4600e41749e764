"""Client-level DP (DP-FedAvg, McMahan et al. 2018): what a site and the server each do, and ε.

A site clips its update before anything leaves it (:func:`clip_update`: Δ·min(1, C/‖Δ‖)
over its floating-point tensors). The server (:class:`fedimg.fl.server.dp_strategy.ClientDP`,
a wrapper around a strategy) enforces the same bound, averages with the **fixed**
denominator N (the number of sites in the federation, not the number that arrived), and adds
N(0, σ²I) with σ = z·C/N. Every site takes part in every round (q = 1), so there is **no
privacy amplification by sampling**: :func:`client_dp_epsilon` composes T rounds of the
Gaussian mechanism with Opacus's RDP accountant, and ε grows with every round (z = 1,
T = 20, δ = 1e-5 gives ε ≈ 30). The guarantee covers whether one whole site took part; the
sites' metrics and sample counts are sent in the clear and are not covered.

>>> import numpy as np
>>> clipped, norm = clip_update({"w": np.array([3.0, 4.0], np.float32)}, 1.0)
>>> norm, clipped["w"].tolist()
(5.0, [0.6000000238418579, 0.800000011920929])
>>> round(client_dp_epsilon(noise_multiplier=1.0, rounds=20, delta=1e-5), 1)
30.1
>>> z = client_noise_for(epsilon=8.0, rounds=20, delta=1e-5)  # the noise for a target epsilon
>>> 2 < z < 4, client_dp_epsilon(noise_multiplier=z, rounds=20, delta=1e-5) <= 8.0
(True, True)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedimg.errors import ConfigError

__all__ = ["ClientDPConfig", "clip_update", "client_dp_epsilon", "client_noise_for", "statement"]


@dataclass(frozen=True, kw_only=True)
class ClientDPConfig:
    """DP-FedAvg settings: noise multiplier z, clipping norm C (of a site's whole update), δ,
    the number of sites N (the fixed denominator) and the server's noise seed (``None``: fresh
    entropy from the operating system, what a real run should use)."""

    noise_multiplier: float = 1.0
    clip: float = 0.5
    delta: float = 1e-5
    sites: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.noise_multiplier < math.inf):
            raise ConfigError(f"--noise-multiplier must be >= 0, got {self.noise_multiplier}")
        if not (0 < self.clip < math.inf):
            raise ConfigError(f"--clip must be a positive finite norm, got {self.clip}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"client-level delta must be in (0, 1), got {self.delta}")
        if self.sites < 1:
            raise ConfigError(f"client-level DP needs the number of sites (>= 1), got {self.sites}")

    @property
    def noise_std(self) -> float:
        """σ of the noise on the averaged update: z·C/N."""
        return self.noise_multiplier * self.clip / self.sites

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClientDPConfig:
        return cls(**d)


def clip_update(params: dict[str, Any], clip: float) -> tuple[dict[str, Any], float]:
    """``(clipped, norm)``: the floating-point tensors scaled by min(1, clip/‖Δ‖) (numpy or torch);
    integer buffers pass unchanged. ``norm`` is the update's L2 norm before clipping."""
    def is_float(v: Any) -> bool:
        if hasattr(v, "is_floating_point"):  # torch
            return bool(v.is_floating_point())
        return np.asarray(v).dtype.kind == "f"

    sq = sum(float((np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, np.float64) ** 2).sum())
             for v in params.values() if is_float(v))
    norm = math.sqrt(sq)
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return {k: (v * scale if is_float(v) and scale < 1.0 else v) for k, v in params.items()}, norm


def client_dp_epsilon(*, noise_multiplier: float, rounds: int, delta: float) -> float:
    """ε after ``rounds`` rounds of DP-FedAvg with every site in every round (q = 1), RDP."""
    from fedimg.privacy.dpsgd import epsilon_of

    return epsilon_of(noise_multiplier=noise_multiplier, sample_rate=1.0, steps=rounds, delta=delta)


def client_noise_for(*, epsilon: float, rounds: int, delta: float) -> float:
    """The noise multiplier z whose ε after ``rounds`` rounds (q = 1, RDP) is at most ``epsilon``."""
    from opacus.accountants.utils import get_noise_multiplier

    if not (0 < epsilon < math.inf) or rounds < 1:
        raise ConfigError(f"client-level DP needs a positive finite target epsilon and rounds >= 1, got {epsilon}, {rounds}")
    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=1.0, steps=rounds,
                                      accountant="rdp"))


def statement(config: ClientDPConfig, rounds: int) -> str:
    """The guarantee in one sentence, as measured after ``rounds`` rounds."""
    eps = client_dp_epsilon(noise_multiplier=config.noise_multiplier, rounds=rounds, delta=config.delta)
    return (f"client-level DP (DP-FedAvg): ({eps:.3g}, {config.delta:g})-DP for each site's participation after "
            f"{rounds} round(s) (noise multiplier {config.noise_multiplier:g}, clip {config.clip:g}, fixed "
            f"denominator {config.sites} sites, RDP). All {config.sites} sites take part every round (no sampling), "
            "so there is no privacy amplification: epsilon grows with every round. Metrics and sample counts are "
            "sent in the clear and are not covered.")
