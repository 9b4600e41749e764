"""Contrast-independent coarse alignment: the subject's head mask against the template's.

A head mask (threshold above the background, largest component, holes filled in 3-D and
slice by slice so a field of view that cuts the skull open still fills) looks the same in
T1, T2, FLAIR, PD and CT. Candidate rotations (the principal axes of both masks with every
proper sign flip, and a grid of pitch/roll/yaw up to ±45° plus ±90° turns) are each given a
translation by matching centroids *inside the subject's field of view* (a cropped chin or
face biases a plain centroid) and scored by the Dice overlap of the two masks over the
subject's voxels. The best few distinct candidates start the mutual-information stage.

>>> import numpy as np
>>> ball = np.zeros((20, 20, 20), np.float32)
>>> g = np.indices(ball.shape) - 9.5
>>> ball[(g**2).sum(0) < 49] = 100.0
>>> mask, aff = head_mask(ball, np.eye(4), step_mm=2.0)
>>> mask.shape, bool(mask[5, 5, 5]), bool(mask[0, 0, 0])
((10, 10, 10), True, False)
>>> len(rotation_grid()) > 100
True
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math

import numpy as np

__all__ = ["Candidate", "acquired_fov", "block_mean", "fov_on_grid", "head_mask", "padding_cells", "rotation_grid", "coarse_candidates", "overlap_dice", "rotation_matrix"]

log = logging.getLogger(__name__)


def rotation_matrix(pitch: float, roll: float, yaw: float) -> np.ndarray:
    """Rotation (degrees) about L-R (pitch), A-P (roll) and S-I (yaw), applied in that order."""
    a, b, c = (math.radians(v) for v in (pitch, roll, yaw))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rotation_grid(step: float = 22.5, limit: float = 45.0) -> list[np.ndarray]:
    """Rotations of a pitch/roll/yaw grid (``step`` up to ``limit``) plus single ±90° turns."""
    vals = np.arange(-limit, limit + 1e-6, step)
    rots = [rotation_matrix(*abc) for abc in itertools.product(vals, vals, vals)]
    for axis in range(3):
        for sign in (-90.0, 90.0):
            abc = [0.0, 0.0, 0.0]
            abc[axis] = sign
            rots.append(rotation_matrix(*abc))
    return rots


@dataclasses.dataclass(frozen=True, kw_only=True)
class Candidate:
    """A coarse subject-world → template-world affine and its head-mask Dice."""

    matrix: np.ndarray
    dice: float


def block_mean(data: np.ndarray, affine: np.ndarray, step_mm: float):
    """Block means of about ``step_mm`` per axis (float32) and their affine; ``(data, affine)``."""
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    f = [max(1, int(round(step_mm / s))) for s in spacing]
    s = [n - n % k if n >= k else n for n, k in zip(data.shape, f)]
    f = [k if n >= k else 1 for n, k in zip(data.shape, f)]
    d = np.asarray(data[: s[0], : s[1], : s[2]], dtype=np.float32)
    d = d.reshape(s[0] // f[0], f[0], s[1] // f[1], f[1], s[2] // f[2], f[2]).mean((1, 3, 5))
    shift = np.eye(4)
    shift[:3, 3] = [(k - 1) / 2.0 for k in f]
    return d, affine @ shift @ np.diag([*f, 1.0])


def head_mask(image: np.ndarray, affine: np.ndarray, *, step_mm: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean head mask on a grid of about ``step_mm`` (block means); returns ``(mask, affine)``.

    The threshold is 10 % of the way from the background level (0.5th percentile) to the
    bright end (99th percentile): below every tissue in MR and CT (HU or not), above noise. The
    background level leaves out constant padding darker than the acquired air (:func:`_levels`).
    """
    from scipy import ndimage as ndi

    from .morph import fill_holes_slices

    small, aff = block_mean(image, affine, step_mm)
    lo, hi = _levels(small)
    if hi <= lo:
        return np.zeros(small.shape, bool), aff
    mask = small > lo + 0.1 * (hi - lo)
    labels, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    mask = ndi.binary_closing(np.pad(mask, 2), iterations=2)[2:-2, 2:-2, 2:-2] | mask
    mask = ndi.binary_fill_holes(mask)
    for axis in range(3):  # a field of view that cuts the head leaves each slice's outline closed
        mask |= fill_holes_slices(mask, axis)  # scipy's slice-by-slice fill, in one labelling
    return mask, aff


