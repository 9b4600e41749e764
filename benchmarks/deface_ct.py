#!/usr/bin/env python
"""CT defacing corpus: varied CT heads built from the one real head CT, with known answers.

The real CT (``tests/assets/mri/vtkjs_headsq_CT.nii.gz``, stored as HU + 1024, 3.2 x 3.2 x
1.5 mm, field of view from the orbital roofs to the shoulders) is resampled on its own axes
to a voxel size of 1-3 mm or an anisotropic slab, with a field of view that keeps or cuts the
neck below the chin, stored in HU or HU + 1024, and posed by a KNOWN rigid transform in its
header (uniform ±45° pitch, roll and yaw, never within 2° of a start rotation:
``deface_corpus._angles``, and a ±15 mm shift).

The reference removal is the template face mask (minus the brain-protection mask) pulled
through (base registration ∘ case transform), the base being the stored registration of
the real CT (``tests/assets/mri/ct_registration.json``: fedimg's own CT route on the CT cut
at the chin, checked by eye; there is no independent CT reference). The brain that must
never be removed is the real CT's intracranial volume (:func:`fedimg.deface.ct_qc.ct_brain_estimate`
on the original, pulled through the same transform): independent of any registration.

Per case: ``fedimg``'s ``deface_job`` (passed / correct / wrong pass / false alarm, removal
Dice against the reference, CPU time), and QC alone on the case's TRUE registration and on
four deliberately wrong ones (25 mm back into the brain, 20 mm up, pitched 30°, A-P
flipped): QC should pass the first and fail every wrong one.

    python benchmarks/deface_ct.py                 # ONE command: 8 held-out cases (seed 2), <= 4 min on 2 quiet cores
    python benchmarks/deface_ct.py --quick         # 3 cases
    python benchmarks/deface_ct.py --seed 1        # the cases the CT registration was developed on (h11e)
    python benchmarks/deface_ct.py --no-run --cases 10 --seed 0   # QC alone on the dev cases (bounds set on these)

Besides the verdicts, each run records its registration's error against the known pose
(``face_error_mm``: RMS at the reference face voxels, template mm; ``scale_vs_true``: singular
values of its linear part against the true one's), and the summary a base-free check:
``pose_spread_mm``, each run's registration of the ORIGINAL CT (result composed with the known
pose) against their mean (the stored base drops out). ``--no-run`` adds ``qc_true_gap_mm``: how
far each TRUE removal lies from QC's own intracranial estimate.

JSON: ``benchmarks/cpu-results/deface-ct.json`` (``--json`` to change).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import _angles, _dice, _sample  # noqa: E402

log = logging.getLogger("benchmarks.deface_ct")

ROOT = Path(__file__).resolve().parent.parent
CT = ROOT / "tests" / "assets" / "mri" / "vtkjs_headsq_CT.nii.gz"
BASE = ROOT / "tests" / "assets" / "mri" / "ct_registration.json"
SPACINGS = ((1.0, 1.0, 1.0), (1.5, 1.5, 1.5), (2.0, 2.0, 2.0), (3.0, 3.0, 3.0), (1.0, 1.0, 3.0), (3.0, 1.0, 1.0))
WRONG = ("back25", "up20", "pitch30", "flipAP")


def params(rng) -> dict:
    return {"angles": _angles(rng), "shift": [float(v) for v in rng.uniform(-15, 15, 3)],
            "spacing": [float(v) for v in SPACINGS[int(rng.integers(len(SPACINGS)))]],
            "neck": bool(rng.random() < 0.5), "hu": bool(rng.random() < 0.5)}


def make_case(data, aff, brain, base, p: dict) -> dict:
    """The canonical CT (HU + 1024, air 0) resampled on its own axes to the case's voxel size (neck
    optionally cut), then posed by a KNOWN rigid header transform; truth masks on the case grid.

    The pose goes into the header (the voxel grid keeps the scanner's field-of-view edges; a
    rotated resampling would turn the cut at the orbital roofs into a fake air boundary)."""
    from fedimg.deface.coarse import rotation_matrix
    from fedimg.deface.template import load_template

    size = np.array(data.shape) * np.sqrt((aff[:3, :3] ** 2).sum(0))
    lo, hi = aff[:3, 3].copy(), aff[:3, 3] + size - np.sqrt((aff[:3, :3] ** 2).sum(0))
    if not p["neck"]:  # cut the neck below the chin (the template ends there)
        lo[2] += 45.0
    sp = np.array(p["spacing"])
    shape = np.maximum(np.floor((hi - lo) / sp).astype(int) + 1, 8)
    grid = np.diag([*sp, 1.0])
    grid[:3, 3] = lo
    q = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1).reshape(-1, 3) * sp + lo
    img, ic = _sample(np.stack([data, brain.astype(np.float32)]), aff, q)
    t = load_template()
    tq = q @ base[:3, :3].T + base[:3, 3]
    face, tbrain = _sample(np.stack([t.face, t.brain]), t.affine, tq).reshape(2, *shape)
    c0 = (np.argwhere(data > 500) @ aff[:3, :3].T + aff[:3, 3]).mean(0)
    pose = _affine(c0, rotation_matrix(*p["angles"]), p["shift"])  # original world -> case world
    stored = np.rint(img.reshape(shape) - 1024.0 if p["hu"] else img.reshape(shape)).astype(np.int16)
    return {"image": stored, "affine": pose @ grid, "reference": (face > 0.5) & ~(tbrain > 0.01),
            "brain": ic.reshape(shape) > 0.5, "s2t": base @ np.linalg.inv(pose), "pose": pose}


def _affine(c0, rot, shift) -> np.ndarray:
    """x = c0 + rot (q - c0) + shift as a 4x4 affine."""
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = c0 - rot @ c0 + shift
    return m


def wrong(s2t: np.ndarray, kind: str, centre: np.ndarray) -> np.ndarray:
    """A deliberately wrong subject->template affine: moved in TEMPLATE space (back/up), or turned/flipped about the head."""
    from fedimg.deface.coarse import rotation_matrix

    m = np.eye(4)
    if kind == "back25":
        m[1, 3] = 25.0  # the subject seen 25 mm further forward: the face region moves back into the brain
    elif kind == "up20":
        m[2, 3] = -20.0
    else:
        rot = rotation_matrix(30.0, 0.0, 0.0) if kind == "pitch30" else np.diag([1.0, -1.0, -1.0])
        c = s2t[:3, :3] @ centre + s2t[:3, 3]
        m[:3, :3] = rot
        m[:3, 3] = c - rot @ c
    return m @ s2t


def qc_only(path: Path, s2t: np.ndarray, centre: np.ndarray, brain: np.ndarray) -> dict:
    """QC of the true and the wrong registrations of one case (no registration run)."""
    from fedimg.deface.core import DefaceConfig, face_removal
    from fedimg.deface.qc import check_removal
    from fedimg.deface.register import Registration
    from fedimg.imageio.volume import load_volume

    vol = load_volume(path)
    image = vol.scaled()
    out = {}
    for kind in ("true", *WRONG):
        m = s2t if kind == "true" else wrong(s2t, kind, centre)
        reg = Registration(subject_to_template=m, loss=-0.6, second_loss=-0.5, agreement_mm=0.0,
                           start=(0.0, 0.0, 0.0), seconds=0.0, losses=())
        removal = face_removal(image, vol.affine, registration=reg, config=DefaceConfig(modality="ct"))
        rec = check_removal(image, vol.affine, removal, DefaceConfig().qc)
        out[kind] = {"passed": rec["passed"], "failures": rec["failures"],
                     "brain_voxels_removed": int((removal.remove & brain).sum()),
                     **{k: rec[k] for k in ("brain_removed_ml", "removed_fraction", "face_near_removed", "brain_in_head")}}
        if kind == "true":
            out[kind]["gap_mm"] = _gap_mm(image, vol.affine, removal.remove)
    return out


def _gap_mm(image: np.ndarray, affine: np.ndarray, remove: np.ndarray) -> float:
    """Distance (mm) from the removal to QC's own intracranial estimate (cases are stored in RAS order)."""
    from scipy import ndimage as ndi

    from fedimg.deface.ct import air_value
    from fedimg.deface.ct_qc import ct_brain_estimate

    est = ct_brain_estimate(image, affine, air=air_value(image, "ct"))
    inside = est.lookup(np.ones(image.shape, bool)).reshape(image.shape)
    if not inside.any() or not remove.any():
        return float("inf")
    dist = ndi.distance_transform_edt(~inside, sampling=np.sqrt((affine[:3, :3] ** 2).sum(0)))
    return float(dist[remove].min())


