"""A template in the subject's own contrast: the template's tissue classes, filled with the subject's intensities.

MI against the T1 template is biased on T2 / FLAIR / thick-slice heads (RESULTS, h12r): it
prefers an affine 2-6 mm from the true one. This module builds, once a registration exists, a
synthetic template whose intensities are the subject's own: each template voxel gets a tissue
class (:func:`class_map`: air outside the template's head, then 1-D k-means classes of its
intensities inside), each class's intensity in the subject is the median, over the class's
eroded interior mapped through the current affine, of the subject's normalised intensities
(:func:`class_intensities`), and :func:`synthetic_template` paints the class map with them.
:func:`ncc_objective` scores affines by normalised cross-correlation against it (the contrasts
now match, so a linear relation is expected; NCC, unlike MI, does not reward a mapping that
pairs the subject's tissues with the template's in some other consistent order).

An experiment for issue 11 (``benchmarks/deface_nearmiss.py --probe-contrast``), kept beside the benchmark that
uses it (h13m wrote it in ``fedimg/deface/``; the lead moved it here at the merge: no fedimg path uses it).

>>> import numpy as np
>>> vol = np.zeros((12, 12, 12), np.float32); vol[2:10, 2:10, 2:10] = 1.0; vol[4:8, 4:8, 4:8] = 3.0
>>> labels = class_map(vol, n_classes=2)
>>> int(labels[0, 0, 0]), int(labels[3, 3, 3]), int(labels[5, 5, 5])      # air, dark, bright
(0, 1, 2)
>>> vals = class_intensities(2 * vol, np.eye(4), np.eye(4), labels, np.eye(4), erode_mm=0.0)
>>> [round(float(v), 2) for v in vals]                                    # the subject's medians, normalised
[0.0, 0.33, 1.0]
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from fedimg.deface.mi_np import pad_volume, trilinear
from fedimg.deface.register_np import downsample_np, normalise_np

__all__ = ["class_map", "template_class_map", "class_intensities", "synthetic_template", "ncc_objective",
           "level_samples"]

log = logging.getLogger(__name__)


def _kmeans_1d(values: np.ndarray, k: int, iterations: int = 30) -> np.ndarray:
    """Sorted centres of a 1-D k-means of ``values`` (Lloyd on a 512-bin histogram, quantile start)."""
    hist, edges = np.histogram(values, bins=512)
    mids = 0.5 * (edges[:-1] + edges[1:])
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        assign = np.abs(mids[:, None] - centres[None, :]).argmin(1)
        new = np.array([np.average(mids[assign == j], weights=hist[assign == j]) if hist[assign == j].sum() else centres[j]
                        for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def class_map(intensity: np.ndarray, n_classes: int = 5, head_fraction: float = 0.1) -> np.ndarray:
    """uint8 classes of a template: 0 outside its head (above ``head_fraction`` of the 99th percentile,
    holes filled), ``1..n_classes`` the k-means classes of the intensities inside, darkest first."""
    from scipy import ndimage as ndi

    if n_classes < 1 or n_classes > 254:
        raise ValueError(f"class_map: n_classes must be 1..254, got {n_classes}")
    pos = intensity[intensity > 0]
    if pos.size == 0:
        raise ValueError("class_map: the template has no positive voxel")
    head = ndi.binary_fill_holes(intensity > head_fraction * float(np.percentile(pos, 99)))
    inside = intensity[head]
    centres = _kmeans_1d(inside.astype(np.float64), n_classes)
    cuts = 0.5 * (centres[1:] + centres[:-1])
    labels = np.zeros(intensity.shape, np.uint8)
    labels[head] = (np.searchsorted(cuts, inside) + 1).astype(np.uint8)
    return labels


@functools.lru_cache(maxsize=4)
def template_class_map(n_classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """:func:`class_map` of the shipped template and its affine (cached)."""
    from .template import template_intensity

    intensity, affine = template_intensity()
    return class_map(intensity, n_classes), affine


def class_intensities(subject: np.ndarray, subject_affine: np.ndarray, matrix: np.ndarray, labels: np.ndarray,
                      label_affine: np.ndarray, *, erode_mm: float = 2.0, max_points: int = 20000,
                      fov: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Median normalised subject intensity of each class (index = class), read through ``matrix``.

    ``subject``: the subject's intensities (normalised here as the registration does); ``matrix``:
    subject-world -> template-world; each class's interior (eroded by ``erode_mm``) is sampled at up to
    ``max_points`` voxels, mapped into the subject, and read trilinearly; points outside the subject's
    volume or outside ``fov`` (a boolean array on the subject's grid: the acquired cells) are dropped.
    A class with fewer than 20 points read takes the mean of its neighbours' values, the air 0 (logged).
    """
    from scipy import ndimage as ndi

    subj = normalise_np(np.asarray(subject, dtype=np.float32))
    padded = pad_volume(subj)
    sp = np.sqrt((label_affine[:3, :3] ** 2).sum(0))
    to_subj = np.linalg.inv(subject_affine) @ np.linalg.inv(matrix) @ label_affine
    rng = np.random.default_rng(seed)
    n = int(labels.max()) + 1
    out = np.full(n, np.nan)
    for k in range(n):
        mask = labels == k
        if erode_mm > 0:
            r = [max(1, int(round(erode_mm / s))) for s in sp]
            # away from the other classes, not from the array's edge (the air touches it)
            mask = ndi.binary_erosion(mask, structure=np.ones([2 * v + 1 for v in r], bool), border_value=1)
        idx = np.flatnonzero(mask)
        if idx.size > max_points:
            idx = np.sort(rng.choice(idx, max_points, replace=False))
        vox = np.stack(np.unravel_index(idx, labels.shape), -1).astype(np.float64)
        sv = vox @ to_subj[:3, :3].T + to_subj[:3, 3]
        ok = np.all((sv >= 0) & (sv <= np.array(subj.shape) - 1), axis=1)
        if fov is not None:
            ok[ok] = fov[tuple(np.round(sv[ok]).astype(np.int64).T)]
        if ok.sum() >= 20:
            out[k] = float(np.median(trilinear(padded, sv[ok])[0]))
    missing = np.flatnonzero(np.isnan(out))
    if missing.size == n:
        raise ValueError("class_intensities: no class is inside the subject's field of view; check the affine")
    for k in missing:  # the nearest classes' values (the classes are ordered by template intensity)
        near = [out[j] for j in (k - 1, k + 1) if 1 <= j < n and not np.isnan(out[j])]
        out[k] = 0.0 if k == 0 else float(np.mean(near)) if near else float(np.nanmedian(out))
        log.info("class %d has fewer than 20 points in the subject's field of view: %.3f from its neighbours", k, out[k])
    return out