def padding_cells(small: np.ndarray) -> np.ndarray | None:
    """Cells of block means (:func:`block_mean`) holding constant padding; None when there is none.

    Padding is the lowest value where whole cells hold it, at least 1 % of them, and the cells
    next to those (partly padded): the corners an oblique field of view leaves after
    resampling onto an axis-aligned grid (a gantry-tilt correction, a converter's reslicing),
    filled with one value. It may also be a background the scanner set to that same value
    (masked MR): :func:`_levels` tells the two apart.
    """
    from scipy import ndimage as ndi

    pad = _fill(small)
    if pad.mean() < 0.01:
        return None
    return ndi.binary_dilation(pad)


def _fill(small: np.ndarray) -> np.ndarray:
    """Cells at the grid's lowest value (to rounding): whole cells of constant fill."""
    low = float(small.min())
    return small <= low + 1e-6 * max(1.0, abs(low), float(small.max()) - low)


def acquired_fov(small: np.ndarray, cell_mm: float = 4.0) -> np.ndarray | None:
    """Cells of block means ``small`` that the scanner acquired; None: the whole grid (as before).

    An oblique slab resampled onto the axes (or cut at the skull base) leaves a region of exact
    constant fill (:func:`padding_cells`) that is *not air*: a template face placed there is no
    evidence for or against a pose. A masked head's background is the same exact constant and
    *is* air. The fill counts as not acquired only when both hold: the rest of the grid holds
    air of its own (at least 5 % of its cells below the head threshold it gives by itself: the
    scanner's noisy air, which masked heads lack) and head tissue meets the fill over a cut (at
    least 1 % of the tissue cells within 8 mm of full fill cells: the fill cuts through the head,
    a mask's margin does not). Otherwise the whole grid counts, as before this estimate existed.
    """
    from scipy import ndimage as ndi

    pad = padding_cells(small)
    if pad is None or pad.all():
        return None
    full = _fill(small)
    rest = small[~pad]
    lo, hi = float(np.percentile(rest, 0.5)), float(np.percentile(small, 99.0))
    thr = lo + 0.1 * (hi - lo)
    tissue = ~pad & (small > thr)
    if hi <= lo or float(np.mean(rest <= thr)) < 0.05 or not tissue.any():
        return None
    reach = max(1, int(round(8.0 / cell_mm)))
    near = ndi.binary_dilation(full, iterations=reach)
    contact = np.argwhere(tissue & near).astype(np.float64)
    if len(contact) < max(20, 0.01 * tissue.sum()):
        return None
    share = _planar_share(contact)
    if share < 0.8:  # the fill wraps the head (a masked background), not one planar cut through it
        log.debug("field of view: the whole grid (fill meets the head on no single plane: %.2f)", share)
        return None
    labels, _ = ndi.label(full)  # the fill that meets the head; other exact-constant patches of air stay acquired
    touch = np.unique(labels[ndi.binary_dilation(tissue & near, iterations=reach) & full])
    cut = ndi.binary_dilation(np.isin(labels, touch[touch > 0]))
    log.debug("field of view: %.1f %% of cells not acquired (%d tissue cells meet the fill, %.2f on one plane)",
              100 * cut.mean(), len(contact), share)
    return ~cut


def _planar_share(pts: np.ndarray, tol: float = 1.5, tries: int = 200) -> float:
    """Largest share of the points ``(N, 3)`` (cells) within ``tol`` of one plane (seeded RANSAC, then a least-squares refit)."""
    rng = np.random.default_rng(0)
    best, best_in = 0, None
    for _ in range(tries):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-6:
            continue
        inl = np.abs((pts - a) @ (n / np.linalg.norm(n))) <= tol
        if inl.sum() > best:
            best, best_in = int(inl.sum()), inl
    if best_in is None:
        return 0.0
    centre = pts[best_in].mean(0)
    normal = np.linalg.eigh(np.cov((pts[best_in] - centre).T))[1][:, 0]
    return float(np.mean(np.abs((pts - centre) @ normal) <= tol))