def face_error(m: np.ndarray, true: np.ndarray, pts: np.ndarray) -> float:
    """RMS distance (template mm) between where ``m`` and ``true`` put the reference face voxels ``pts``."""
    d = pts @ (m[:3, :3] - true[:3, :3]).T + (m[:3, 3] - true[:3, 3])
    return float(np.sqrt((d**2).sum(1).mean()))


def run_case(path: Path, work: Path, truth: dict) -> dict:
    import nibabel as nib

    from fedimg.deface.pipeline import DefaceJob, deface_job
    from fedimg.errors import QCError

    out = work / path.name.replace(".nii.gz", "_defaced.nii.gz")
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        rec, passed = deface_job(DefaceJob(reference=path, output=out, png="off")), True
    except QCError:
        rec, passed = json.loads(out.with_name(out.name.replace(".nii.gz", ".qc.json")).read_text()), False
    res = {"passed": passed, "failures": rec.get("failures", []), "seconds": time.perf_counter() - t0,
           "cpu_seconds": time.process_time() - c0, "modality": rec.get("modality"),
           "qc_brain_removed_ml": rec.get("brain_removed_ml"), "subject_to_template": rec["subject_to_template"]}
    m, true = np.array(rec["subject_to_template"]), truth["s2t"]
    aff = nib.load(str(path)).affine
    pts = np.argwhere(truth["reference"]) @ aff[:3, :3].T + aff[:3, 3]
    res["face_error_mm"] = face_error(m, true, pts)  # against the known pose (through the stored base)
    res["scale_vs_true"] = [round(float(v), 3) for v in np.linalg.svd(m[:3, :3] @ np.linalg.inv(true[:3, :3]))[1]]
    src = np.asarray(nib.load(str(path)).dataobj)
    if passed:
        defaced = np.asarray(nib.load(str(out)).dataobj)
        removed = defaced != src
        air = defaced[removed]
        res["fill_values"] = sorted({int(v) for v in np.unique(air)})[:3]
    else:
        from fedimg.deface.masks import removal_mask, warp_template_maps
        from fedimg.deface.template import load_template

        face, brain = warp_template_maps(load_template(), src.shape, nib.load(str(path)).affine,
                                         np.array(rec["subject_to_template"]))
        removed = removal_mask(face, brain, None)[0]  # the cases are stored in RAS order
    ref = truth["reference"]
    res.update(dice=_dice(removed, ref), recall=float((removed & ref).sum() / max(1, ref.sum())),
               brain_voxels_removed=int((removed & truth["brain"]).sum()))
    res["correct"] = res["brain_voxels_removed"] == 0 and res["recall"] >= 0.9
    return res


