"""H&E stain normalisation (Macenko, Reinhard) and stain augmentation, batched in torch.

Three parts per family (house rule 2): pure functions doing the maths on tensors
``(B, 3, H, W)`` or ``(3, H, W)`` with RGB values in ``[0, 255]`` (uint8 or float, any
device), array transforms (:class:`MacenkoNormalize`, :class:`ReinhardNormalize`,
:class:`RandStainAugment`) and dictionary twins (``...d``) that only route keys.
Everything runs on whatever device the input lives on, so a batch of tiles on the GPU is
normalised in a few kernel launches; numpy inputs come back as numpy. On the CPU (numpy
arrays and CPU tensors) Macenko runs numba kernels instead (:mod:`._stain_cpu`, kernels in
:mod:`._stain_cpu_kernels`: one tile per thread, exact order statistics without sorting,
uint8 written directly), same maths, same results within float rounding (the torch path is
float32: uint8 outputs differ by at most 1 grey level, only where a value lies within that
rounding of a .5, ~1e-3 of the pixels of real tiles);
``backend="torch"`` (``compute="torch"`` for :class:`MacenkoNormalize`) forces the torch
path, ``"numba"`` insists on the kernels. NaN pixels raise ValueError there.

Optical density is ``OD = -ln(max(I, 1) / 255)``. Macenko (2009): keep pixels whose OD
exceeds ``beta`` in every channel, take the plane of the two largest eigenvectors of their
OD covariance, the ``alpha``/``100 - alpha`` percentile angles in that plane give the two
stain vectors (haematoxylin first: larger red OD), concentrations by least squares, and
their 99th percentile is the per-stain scale mapped onto the target's.

>>> import torch
>>> target = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
>>> norm = MacenkoNormalize(target)
>>> norm(torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)).shape
torch.Size([8, 3, 64, 64])
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type

from ._stain_common import _batched, _like, _StainMapBase
from .reinhard import ReinhardNormalize, ReinhardNormalized, fit_reinhard, lab_to_rgb, reinhard_normalize, rgb_to_lab

__all__ = [
    "REFERENCE_HE",
    "rgb_to_od",
    "od_to_rgb",
    "macenko_stains",
    "stain_concentrations",
    "fit_macenko",
    "macenko_normalize",
    "rgb_to_lab",
    "lab_to_rgb",
    "fit_reinhard",
    "reinhard_normalize",
    "stain_augment",
    "MacenkoNormalize",
    "ReinhardNormalize",
    "RandStainAugment",
    "MacenkoNormalized",
    "ReinhardNormalized",
    "RandStainAugmentd",
]

log = logging.getLogger(__name__)
_MACENKO_BACKENDS = ("auto", "numba", "torch")
_cpu_mod: list = []  # the numba kernels module once imported (None when numba is missing)

#: Haematoxylin and eosin OD vectors (columns) of Macenko et al. 2009, a fallback for
#: tiles with too little tissue to estimate their own.
REFERENCE_HE = torch.tensor([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])


def _cpu_kernels():
    if not _cpu_mod:
        try:
            from . import _stain_cpu as mod
        except ImportError as exc:  # numba missing or broken: torch on the CPU too
            log.info("numba unavailable (%s): Macenko stain normalisation uses torch on the CPU", exc)
            mod = None
        _cpu_mod.append(mod)
    return _cpu_mod[0]


def _numba_view(img, backend: str) -> tuple[np.ndarray, bool] | None:
    """``(x, single)``: the ``(B, 3, H, W)`` uint8/float32 host array the numba kernels read,
    or ``None`` for the torch path (``backend="numba"`` raises instead)."""
    if backend not in _MACENKO_BACKENDS:
        raise ValueError(f"backend={backend!r}: use one of {_MACENKO_BACKENDS}")
    if backend == "torch":
        return None
    cpu = _cpu_kernels()
    view = "numba is not installed" if cpu is None else cpu.host_batch(img)
    if isinstance(view, str):
        if backend == "numba":
            raise ValueError(f"backend='numba' cannot take {view}; use backend='auto'")
        return None
    return view


def _macenko_numba(view, target_stains, target_max, beta, alpha, min_fraction, fallback, uint8_out: bool) -> np.ndarray:
    """The numba path of :func:`macenko_normalize` (numpy out, uint8 with ``uint8_out``)."""
    out, _ = _cpu_kernels().normalize(view[0], target_stains, target_max, beta=beta, alpha=alpha,
                                      min_fraction=min_fraction, fallback=fallback, uint8_out=uint8_out)
    return out[0] if view[1] else out


def rgb_to_od(img: torch.Tensor) -> torch.Tensor:
    """Optical density ``-ln(max(I, 1) / 255)`` of RGB values in [0, 255] (float32 out)."""
    return -torch.log(img.float().clamp(1.0, 255.0) / 255.0)


def od_to_rgb(od: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_od`: float RGB in [0, 255]."""
    return (255.0 * torch.exp(-od)).clamp(0.0, 255.0)