def fov_on_grid(fov: np.ndarray, fov_affine: np.ndarray, shape, affine: np.ndarray) -> np.ndarray:
    """The cell mask ``fov`` (on ``fov_affine``'s grid) looked up at the voxel centres of a grid (``shape``, ``affine``)."""
    pts = _points(shape, affine)
    idx = np.rint((pts - fov_affine[:3, 3]) @ np.linalg.inv(fov_affine[:3, :3]).T).astype(np.int64)
    idx = np.clip(idx, 0, np.array(fov.shape) - 1)
    return fov[tuple(idx.T)].reshape(shape)


def _levels(small: np.ndarray) -> tuple[float, float]:
    """Background level (0.5th percentile of the cells ``small``) and bright end (99th), the background
    taken outside constant padding that is darker than the air the scanner acquired.

    A tilt correction fills its corners with the volume's minimum; on the tilted real test head that
    is 26 below the acquired air (7 % of the range), the 0.5th percentile drops to it, and the
    threshold 10 % above it takes the noisy air next to the skin for head: the mask grew by 11 % and
    the head-outline placement moved 10-20 mm (the sixth wave's tilt false alarm). The padding is
    left out when the rest of the field of view holds air of its own (at least 5 % of its cells
    below the threshold it gives by itself) whose level lies more than 3 % of the range above the padding.
    Where the padding *is* the background (masked real heads: ds000031 and pycortex, air 0.3-1.2 %
    of the range above it), or there is none, the levels are those of all cells, as before.
    """
    lo, hi = (float(v) for v in np.percentile(small, [0.5, 99.0]))
    pad = padding_cells(small)
    if pad is None or pad.all():
        return lo, hi
    rest = small[~pad]
    lo_in = float(np.percentile(rest, 0.5))
    if float(np.mean(rest < lo_in + 0.1 * (hi - lo_in))) < 0.05 or lo_in - lo <= 0.03 * (hi - lo):
        return lo, hi
    log.debug("head mask: constant padding (%.1f %% of cells) left out: background %.4g -> %.4g", 100 * pad.mean(), lo, lo_in)
    return lo_in, hi


def _points(shape, affine) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    return idx @ affine[:3, :3].T + affine[:3, 3]