FACE_PTS = np.zeros((1, 3))  # the original CT's reference face voxels (world mm), set by main()


def _face_points(data, aff, base) -> np.ndarray:
    from fedimg.deface.masks import removal_mask, warp_template_maps
    from fedimg.deface.template import load_template

    face, brain = warp_template_maps(load_template(), data.shape, aff, base)
    idx = np.argwhere(removal_mask(face, brain, None)[0])
    return idx @ aff[:3, :3].T + aff[:3, 3]


def summarise(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["run"]["passed"]]
    return {
        "cases": len(rows), "passed_qc": len(ok), "passed_and_correct": sum(r["run"]["correct"] for r in ok),
        "wrong_passes": [r["case"] for r in ok if not r["run"]["correct"]],
        "false_alarms": [r["case"] for r in rows if not r["run"]["passed"] and r["run"]["correct"]],
        "caught": [r["case"] for r in rows if not r["run"]["passed"] and not r["run"]["correct"]],
        "dice_median_all": float(np.median([r["run"]["dice"] for r in rows])),
        "dice_min_all": float(min(r["run"]["dice"] for r in rows)),
        "cpu_seconds_median": float(np.median([r["run"]["cpu_seconds"] for r in rows])),
        "qc_true_registration_passed": sum(r["qc"]["true"]["passed"] for r in rows),
        "qc_true_registration_brain_voxels_removed": [r["qc"]["true"]["brain_voxels_removed"] for r in rows],
        "qc_wrong_caught": {k: sum(not r["qc"][k]["passed"] for r in rows) for k in WRONG},
        "qc_true_removed_fraction": [round(r["qc"]["true"]["removed_fraction"], 3) for r in rows],
        "qc_true_gap_mm_min": min(r["qc"]["true"]["gap_mm"] for r in rows),
        "face_error_mm": [round(r["run"]["face_error_mm"], 1) for r in rows],
        "pose_spread_mm": [round(v, 1) for v in _spread(rows)],
    }


