"""Client-level DP (DP-FedAvg) as a wrapper around a strategy: fixed denominator, clipping
enforced, noise of the stated size, ε per round without amplification, resume."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.errors import ConfigError
from fedimg.fl.server.dp_strategy import ClientDP
from fedimg.fl.server.strategies import FedAvg, StrategyConfig, make_strategy
from fedimg.privacy import ClientDPConfig, client_dp_epsilon


def _dp(z=0.0, clip=1.0, sites=4, seed=0, name="fedavg", size=3):
    return ClientDP(make_strategy(StrategyConfig(name=name), size), ClientDPConfig(noise_multiplier=z, clip=clip,
                                                                                   sites=sites, seed=seed))


def test_fixed_denominator_equal_weights_and_server_side_clip():
    s = _dp(sites=4)
    s.add(np.array([0.3, 0.0, 0.0], np.float32), 1000.0)  # under the clip: unchanged; its weight is ignored
    s.add(np.array([0.0, 4.0, 0.0], np.float32), 1.0)     # norm 4 > C=1: scaled to norm 1
    # two of four sites arrived: the sum is divided by 4, not 2
    np.testing.assert_allclose(s.finish(), [0.3 / 4, 1.0 / 4, 0.0], rtol=1e-6)
    assert isinstance(s.inner, FedAvg) and s.rounds == 1  # a wrapper: FedAvg itself holds no DP code


def test_noise_has_the_stated_std_and_differs_by_seed():
    size = 20000
    steps = []
    for seed in (0, 1):
        s = _dp(z=2.0, clip=0.5, sites=4, seed=seed, size=size)
        s.add(np.zeros(size, np.float32), 1.0)
        steps.append(s.finish())
    assert np.std(steps[0]) == pytest.approx(2.0 * 0.5 / 4, rel=0.03)  # σ = zC/N
    assert not np.array_equal(steps[0], steps[1])


def test_epsilon_per_round_has_no_amplification_and_survives_resume():
    s = _dp(z=1.0, sites=4)
    eps = []
    for _ in range(3):
        s.begin_round()
        s.add(np.ones(3, np.float32) * 0.1, 1.0)
        s.finish()
        eps.append(s.report()["epsilon"])
    assert eps[0] < eps[1] < eps[2]
    assert eps[2] == pytest.approx(client_dp_epsilon(noise_multiplier=1.0, rounds=3, delta=1e-5))
    rep = s.report()
    assert rep["amplification"] is False and "no privacy amplification" in rep["statement"]
    assert client_dp_epsilon(noise_multiplier=1.0, rounds=20, delta=1e-5) == pytest.approx(30, abs=2)  # PRIVACY.md
    again = _dp(z=1.0, sites=4)
    again.load_state(s.state())
    assert again.rounds == 3 and again.report()["epsilon"] == pytest.approx(eps[2])


def test_wraps_fedadam_and_refuses_buffered_strategies():
    s = _dp(name="fedadam")
    s.add(np.ones(3, np.float32), 1.0)
    assert np.isfinite(s.finish()).all() and "m" in s.state()
    with pytest.raises(ConfigError, match="mean-based"):
        _dp(name="median")