class _Sampler:
    """Samples the template head mask (trilinear, zeros outside) at subject world points under many affines.

    The float32 arithmetic of the ``grid_sample`` it replaced (:func:`.resample_np.grid_sample`),
    so the coarse search takes the same starts to the last digit.
    """

    def __init__(self, tmask: np.ndarray, taffine: np.ndarray):
        self.vol = np.ascontiguousarray(tmask, dtype=np.float32)
        size = np.array(tmask.shape, np.float64)
        inv = np.linalg.inv(taffine)
        self.lin = (inv[:3, :3] * (2.0 / (size - 1))[:, None])[::-1]
        self.shift = (inv[:3, 3] * 2.0 / (size - 1) - 1.0)[::-1]

    def __call__(self, mats: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """``mats`` (B, 4, 4) subject→template; ``pts`` (N, 3) subject world → (B, N) values."""
        from .resample_np import grid_sample

        lin = np.einsum("ij,bjk->bik", self.lin, mats[:, :3, :3]).astype(np.float32)  # subject world -> grid, per start
        off = (mats[:, :3, 3] @ self.lin.T + self.shift).astype(np.float32)
        p = np.asarray(pts, dtype=np.float32)
        grid = p[None, :, 0, None] * lin[:, None, :, 0]  # p @ lin.T summed left to right, as torch's matmul does
        grid = grid + p[None, :, 1, None] * lin[:, None, :, 1]
        grid = grid + p[None, :, 2, None] * lin[:, None, :, 2]
        return grid_sample(self.vol, grid + off[:, None, :])


def overlap_dice(values: np.ndarray, smask: np.ndarray) -> np.ndarray:
    """Dice per row of sampled template-mask ``values`` (B, N) against the subject mask (N,)."""
    inter = values @ smask.astype(np.float32)
    return 2.0 * inter / (values.sum(1) + smask.sum() + 1e-6)


def _fit_translations(mats, sampler, pts, smask, iterations: int = 4):
    """Shift each affine so the template mask's part inside the field of view centres on the subject's."""
    c_s = pts[smask].mean(0)
    for _ in range(iterations):
        vals = sampler(mats, pts)
        w = vals.sum(1, keepdims=True)
        c_in = (vals @ pts) / np.maximum(w, 1e-6)
        delta = np.where(w > 10, c_in - c_s, 0.0)  # subject-space shift that lands the template on the head
        mats = mats.copy()
        mats[:, :3, 3] += np.einsum("bij,bj->bi", mats[:, :3, :3], delta)
    return mats


def _principal(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = pts.mean(0)
    w, v = np.linalg.eigh(np.cov((pts - c).T))
    return c, v[:, np.argsort(w)[::-1]]


def coarse_candidates(image: np.ndarray, affine: np.ndarray, template_mask: np.ndarray, template_mask_affine: np.ndarray,
                      *, keep: int = 4, step_mm: float = 4.0, min_angle_deg: float = 15.0) -> list[Candidate]:
    """The ``keep`` best distinct coarse alignments (subject world → template world), best first.

    Long because it chains the steps: masks, candidate rotations (principal axes with sign
    flips, and the grid), translation by centroids inside the field of view, Dice scores, a
    finer re-score of the best few, and the removal of near-duplicate rotations.
    """
    smask, saff = head_mask(image, affine, step_mm=step_mm)  # one mask (block means) for both stages
    if smask.sum() < 20:
        return []
    pts = _points(smask.shape, saff)
    flat = smask.reshape(-1)
    fov = acquired_fov(block_mean(image, affine, step_mm)[0], step_mm)  # the fill outside it is no evidence
    if fov is not None:
        pts, flat = pts[fov.reshape(-1)], flat[fov.reshape(-1)]
    tpts = _points(template_mask.shape, template_mask_affine)[template_mask.reshape(-1)]
    c_s, e_s = _principal(pts[flat])
    c_t, e_t = _principal(tpts)
    rots = rotation_grid()
    for signs in itertools.product((1.0, -1.0), repeat=3):
        r = e_t @ np.diag(signs) @ e_s.T
        if np.linalg.det(r) > 0:
            rots.append(r)
    mats = np.repeat(np.eye(4)[None], len(rots), 0)
    mats[:, :3, :3] = np.stack(rots)
    mats[:, :3, 3] = c_t - np.einsum("bij,j->bi", mats[:, :3, :3], c_s)
    sampler = _Sampler(template_mask, template_mask_affine)
    sub = np.arange(len(pts))[:: max(1, len(pts) // 10000)]
    mats = _fit_translations(mats, sampler, pts[sub], flat[sub], iterations=3)
    dice = overlap_dice(sampler(mats, pts[sub]), flat[sub])
    order = np.argsort(-dice)[: max(2 * keep, 6)]
    # Re-score the best on more points, with a small local search of ±8° around each.
    fpts, fflat = pts, flat
    fsub = np.arange(len(fpts))[:: max(1, len(fpts) // 15000)]
    local = [rotation_matrix(*d) for d in ((0, 0, 0), (8, 0, 0), (-8, 0, 0), (0, 8, 0), (0, -8, 0), (0, 0, 8), (0, 0, -8))]
    refined = []
    for i in order:
        trial = np.repeat(mats[i][None], len(local), 0)
        centre = fpts[fflat].mean(0)
        for k, r in enumerate(local):  # rotate about the subject's head centre
            m = np.eye(4)
            m[:3, :3] = r
            m[:3, 3] = centre - r @ centre
            trial[k] = mats[i] @ m
        trial = _fit_translations(trial, sampler, fpts[fsub], fflat[fsub], iterations=2)
        d = overlap_dice(sampler(trial, fpts[fsub]), fflat[fsub])
        refined.append(Candidate(matrix=trial[int(np.argmax(d))], dice=float(d.max())))
    refined.sort(key=lambda c: -c.dice)
    out: list[Candidate] = []
    for cand in refined:
        if all(_angle(cand.matrix, o.matrix) >= min_angle_deg for o in out):
            out.append(cand)
        if len(out) == keep:
            break
    log.debug("coarse: %d rotations scored, best Dice %s", len(rots), [round(c.dice, 3) for c in out])
    return out


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    r = a[:3, :3] @ np.linalg.inv(b[:3, :3])
    u, _, vt = np.linalg.svd(r)
    r = u @ vt
    return math.degrees(math.acos(float(np.clip((np.trace(r) - 1) / 2, -1, 1))))
