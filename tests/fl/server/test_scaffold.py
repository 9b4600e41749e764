"""SCAFFOLD's control-variate maths and FedBN's norm entries against hand computations (no NVFlare)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.errors import ConfigError
from fedimg.fl.server.federation import FederationConfig
from fedimg.fl.server.scaffold import FedBN, Scaffold, SiteControl, check_controls, norm_keys
from fedimg.fl.server.strategies import StrategyConfig, make_strategy

X = torch.tensor([[1.0, 2.0]])  # loss = w . x: the gradient is x = [1, 2] at every step


def _net() -> torch.nn.Module:
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    return net


def _steps(net, opt, n, sched=None):
    for _ in range(n):
        opt.zero_grad()
        net(X).sum().backward()
        opt.step()
        if sched is not None:
            sched.step()


def test_site_round_by_hand():
    net = _net()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    site = SiteControl()
    site.local = {"weight": torch.tensor([[0.2, 0.1]])}  # c_i from an earlier round
    site.begin(net, {"weight": np.array([[0.5, -0.5]], np.float32)})  # c
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with site.attached(net):
        _steps(net, opt, 2)
    # each step: w -= 0.1 * (g + c - c_i) = 0.1 * ([1, 2] + [0.3, -0.6]) = [0.13, 0.14]
    np.testing.assert_allclose(net.weight.detach().numpy(), [[0.74, 0.72]], atol=1e-6)
    delta = site.finish(net, start)
    # c_i+ = c_i - c + (x - y) / (2 * 0.1) = [-0.3, 0.6] + [1.3, 1.4] = [1, 2]: the true gradient
    np.testing.assert_allclose(site.local["weight"].numpy(), [[1.0, 2.0]], atol=1e-5)
    np.testing.assert_allclose(delta["weight"], [[0.8, 1.9]], atol=1e-5)
    # outside attached(): no correction
    _steps(net, opt, 1)
    np.testing.assert_allclose(net.weight.detach().numpy(), [[0.64, 0.52]], atol=1e-6)


def test_site_round_divides_by_the_sum_of_the_step_learning_rates():
    net = _net()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    site = SiteControl()
    site.local = {"weight": torch.tensor([[0.2, 0.1]])}
    site.begin(net, {"weight": np.array([[0.5, -0.5]], np.float32)})
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 ** e)  # lr 0.1, then 0.05
    with site.attached(net):
        _steps(net, opt, 2, sched)
    # x - y = (0.1 + 0.05) * [1.3, 1.4]; steps x last lr (0.1) would give c_i = [1.65, 2.7]
    np.testing.assert_allclose(net.weight.detach().numpy(), [[1 - 0.195, 1 - 0.21]], atol=1e-6)
    site.finish(net, start)
    np.testing.assert_allclose(site.local["weight"].numpy(), [[1.0, 2.0]], atol=1e-5)


def test_first_round_has_zero_controls_and_other_models_are_untouched():
    net, other = _net(), _net()
    site = SiteControl()
    site.begin(net, None)  # round 1: no global control yet, c = c_i = 0
    assert torch.equal(site.local["weight"], torch.zeros(1, 2))
    opt, opt_other = torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.SGD(other.parameters(), lr=0.1)
    site.local["weight"] += 1.0  # a later round: c_i = 1, c = 0, so each step adds 0.1 * 1
    site.begin(net, {"weight": np.zeros((1, 2), np.float32)})
    with site.attached(net):
        _steps(other, opt_other, 1)
        _steps(net, opt, 1)
    np.testing.assert_allclose(other.weight.detach().numpy(), [[0.9, 0.8]], atol=1e-6)  # plain SGD
    np.testing.assert_allclose(net.weight.detach().numpy(), [[1.0, 0.9]], atol=1e-6)  # - 0.1 * ([1, 2] - 1)
    with pytest.raises(ValueError, match="shape"):
        site.begin(net, {"weight": np.zeros(3, np.float32)})


def test_server_averages_the_control_differences_of_accepted_sites():
    s = make_strategy(StrategyConfig(name="scaffold"), size=2)
    assert isinstance(s, Scaffold) and s.controls() == {}
    s.begin_round()
    s.add(np.array([1.0, 0.0], np.float32), 1.0)
    s.add_controls({"w": np.array([1.0, 2.0])}, 1.0)
    s.add(np.array([3.0, 4.0], np.float32), 3.0)
    s.add_controls({"w": np.array([3.0, 0.0])}, 3.0)
    np.testing.assert_allclose(s.finish(), [2.5, 3.0])  # FedAvg of the model differences
    np.testing.assert_allclose(s.controls()["w"], [2.5, 0.5])  # c = 0 + (1*[1, 2] + 3*[3, 0]) / 4
    s.begin_round()
    s.add(np.array([1.0, 1.0], np.float32), 2.0)
    s.add_controls({"w": np.array([1.0, 1.0])}, 2.0)
    s.finish()
    np.testing.assert_allclose(s.controls()["w"], [3.5, 1.5])
    assert s.control_norm() == pytest.approx(np.hypot(3.5, 1.5))
    again = make_strategy(StrategyConfig(name="scaffold"), size=2)
    again.load_state(s.state())  # resume of the server's half
    np.testing.assert_allclose(again.controls()["w"], [3.5, 1.5])


def test_control_checks_and_refused_combinations():
    shapes = {"w": (2,)}
    assert check_controls({"w": np.zeros(2, np.float32)}, shapes) is None
    assert "missing" in check_controls(None, shapes)
    assert "unknown" in check_controls({"x": np.zeros(2)}, shapes)
    assert "shape" in check_controls({"w": np.zeros(3)}, shapes)
    assert "finite" in check_controls({"w": np.array([np.nan, 0.0])}, shapes)
    with pytest.raises(ConfigError, match="scaffold"):
        StrategyConfig(name="scaffold", prox_mu=0.01)
    for strat in ("scaffold", "fedbn"):
        with pytest.raises(ConfigError, match="DP"):
            FederationConfig(strategy=StrategyConfig(name=strat), dp={"epsilon": 1.0})
        with pytest.raises(ConfigError, match="DP"):
            FederationConfig(strategy=StrategyConfig(name=strat), client_dp={"noise_multiplier": 1.0, "clip": 1.0})
        with pytest.raises(ConfigError, match="--he"):
            FederationConfig(strategy=StrategyConfig(name=strat), he=True)


def test_norm_keys_are_the_norm_layers_entries():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Conv3d(4, 4, 1),
                              torch.nn.BatchNorm3d(4), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    assert norm_keys(net) == ["1.bias", "1.weight", "3.bias", "3.num_batches_tracked", "3.running_mean",
                              "3.running_var", "3.weight"]
    assert norm_keys(torch.nn.Linear(2, 2)) == []
    assert isinstance(make_strategy(StrategyConfig(name="fedbn"), size=2), FedBN)
