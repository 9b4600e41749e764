#!/usr/bin/env python
"""Diagnosis probe (issue 11, h14x): fedimg's MI sampled only inside the subject's own head mask dilated d mm.

No change to ``fedimg/``: :func:`fedimg.deface.core.face_removal` runs as on main, except that the
``register`` it calls gets ``fov`` = (acquired FOV, as main estimates it) ∩ (the subject's head mask,
:func:`fedimg.deface.coarse.head_mask` on the same 4 mm grid, dilated ``d`` mm by
:func:`fedimg.deface.masks.dilate_mm`). ``d = none`` is main. The removal is scored against the corpus
truth as ``deface_corpus.run_case`` scores it (recall, Dice, reference brain/tumour removed, inside the
acquired field of view); QC is not run (this asks where the pose lands, not what QC would say). Pose:
the template's face-mask points carried through fedimg's registration and back through the known truth
(warp ignored), mean distance in template mm, its mean displacement (R, A, S) and the volume ratio
det(fedimg) / det(truth), as h14v's offset probe.

    PYTHONPATH=$PWD:$PWD/benchmarks OMP_NUM_THREADS=1 nice python benchmarks/deface_headmask_mi.py \
        --set /tmp/h14v/s761 --per-head 6 --dilate none 4 8 12 --json /tmp/h14x/s761.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deface_corpus as dc  # noqa: E402
from _corpus import _canonical_head, judged_correct, score_removal  # noqa: E402

log = logging.getLogger("deface_headmask_mi")
DEV = ("ds000031", "pycortex", "volpack")  # never the held-out head


def headmask_register(dilate_mm_: float | None, start: np.ndarray | None = None):
    """A stand-in for ``fedimg.deface.core.register`` whose MI samples only the dilated head mask (∩ the FOV).

    ``start``: a subject-to-template matrix that replaces every start (``--from-truth``: the known truth)."""
    from fedimg.deface import core
    from fedimg.deface.coarse import fov_on_grid, head_mask
    from fedimg.deface.masks import dilate_mm
    from fedimg.deface.register import register

    assert core.register is register
    if dilate_mm_ is None and start is None:
        return register

    def wrapped(subject, subject_affine, *args, fov=None, **kw):
        if start is not None:
            kw["initial"] = [start]
        if dilate_mm_ is None:
            return register(subject, subject_affine, *args, fov=fov, **kw)
        hm, hm_aff = head_mask(subject, subject_affine, step_mm=4.0)  # the grid core's acquired_fov uses
        keep = dilate_mm(hm, np.sqrt((hm_aff[:3, :3] ** 2).sum(0)), dilate_mm_)
        if fov is not None:
            keep &= fov_on_grid(fov[0], fov[1], hm.shape, hm_aff)
        wrapped.kept.append(float(keep.mean()))
        return register(subject, subject_affine, *args, fov=(keep, hm_aff), **kw)

    wrapped.kept = []
    return wrapped


def truth_matrix(name: str, out: Path, params: dict, cache: dict) -> np.ndarray:
    """The case's known subject-to-template affine (base registration ∘ case pose; the warp, ≤ 4 mm, ignored)."""
    _, data, aff, base = _head(name, out, cache)
    c0, rot, *_ = dc.case_frame(data, aff, params)
    m = np.eye(4)
    m[:3, :3] = base[:3, :3] @ rot
    m[:3, 3] = base[:3, :3] @ (c0 - rot @ c0 + np.array(params["shift"])) + base[:3, 3]
    return m


def _head(name: str, out: Path, cache: dict):
    from fedimg.deface.template import load_template

    if name not in cache:
        t = load_template()
        fp = np.argwhere(t.face > 0.5)[::50] @ t.affine[:3, :3].T + t.affine[:3, 3]
        data, aff = _canonical_head(dc.DATA / dc.HEADS[name])
        cache[name] = (fp, data, aff, dc.base_registration(name, out))
    return cache[name]


