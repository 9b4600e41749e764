"""The corpus's known transforms (``benchmarks/deface_corpus.py``, ``benchmarks/deface_ct.py``).

Random poses that are never a start rotation (:func:`_angles`), case parameters, a smooth
warp, world-point sampling, the contrast maps of T1 intensity and the removal Dice: the
pieces both corpus builders draw their cases with (not part of the wheel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SPACINGS", "CONTRASTS", "KNOTS", "THICK_SLICES", "_canonical_head", "_angles", "_params", "_pose_params",
           "_archive_params", "_warp_field", "_sample", "_contrast", "_dice", "score_removal", "judged_correct"]

SPACINGS = ((1.0, 1.0, 1.0), (1.5, 1.5, 1.5), (2.0, 2.0, 2.0), (3.0, 3.0, 3.0), (4.0, 4.0, 4.0),
            (1.0, 1.0, 3.0), (1.0, 4.0, 1.0), (3.5, 1.2, 1.2))
# piecewise-linear maps of T1 intensity (0 = air, 1 = the head's 99th percentile): knots at
# air, noise, CSF, grey matter, white matter, fat
CONTRASTS = {
    "t1": (0.0, 0.08, 0.25, 0.5, 0.7, 1.0),
    "t2": (0.0, 0.05, 1.0, 0.6, 0.42, 0.75),
    "pd": (0.0, 0.05, 0.8, 0.78, 0.66, 0.9),
    "flair": (0.0, 0.05, 0.12, 0.62, 0.45, 0.7),
}
KNOTS = (0.0, 0.08, 0.25, 0.5, 0.7, 1.0)
# clinical 2-D acquisitions kept in hospital archives: thin in plane, 4-6 mm slices (axial, coronal, sagittal)
THICK_SLICES = ((0.9, 0.9, 5.0), (1.0, 1.0, 6.0), (0.9, 4.5, 0.9), (5.0, 1.0, 1.0), (0.45, 0.45, 5.5))


def _canonical_head(path: Path):
    import nibabel as nib

    from fedimg.imageio.volume import to_canonical

    img = nib.load(str(path))
    return to_canonical(np.asarray(img.get_fdata(dtype=np.float32)), img.affine.astype(np.float64))


def _angles(rng) -> tuple[float, float, float]:
    while True:
        a = rng.uniform(-45, 45, 3)
        near = [min(abs(v - 20 * round(v / 20)), abs(v - 22.5 * round(v / 22.5))) < 2.0 for v in a]
        if not all(near):
            return tuple(float(v) for v in a)


def _params(rng, spacing_choices=SPACINGS) -> dict:
    crop = rng.choice(["none", "chin", "face", "both"], p=[0.3, 0.3, 0.2, 0.2])
    return {
        "angles": _angles(rng), "scale": float(rng.uniform(0.92, 1.08)),
        "shift": [float(v) for v in rng.uniform(-15, 15, 3)], "warp_mm": float(rng.uniform(0, 4)),
        "spacing": [float(v) for v in spacing_choices[int(rng.integers(len(spacing_choices)))]],
        "crop": str(crop), "chin_mm": float(rng.uniform(15, 45)), "face_mm": float(rng.uniform(8, 25)),
        "contrast": str(rng.choice(list(CONTRASTS))), "tumour": bool(rng.random() < 0.35),
        "bias": float(rng.uniform(0, 0.2)), "noise": float(rng.uniform(0.005, 0.03)),
    }


def _pose_params(rng) -> dict:
    """A rotated real head and nothing else: 1 mm, T1, no crop, warp, scale, bias or tumour."""
    return {"angles": _angles(rng), "scale": 1.0, "shift": [float(v) for v in rng.uniform(-10, 10, 3)], "warp_mm": 0.0,
            "spacing": [1.0, 1.0, 1.0], "crop": "none", "chin_mm": 0.0, "face_mm": 0.0, "contrast": "t1",
            "tumour": False, "bias": 0.0, "noise": 0.003}


def _archive_params(rng, params: dict) -> dict:
    """Add what hospital archives vary and the plain draw does not (``deface_corpus build --archive``).

    - ``scale`` 0.85-1.15 (children to large adults; the plain draw is +-8 %);
    - ``coil`` 0.2-0.8: receive-array shading without intensity normalisation, the image
      brighter towards the head's surface (gain ``1 + coil (r / R)^2``, ``R`` the head's radius);
    - ``noise`` 0.02-0.07 of the head's 99th percentile, Rician (``rician``): low-SNR fast scans;
    - ``spacing`` half the time a thick-slice 2-D protocol (:data:`THICK_SLICES`) whose slices
      average the head over their thickness (``slice_profile``), not point samples;
    - ``margin_mm`` 6-40: a field of view with more air around the head (a fixed 240-256 mm FOV).
    """
    out = dict(params)
    out["scale"] = float(rng.uniform(0.85, 1.15))
    out["coil"] = float(rng.uniform(0.2, 0.8))
    out["noise"] = float(rng.uniform(0.02, 0.07))
    out["rician"] = True
    if rng.random() < 0.5:
        out["spacing"] = [float(v) for v in THICK_SLICES[int(rng.integers(len(THICK_SLICES)))]]
    out["slice_profile"] = True
    out["margin_mm"] = float(rng.uniform(6, 40))
    return out


def _warp_field(rng, amplitude: float, lo: np.ndarray, hi: np.ndarray):
    """A smooth displacement (mm) as a function of world points: 4x4x4 random knots, trilinear."""
    import torch
    import torch.nn.functional as F

    knots = torch.as_tensor(rng.normal(0, amplitude / 2, (3, 4, 4, 4)).clip(-amplitude, amplitude), dtype=torch.float32)

    def disp(pts: np.ndarray) -> np.ndarray:
        g = (pts - lo) / np.maximum(hi - lo, 1e-6) * 2 - 1
        g = torch.as_tensor(g[:, ::-1].copy(), dtype=torch.float32)[None, :, None, None, :]
        return F.grid_sample(knots[None], g, align_corners=True, padding_mode="border")[0, :, :, 0, 0].T.numpy()

    return disp


def _sample(vol: np.ndarray, affine: np.ndarray, world: np.ndarray, order: int = 1) -> np.ndarray:
    """Trilinear values of ``vol`` at world points (N, 3); 0 outside."""
    import torch
    import torch.nn.functional as F

    vox = world @ np.linalg.inv(affine)[:3, :3].T + np.linalg.inv(affine)[:3, 3]
    size = np.array(vol.shape[-3:], np.float64)
    g = (vox * 2.0 / (size - 1) - 1.0)[:, ::-1].astype(np.float32)
    v = torch.as_tensor(np.ascontiguousarray(vol, dtype=np.float32))
    chans = v[None] if v.ndim == 3 else v
    out = F.grid_sample(chans[None], torch.as_tensor(g.copy())[None, :, None, None, :],
                        mode="bilinear" if order else "nearest", align_corners=True)
    return out[0, :, :, 0, 0].numpy()


def _contrast(x: np.ndarray, name: str) -> np.ndarray:
    return np.interp(np.clip(x, 0, 1.3), KNOTS + (1.3,), CONTRASTS[name] + (CONTRASTS[name][-1] * 1.1,))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def score_removal(removed: np.ndarray, truth, src: np.ndarray) -> dict:
    """The corpus judge's numbers for a removal: Dice and recall against the case's reference face region, and the
    reference brain and tumour voxels it takes, all inside the acquired field of view (the cases are never exactly 0
    but in an oblique field of view's padding, which holds no face). ``truth``: the case's ``*_truth.npz``."""
    fov = src != 0
    ref, removed = truth["reference"] & fov, removed & fov
    return {"dice": _dice(removed, ref), "recall": float((removed & ref).sum() / max(1, ref.sum())),
            "brain_removed": int((removed & truth["brain"]).sum()), "tumour_removed": int((removed & truth["tumour"]).sum())}


def judged_correct(score: dict) -> bool:
    """A removal is correct when it takes no brain or tumour voxel and at least 90 % of the reference face."""
    return score["brain_removed"] == 0 and score["tumour_removed"] == 0 and score["recall"] >= 0.9
