"""Synthetic glioma-like tumours for ``fedimg synth``: necrotic core, enhancing rim, oedema.

A tumour is an irregular blob around a centre inside the brain. Its normalised radius
``d`` (distance / radius, with a smooth random modulation of the surface) defines the
compartments: ``d < necrotic_fraction`` necrotic core, ``d < 1`` enhancing rim (the whole
core is non-enhancing for low-grade tumours), and an oedema shell out to
``oedema_factor`` that spreads further into white matter and is confined to the brain.
The tumour also pushes the surrounding anatomy outwards (mass effect).

Fractions are evaluated analytically at arbitrary sampling coordinates, so tumours are
drawn directly in the deformed case.

>>> rng = np.random.default_rng(0)
>>> spec = TumourSpec(centre=(10.0, 10.0, 10.0), radius_vox=5.0, necrotic_fraction=0.5,
...                   oedema_factor=1.8, enhancing=True, axes=(1.0, 1.0, 1.0),
...                   waves=np.zeros((2, 4, 5), np.float32))
>>> from fedimg.data.deform import identity_coordinates
>>> f = fractions(spec, identity_coordinates((20, 20, 20)), wm=np.ones((20, 20, 20), np.float32))
>>> f.shape, float(f[0, 10, 10, 10]), float(f[1, 10, 10, 14]), float(f[2, 10, 10, 17])
((3, 20, 20, 20), 1.0, 1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TumourSpec", "sample_tumour", "fractions", "mass_effect", "to_labels"]


@dataclass(frozen=True)
class TumourSpec:
    """Geometry of one tumour in voxel units of the anatomy grid.

    ``waves``: ``(2, n, 5)`` random plane waves (direction xyz, wavenumber, phase) that
    modulate the core (row 0) and oedema (row 1) surfaces.
    """

    centre: tuple[float, float, float]
    radius_vox: float
    necrotic_fraction: float
    oedema_factor: float
    enhancing: bool
    axes: tuple[float, float, float]
    waves: np.ndarray

    def __post_init__(self) -> None:
        if self.radius_vox <= 0 or not 0 <= self.necrotic_fraction < 1 or self.oedema_factor < 1:
            raise ValueError(f"invalid tumour geometry: {self}")

    def to_dict(self, spacing: float) -> dict:
        return {
            "centre_vox": [round(float(c), 2) for c in self.centre],
            "radius_mm": round(float(self.radius_vox * spacing), 2),
            "necrotic_fraction": round(float(self.necrotic_fraction), 3),
            "oedema_factor": round(float(self.oedema_factor), 3),
            "enhancing": bool(self.enhancing),
        }


def _waves(rng: np.random.Generator, n: int, radius_vox: float) -> np.ndarray:
    d = rng.standard_normal((n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    k = rng.uniform(0.6, 1.6, (n, 1)) / radius_vox
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    return np.concatenate([d, k, phase], axis=1).astype(np.float32)


def sample_tumour(
    rng: np.random.Generator,
    *,
    brain_edt_mm: np.ndarray,
    spacing: float,
    midline: float,
    median_radius_mm: float,
    p_left: float,
    p_low_grade: float,
) -> tuple[TumourSpec, str]:
    """Draw a tumour (size, shape, grade) and a centre deep enough inside the brain.

    Returns the spec and the hemisphere (``"left"`` / ``"right"``; RAS: left is low x).
    """
    radius_mm = float(np.clip(median_radius_mm * np.exp(rng.normal(0.0, 0.3)), 5.0, 30.0))
    hemisphere = "left" if rng.random() < p_left else "right"
    x = np.arange(brain_edt_mm.shape[0])[:, None, None]
    side = (x < midline - 4.0 / spacing) if hemisphere == "left" else (x > midline + 4.0 / spacing)
    z = np.arange(brain_edt_mm.shape[2])[None, None, :]
    zc = np.average(np.nonzero(brain_edt_mm > 0)[2])
    for need in (radius_mm + 6.0, radius_mm + 2.0, radius_mm * 0.6, 0.0):
        cand = (brain_edt_mm > max(need, 4.0)) & side & (z > zc - 10.0 / spacing)
        if cand.any():
            break
    idx = np.flatnonzero(cand)
    if idx.size == 0:  # pragma: no cover - the template's brain is large
        raise RuntimeError("no room for a tumour in the brain mask")
    centre = np.unravel_index(int(idx[rng.integers(idx.size)]), cand.shape)
    radius_mm = float(min(radius_mm, max(5.0, brain_edt_mm[centre] - 1.0)))
    centre_f = tuple(float(c) + float(rng.uniform(-0.5, 0.5)) for c in centre)
    radius_vox = radius_mm / spacing
    low_grade = rng.random() < p_low_grade
    spec = TumourSpec(
        centre=centre_f,  # type: ignore[arg-type]
        radius_vox=radius_vox,
        necrotic_fraction=0.0 if low_grade and rng.random() < 0.5 else float(rng.uniform(0.45, 0.8)),
        oedema_factor=float(rng.uniform(1.25, 1.8)),
        enhancing=not low_grade,
        axes=tuple(float(a) for a in rng.uniform(0.8, 1.25, 3)),  # type: ignore[arg-type]
        waves=np.stack([_waves(rng, 6, radius_vox), _waves(rng, 6, radius_vox)]),
    )
    return spec, hemisphere


def _modulation(waves: np.ndarray, rel: np.ndarray, amplitude: float) -> np.ndarray:
    acc = np.zeros(rel.shape[1:], dtype=np.float32)
    for d0, d1, d2, k, ph in waves:
        acc += np.sin(k * (d0 * rel[0] + d1 * rel[1] + d2 * rel[2]) + ph)
    return 1.0 + amplitude * acc / np.sqrt(len(waves))


def _step(x: np.ndarray, width: float) -> np.ndarray:
    """Smooth 0→1 step at x = 0 over ``width`` (partial-volume edges)."""
    return np.clip(x / width + 0.5, 0.0, 1.0)


def fractions(spec: TumourSpec, coords: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Tissue fractions ``(3, ...)`` float32 (necrotic, enhancing, oedema) at ``coords``.

    ``coords``: ``(3, ...)`` positions in the anatomy grid (voxels); ``wm``: white-matter
    likeness (0..1) at the same points, where oedema spreads further.
    """
    out = np.zeros((3, *coords.shape[1:]), dtype=np.float32)
    c = np.asarray(spec.centre, dtype=np.float32)[:, None]
    flat = coords.reshape(3, -1)
    reach = spec.radius_vox * spec.oedema_factor * 2.2 * max(spec.axes) + 2.0  # beyond the largest modulation
    near = np.flatnonzero(np.all(np.abs(flat - c) < reach, axis=0))
    if near.size == 0:
        return out
    rel = (flat[:, near] - c) / np.asarray(spec.axes, dtype=np.float32)[:, None]
    dist = np.sqrt((rel**2).sum(0)) / spec.radius_vox
    d_core = dist / _modulation(spec.waves[0], rel, 0.25)
    d_oed = dist / _modulation(spec.waves[1], rel, 0.35)
    width = 1.0 / spec.radius_vox  # about one voxel
    core = _step(1.0 - d_core, width)
    necrotic = _step(spec.necrotic_fraction - d_core, width) if spec.necrotic_fraction > 0 else 0.0 * core
    w = wm.reshape(-1)[near]
    oedema = _step(spec.oedema_factor * (0.8 + 0.35 * w) - d_oed, width * spec.oedema_factor)
    oedema = np.maximum(oedema - core, 0.0)
    if spec.enhancing:
        enh = core - necrotic
    else:
        necrotic, enh = core, 0.0 * core
    for i, f in enumerate((necrotic, enh, oedema)):
        out[i].reshape(-1)[near] = f
    return out