def pose_error(name: str, out: Path, params: dict, s2t: np.ndarray, cache: dict) -> dict:
    """Face-region placement error of fedimg's registration against the case's known truth (warp ignored)."""
    fp, data, aff, base = _head(name, out, cache)
    c0, rot, *_ = dc.case_frame(data, aff, params)
    p = (fp - s2t[:3, 3]) @ np.linalg.inv(s2t[:3, :3]).T  # case world
    q = c0 + (p - c0) @ rot.T + np.array(params["shift"])  # head world
    tq = q @ base[:3, :3].T + base[:3, 3]
    return {"face_mean_mm": float(np.linalg.norm(tq - fp, axis=1).mean()),
            "face_shift_ras_mm": np.round((tq - fp).mean(0), 2).tolist(),
            "volume_ratio": float(np.linalg.det(s2t[:3, :3]) / np.linalg.det(base[:3, :3] @ rot))}


def run_case(image: Path, out: Path, d: float | None, cache: dict, from_truth: bool = False) -> dict:
    import nibabel as nib

    from fedimg.deface import core

    stem = image.name[: -len(".nii.gz")]
    params = json.loads(image.with_name(f"{stem}.json").read_text())
    truth = np.load(image.with_name(f"{stem}_truth.npz"))
    label = image.with_name(f"{stem}_tumour.nii.gz")
    img = nib.load(str(image))
    src = np.asarray(img.dataobj).astype(np.float32)
    protect = np.asarray(nib.load(str(label)).dataobj) != 0 if label.is_file() else None
    reg = headmask_register(d, truth_matrix(params["head"], out, params, cache) if from_truth else None)
    saved = core.register
    core.register = reg
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        fr = core.face_removal(src, img.affine, protect=protect, config=core.DefaceConfig())
    finally:
        core.register = saved
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    res = {"case": stem, "head": params["head"], "dilate_mm": d, "from_truth": from_truth, "seconds": seconds, "cpu_seconds": cpu,
           **score_removal(fr.remove, truth, src),  # deface_corpus.run_case's judge
           "mi_kept_share": getattr(reg, "kept", [None])[-1] if getattr(reg, "kept", None) else None,
           "start_agreement_dice": fr.metrics["start_agreement_dice"]}
    res["correct"] = judged_correct(res)
    res.update(pose_error(params["head"], out, params, np.asarray(fr.registration.subject_to_template), cache))
    return res


def summary(rows: list[dict]) -> dict:
    rec = [r["recall"] for r in rows]
    return {"cases": len(rows), "recall_median": float(np.median(rec)), "recall_min": float(min(rec)),
            "dice_median": float(np.median([r["dice"] for r in rows])),
            "correct": sum(r["correct"] for r in rows), "brain_removed_cases": sum(r["brain_removed"] > 0 for r in rows),
            "face_mean_mm_median": float(np.median([r["face_mean_mm"] for r in rows])),
            "volume_ratio_median": float(np.median([r["volume_ratio"] for r in rows])),
            "cpu_seconds": float(sum(r["cpu_seconds"] for r in rows))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", type=Path, required=True, help="a built corpus folder (read only)")
    p.add_argument("--per-head", type=int, default=None, help="first N cases of each dev head (default: all)")
    p.add_argument("--start", type=int, default=0, help="skip the first N cases of each head (to extend an earlier run)")
    p.add_argument("--dilate", nargs="+", default=["none", "4", "8", "12"], help="head-mask dilations in mm; none = main")
    p.add_argument("--from-truth", action="store_true",
                   help="start the MI stage from the known truth alone (does the objective keep it?)")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    log.setLevel(logging.INFO)
    import torch

    torch.set_num_threads(1)
    images = []
    for name in DEV:
        found = sorted((args.set / "cases").glob(f"{name}_[0-9][0-9].nii.gz"))
        found = found[args.start:]
        images += found[: args.per_head] if args.per_head else found
    cache, result = {}, {"set": str(args.set), "from_truth": args.from_truth, "by_dilation": {}}
    for ds in args.dilate:
        d = None if ds == "none" else float(ds)
        rows = []
        for image in images:
            rows.append(run_case(image, args.set, d, cache, args.from_truth))
            log.info("d=%s %s", ds, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()})
        result["by_dilation"][ds] = {"summary": summary(rows), "cases": rows}
        log.info("d=%s summary %s", ds, result["by_dilation"][ds]["summary"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
