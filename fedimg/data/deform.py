"""Random smooth deformations for ``fedimg synth`` (sampling coordinates + trilinear warping).

A deformation is a field of *sampling coordinates*: ``coords[:, i, j, k]`` is the voxel
position in the source volume whose value lands at output voxel ``(i, j, k)``. It is a
small random affine (rotation, anisotropic scale, shift about a centre) plus a smooth
displacement field: random vectors on a coarse control grid, upsampled trilinearly.

>>> rng = np.random.default_rng(0)
>>> c = random_coordinates(rng, (8, 9, 10), spacing=2.0, centre=(4, 4, 5))
>>> c.shape, c.dtype
((3, 8, 9, 10), dtype('float32'))
>>> warp(np.ones((1, 8, 9, 10), np.float32), identity_coordinates((8, 9, 10))).min()
np.float32(1.0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["identity_coordinates", "random_coordinates", "smooth_random_field", "warp", "upsample"]


def identity_coordinates(shape: tuple[int, ...]) -> np.ndarray:
    """``(3, *shape)`` float32 voxel coordinates of every voxel (the identity deformation)."""
    return np.stack(np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij"))


def upsample(low: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear upsampling of ``(C, a, b, c)`` to ``(C, *shape)`` (corner-aligned), float32."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(low, dtype=np.float32))[None]
    return F.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=True)[0].numpy()


def smooth_random_field(
    rng: np.random.Generator, shape: tuple[int, int, int], channels: int, control_vox: float
) -> np.ndarray:
    """``(channels, *shape)`` smooth random field, N(0, 1) at control points ``control_vox`` apart."""
    grid = tuple(max(2, int(np.ceil(n / control_vox)) + 1) for n in shape)
    return upsample(rng.standard_normal((channels, *grid)).astype(np.float32), shape)


def random_coordinates(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    *,
    spacing: float,
    centre: tuple[float, float, float],
    max_rotation_deg: float = 6.0,
    scale_range: tuple[float, float] = (0.94, 1.06),
    max_shift_mm: float = 4.0,
    displacement_mm: float = 2.5,
    control_mm: float = 32.0,
) -> np.ndarray:
    """Sampling coordinates of a random affine + smooth elastic deformation, ``(3, *shape)``."""
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    # sampling with the inverse scale makes the output head ``scale`` times larger
    matrix = (rz @ ry @ rx @ np.diag(1.0 / rng.uniform(*scale_range, 3))).astype(np.float32)
    shift = (rng.uniform(-max_shift_mm, max_shift_mm, 3) / spacing).astype(np.float32)
    disp = smooth_random_field(rng, shape, 3, control_mm / spacing) * np.float32(displacement_mm / spacing)
    c = np.asarray(centre, dtype=np.float32)
    axes = [
        (np.arange(n, dtype=np.float32) - c[j]).reshape([n if k == j else 1 for k in range(3)])
        for j, n in enumerate(shape)
    ]
    for i in range(3):  # disp[i] += sum_j matrix[i, j] * (x_j - c_j) + c_i + shift_i, by broadcasting
        disp[i] += (matrix[i, 0] * axes[0] + matrix[i, 1] * axes[1]) + (matrix[i, 2] * axes[2] + (c[i] + shift[i]))
    return disp


def warp(volumes: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Sample ``(C, X, Y, Z)`` float32 volumes at ``coords`` ``(3, *out)``: trilinear, zeros outside."""
    import torch
    import torch.nn.functional as F

    vol = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))[None]
    size = torch.tensor(volumes.shape[1:], dtype=torch.float32)
    g = torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float32))
    g = g.permute(*range(1, g.ndim), 0) * (2.0 / (size - 1)) - 1.0  # (..., 3) in (D, H, W) order
    g = g.flip(-1)[None]  # grid_sample wants (W, H, D) = (z, y, x) order
    out = F.grid_sample(vol, g, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0].numpy()
