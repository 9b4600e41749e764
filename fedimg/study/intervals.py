"""Means and 95 % bootstrap intervals over test cases and seeds (numpy only).

A study repeats every arm for several seeds (different splits and initial weights) and
evaluates each final model on every site's test cases: one score per (seed, test case).
:func:`bootstrap_mean` resamples the seeds with replacement, then, inside each drawn seed,
its test cases with replacement (a two-level, hierarchical bootstrap), and takes the mean
of every resample; the interval is the 2.5 and 97.5 percentiles of those means.
:func:`bootstrap_ratio` does the same for ``mean(a) / mean(b)`` of two arms scored on the
*same* cases (paired: one draw of seeds and cases serves both arms).

>>> m, lo, hi = bootstrap_mean([[0.5, 0.5], [0.5]])
>>> (m, lo, hi)
(0.5, 0.5, 0.5)
>>> r, lo, hi = bootstrap_ratio([[0.4, 0.8]], [[0.8, 1.6]])
>>> (r, lo, hi)
(0.5, 0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedimg.errors import ConfigError

__all__ = ["bootstrap_mean", "bootstrap_ratio", "resample_indices"]


def _groups(values: Sequence[Sequence[float]], what: str) -> list[np.ndarray]:
    groups = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    if not groups or any(g.size == 0 for g in groups):
        raise ConfigError(f"{what}: every seed needs at least one test case score")
    if any(not np.all(np.isfinite(g)) for g in groups):
        raise ConfigError(f"{what}: scores must be finite (NaN/Inf found)")
    return groups


def resample_indices(sizes: Sequence[int], n_boot: int, seed: int) -> list[list[np.ndarray]]:
    """``n_boot`` two-level resamples: per resample, a list (one per drawn seed) of case indices.

    Seeds are drawn with replacement from ``range(len(sizes))``; within a drawn seed ``s``,
    ``sizes[s]`` case indices are drawn with replacement.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(n_boot)):
        seeds = rng.integers(0, len(sizes), len(sizes))
        out.append([(int(s), rng.integers(0, sizes[s], sizes[s])) for s in seeds])
    return out  # type: ignore[return-value]


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [a, 1.0 - a])
    return float(lo), float(hi)


def _pooled_mean(groups: list[np.ndarray]) -> float:
    return float(np.concatenate(groups).mean())


def bootstrap_mean(values: Sequence[Sequence[float]], *, n_boot: int = 2000, level: float = 0.95,
                   seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of every score and its bootstrap interval.

    ``values[s]`` holds seed ``s``'s per-test-case scores. With one seed only the cases are
    resampled.
    """
    groups = _groups(values, "bootstrap_mean")
    sizes = [g.size for g in groups]
    means = np.empty(int(n_boot))
    for i, draw in enumerate(resample_indices(sizes, n_boot, seed)):
        means[i] = np.concatenate([groups[s][idx] for s, idx in draw]).mean()
    lo, hi = _interval(means, level)
    return _pooled_mean(groups), lo, hi


def bootstrap_ratio(num: Sequence[Sequence[float]], den: Sequence[Sequence[float]], *, n_boot: int = 2000,
                    level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(ratio, low, high)`` of ``mean(num) / mean(den)``, both arms scored on the same cases."""
    a, b = _groups(num, "bootstrap_ratio"), _groups(den, "bootstrap_ratio")
    if [g.size for g in a] != [g.size for g in b]:
        raise ConfigError("bootstrap_ratio: the two arms must be scored on the same cases of the same seeds")
    ratios = np.empty(int(n_boot))
    for i, draw in enumerate(resample_indices([g.size for g in a], n_boot, seed)):
        na = np.concatenate([a[s][idx] for s, idx in draw]).mean()
        nb = np.concatenate([b[s][idx] for s, idx in draw]).mean()
        ratios[i] = na / nb if nb > 0 else np.nan
    ratios = ratios[np.isfinite(ratios)]
    den_mean = _pooled_mean(b)
    ratio = _pooled_mean(a) / den_mean if den_mean > 0 else float("nan")
    if not ratios.size:
        return ratio, float("nan"), float("nan")
    lo, hi = _interval(ratios, level)
    return ratio, lo, hi
