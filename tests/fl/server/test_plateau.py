"""FedAvgM's server lr on plateau (fedimg.fl.server.plateau) against a hand computation, with save/restore."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.errors import ConfigError
from fedimg.fl.server.plateau import LrPlateau
from fedimg.fl.server.strategies import StrategyConfig, make_strategy

D = [np.array(v, np.float32) for v in ([1, 2, 3, 1], [2, -1, 0, 2], [0, 4, -2, 3], [1, 1, 1, 5], [-2, 0, 1, 6],
                                        [3, 3, -1, 7])]
VAL = [0.5, 0.7, 0.6, 0.65, 0.7, 0.8]  # the sites' validation of each round's start model


def _round(agg, d, val):
    agg.begin_round()
    agg.observe({"dice_mean": val, "per_site": {}})
    agg.add(d, 1.0)
    return agg.finish()


def test_fedavgm_plateau_by_hand_and_resume():
    beta = 0.5
    cfg = StrategyConfig(name="fedavgm", beta1=beta, server_lr=2.0, lr_plateau=2)
    agg = make_strategy(cfg, size=4, float_size=3)
    f = [d[:3].astype(np.float64) for d in D]
    u1 = f[0]
    u2 = beta * u1 + f[1]
    u3 = beta * u2 + f[2]
    s2, s3 = 2 * u2, 2 * u3
    # rounds 1-3: momentum as usual; round 2's start (0.7) is the best, round 3's (0.6) is 1 without a new best
    np.testing.assert_allclose(_round(agg, D[0], VAL[0]), [*(2 * u1), 1], rtol=1e-6)
    np.testing.assert_allclose(_round(agg, D[1], VAL[1]), [*s2, 2], rtol=1e-6)
    np.testing.assert_allclose(_round(agg, D[2], VAL[2]), [*s3, 3], rtol=1e-6)
    assert agg.plateau.bad == 1 and agg.plateau.scale == 1.0
    restored = make_strategy(cfg, size=4, float_size=3)
    restored.load_state({k: v.copy() for k, v in agg.state().items()})  # as --resume reads it back
    for a in (agg, restored):
        # round 4: the second round without a new best: back to round 1's model (undo steps 2 and 3),
        # momentum cleared, server lr halved; the round's own update is dropped (integer tail as usual)
        np.testing.assert_allclose(_round(a, D[3], VAL[3]), [*(-(s2 + s3)), 5], rtol=1e-6)
        assert a.u is None and a.plateau.scale == 0.5 and a.plateau.restores == 1
        # round 5: the restored model's own validation is not counted; momentum starts afresh at lr 2 x 0.5
        np.testing.assert_allclose(_round(a, D[4], VAL[4]), [*f[4], 6], rtol=1e-6)
        assert a.plateau.bad == 0
        # round 6: a new best (0.8); the step is the halved lr's momentum step
        np.testing.assert_allclose(_round(a, D[5], VAL[5]), [*(beta * f[4] + f[5]), 7], rtol=1e-6)
        assert a.plateau.best == 0.8 and a.rounds == 6
    # the same run without the option never restores
    plain = make_strategy(StrategyConfig(name="fedavgm", beta1=beta, server_lr=2.0), size=4, float_size=3)
    for d, v in zip(D[:4], VAL[:4]):
        step = _round(plain, d, v)
    np.testing.assert_allclose(step[:3], 2 * (beta * u3 + f[3]), rtol=1e-6)


def test_plateau_with_nesterov_and_missing_validation():
    p = LrPlateau(patience=1)
    p.observe(None)  # no site sent the metric: no judgement, nothing undone
    assert p.restore(2) is None and p.drift is None
    p.observe(float("nan"))
    assert p.restore(2) is None
    agg = make_strategy(StrategyConfig(name="fedavgm", beta1=0.9, nesterov=True, lr_plateau=1), size=3)
    a = _round(agg, D[0][:3], 0.4)
    b = _round(agg, D[1][:3], 0.3)  # worse than 0.4 at once: back by the one step taken since
    np.testing.assert_allclose(b, -a, rtol=1e-6)
    assert agg.u is None and agg.plateau.scale == 0.5


def test_plateau_and_local_norms_are_refused_where_they_do_not_apply():
    with pytest.raises(ConfigError, match="lr_plateau"):
        StrategyConfig(name="fedadam", lr_plateau=2)
    with pytest.raises(ConfigError, match="lr_plateau"):
        StrategyConfig(name="fedavgm", lr_plateau=-1)
    with pytest.raises(ConfigError, match="local-norms"):
        StrategyConfig(name="scaffold", local_norms=True)
    cfg = StrategyConfig(name="fedavgm", nesterov=True, local_norms=True, lr_plateau=3)
    assert cfg.local_norm and StrategyConfig.from_json(cfg.to_json()) == cfg
    assert StrategyConfig(name="fedbn").local_norm and not StrategyConfig(name="fedavgm").local_norm
    with pytest.raises(ValueError):
        LrPlateau(patience=0)


def test_a_missing_plateau_metric_is_said_once(caplog):
    """A StrategyConfig whose plateau metric the sites never report (a Python-built config for the toy
    task, whose metric is accuracy) warns once instead of never firing in silence."""
    agg = make_strategy(StrategyConfig(name="fedavgm", lr_plateau=1), size=4, float_size=3)
    with caplog.at_level("WARNING", logger="fedimg.fl.server.strategies"):
        for d in D[:3]:
            agg.begin_round()
            agg.observe({"accuracy": 0.5, "per_site": {}})
            agg.add(d, 1.0)
            agg.finish()
    said = [r for r in caplog.records if "dice_mean" in r.getMessage()]
    assert len(said) == 1 and "accuracy" in said[0].getMessage()
    assert agg.plateau.restores == 0 and agg.plateau.scale == 1.0
