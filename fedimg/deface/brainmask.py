"""Head and brain masks estimated from the subject's own image, independent of any registration.

QC uses them to check a defacing without trusting the registration it checks: the removal
must not touch the brain estimated here, and the removed tissue must be a plausible share
of the head. The method needs no template and no contrast model, so it works on T1, T2,
FLAIR and CT alike:

1. work on a ~2 mm copy; the **head** is every voxel brighter than a small fraction of
   the bright end (Otsu on the positive voxels, capped), closed, hole-filled (also slice by
   slice, as a cropped field of view opens the skull) and its largest component;
2. the deepest part of the head (distance to the head surface) is brain in every head
   scan; its median intensity is the brain's reference ``m``;
3. the **brain** is the component holding that deep core among head voxels at least
   ``skull_mm`` deep whose intensity lies in ``[low, high] * m`` (skull, CSF, air and fat
   fall outside in MRI; bone and air in CT), after an opening that cuts the thin bridges
   (optic nerves, vessels) to the face; then hole-filled (ventricles);
4. step 3 runs from four quantiles of the deep core as ``m``; a try that leaks into the face
   or neck (where the band also holds muscle or fat, e.g. on 4 mm synthetic heads whose
   skull base does not show) is pulled away from the deep core, so of the tries of a
   plausible volume (``min_ml``-``max_ml``) those centred within 5 mm of the best-centred
   one are kept, and of them the largest. Every try too large: no brain is returned
   (``source="none"``), and QC falls back to the brain placed by the head shape
   (:func:`fedimg.deface.qc.head_shape_brain`).

>>> import numpy as np
>>> g = np.stack(np.meshgrid(*[np.arange(60.0)] * 3, indexing="ij"), -1)
>>> r = np.linalg.norm(g - 29.5, axis=-1)
>>> head = np.where(r < 28, 300.0, 0.0); head[r < 22] = 100.0; head[r < 20] = 500.0  # scalp, skull, brain
>>> est = estimate_brain(head, np.diag([2.0, 2.0, 2.0, 1.0]))
>>> round(est.brain_ml / (4 / 3 * np.pi * 40**3 / 1000), 1), est.brain_ml < est.head_ml
(1.0, True)
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np

from .coarse import acquired_fov, padding_cells
from .morph import bounding_box, cell_counts, dilate_ball, erode_ball, fill_holes, fill_holes_cut

__all__ = ["BrainEstimate", "estimate_brain", "head_mask", "head_frame", "removal_metrics"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BrainEstimate:
    """Masks on a reduced grid: voxel ``(i, j, k)`` of the input lies in cell ``(i // step[0], ...)``."""

    head: np.ndarray  # bool, reduced grid
    brain: np.ndarray  # bool, reduced grid
    step: tuple[int, int, int]  # input voxels per reduced cell, per axis
    cell_ml: float  # volume of one reduced cell (mL)
    cell_spacing: np.ndarray  # (3,) mm per reduced cell
    cell_affine: np.ndarray  # (4, 4) reduced cell index -> world mm
    reference: float  # intensity of the deep brain core
    source: str = "image"  # "image"; "none" (no plausible brain); "head shape" (qc's fallback); "image, trimmed" (qc cut a leak)
    offset_mm: float = 0.0  # distance of the brain's centre from the head's deep core
    head_plane: tuple[np.ndarray, np.ndarray] | None = None  # (centre, normal): the template's mid-plane placed by the head shape
    margin_mm: float = 0.0  # how far inside the true brain's boundary ``brain`` lies (an eroded placed template brain)
    placed_frame: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # :attr:`frame` of a placed template brain
    fov: np.ndarray | None = None  # bool, reduced grid: cells in the field of view, not constant padding (None: all)
    acquired: np.ndarray | None = None  # bool, reduced grid: acquired cells (:func:`.coarse.acquired_fov`; None: all)

    @property
    def head_ml(self) -> float:
        return float(self.head.sum()) * self.cell_ml

    @property
    def brain_ml(self) -> float:
        return float(self.brain.sum()) * self.cell_ml

    @functools.cached_property
    def brain_distance(self) -> np.ndarray:
        """Distance (mm) of every cell to the brain (0 inside); computed once."""
        from scipy import ndimage as ndi

        return ndi.distance_transform_edt(~self.brain, sampling=self.cell_spacing)

    @functools.cached_property
    def head_brain_distance(self) -> np.ndarray:
        """:attr:`brain_distance` in the box of head and brain (every brain cell, so the same values there); inf
        outside it, where no head cell lies. QC reads it on head cells only (:func:`removal_metrics`)."""
        from scipy import ndimage as ndi

        out, box = np.full(self.head.shape, np.inf), bounding_box(self.head | self.brain)
        if box is not None:
            out[box] = ndi.distance_transform_edt(~self.brain[box], sampling=self.cell_spacing)
        return out

    @functools.cached_property
    def frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The brain's centre, left-right normal and anterior direction (:func:`head_frame`); computed once.

        ``placed_frame`` when given: a placed template brain's own axes (its brainstem makes the
        shape's principal axes a poor guide to anterior)."""
        return self.placed_frame if self.placed_frame is not None else head_frame(self.brain, self.cell_affine)

    def cell_world(self, cells: np.ndarray) -> np.ndarray:
        """World mm of cell indices ``(N, 3)``."""
        return cells @ self.cell_affine[:3, :3].T + self.cell_affine[:3, 3]

    def in_fov(self, world: np.ndarray) -> np.ndarray:
        """Whether world points ``(N, 3)`` fall in a cell of the grid that is not padding (:attr:`fov`)."""
        idx = np.rint((world - self.cell_affine[:3, 3]) @ np.linalg.inv(self.cell_affine[:3, :3]).T).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < np.array(self.head.shape)), axis=1)
        if self.fov is not None:
            ok[ok] = self.fov[tuple(idx[ok].T)]
        return ok

    def lookup(self, mask: np.ndarray, which: str = "brain") -> np.ndarray:
        """For each ``True`` voxel of ``mask`` (input grid), whether its cell is in ``which``."""
        idx = np.nonzero(mask)
        ref = getattr(self, which)  # "brain", "head" or "acquired" (not None)
        cells = tuple(np.minimum(i // s, n - 1) for i, s, n in zip(idx, self.step, ref.shape))
        return ref[cells]


def _reduce(image: np.ndarray, spacing, step_mm: float):
    st = tuple(max(1, int(round(step_mm / float(s)))) for s in spacing)
    if st == (1, 1, 1):
        return image.astype(np.float32, copy=False), st
    from .resample_np import block_mean

    return block_mean(image, st), st


def _ball(radius_mm: float, spacing) -> np.ndarray:
    radii = [max(0, int(np.floor(radius_mm / float(s)))) for s in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1) * float(s) for r, s in zip(radii, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-6


def _largest(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


def head_mask(small: np.ndarray, spacing) -> np.ndarray:
    """The head on a reduced grid: thresholded, closed, hole-filled, largest component."""
    pos = small[small > 0]
    if pos.size == 0:
        return np.zeros(small.shape, bool)
    top = float(np.percentile(pos, 99))
    thr = min(_otsu(np.clip(pos, 0, top)) * 0.5, 0.15 * top)
    head = small > max(thr, 0.02 * top)
    ball = _ball(4.0, spacing)  # ndi.binary_closing's voxels: the ball dilation, then the erosion (:mod:`.morph`)
    head = erode_ball(dilate_ball(np.pad(head, 2), ball), ball)[2:-2, 2:-2, 2:-2]
    return _largest(fill_holes_cut(head))


def _grow_brain(small, head, depth, deep, m, sp, skull_mm, low, high, open_mm, grow_mm) -> np.ndarray:
    """Steps 3: candidates in the band around ``m``, eroded, the deep component, grown back, filled.

    Computed in the candidates' bounding box (one cell of margin): erosion, labelling, the
    dilations (masked by, or intersected with, the candidates) and the hole filling (the
    margin is background joined to the border) give the same voxels there as on the whole
    grid, and nothing outside it.
    """
    cand = head & (depth >= skull_mm) & (small >= low * m) & (small <= high * m)
    out = np.zeros(head.shape, bool)
    box = bounding_box(cand, pad=1)
    if box is not None:
        out[box] = _grow_in_box(cand[box], deep[box], sp, open_mm, grow_mm)
    return out


def _grow_in_box(cand, deep, sp, open_mm, grow_mm) -> np.ndarray:
    from scipy import ndimage as ndi

    # erode hard enough to cut the brain from the face and neck, keep the part holding the
    # deep core, and grow it back inside the candidates (a reconstruction by dilation)
    ball = _ball(open_mm, sp)
    lab, n = ndi.label(erode_ball(cand, ball))  # ndi.binary_erosion's voxels
    counts = np.bincount(lab[deep], minlength=n + 1)
    counts[0] = 0
    if n == 0 or counts.max() == 0:
        return np.zeros(cand.shape, bool)
    brain = dilate_ball(lab == int(np.argmax(counts)), ball) & cand
    steps = int(round(grow_mm / float(sp.mean())))
    if steps:  # give back the gyri the opening cut off, a few mm along the candidates only
        brain = ndi.binary_dilation(brain, iterations=steps, mask=cand)
    return fill_holes(np.pad(brain, 1))[1:-1, 1:-1, 1:-1]  # ndi.binary_fill_holes' voxels, one labelling


def estimate_brain(image: np.ndarray, affine: np.ndarray, *, step_mm: float = 2.0, skull_mm: float = 6.0,
                   low: float = 0.55, high: float = 1.6, open_mm: float = 8.0, grow_mm: float = 6.0,
                   min_ml: float = 800.0, max_ml: float = 1700.0) -> BrainEstimate:
    """Estimate head and brain masks of a canonical (RAS-ordered) 3-D ``image``; see the module text."""
    from scipy import ndimage as ndi

    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    small, st = _reduce(np.asarray(image), spacing, step_mm)
    sp = spacing * np.array(st)
    cell_ml = float(np.prod(sp)) / 1000.0
    shift = np.eye(4)
    shift[:3, 3] = [(k - 1) / 2.0 for k in st]
    cell_aff = np.asarray(affine, dtype=np.float64) @ shift @ np.diag([*st, 1.0])
    head = head_mask(small, sp)
    empty = np.zeros(small.shape, bool)
    pad, acquired = padding_cells(small), acquired_fov(small, float(np.mean(sp)))
    fov = None if pad is None else ~pad
    if not head.any():
        return BrainEstimate(head=head, brain=empty, step=st, cell_ml=cell_ml, cell_spacing=sp, cell_affine=cell_aff, reference=0.0,
                             fov=fov, acquired=acquired)
    depth = np.zeros(head.shape)  # distance to the head's surface, in its box with one cell of air around it
    box = bounding_box(head)
    depth[box] = ndi.distance_transform_edt(np.pad(head[box], 1), sampling=sp)[1:-1, 1:-1, 1:-1]
    # the deepest part of the head's upper half (world +S: a full FOV's deepest point can be the skull base or neck)
    idx = np.indices(head.shape).reshape(3, -1).T
    z = (idx @ cell_aff[2, :3] + cell_aff[2, 3]).reshape(head.shape)
    upper = head & (z >= np.median(z[head]))
    deep = upper & (depth >= 0.75 * depth[upper].max())
    # the deep core's median is white matter in T1, a grey/white mix elsewhere: try it and
    # three neighbouring quantiles. A try that leaks into the face or neck (where the band
    # around the reference also holds muscle or fat) is pulled away from the deep core, so of
    # the tries of a plausible brain volume keep those centred nearest the deep core. Every
    # try too large (the image shows no brain boundary): no brain (QC then refuses, never
    # passes, the file); every try too small: the largest.
    core = np.argwhere(deep).mean(0) * sp
    tries = []
    for q in (50, 30, 70, 85):
        ref = float(np.percentile(small[deep], q))
        got = _grow_brain(small, head, depth, deep, ref, sp, skull_mm, low, high, open_mm, grow_mm)
        off = float(np.linalg.norm(np.argwhere(got).mean(0) * sp - core)) if got.any() else np.inf
        tries.append((float(got.sum()) * cell_ml, off, ref, got))
    fit = [t for t in tries if min_ml <= t[0] <= max_ml]
    off, source = 0.0, "image"
    if fit:  # the best-centred tries (within 5 mm) are one brain with more or less cortex: the largest
        best = min(t[1] for t in fit)
        _, off, m, brain = max((t for t in fit if t[1] <= best + 5.0), key=lambda t: t[0])
    elif any(t[0] > max_ml for t in tries):
        m, brain, source = 0.0, empty, "none"
    else:
        _, off, m, brain = max(tries, key=lambda t: t[0])
    log.debug("tries %s", [(round(t[0]), round(t[1], 1)) for t in tries])
    if source == "none":
        log.info("brain estimate: no plausible brain in the image (tries %s mL, %s mm off the deep core)",
                 [round(t[0]) for t in tries], [round(t[1], 1) for t in tries])
    log.debug("brain estimate: head %.0f mL, brain %.0f mL, reference %.3g",
              head.sum() * cell_ml, brain.sum() * cell_ml, m)
    return BrainEstimate(head=head, brain=brain, step=st, cell_ml=cell_ml, cell_spacing=sp, cell_affine=cell_aff, reference=m,
                         source=source, offset_mm=float(off), fov=fov, acquired=acquired)


def _rotate(v: np.ndarray, axis: np.ndarray, deg: float) -> np.ndarray:
    """``v`` rotated by ``deg`` about the unit ``axis`` (Rodrigues)."""
    a = np.radians(deg)
    return v * np.cos(a) + np.cross(axis, v) * np.sin(a) + axis * (axis @ v) * (1 - np.cos(a))


def head_frame(brain: np.ndarray, cell_affine: np.ndarray, *, points: int = 20000):
    """The brain's own frame in world mm: ``(centre, left-right normal, anterior)`` unit vectors.

    The mid-sagittal plane is the plane through the brain's centre whose mirror image of the
    brain overlaps it most: started from the principal axis (or the scanner's x axis) that mirrors
    best (of those mirroring nearly as well, the one nearest x), refined by
    hill-climbing (8 to 1 degree steps, at most 20 degrees away), so poses up to about 45 degrees work. Anterior is the longer of
    the other two principal axes (the brain is longer front to back than top to bottom),
    made perpendicular to the normal and signed towards world +A (poses within 90 degrees).
    """
    flat = np.flatnonzero(brain)  # argwhere's cells in its order, indexed only for the ones kept (1 mm template: 2.6 M)
    if len(flat) > points:
        flat = flat[:: len(flat) // points + 1]
    cells = np.stack(np.unravel_index(flat, brain.shape), -1).astype(np.float64)
    world = cells @ cell_affine[:3, :3].T + cell_affine[:3, 3]
    centre = world.mean(0)
    rel = world - centre
    inv = np.linalg.inv(cell_affine)
    shape = np.array(brain.shape)

    def score(n: np.ndarray) -> float:
        mir = centre + rel - 2.0 * (rel @ n)[:, None] * n
        idx = np.rint(mir @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        ok = np.all((idx >= 0) & (idx < shape), axis=1)
        return float(brain[tuple(idx[ok].T)].sum()) / len(rel)

    evals, evecs = np.linalg.eigh(np.cov(rel.T))
    axes = list(evecs.T) + [np.array([1.0, 0.0, 0.0])]
    scores = [score(a) for a in axes]
    # a blob-like brain estimate can mirror about a wrong axis almost as well: among the axes
    # (principal ones and the scanner's x) within 0.05 of the best, take the one nearest x
    first = max((i for i in range(4) if scores[i] >= max(scores) - 0.05), key=lambda i: abs(axes[i][0]))
    normal, best = axes[first], scores[first]
    start = normal
    for step in (8.0, 4.0, 2.0, 1.0):
        improved = True
        while improved:
            improved = False
            u = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
            u /= np.linalg.norm(u)
            for axis in (u, np.cross(normal, u)):
                for sign in (1.0, -1.0):
                    cand = _rotate(normal, axis, sign * step)
                    if abs(cand @ start) < np.cos(np.radians(20.0)):  # refine, never wander off
                        continue
                    sc = score(cand)
                    if sc > best + 1e-9:
                        normal, best, improved = cand, sc, True
    lr = int(np.argmax([abs(axes[i] @ normal) for i in range(3)]))  # the principal axis nearest the normal
    others = sorted((i for i in range(3) if i != lr), key=lambda i: evals[i])
    ant = axes[others[-1]] - (axes[others[-1]] @ normal) * normal
    ant /= np.linalg.norm(ant)
    if ant[1] < 0:
        ant = -ant
    return centre, normal / np.linalg.norm(normal), ant


def removal_metrics(canonical: np.ndarray | None, affine: np.ndarray, remove: np.ndarray, *, near_mm: tuple[float, float] = (25.0, 45.0),
                    estimate: BrainEstimate | None = None) -> dict:
    """QC numbers of a removal mask (canonical grid), from the image's own head and brain.

    ``canonical`` (the image) is read only to estimate the brain when no ``estimate`` is given.

    - ``brain_removed_ml``: removed voxels inside the estimated brain;
    - ``removed_tissue_ml`` / ``removed_fraction``: removed voxels inside the head, and their
      share of the head volume in the field of view (air removed in front of the face is free);
    - ``face_near_removed``: share of the *near face* that is removed: head cells 25-45 mm from
      the brain and in front of its centre (along the brain's own anterior axis; eyes, nose
      bridge, cheeks; the forehead is nearer than 25 mm, the chin and neck farther than 45 mm);
    - ``removal_offset_mm``: distance of the removed tissue's centre from the brain's own
      mid-sagittal plane (:func:`head_frame`), or from the template's mid-plane placed by the
      head shape (``estimate.head_plane``) when that is nearer.

    A registration that moves the face region into the brain fails the first; one that slides
    it into the air or the neck fails the second or third (see ``QCThresholds``).
    """
    est = estimate or estimate_brain(canonical, affine)
    voxel_ml = float(abs(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    counts = cell_counts(remove, est.step, est.head.shape)  # removed voxels per cell
    removed_cells = counts > 0
    in_head = int(counts[est.head].sum())
    out = {
        "head_ml": est.head_ml,
        "brain_estimate_ml": est.brain_ml,
        "brain_source": est.source,
        "brain_removed_ml": float(counts[est.brain].sum()) * voxel_ml,
        "removed_tissue_ml": in_head * voxel_ml,
        "removed_fraction": in_head * voxel_ml / est.head_ml if est.head_ml > 0 else 0.0,
        "face_near_removed": 0.0,
        "removal_offset_mm": 0.0,
    }
    if est.brain.any():
        dist = est.head_brain_distance  # read on head cells only
        centre, normal, anterior = est.frame
        lo, hi = near_mm[0] + est.margin_mm, near_mm[1] + est.margin_mm  # measured from the brain's boundary
        cells = np.argwhere(est.head & (dist >= lo) & (dist < hi))
        front = (est.cell_world(cells) - centre) @ anterior > 0
        if front.any():
            out["face_near_removed"] = float(removed_cells[tuple(cells[front].T)].sum() / front.sum())
        tissue = np.argwhere(removed_cells & est.head)
        if len(tissue):
            world = est.cell_world(tissue)
            out["removal_offset_mm"] = _mirrored_offset(est, world, centre, normal)
            if est.head_plane is not None:
                # The brain estimate's mirror plane, measured ~90 mm in front of its centre, is off by
                # 90 sin(error) mm: a 7 degree error on a partial brain estimate gives 11 mm. The
                # template's mid-plane placed by the head shape (:func:`fedimg.deface.qc.head_shape_brain`,
                # independent of the registration) is a second estimate; the removal is centred when
                # it is centred on either (a yawed removal is off both).
                out["removal_offset_brain_mm"] = out["removal_offset_mm"]
                out["removal_offset_head_mm"] = _mirrored_offset(est, world, *est.head_plane)
                out["removal_offset_mm"] = min(out["removal_offset_brain_mm"], out["removal_offset_head_mm"])
    return out


def _mirrored_offset(est: BrainEstimate, world: np.ndarray, centre: np.ndarray, normal: np.ndarray) -> float:
    """Distance (mm) of removed tissue ``world`` from the plane ``(centre, normal)``: the mean signed
    distance of the cells whose mirror image in the plane lies in the field of view too.

    A field of view cut obliquely (or a crop through one cheek of a turned head) keeps more of
    the face on one side; the removed tissue left is off the mid-plane though the removal is
    centred (oblique-FOV dev cases: 17-21 mm). Counting only tissue whose mirror cell was
    acquired too measures the removal on a symmetric part of the field of view; a yawed removal
    still keeps one cheek there. All cells when none qualifies.
    """
    d = (world - centre) @ normal
    keep = est.in_fov(world) & est.in_fov(world - 2.0 * d[:, None] * np.asarray(normal)[None])
    return float(abs(d[keep].mean() if keep.any() else d.mean()))
