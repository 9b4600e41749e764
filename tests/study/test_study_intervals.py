"""Bootstrap intervals over test cases and seeds, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.errors import ConfigError
from fedimg.study.intervals import bootstrap_mean, bootstrap_ratio, resample_indices


def test_constant_scores_give_a_point_interval():
    assert bootstrap_mean([[0.7, 0.7, 0.7], [0.7]], n_boot=200) == pytest.approx((0.7, 0.7, 0.7))


def test_two_cases_zero_and_one():
    # one seed, cases {0, 1}: a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4,
    # so the 2.5 % and 97.5 % percentiles are 0 and 1 and the mean is 0.5
    m, lo, hi = bootstrap_mean([[0.0, 1.0]], n_boot=4000, seed=3)
    assert (m, lo, hi) == (0.5, 0.0, 1.0)


def test_seeds_are_resampled_too():
    # two seeds with one case each (0 and 1): the seed draw alone spreads the means over {0, .5, 1}
    m, lo, hi = bootstrap_mean([[0.0], [1.0]], n_boot=4000, seed=1)
    assert (m, lo, hi) == (0.5, 0.0, 1.0)
    draws = resample_indices([3, 1], n_boot=50, seed=0)
    assert all(len(d) == 2 for d in draws)
    assert all(len(idx) == (3 if s == 0 else 1) and idx.max() < (3 if s == 0 else 1) for d in draws for s, idx in d)
    assert {s for d in draws for s, _ in d} == {0, 1}


def test_mean_pools_every_case_of_every_seed():
    m, _, _ = bootstrap_mean([[0.2, 0.4], [0.9]], n_boot=10)
    assert m == pytest.approx(0.5)  # (0.2 + 0.4 + 0.9) / 3


def test_ratio_is_paired():
    # federated is exactly half of centralised on every case: every paired resample gives 0.5
    cen = [[0.2, 0.9, 0.5], [0.6, 0.3]]
    fed = [[x / 2 for x in s] for s in cen]
    assert bootstrap_ratio(fed, cen, n_boot=300) == pytest.approx((0.5, 0.5, 0.5))
    r, lo, hi = bootstrap_ratio([[0.3, 0.5]], [[0.5, 0.5]], n_boot=4000, seed=2)
    # resamples of num: mean 0.3, 0.4, 0.5 (p 1/4, 1/2, 1/4) over a constant 0.5
    assert (r, lo, hi) == pytest.approx((0.8, 0.6, 1.0))


def test_normal_scores_interval_width():
    rng = np.random.default_rng(0)
    x = rng.normal(0.6, 0.1, 400)
    m, lo, hi = bootstrap_mean([x], n_boot=2000)
    se = x.std() / np.sqrt(x.size)
    assert lo < m < hi and abs((hi - lo) / (2 * 1.96 * se) - 1) < 0.15


def test_bad_input():
    with pytest.raises(ConfigError, match="at least one"):
        bootstrap_mean([[0.1], []])
    with pytest.raises(ConfigError, match="finite"):
        bootstrap_mean([[0.1, float("nan")]])
    with pytest.raises(ConfigError, match="same cases"):
        bootstrap_ratio([[0.1, 0.2]], [[0.1]])