def synthetic_template(subject: np.ndarray, subject_affine: np.ndarray, matrix: np.ndarray, *, n_classes: int = 5,
                       labels: tuple[np.ndarray, np.ndarray] | None = None, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """The template's class map painted with the subject's class intensities (float32) and its affine."""
    lab, laff = labels if labels is not None else template_class_map(n_classes)
    values = class_intensities(subject, subject_affine, matrix, lab, laff, **kwargs)
    log.debug("class intensities %s", np.round(values, 3).tolist())
    return values.astype(np.float32)[lab], laff


def level_samples(subject: np.ndarray, subject_affine: np.ndarray, mm: float = 2.0, samples: int = 20000,
                  keep: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) and normalised intensities (N,) of ``samples`` subject voxels at the ``mm`` level.

    ``keep``: a flat boolean mask of that level's voxels that may be drawn (the acquired field of view).
    """
    small, saff = downsample_np(np.asarray(subject, dtype=np.float32), subject_affine, mm)
    values = normalise_np(small).reshape(-1)
    pool = np.flatnonzero(keep) if keep is not None else np.arange(values.size)
    sel = np.random.default_rng(seed).choice(pool, min(samples, pool.size), replace=False)
    vox = np.stack(np.unravel_index(sel, small.shape), -1).astype(np.float64)
    return vox @ saff[:3, :3].T + saff[:3, 3], values[sel]


def ncc_objective(points: np.ndarray, values: np.ndarray, synthetic: np.ndarray, synthetic_affine: np.ndarray,
                  matrices, mm: float = 2.0) -> np.ndarray:
    """NCC (higher is better) of the subject samples against ``synthetic`` at each subject->template matrix.

    ``synthetic`` is block-averaged to the ``mm`` level first (the partial volume the subject's level has).
    """
    small, saff = downsample_np(synthetic, synthetic_affine, mm)
    padded = pad_volume(small)
    tinv = np.linalg.inv(saff)
    v = values - values.mean()
    out = []
    for m in matrices:
        world = points @ np.asarray(m)[:3, :3].T + np.asarray(m)[:3, 3]
        t = trilinear(padded, world @ tinv[:3, :3].T + tinv[:3, 3])[0]
        t = t - t.mean()
        out.append(float((v * t).sum() / max(np.sqrt((v * v).sum() * (t * t).sum()), 1e-12)))
    return np.array(out)
