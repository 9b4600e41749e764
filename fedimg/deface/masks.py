"""Warp the template's face and brain maps into a subject and decide which voxels to remove.

The removed region is ``face > 0.5`` minus every protected voxel: the warped brain-protection
mask (any partial overlap protects) and the user's ``--protect`` labels, dilated by a margin.
Only the subject box that the template face region maps into is resampled, so a 1 mm head
costs a fraction of a full-volume warp.

>>> import numpy as np
>>> img = np.arange(27, dtype=np.int16).reshape(3, 3, 3)
>>> remove = np.zeros((3, 3, 3), bool); remove[0] = True
>>> int(apply_removal(img, remove, mode="zero", zero_value=0)[0].sum())
0
"""

from __future__ import annotations

import logging

import numpy as np

from fedimg.errors import ConfigError

__all__ = ["warp_template_maps", "warp_template_masks", "placed_brain", "removal_mask", "dilate_mm", "apply_removal", "MODES"]

log = logging.getLogger(__name__)

MODES = ("zero", "blur")


_FACE_REGION: list = []  # (the template's face map, its region's box): computed once per process


def _face_region(face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box of ``face > 0`` (template voxels) widened by one voxel, from its projections on each axis (cached)."""
    for key, value in _FACE_REGION:
        if key is face:
            return value
    inside = face > 0
    nz = [np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    value = (np.array([a.min() for a in nz]) - 1.0, np.array([a.max() for a in nz]) + 1.0)
    _FACE_REGION[:] = [*_FACE_REGION[-3:], (face, value)]
    return value


def _face_box(template, subject_shape, vox_to_tvox: np.ndarray, pad: int = 2):
    """Subject voxel box (slices) that can map into the template's face region."""
    lo, hi = _face_region(template.face)
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    sub = corners @ np.linalg.inv(vox_to_tvox).T
    a = np.floor(sub[:, :3].min(0)).astype(int) - pad
    b = np.ceil(sub[:, :3].max(0)).astype(int) + pad + 1
    a = np.clip(a, 0, subject_shape)
    b = np.clip(b, 0, subject_shape)
    return tuple(slice(int(i), int(j)) for i, j in zip(a, b))


def warp_template_maps(template, subject_shape, subject_affine: np.ndarray, subject_to_template: np.ndarray,
                       *, device=None, chunk: int = 2_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Face (float, 0..1) and brain-protection (float) maps of the template on the subject grid.

    Trilinear, zeros outside the template: numpy (:func:`.resample_np.warp_maps`) on the CPU (``device``
    None, ``"cpu"`` or a CPU ``torch.device``; no torch import), ``grid_sample`` on a GPU ``device``.
    """
    vox_to_tvox = np.linalg.inv(template.affine) @ subject_to_template @ subject_affine
    face_out = np.zeros(subject_shape, np.float32)
    brain_out = np.zeros(subject_shape, np.float32)
    box = _face_box(template, subject_shape, vox_to_tvox)
    if any(s.stop <= s.start for s in box):
        return face_out, brain_out
    if device is None or str(getattr(device, "type", device)).startswith("cpu"):
        from .resample_np import warp_maps

        shape, origin = [s.stop - s.start for s in box], [s.start for s in box]
        face_out[box], brain_out[box] = warp_maps([template.face, template.brain], vox_to_tvox, shape, origin=origin)
        return face_out, brain_out
    both = _warp_torch(template, vox_to_tvox, box, device, chunk)
    face_out[box] = both[0]
    brain_out[box] = both[1]
    return face_out, brain_out


def warp_template_masks(template, subject_shape, subject_affine: np.ndarray, subject_to_template: np.ndarray,
                        *, device=None) -> tuple[np.ndarray, np.ndarray]:
    """``(face > 0.5, brain > 0.01)`` of :func:`warp_template_maps`' maps, as boolean arrays: the same voxels.

    On the CPU the thresholded trilinear warp of the two binary maps (:func:`.resample_masks.warp_above`) sums
    only the cells whose corners differ; elsewhere (a GPU ``device``, maps that are not binary) the float maps
    are warped and thresholded. :func:`removal_mask` takes either.
    """
    if device is not None and not str(getattr(device, "type", device)).startswith("cpu"):
        face, brain = warp_template_maps(template, subject_shape, subject_affine, subject_to_template, device=device)
        return face > 0.5, brain > 0.01
    from .resample_masks import warp_above

    vox_to_tvox = np.linalg.inv(template.affine) @ subject_to_template @ subject_affine
    face_out = np.zeros(subject_shape, bool)
    brain_out = np.zeros(subject_shape, bool)
    box = _face_box(template, subject_shape, vox_to_tvox)
    if any(s.stop <= s.start for s in box):
        return face_out, brain_out
    shape, origin = [s.stop - s.start for s in box], [s.start for s in box]
    face_out[box], brain_out[box] = warp_above([template.face, template.brain], (0.5, 0.01), vox_to_tvox, shape,
                                               origin=origin)
    return face_out, brain_out


def placed_brain(template, shape, affine: np.ndarray, subject_to_template: np.ndarray) -> np.ndarray:
    """The template's brain-protection map placed on a whole grid (``shape``, ``affine``) through
    ``subject_to_template``, above 0.5: the voxels of ``resample_np.warp_support(...) > 0.5`` (trilinear, zeros
    outside; :func:`warp_template_maps` fills only the face's box), by :func:`.resample_masks.warp_support_above`.
    QC's brain cores (:mod:`.qc`) and the CT check (:mod:`.ct_qc`) read it."""
    from .resample_masks import warp_support_above

    m = np.linalg.inv(template.affine) @ subject_to_template @ affine
    return warp_support_above(template.brain, m, shape, 0.5)


def _warp_torch(template, vox_to_tvox: np.ndarray, box, device, chunk: int) -> np.ndarray:
    """Both maps over ``box`` with ``grid_sample`` on ``device`` (the GPU path), in row chunks."""
    import torch
    import torch.nn.functional as F

    maps = torch.as_tensor(np.stack([template.face, template.brain]), device=device)[None]
    size = torch.as_tensor(template.face.shape, dtype=torch.float64, device=device)
    m = torch.as_tensor(vox_to_tvox, dtype=torch.float64, device=device)
    lin = (m[:3, :3] * (2.0 / (size - 1))[:, None]).flip(0).float()
    shift = (m[:3, 3] * 2.0 / (size - 1) - 1.0).flip(0).float()
    axes = [torch.arange(s.start, s.stop, device=device, dtype=torch.float32) for s in box]
    ny, nz = len(axes[1]), len(axes[2])
    rows = max(1, chunk // max(1, ny * nz))
    res = []
    for i0 in range(0, len(axes[0]), rows):
        idx = torch.stack(torch.meshgrid(axes[0][i0 : i0 + rows], axes[1], axes[2], indexing="ij"), -1)
        grid = idx @ lin.T + shift
        out = F.grid_sample(maps, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True)
        res.append(out[0].cpu().numpy())
    return np.concatenate(res, axis=1)


def dilate_mm(mask: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """Dilate a boolean mask by an ellipsoid of ``margin_mm`` (per-axis voxel radii)."""
    from scipy import ndimage as ndi

    if margin_mm <= 0 or not mask.any():
        return mask.astype(bool)
    radii = [max(0, int(np.ceil(margin_mm / float(s)))) for s in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1) * float(s) for r, s in zip(radii, spacing)], indexing="ij")
    ball = sum(g**2 for g in grids) <= margin_mm**2 + 1e-6
    nz = np.nonzero(mask)
    lo = [max(0, int(a.min()) - r) for a, r in zip(nz, radii)]
    hi = [min(s, int(a.max()) + r + 1) for a, r, s in zip(nz, radii, mask.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out = np.zeros(mask.shape, bool)
    out[box] = ndi.binary_dilation(mask[box], structure=ball)
    return out


def removal_mask(face: np.ndarray, brain: np.ndarray, protect: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(remove, protected)`` boolean masks: face region minus brain and user protection.

    ``face`` and ``brain``: the warped maps (:func:`warp_template_maps`), or already their masks ``face > 0.5``
    and ``brain > 0.01`` (boolean, :func:`warp_template_masks`).
    """
    protected = brain if brain.dtype == bool else brain > 0.01
    if protect is not None:
        protected = protected | protect
    remove = (face if face.dtype == bool else face > 0.5) & ~protected
    return remove, protected


def apply_removal(raw: np.ndarray, remove: np.ndarray, *, mode: str = "zero", zero_value=0,
                  spacing=(1.0, 1.0, 1.0), blur_mm: float = 8.0) -> np.ndarray:
    """Return a copy of ``raw`` with the removed voxels set to ``zero_value`` or heavily blurred.

    ``blur`` replaces the region by a Gaussian blur (sigma ``blur_mm``) of the image with the
    region itself zeroed first, so no facial detail leaks in; intensities stay plausible.
    """
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    out = np.array(raw, copy=True)
    if not remove.any():
        return out
    if mode == "zero":
        out[remove] = zero_value
        return out
    from scipy import ndimage as ndi

    sigma = [blur_mm / float(s) for s in spacing]
    data = raw.astype(np.float32)
    data[remove] = 0.0
    keep = (~remove).astype(np.float32)
    num = ndi.gaussian_filter(data, sigma, mode="constant")
    den = ndi.gaussian_filter(keep, sigma, mode="constant")
    blurred = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0) * np.clip(den * 2.0, 0.0, 1.0)
    vals = blurred[remove]
    if np.issubdtype(out.dtype, np.integer):
        info = np.iinfo(out.dtype)
        vals = np.clip(np.rint(vals), info.min, info.max)
    out[remove] = vals.astype(out.dtype)
    return out
