"""Gantry-tilt correction: a sheared slice stack resampled onto an orthogonal grid.

A CT gantry tilted by ``θ`` (or any stack whose slice positions step off the slice normal)
gives voxels on a sheared grid: the affine's third column (the step between slice positions)
leans by ``θ`` from the normal of the image plane. :func:`orthogonal_grid` resamples such a
volume (linear interpolation, :func:`scipy.ndimage.affine_transform`) onto the grid with the
same in-plane axes and spacing, and the slice axis along the normal with the slice spacing
measured along it. Each slice only moves within its own plane, so slice ``k`` of the output
is slice ``k`` of the input shifted by ``k`` times the in-plane part of the step; the grid
is widened (by whole voxels) so every acquired voxel stays inside it, and the corner it
adds is filled with the volume's minimum (air). Integer volumes are rounded back to their type.

>>> import numpy as np
>>> data = np.zeros((6, 4, 3), np.int16); data[1, 1, :] = 100    # a rod along the slices
>>> sheared = np.diag([1.0, 1.0, 1.0, 1.0]); sheared[0, 2] = 1.0   # each slice 1 mm further in x: 45 deg
>>> out, affine, angle = orthogonal_grid(data, sheared)
>>> round(angle, 1), out.shape, out.dtype.name
(45.0, (8, 4, 3), 'int16')
>>> [tuple(int(i) for i in np.argwhere(out[:, :, k] == 100)[0]) for k in range(3)]  # the rod, now oblique
[(1, 1), (2, 1), (3, 1)]
>>> affine[:3, 2].tolist()                                           # slice axis on the normal
[0.0, 0.0, 1.0]
"""

from __future__ import annotations

import logging
import math

import numpy as np

__all__ = ["orthogonal_grid", "shear_angle"]

log = logging.getLogger(__name__)


def shear_angle(affine: np.ndarray) -> float:
    """Angle (degrees) between the affine's slice axis and the normal of its first two axes."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    normal = np.cross(a[:, 0], a[:, 1])
    cos = abs(float(a[:, 2] @ normal)) / (float(np.linalg.norm(normal)) * float(np.linalg.norm(a[:, 2])))
    return float(np.degrees(np.arccos(min(cos, 1.0))))


def orthogonal_grid(data: np.ndarray, affine: np.ndarray, *,
                    cval: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """``(resampled volume, orthogonal affine, shear angle in degrees)`` of a sheared 3-D volume.

    ``affine``'s first two columns must be perpendicular (a DICOM image plane); its third is
    the step between slice positions. ``cval``: the fill value for the added corners (default:
    the volume's minimum). A stack already on the normal comes back unchanged (a copy).
    """
    from scipy import ndimage

    a = np.asarray(affine, dtype=np.float64)
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {data.shape}")
    c0, c1, step = a[:3, 0], a[:3, 1], a[:3, 2]
    if abs(float(c0 @ c1)) > 1e-4 * float(np.linalg.norm(c0) * np.linalg.norm(c1)):
        raise ValueError("the affine's first two axes are not perpendicular: not a sheared slice stack")
    normal = np.cross(c0, c1)
    normal /= np.linalg.norm(normal)
    dz = float(step @ normal)
    if abs(dz) < 1e-6:
        raise ValueError("the slice step lies in the image plane: not a slice stack")
    # the step's in-plane part, in voxels of the first two axes: slice k is shifted by k * (t0, t1)
    t0, t1 = float(step @ c0) / float(c0 @ c0), float(step @ c1) / float(c1 @ c1)
    last = data.shape[2] - 1
    lo0, lo1 = math.floor(min(0.0, last * t0) + 1e-9), math.floor(min(0.0, last * t1) + 1e-9)
    hi0, hi1 = math.ceil(max(0.0, last * t0) - 1e-9), math.ceil(max(0.0, last * t1) - 1e-9)
    shape = (data.shape[0] + hi0 - lo0, data.shape[1] + hi1 - lo1, data.shape[2])
    out_affine = a.copy()
    out_affine[:3, 2] = dz * normal
    out_affine[:3, 3] = a[:3, 3] + lo0 * c0 + lo1 * c1
    # output voxel (i, j, k) is input voxel (i + lo0 - k t0, j + lo1 - k t1, k)
    matrix = np.array([[1.0, 0.0, -t0], [0.0, 1.0, -t1], [0.0, 0.0, 1.0]])
    fill = float(data.min()) if cval is None else float(cval)
    out = ndimage.affine_transform(data.astype(np.float32, copy=False), matrix, offset=(lo0, lo1, 0.0),
                                   output_shape=shape, order=1, mode="constant", cval=fill)
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(data.dtype)
    return out, out_affine, shear_angle(a)
