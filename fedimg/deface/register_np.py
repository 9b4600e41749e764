"""The MI registration of :mod:`.register` on the CPU in numpy, with an analytic gradient (no torch).

Same cost, parameterisation, pyramid, starts, pruning, sample counts and Adam schedule as the
torch path: world_t = lin @ (p - c_s) + trans + c_t per start; the template is sampled
trilinearly (zeros outside) at random subject voxel centres, MI comes from the same Parzen
joint histogram, and its gradient reaches ``lin`` and ``trans`` by the chain rule
(d MI / d moving intensity x the interpolant's gradient x the voxel-from-world matrix x the
point). The voxel samples are the torch path's own (:class:`TorchDraws`), so the two differ
only by float32 vs float64 rounding.

>>> import numpy as np
>>> small, aff = downsample_np(np.ones((9, 8, 8), np.float32), np.eye(4), 2.0)
>>> small.shape, float(small.max()), float(aff[0, 0])      # ceil mode: a partial last block
((5, 4, 4), 1.0, 2.0)
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from .mi_np import fixed_weights, mi_and_grad, pad_volume, trilinear

__all__ = ["register_numpy", "downsample_np", "NumpyLevel", "TorchDraws", "template_level_np"]

log = logging.getLogger(__name__)


def downsample_np(data: np.ndarray, affine: np.ndarray, target_mm: float):
    """Block means to about ``target_mm`` (partial edge blocks averaged over what they hold, as
    ``avg_pool3d(ceil_mode=True)``); returns ``(float32 array, affine)``."""
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    f = [max(1, int(round(target_mm / s))) for s in spacing]
    data = np.asarray(data, dtype=np.float32)
    if f == [1, 1, 1]:
        return data, affine.copy()
    out_shape = [-(-n // k) for n, k in zip(data.shape, f)]
    pad = [(0, o * k - n) for n, k, o in zip(data.shape, f, out_shape)]
    o0, o1, o2 = out_shape

    def block_sums(x):  # one axis at a time, each over contiguous runs (fast in float32)
        x = x.reshape(o0, f[0], -1).sum(1)
        x = x.reshape(o0, o1, f[1], -1).sum(2)
        return x.reshape(o0, o1, o2, f[2]).sum(3)

    partial = any(p[1] for p in pad)
    sums = block_sums(np.pad(data, pad) if partial else data)
    counts = float(np.prod(f))
    if partial:  # voxels per block, separable: full blocks hold f, the last one what is left
        per_axis = [np.minimum(k, n - np.arange(o) * k).astype(np.float32) for n, k, o in zip(data.shape, f, out_shape)]
        counts = per_axis[0][:, None, None] * per_axis[1][None, :, None] * per_axis[2][None, None, :]
    shift = np.eye(4)
    shift[:3, 3] = [(k - 1) / 2.0 for k in f]
    return (sums / counts).astype(np.float32), affine @ shift @ np.diag([*f, 1.0])


def normalise_np(t: np.ndarray) -> np.ndarray:
    """Intensities over the 99.5th percentile of the positive voxels, clipped to [0, 1] (as the torch path)."""
    pos = t[t > 0]
    if pos.size == 0:
        return np.clip(t, 0, 1).astype(np.float32)
    k = max(1, int(pos.size * 0.995))
    hi = np.partition(pos, k - 1)[k - 1] if pos.size < 16_000_000 else pos.max()
    return np.clip(t / max(float(hi), 1e-6), 0.0, 1.0).astype(np.float32)


def centre_of_mass_np(t: np.ndarray, affine: np.ndarray) -> np.ndarray:
    w = np.clip(t, 0, None).astype(np.float64)
    total = max(w.sum(), 1e-9)
    com = [(w.sum(axis=tuple(a for a in range(3) if a != ax)) * np.arange(t.shape[ax])).sum() / total for ax in range(3)]
    return (affine @ np.append(com, 1.0))[:3]


_CACHE: dict = {}


def template_level_np(template: np.ndarray, affine: np.ndarray, mm: float):
    """Downsampled, normalised template of one level, cached per (array, level): ``(array, affine)``."""
    key = (template.__array_interface__["data"][0], template.shape, affine.tobytes(), mm)
    got = _CACHE.get(key)
    if got is None:
        if len(_CACHE) > 8:
            _CACHE.clear()
        got = _CACHE[key] = _level_np(template, affine, mm)
    return got


def _level_np(template: np.ndarray, affine: np.ndarray, mm: float):
    """One level made afresh, or, for the shipped template with a cache folder set, read from :mod:`.template_cache`."""
    from .template import template_intensity
    from .template_cache import cache_dir, cached

    def build() -> dict[str, np.ndarray]:
        t, ta = downsample_np(template, affine, mm)
        return {"level": normalise_np(t), "affine": ta}

    if cache_dir() is not None and template is template_intensity()[0] and np.array_equal(affine, template_intensity()[1]):
        got = cached(f"level_{float(mm):g}mm", build, {"level": (None, "float32"), "affine": ((4, 4), "float64")})
    else:
        got = build()
    return got["level"], got["affine"]


class TorchDraws:
    """Uniform voxel indices drawn exactly as ``torch.randint(0, n, (k,), generator=torch.Generator().manual_seed(seed))``
    draws them on the CPU (mt19937 seeded alike, one 32-bit word per index, modulo ``n``), so the numpy
    path sees the torch path's samples. Valid for ``n < 2**32``.

    >>> TorchDraws(0).integers(1000003, 3).tolist()
    [128973, 240601, 705720]
    """

    def __init__(self, seed: int):
        self.state = np.random.RandomState(seed)

    def integers(self, n: int, k: int) -> np.ndarray:
        if not 0 < n < 2**32:
            raise ValueError(f"TorchDraws: n must be in 1..2**32-1, got {n}")
        return (self.state.randint(0, 2**32, size=k, dtype=np.uint64) % np.uint64(n)).astype(np.int64)


class NumpyLevel:
    """One pyramid level: the subject's voxels (drawn by index) and the padded template."""

    def __init__(self, subj: np.ndarray, s_aff: np.ndarray, tmpl: np.ndarray, t_aff: np.ndarray, c_s, bins: int):
        self.shape = subj.shape
        self.values = subj.reshape(-1)
        self.s_lin, self.s_off = s_aff[:3, :3], s_aff[:3, 3] - c_s
        self.padded = pad_volume(tmpl)
        tinv = np.linalg.inv(t_aff)
        self.t_lin, self.t_off = tinv[:3, :3], tinv[:3, 3]
        self.bins = bins
        self.n = self.values.size
        self.index = None  # flat voxel index of each sample slot (None: slot = voxel)

    def restrict(self, keep: np.ndarray) -> None:
        """Sample only the voxels where the flat boolean ``keep`` holds (the acquired field of view)."""
        self.index = np.flatnonzero(keep)
        self.values = self.values[self.index]
        self.n = self.index.size

    def points(self, sel: np.ndarray) -> np.ndarray:
        """World points (subject, centred on ``c_s``) of sample slots ``sel``."""
        sel = sel if self.index is None else self.index[sel]
        idx = np.stack(np.unravel_index(sel, self.shape), -1).astype(np.float64)
        return idx @ self.s_lin.T + self.s_off

    def loss(self, lin, trans, c_t, sel, grad: bool = False):
        """-MI per start (B,); with ``grad`` also d loss / d lin (B, 3, 3) and d loss / d trans (B, 3)."""
        pts = self.points(sel)  # (N, 3)
        world = pts @ lin.transpose(0, 2, 1) + (trans + c_t)[:, None, :]  # (B, N, 3)
        b, n = world.shape[:2]
        vox = world.reshape(-1, 3) @ self.t_lin.T + self.t_off
        moving, dvox = trilinear(self.padded, vox)
        mi, dmi = mi_and_grad(moving.reshape(b, n), fixed_weights(self.values[sel], self.bins), self.bins)
        if not grad:
            return -mi
        g_world = -(dmi.reshape(-1)[:, None] * (dvox @ self.t_lin)).reshape(b, n, 3)  # d loss / d world point
        return -mi, g_world.transpose(0, 2, 1) @ pts, g_world.sum(1)