def _quantile(x: torch.Tensor, q: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """numpy-style (linear) ``q``-quantile over the last dim of ``(..., N)``, only ``valid`` entries.

    Uses ``topk`` on the nearer tail instead of a full sort: O(N log k) with k ~ min(q, 1-q) N,
    exact for the tail percentiles Macenko needs, and with no host sync (GPU friendly).
    """
    lead, big = x.shape[:-1], x.shape[-1]
    x = x.reshape(-1, big)
    valid = None if valid is None else valid.reshape(-1, big)
    n = torch.full(x.shape[:1], big, device=x.device) if valid is None else valid.sum(1)
    pos = q * (n - 1).clamp_min(0).to(x.dtype)
    lo = pos.floor().long()
    frac = pos - lo
    small = q <= 0.5
    k = min(big, int(np.ceil(min(q, 1 - q) * (big - 1))) + 2)
    xf = x if valid is None else x.masked_fill(~valid, float("inf") if small else float("-inf"))
    vals = torch.topk(xf, k, dim=1, largest=not small, sorted=True).values
    last = (n - 1).clamp_min(0)
    if small:
        i0, i1 = lo, torch.minimum(lo + 1, last)
    else:
        i0 = last - lo
        i1 = (i0 - 1).clamp_min(0)
    i0, i1 = i0.clamp(0, k - 1)[:, None], i1.clamp(0, k - 1)[:, None]
    v0, v1 = vals.gather(1, i0)[:, 0], vals.gather(1, i1)[:, 0]
    return (v0 + frac * (v1 - v0)).reshape(lead)


def macenko_stains(
    img, *, beta: float = 0.15, alpha: float = 1.0, min_fraction: float = 0.01, fallback: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Per-image Macenko stain matrices ``(B, 3, 2)`` (columns H, E; unit length).

    Images with fewer than ``min_fraction`` of their pixels above ``beta`` OD get
    ``fallback`` (default :data:`REFERENCE_HE`). ``backend``: see the module docstring.
    """
    view = _numba_view(img, backend)
    if view is not None:
        fb = REFERENCE_HE if fallback is None else fallback
        he = torch.from_numpy(_cpu_kernels().stains(view[0], beta=beta, alpha=alpha, min_fraction=min_fraction, fallback=fb)).float()
        return he[0] if view[1] else he
    t, single = _batched(img)
    he = _stains_from_od(rgb_to_od(t).flatten(2), beta, alpha, min_fraction, fallback)
    return he[0] if single else he


def _stains_from_od(od: torch.Tensor, beta: float, alpha: float, min_fraction: float, fallback) -> torch.Tensor:
    mask = od.amin(dim=1) > beta  # B,N: tissue pixels, OD above beta in every channel
    w = mask.to(od.dtype)
    n = w.sum(dim=1)
    safe_n = n.clamp_min(2.0)
    wod = od * w[:, None]
    mean = wod.sum(-1) / safe_n[:, None]
    # masked covariance in one matmul: E[x x^T] - mean mean^T, with Bessel's correction
    cov = (wod @ od.transpose(1, 2) - safe_n[:, None, None] * mean[:, :, None] * mean[:, None, :]) / (safe_n - 1)[:, None, None]
    _, vecs = torch.linalg.eigh(cov.double())
    plane = vecs[:, :, 1:3].float()  # two largest eigenvalues (eigh sorts ascending)
    plane = plane * torch.where(plane[:, :1, :] < 0, -1.0, 1.0)  # sign convention: positive red
    proj = plane.transpose(1, 2) @ od  # B,2,N
    phi = torch.atan2(proj[:, 1], proj[:, 0])
    lo = _quantile(phi, alpha / 100.0, mask)
    hi = _quantile(phi, 1.0 - alpha / 100.0, mask)
    v_lo = plane @ torch.stack([torch.cos(lo), torch.sin(lo)], dim=1)[..., None]
    v_hi = plane @ torch.stack([torch.cos(hi), torch.sin(hi)], dim=1)[..., None]
    h_first = v_lo[:, 0, 0] > v_hi[:, 0, 0]
    h = torch.where(h_first[:, None, None], v_lo, v_hi)
    e = torch.where(h_first[:, None, None], v_hi, v_lo)
    he = torch.cat([h, e], dim=2)
    he = he * torch.where(he.sum(1, keepdim=True) < 0, -1.0, 1.0)
    he = he / he.norm(dim=1, keepdim=True).clamp_min(1e-8)
    ref = (REFERENCE_HE if fallback is None else torch.as_tensor(fallback)).to(he)
    ok = (n >= max(2.0, min_fraction * od.shape[-1])) & torch.isfinite(he).all(dim=1).all(dim=1)
    return torch.where(ok[:, None, None], he, ref.expand_as(he))


def stain_concentrations(img, stains: torch.Tensor) -> torch.Tensor:
    """Least-squares stain concentrations ``(B, 2, H*W)`` of ``img`` for matrices ``(B|1, 3, 2)``."""
    t, _ = _batched(img)
    od = rgb_to_od(t).flatten(2)
    s = torch.as_tensor(stains, device=od.device).float()
    s = s.unsqueeze(0) if s.ndim == 2 else s
    return torch.linalg.pinv(s) @ od


def fit_macenko(target, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit the target: its stain matrix ``(3, 2)`` and 99th-percentile concentrations ``(2,)``."""
    t, _ = _batched(target)
    if t.shape[0] != 1:
        raise ValueError("fit_macenko expects one target image")
    stains = macenko_stains(t, **kw)
    conc = stain_concentrations(t, stains)
    return stains[0], _quantile(conc, 0.99)[0]


def macenko_normalize(
    img, target_stains, target_max, *, beta: float = 0.15, alpha: float = 1.0, min_fraction: float = 0.01, fallback=None,
    backend: str = "auto",
) -> torch.Tensor:
    """Map each image's stains and 99th-percentile concentrations onto the target's.

    Returns float RGB in [0, 255] with the input's leading shape, on the input's device.
    Per image: ``OD' = S_t diag(c_t / c_99) S^+ OD`` folded into one 3x3 matrix.
    ``backend``: ``"auto"`` (numba kernels for CPU inputs, torch otherwise), ``"numba"``
    or ``"torch"``; both give the same maths (float32 out, within float rounding).
    """
    view = _numba_view(img, backend)
    if view is not None:
        return torch.from_numpy(_macenko_numba(view, target_stains, target_max, beta, alpha, min_fraction, fallback, False))
    t, single = _batched(img)
    od = rgb_to_od(t).flatten(2)
    stains = _stains_from_od(od, beta, alpha, min_fraction, target_stains if fallback is None else fallback)
    pinv = torch.linalg.pinv(stains)  # B,2,3
    src_max = _quantile(pinv @ od, 0.99).clamp_min(1e-6)  # B,2
    tmax = torch.as_tensor(target_max, device=od.device).float()
    ts = torch.as_tensor(target_stains, device=od.device).float()
    mat = ts @ ((tmax / src_max)[..., None] * pinv)  # B,3,3
    out = od_to_rgb(mat @ od).reshape(t.shape)
    return out[0] if single else out


def stain_augment(img, alpha, beta, stains=None, shift=None) -> torch.Tensor:
    """Perturb stains: ``C' = C * alpha + beta`` and optionally the stain vectors by ``shift``.

    ``alpha``, ``beta``: ``(B, 2)`` (or ``(2,)``); ``stains``: ``(B|1, 3, 2)`` used to
    decompose (default: :data:`REFERENCE_HE`, cheap; pass :func:`macenko_stains` for per-tile
    vectors); ``shift``: ``(B, 3, 2)`` added to the vectors before reconstruction.
    """
    t, single = _batched(img)
    s = (REFERENCE_HE if stains is None else torch.as_tensor(stains)).to(t.device).float()
    s = s.unsqueeze(0) if s.ndim == 2 else s
    conc = stain_concentrations(t, s)
    a = torch.as_tensor(alpha, device=t.device).float().reshape(-1, 2, 1)
    b = torch.as_tensor(beta, device=t.device).float().reshape(-1, 2, 1)
    conc = conc * a + b * (conc > 0.05)  # keep white background white
    if shift is not None:
        s = s + torch.as_tensor(shift, device=t.device).float()
        s = s.clamp_min(1e-3) / s.clamp_min(1e-3).norm(dim=1, keepdim=True)
    out = od_to_rgb(s @ conc).reshape(t.shape)
    return out[0] if single else out


class MacenkoNormalize(Transform):
    """Macenko normalisation to a target image (fitted once at construction).

    Accepts ``(3, H, W)`` or ``(B, 3, H, W)`` numpy/torch, uint8 or float in [0, 255];
    returns the same type, dtype and device. On the CPU the numba kernels write uint8
    output directly; ``compute="torch"`` forces the torch path (see :func:`macenko_normalize`).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, target=None, *, stains=None, max_conc=None, beta: float = 0.15, alpha: float = 1.0,
                 compute: str = "auto") -> None:
        if compute not in _MACENKO_BACKENDS:
            raise ValueError(f"compute={compute!r}: use one of {_MACENKO_BACKENDS}")
        if target is not None:
            stains, max_conc = fit_macenko(torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target), beta=beta,
                                           alpha=alpha, backend=compute)
        if stains is None or max_conc is None:
            raise ValueError("MacenkoNormalize needs a target image or stains= and max_conc=")
        self.stains = torch.as_tensor(stains).float()
        self.max_conc = torch.as_tensor(max_conc).float()
        self.beta, self.alpha, self.compute = beta, alpha, compute

    def __call__(self, img):
        view = _numba_view(img, self.compute)
        if view is not None:  # uint8 in, uint8 out: no float copy of the batch
            out = _macenko_numba(view, self.stains, self.max_conc, self.beta, self.alpha, 0.01, None, view[0].dtype == np.uint8)
            return convert_to_dst_type(out, img, dtype=img.dtype)[0]
        out = macenko_normalize(img, self.stains, self.max_conc, beta=self.beta, alpha=self.alpha, backend="torch")
        return _like(out, img)


class RandStainAugment(RandomizableTransform):
    """Random H&E perturbation (Tellez et al. 2018): per image ``alpha ~ U(1±sigma1)``,
    ``beta ~ U(±sigma2)`` on each stain's concentration, stain vectors jittered by
    ``U(±vector_jitter)``. With ``prob`` per image; randomness only in :meth:`randomize`.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, prob: float = 1.0, sigma1: float = 0.2, sigma2: float = 0.2, vector_jitter: float = 0.05, stains=None) -> None:
        RandomizableTransform.__init__(self, prob)
        if sigma1 < 0 or sigma2 < 0 or vector_jitter < 0:
            raise ValueError("sigma1, sigma2 and vector_jitter must be >= 0")
        self.sigma1, self.sigma2, self.vector_jitter = sigma1, sigma2, vector_jitter
        self.stains = None if stains is None else torch.as_tensor(stains).float()
        self._params: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def randomize(self, data: Any = None, batch: int = 1) -> None:  # type: ignore[override]
        apply = self.R.rand(batch) < self.prob
        alpha = np.where(apply[:, None], self.R.uniform(1 - self.sigma1, 1 + self.sigma1, (batch, 2)), 1.0)
        beta = np.where(apply[:, None], self.R.uniform(-self.sigma2, self.sigma2, (batch, 2)), 0.0)
        shift = np.where(apply[:, None, None], self.R.uniform(-self.vector_jitter, self.vector_jitter, (batch, 3, 2)), 0.0)
        self._do_transform = bool(apply.any())
        self._params = (alpha, beta, shift)

    def __call__(self, img, randomize: bool = True):
        t, _ = _batched(img)
        if randomize or self._params is None:
            self.randomize(batch=t.shape[0])
        if not self._do_transform:
            return img
        alpha, beta, shift = self._params  # type: ignore[misc]
        out = stain_augment(img, alpha, beta, stains=self.stains, shift=shift)
        return _like(out, img)


class MacenkoNormalized(_StainMapBase):
    """Dictionary twin of :class:`MacenkoNormalize` (image keys only; labels untouched)."""

    backend = MacenkoNormalize.backend

    def __init__(self, keys: KeysCollection, target=None, allow_missing_keys: bool = False, **kw: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = MacenkoNormalize(target, **kw)


class RandStainAugmentd(RandomizableTransform, MapTransform):
    """Dictionary twin of :class:`RandStainAugment`; every key gets the same draw."""

    backend = RandStainAugment.backend

    def __init__(self, keys: KeysCollection, prob: float = 1.0, allow_missing_keys: bool = False, **kw: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.augment = RandStainAugment(prob=prob, **kw)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandStainAugmentd:
        super().set_random_state(seed, state)
        self.augment.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        first = True
        for key in self.key_iterator(d):
            d[key] = self.augment(d[key], randomize=first)
            first = False
        return d

