"""Plain per-tile numpy Macenko: the reference the torch version is checked against and
the peer the tiles benchmark measures (the way most tutorials and staintools write it).

>>> import numpy as np
>>> tile = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
>>> stains, max_c = macenko_fit_numpy(tile)
>>> macenko_normalize_numpy(tile, stains, max_c).shape
(32, 32, 3)
"""

from __future__ import annotations

import numpy as np

__all__ = ["macenko_stains_numpy", "macenko_fit_numpy", "macenko_normalize_numpy"]

_REF = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])


def _od(tile: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(tile.reshape(-1, 3).astype(np.float64), 1, 255) / 255.0)


def macenko_stains_numpy(tile: np.ndarray, beta: float = 0.15, alpha: float = 1.0, min_fraction: float = 0.01) -> np.ndarray:
    """Stain matrix ``(3, 2)`` (H, E columns) of one ``(H, W, 3)`` uint8 tile."""
    od = _od(tile)
    keep = od[(od > beta).all(axis=1)]
    if len(keep) < max(2, min_fraction * len(od)):
        return _REF.copy()
    _, vecs = np.linalg.eigh(np.cov(keep.T))
    plane = vecs[:, 1:3]
    plane = plane * np.where(plane[0] < 0, -1.0, 1.0)
    proj = keep @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v_lo = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_hi = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack([v_lo, v_hi], axis=1) if v_lo[0] > v_hi[0] else np.stack([v_hi, v_lo], axis=1)
    he = he * np.where(he.sum(0) < 0, -1.0, 1.0)
    return he / np.linalg.norm(he, axis=0)


def macenko_fit_numpy(tile: np.ndarray, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Target stain matrix and 99th-percentile concentrations."""
    he = macenko_stains_numpy(tile, **kw)
    conc = np.linalg.lstsq(he, _od(tile).T, rcond=None)[0]
    return he, np.percentile(conc, 99, axis=1)


def macenko_normalize_numpy(tile: np.ndarray, target_stains: np.ndarray, target_max: np.ndarray, **kw) -> np.ndarray:
    """Normalise one ``(H, W, 3)`` uint8 tile to the target; returns uint8."""
    he = macenko_stains_numpy(tile, **kw)
    conc = np.linalg.lstsq(he, _od(tile).T, rcond=None)[0]
    conc *= (np.asarray(target_max) / np.maximum(np.percentile(conc, 99, axis=1), 1e-6))[:, None]
    rgb = 255.0 * np.exp(-(np.asarray(target_stains) @ conc))
    return np.clip(rgb.T.reshape(tile.shape), 0, 255).round().astype(np.uint8)