def mass_effect(coords: np.ndarray, spec: TumourSpec, strength: float) -> np.ndarray:
    """Coordinates of the anatomy pushed away from the tumour centre (Gaussian falloff)."""
    c = np.asarray(spec.centre, dtype=np.float32).reshape(3, *([1] * (coords.ndim - 1)))
    rel = coords - c
    s = spec.radius_vox * 1.6
    g = np.exp(-(rel**2).sum(0) / (2 * s * s)).astype(np.float32)
    return (coords - strength * rel * g[None]).astype(np.float32)


def to_labels(frac: np.ndarray, brain: np.ndarray, *, enhancing_label: int = 4) -> np.ndarray:
    """BraTS labels from tumour fractions: 2 oedema, 1 necrotic/non-enhancing, ``enhancing_label``.

    Voxels outside the brain (soft mask < 0.5) are background, so the tumour always lies
    inside the brain.
    """
    necrotic, enh, oedema = frac
    inside = brain >= 0.5
    wt = ((necrotic + enh + oedema) >= 0.5) & inside
    tc = ((necrotic + enh) >= 0.5) & wt
    label = np.zeros(brain.shape, dtype=np.uint8)
    label[wt] = 2
    label[tc] = 1
    label[tc & (enh >= necrotic) & (enh > 0)] = enhancing_label
    return label
