"""Each strategy's arithmetic against a hand computation (numpy, no NVFlare)."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.errors import ConfigError
from fedimg.fl.server.strategies import (
    STRATEGIES,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Median,
    Strategy,
    StrategyConfig,
    TrimmedMean,
    make_strategy,
)

U1 = np.array([1.0, 2.0, 3.0, -4.0], np.float32)
U2 = np.array([3.0, 2.0, 1.0, 0.0], np.float32)
U3 = np.array([-1.0, 8.0, 2.0, 4.0], np.float32)


def _round(agg: Strategy, updates, weights):
    agg.begin_round()
    for u, w in zip(updates, weights):
        agg.add(u, w)
    return agg.finish()


def test_fedavg_weighted_mean_by_sample_count():
    agg = make_strategy(StrategyConfig(name="fedavg"), size=4)
    out = _round(agg, [U1, U2, U3], [1, 3, 4])
    expected = (1 * U1 + 3 * U2 + 4 * U3) / 8
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert agg.count == 3 and agg.total_weight == 8


def test_fedavg_does_not_mutate_inputs_and_resets_each_round():
    u1, u2 = U1.copy(), U2.copy()
    agg = make_strategy(StrategyConfig(name="fedavg"), size=4)
    _round(agg, [u1, u2], [1, 1])
    np.testing.assert_array_equal(u1, U1)
    np.testing.assert_array_equal(u2, U2)
    np.testing.assert_allclose(_round(agg, [U3], [5]), U3)  # nothing left over from round 1


def test_server_lr_scales_the_step():
    agg = make_strategy(StrategyConfig(name="fedavg", server_lr=0.5), size=4)
    np.testing.assert_allclose(_round(agg, [U1, U2], [1, 1]), 0.5 * (U1 + U2) / 2)


def test_fedprox_aggregates_like_fedavg_and_defaults_mu():
    cfg = StrategyConfig(name="fedprox")
    assert cfg.prox_mu == pytest.approx(0.01)
    agg = make_strategy(cfg, size=4)
    np.testing.assert_allclose(_round(agg, [U1, U2], [2, 2]), (U1 + U2) / 2)
    with pytest.raises(ConfigError):
        StrategyConfig(name="fedprox", prox_mu=0.0)


@pytest.mark.parametrize("method", ["fedadam", "fedyogi"])
def test_fedopt_two_rounds_by_hand(method):
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    agg = make_strategy(StrategyConfig(name=method, server_lr=lr, beta1=b1, beta2=b2, tau=tau), size=4)
    d1 = (U1 + U2) / 2
    d2 = U3.astype(np.float64)
    m = (1 - b1) * d1
    v = (1 - b2) * d1**2  # Adam and Yogi agree from v = 0
    step1 = lr * m / (np.sqrt(v) + tau)
    np.testing.assert_allclose(_round(agg, [U1, U2], [1, 1]), step1, rtol=1e-5, atol=1e-7)
    m2 = b1 * m + (1 - b1) * d2
    if method == "fedadam":
        v2 = b2 * v + (1 - b2) * d2**2
    else:
        v2 = v - (1 - b2) * d2**2 * np.sign(v - d2**2)
    step2 = lr * m2 / (np.sqrt(v2) + tau)
    np.testing.assert_allclose(_round(agg, [U3], [7]), step2, rtol=1e-5, atol=1e-7)
    # moments survive a save/restore (resume)
    restored = make_strategy(StrategyConfig(name=method, server_lr=lr, beta1=b1, beta2=b2, tau=tau), size=4)
    restored.load_state(agg.state())
    np.testing.assert_allclose(restored.m, m2, rtol=1e-5)


def test_fedavgm_three_rounds_by_hand_and_resume():
    lr, beta = 0.5, 0.9
    cfg = StrategyConfig(name="fedavgm", server_lr=lr, beta1=beta)
    agg = make_strategy(cfg, size=4, float_size=3)  # last value: an integer buffer (max, no momentum)
    d1 = (1 * U1 + 3 * U2) / 4
    d2 = U3.astype(np.float64)
    d3 = (U1 + U3) / 2
    u1 = d1[:3]
    u2 = beta * u1 + d2[:3]
    u3 = beta * u2 + d3[:3]
    np.testing.assert_allclose(_round(agg, [U1, U2], [1, 3]), [*(lr * u1), 0.0], rtol=1e-6)
    np.testing.assert_allclose(_round(agg, [U3], [2]), [*(lr * u2), 4.0], rtol=1e-6)
    restored = make_strategy(cfg, size=4, float_size=3)
    restored.load_state(agg.state())  # the momentum buffer survives a save/restore
    for a in (agg, restored):
        np.testing.assert_allclose(_round(a, [U1, U3], [5, 5]), [*(lr * u3), 4.0], rtol=1e-6)
    # beta1 = 0 is plain FedAvg, round after round
    plain = make_strategy(StrategyConfig(name="fedavgm", beta1=0.0), size=4)
    _round(plain, [U1], [1])
    np.testing.assert_allclose(_round(plain, [U2, U3], [1, 1]), (U2 + U3) / 2, rtol=1e-6)


def test_fedavgm_nesterov_two_rounds_by_hand():
    lr, beta = 0.5, 0.9
    agg = make_strategy(StrategyConfig(name="fedavgm", server_lr=lr, beta1=beta, nesterov=True), size=4, float_size=3)
    d1 = (1 * U1 + 3 * U2) / 4
    d2 = U3.astype(np.float64)
    u1 = d1[:3]
    u2 = beta * u1 + d2[:3]
    np.testing.assert_allclose(_round(agg, [U1, U2], [1, 3]), [*(lr * (beta * u1 + d1[:3])), 0.0], rtol=1e-6)
    np.testing.assert_allclose(_round(agg, [U3], [2]), [*(lr * (beta * u2 + d2[:3])), 4.0], rtol=1e-6)
    np.testing.assert_allclose(agg.state()["u"], u2, rtol=1e-6)  # the buffer is plain momentum's
    with pytest.raises(ConfigError, match="nesterov"):
        StrategyConfig(name="fedadam", nesterov=True)


def test_fedavgm_server_lr_cosine_by_hand_and_resume():
    lr, beta = 0.5, 0.9
    cfg = StrategyConfig(name="fedavgm", server_lr=lr, beta1=beta, lr_rounds=4)
    agg = make_strategy(cfg, size=4, float_size=3)
    d1 = (1 * U1 + 3 * U2) / 4
    u1 = d1[:3]
    u2 = beta * u1 + U3[:3]
    u3 = beta * u2 + U1[:3]
    np.testing.assert_allclose(_round(agg, [U1, U2], [1, 3]), [*(lr * u1), 0.0], rtol=1e-6)  # cos(0): full lr
    lr2 = lr * (1 + np.cos(np.pi / 4)) / 2  # round 2 of 4: 0.4268
    np.testing.assert_allclose(_round(agg, [U3], [2]), [*(lr2 * u2), 4.0], rtol=1e-6)
    restored = make_strategy(cfg, size=4, float_size=3)
    restored.load_state(agg.state())  # round count and buffer survive a save/restore
    for a in (agg, restored):
        np.testing.assert_allclose(_round(a, [U1], [1]), [*(lr * 0.5 * u3), U1[3]], rtol=1e-6)  # cos(pi/2)
    for _ in range(2):  # rounds 4, 5: cos(3 pi / 4), then the cosine's end (0) is held
        _round(agg, [U1], [1])
    assert agg.server_lr() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="lr_rounds"):
        StrategyConfig(name="fedavg", lr_rounds=3)


def test_median_is_coordinatewise_and_ignores_weights():
    agg = make_strategy(StrategyConfig(name="median"), size=4)
    out = _round(agg, [U1, U2, U3], [1, 100, 1])
    np.testing.assert_allclose(out, [1.0, 2.0, 2.0, 0.0])


def test_trimmed_mean_cuts_each_end():
    ups = [np.full(2, x, np.float32) for x in (-100.0, 1.0, 2.0, 3.0, 1e6)]
    agg = make_strategy(StrategyConfig(name="trimmed_mean", trim_ratio=0.2), size=2)
    np.testing.assert_allclose(_round(agg, ups, [1] * 5), [2.0, 2.0])


def test_integer_tail_takes_the_max_in_every_strategy():
    a = np.array([1.0, 1.0, 3.0], np.float32)  # last value: an integer buffer's difference
    b = np.array([3.0, 3.0, 5.0], np.float32)
    for name in ("fedavg", "median"):
        agg = make_strategy(StrategyConfig(name=name), size=3, float_size=2)
        out = _round(agg, [a, b], [1, 1])
        np.testing.assert_allclose(out, [2.0, 2.0, 5.0])


def test_bad_configs_are_refused():
    for kw in ({"name": "fedsgd"}, {"server_lr": 0}, {"beta1": 1.0}, {"trim_ratio": 0.5}, {"tau": 0}):
        with pytest.raises(ConfigError):
            StrategyConfig(**kw)
    assert StrategyConfig(name="trimmed-mean").name == "trimmed_mean"
    with pytest.raises(ValueError):
        make_strategy(StrategyConfig(), size=3).finish()


def test_one_class_per_strategy_behind_the_abc():
    from fedimg.fl.server.scaffold import FedBN, Scaffold

    classes = {"fedavg": FedAvg, "fedprox": FedProx, "fedavgm": FedAvgM, "fedadam": FedAdam, "fedyogi": FedYogi,
               "median": Median, "trimmed_mean": TrimmedMean, "scaffold": Scaffold, "fedbn": FedBN}
    assert tuple(classes) == STRATEGIES
    for name, cls in classes.items():
        s = make_strategy(StrategyConfig(name=name), size=4)
        assert type(s) is cls and isinstance(s, Strategy) and s.name == name
    with pytest.raises(TypeError):
        Strategy(StrategyConfig(), size=4)  # abstract


def test_add_checked_refuses_without_touching_the_round():
    for name in ("fedavg", "median"):
        agg = make_strategy(StrategyConfig(name=name), size=4)
        agg.begin_round()
        assert agg.add_checked([U1[:2], U1[2:]], 1.0, lambda norm: True)  # an update given as its parts
        assert not agg.add_checked(U2 * 1e6, 5.0, lambda norm: norm < 100)
        assert agg.count == 1 and agg.total_weight == 1.0
        np.testing.assert_allclose(agg.finish(), U1)


def test_strategy_config_travels_as_json():
    cfg = StrategyConfig(name="trimmed-mean", trim_ratio=0.2, server_lr=0.5)
    text = cfg.to_json()
    assert isinstance(text, str) and StrategyConfig.from_json(text) == cfg
    assert StrategyConfig.from_json(StrategyConfig(name="fedprox").to_json()).prox_mu == pytest.approx(0.01)
    for bad in ("not json", "[1, 2]", '{"name": "fedsgd"}'):
        with pytest.raises(ConfigError):
            StrategyConfig.from_json(bad)