def register_numpy(subject, subject_affine, template, template_affine, config, initial=None, fov=None):
    """:func:`.register.register` on the CPU in numpy (``config.shape_weight`` and ``ngf_weight`` must be 0)."""
    from .register import _fov_keep, _result, _starts, _survivors

    t0 = time.perf_counter()
    rng = TorchDraws(config.seed)
    subj_full = np.asarray(subject, dtype=np.float32)
    pyramid = []
    for mm in config.levels_mm:
        s, sa = downsample_np(subj_full, subject_affine, mm)
        pyramid.append((normalise_np(s), sa, *template_level_np(template, template_affine, mm)))
    c_s = centre_of_mass_np(pyramid[0][0], pyramid[0][1])
    c_t = centre_of_mass_np(pyramid[0][2], pyramid[0][3])
    lin, trans, rots = _starts(initial, config, c_s, c_t)
    ids = list(range(len(rots)))
    for li, ((s, sa, t, ta), iters) in enumerate(zip(pyramid, config.iterations)):
        level = NumpyLevel(s, sa, t, ta, c_s, config.bins)
        if fov is not None:
            level.restrict(_fov_keep(fov, s.shape, sa))
        lin, trans, ids = _optimise(level, lin, trans, ids, c_t, li, iters, config, rng)
        sel = TorchDraws(config.seed + 1000 + li).integers(level.n, min(config.eval_samples, level.n))
        losses = level.loss(lin, trans, c_t, sel)
        order = np.argsort(losses, kind="stable").tolist()
        log.debug("level %.1f mm: losses %s", config.levels_mm[li], [round(float(losses[i]), 4) for i in order])
        keep = _survivors(order, li == len(pyramid) - 1, config.keep)
        lin, trans, losses, ids = lin[keep], trans[keep], losses[keep], [ids[i] for i in keep]
        fg = np.flatnonzero(level.values > 0.05)
    fg_points = level.points(fg[:: max(1, fg.size // 20000)]) + c_s
    result = _result(lin, trans, losses, [rots[i] for i in ids], fg_points, fg.size, c_s, c_t, t0)
    return dataclasses.replace(result, mi=float(-losses[0]))


def _optimise(level: NumpyLevel, lin, trans, ids, c_t, li, iters, config, rng):
    """Adam on every start's affine at one level (as :func:`.register._optimise_level`, gradients analytic)."""
    from .register import _lr_frac

    scale = config.levels_mm[li] / config.levels_mm[0]
    lin, trans = lin.astype(np.float64), trans.astype(np.float64)
    lrs = (config.lr_linear * scale, config.lr_translation * scale)
    m1 = [np.zeros_like(lin), np.zeros_like(trans)]
    m2 = [np.zeros_like(lin), np.zeros_like(trans)]
    for it in range(iters):
        if li == 0 and it == iters // 3 and lin.shape[0] > config.prune_to:
            sel = TorchDraws(config.seed + 999).integers(level.n, min(config.eval_samples, level.n))
            best = np.argsort(level.loss(lin, trans, c_t, sel), kind="stable")[: config.prune_to].tolist()
            lin, trans = lin[best], trans[best]
            m1, m2 = [m[best] for m in m1], [m[best] for m in m2]
            ids = [ids[i] for i in best]
        frac = _lr_frac(it, iters)
        sel = rng.integers(level.n, min(config.samples, level.n))
        _, g_lin, g_trans = level.loss(lin, trans, c_t, sel, grad=True)
        step = it + 1
        new = []
        for p, g, a, b, lr in zip((lin, trans), (g_lin, g_trans), m1, m2, lrs):
            a *= 0.9
            a += 0.1 * g
            b *= 0.999
            b += 0.001 * g * g
            new.append(p - lr * frac / (1 - 0.9**step) * a / (np.sqrt(b / (1 - 0.999**step)) + 1e-8))
        lin, trans = new
    return lin, trans, ids