def _spread(rows: list[dict]) -> list[float]:
    """Base-free check of the pose: each run's registration of the ORIGINAL CT (its result composed with the
    case's known pose) against the mean of them all, RMS at the original's face voxels (template mm)."""
    implied = [np.array(r["run"]["subject_to_template"]) @ np.array(r["pose"]) for r in rows]
    mean = np.mean(implied, axis=0)
    return [face_error(m, mean, FACE_PTS) for m in implied]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="CT defacing corpus from the one real head CT (known transforms)")
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="3 cases")
    p.add_argument("--seed", type=int, default=2,
                   help="2 (default): cases used for nothing else; 1: the CT registration's dev cases; 0: QC's dev cases")
    p.add_argument("--no-run", action="store_true", help="QC of true and wrong registrations only (no registration)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="case folder (default: a temporary one)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "cpu-results" / "deface-ct.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import nibabel as nib
    import torch

    from fedimg.deface.ct_qc import ct_brain_estimate
    from fedimg.imageio.volume import to_canonical
    from fedimg.io import write_json

    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="fedimg-deface-ct-"))
    out.mkdir(parents=True, exist_ok=True)
    img = nib.load(str(CT))
    data, aff = to_canonical(np.asarray(img.dataobj, dtype=np.float32), img.affine.astype(np.float64))
    est = ct_brain_estimate(data, aff, air=0.0)
    brain = est.lookup(np.ones(data.shape, bool)).reshape(data.shape)  # the intracranial cells on the CT grid
    base = np.array(json.loads(BASE.read_text())["subject_to_template"][CT.name])
    global FACE_PTS
    FACE_PTS = _face_points(data, aff, base)
    rows = []
    for i in range(3 if args.quick else args.cases):
        rng = np.random.default_rng([args.seed, i])
        prm = params(rng)
        case = make_case(data, aff, brain, base, prm)
        path = out / f"ct_{args.seed}_{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(case["image"], case["affine"]), str(path))
        centre = (np.argwhere(case["brain"]).mean(0) if case["brain"].any() else np.array(case["image"].shape) / 2.0)
        centre = case["affine"][:3, :3] @ centre + case["affine"][:3, 3]
        row = {"case": path.name, "params": prm, "shape": list(case["image"].shape), "pose": case["pose"].tolist(),
               "qc": qc_only(path, case["s2t"], centre, case["brain"])}
        if not args.no_run:
            row["run"] = run_case(path, out, case)
        rows.append(row)
        log.info("%s %s", path.name, json.dumps({k: row[k] for k in ("qc", "run") if k in row}, default=str)[:600])
    result = {"command": "python benchmarks/deface_ct.py " + " ".join(argv or sys.argv[1:]), "cases": rows}
    if not args.no_run:
        result["summary"] = summarise(rows)
    else:
        result["summary"] = {"qc_true_registration_passed": sum(r["qc"]["true"]["passed"] for r in rows),
                             "qc_wrong_caught": {k: sum(not r["qc"][k]["passed"] for r in rows) for k in WRONG},
                             "qc_true_removed_fraction": [round(r["qc"]["true"]["removed_fraction"], 3) for r in rows],
                             "qc_true_brain_removed_ml": [r["qc"]["true"]["brain_removed_ml"] for r in rows],
                             "qc_true_gap_mm": [round(r["qc"]["true"]["gap_mm"], 1) for r in rows],
                             "qc_wrong_brain_removed_ml": {k: [round(r["qc"][k]["brain_removed_ml"], 3) for r in rows] for k in WRONG},
                             "cases": len(rows)}
    print(json.dumps(result["summary"], indent=1))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
