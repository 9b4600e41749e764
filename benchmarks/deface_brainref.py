#!/usr/bin/env python
"""Where QC's brain check and the defacing corpus's "brain" disagree (issue 11, h11h).

The corpus (:mod:`deface_corpus`) calls a removal wrong when it touches the template's
brain-protection mask, pulled through the known truth and eroded 3 mm ("reference brain").
QC checks the brain estimated from the image itself (:mod:`fedimg.deface.brainmask`). This
script measures both on the same removals:

1. the template alone: its own brain estimate vs the eroded protection mask (how much of the
   "reference brain" lies how far outside the brain, and next to the face mask);
2. dev cases of ``deface_corpus`` (seed 97 by default, dev heads only; never the held-out
   head): each case is defaced (``face_removal``), the registration is moved in template
   space (about the template brain's centre) and the removal redone; per removal the volume
   removed inside QC's estimate, inside the reference brain, within d mm of QC's estimate, and
   how far the removed reference-brain voxels lie from QC's estimate.

    python benchmarks/deface_brainref.py            # h11f's 5 dev cases, ~2-3 min on one core
    python benchmarks/deface_brainref.py --quick    # the template part and ds000031_09 (~40 s)

JSON: ``benchmarks/cpu-results/deface-brainref.json`` (``--json`` to change).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

log = logging.getLogger("deface_brainref")

MOVES = ("z-5", "z-10", "y+5", "y+10", "roll+8")  # h11f's moves that kept recall >= 0.9 and cut the reference brain


def _move(name: str) -> np.ndarray:
    """A template-space move as in h11f: a shift in mm, or a rotation about the template brain's centre."""
    from fedimg.deface.coarse import rotation_matrix
    from fedimg.deface.template import load_template

    m = np.eye(4)
    if name.startswith("roll"):
        t = load_template()
        centre = (t.affine @ np.r_[np.argwhere(t.brain > 0.5).mean(0), 1])[:3]
        m[:3, :3] = rotation_matrix(0, float(name[4:]), 0)
        m[:3, 3] = centre - m[:3, :3] @ centre
    else:
        m["xyz".index(name[0]), 3] = float(name[1:])
    return m


def template_part() -> dict:
    """The template's brain estimate vs its brain-protection mask eroded 3 mm (the corpus's brain)."""
    from scipy import ndimage as ndi

    from fedimg.deface.brainmask import estimate_brain
    from fedimg.deface.template import load_template

    t = load_template()
    est = estimate_brain(t.intensity, t.affine)
    ref = ndi.binary_erosion(t.brain > 0.5, structure=np.ones((7, 7, 7), bool))  # 3 mm at 1 mm, as the corpus
    idx = np.nonzero(ref)
    d = est.brain_distance[tuple(np.minimum(i // s, n - 1) for i, s, n in zip(idx, est.step, est.head.shape))]
    near = ndi.distance_transform_edt(t.face <= 0.5)[idx] <= 10.0
    return {"template_brain_estimate_ml": round(est.brain_ml), "protect_ml": round(float((t.brain > 0.5).sum()) / 1000),
            "reference_ml": round(float(ref.sum()) / 1000),
            "reference_outside_estimate_by_mm_ml": {k: round(float((d > k).sum()) / 1000, 1) for k in (0, 5, 10, 20)},
            "reference_within_10mm_of_face_ml": round(float(near.sum()) / 1000, 1),
            "of_it_over_5mm_outside_estimate_ml": round(float((d[near] > 5).sum()) / 1000, 1),
            "of_it_distance_to_estimate_median_mm": round(float(np.median(d[near])), 1)}


def _template_brain_through_truth(head: str, base: np.ndarray, seed: list[int]) -> np.ndarray:
    """The template's own brain estimate (not its protection mask) pulled through the same truth.

    ``make_case`` run again with the same generator and the template's brain map swapped for its
    brain estimate dilated 3 mm (``make_case`` erodes 3 mm: the estimate comes back, closed).
    """
    from scipy import ndimage as ndi

    import fedimg.deface.template as tm
    from fedimg.deface.brainmask import estimate_brain

    import deface_corpus as dc

    t = tm.load_template()
    est = estimate_brain(t.intensity, t.affine)
    idx = np.indices(t.brain.shape)
    full = est.brain[tuple(np.minimum(idx[i] // est.step[i], est.brain.shape[i] - 1) for i in range(3))]
    swapped = dataclasses.replace(t, brain=ndi.binary_dilation(full, structure=np.ones((7, 7, 7), bool)).astype(np.float32))
    rng = np.random.default_rng(seed)
    params = dc._params(rng)
    original = tm.load_template
    tm.load_template = lambda *a, **k: swapped
    try:
        return dc.make_case(dc.DATA / dc.HEADS[head], base, params, rng)["brain"]
    finally:
        tm.load_template = original


def _cells(est, mask: np.ndarray):
    idx = np.nonzero(mask)
    return tuple(np.minimum(i // s, n - 1) for i, s, n in zip(idx, est.step, est.head.shape))


def case_part(head: str, index: int, seed: int, folder: Path) -> list[dict]:
    """Build one corpus case, deface it, move its registration by :data:`SHIFTS`; one row per removal."""
    import deface_corpus as dc

    from fedimg.deface.brainmask import estimate_brain
    from fedimg.deface.core import face_removal
    from fedimg.deface.qc import QCThresholds, _shape_checks, check_removal
    from fedimg.imageio.volume import to_canonical

    hi = list(dc.DEV_HEADS).index(head)  # build()'s head index for a dev build of both dev heads
    rng = np.random.default_rng([seed, hi, index])  # build()'s generator of case ``index``
    base = dc.base_registration(head, folder)
    case = dc.make_case(dc.DATA / dc.HEADS[head], base, dc._params(rng), rng)
    true_brain, _ = to_canonical(_template_brain_through_truth(head, base, [seed, hi, index]), case["affine"])
    x, aff = case["image"], case["affine"]
    vml = abs(np.linalg.det(aff[:3, :3])) / 1000
    protect = case["tumour"] if case["tumour"].any() else None
    c0 = time.process_time()
    rem = face_removal(x, aff, protect=protect)
    can, can_aff = to_canonical(x, aff)
    est, shape = _shape_checks(can, can_aff, estimate_brain(can, can_aff), rem.head_shape)
    brain, _ = to_canonical(case["brain"], aff)
    rows = []
    for name in ("none", *MOVES):
        r = rem
        if name != "none":
            reg = dataclasses.replace(rem.registration, subject_to_template=_move(name) @ np.asarray(rem.registration.subject_to_template))
            r = dataclasses.replace(face_removal(x, aff, protect=protect, registration=reg), metrics=dict(rem.metrics),
                                    head_shape=rem.head_shape)
        rec = check_removal(x, aff, r, QCThresholds(), estimate=est, estimate_checked=True, face_shape=shape)
        rc, _ = to_canonical(r.remove, aff)
        d = est.brain_distance[_cells(est, rc)]
        cut = rc & brain
        true_cut = rc & true_brain
        dc_ = est.brain_distance[_cells(est, cut)]
        rows.append({"case": f"{head}_{index:02d}", "params": {k: case["params"][k] for k in ("contrast", "spacing", "crop")},
                     "move": name, "qc_passed": rec["passed"], "qc_failed": [k for k, v in rec["checks"].items() if not v],
                     "qc_brain_estimate_ml": round(est.brain_ml), "qc_brain_source": est.source,
                     "reference_brain_ml": round(float(brain.sum()) * vml),
                     "removed_in_qc_brain_ml": round(rec["brain_removed_ml"], 2),
                     "removed_in_reference_brain_ml": round(float(cut.sum()) * vml, 2),
                     "template_own_brain_ml": round(float(true_brain.sum()) * vml),
                     "removed_in_template_own_brain_ml": round(float(true_cut.sum()) * vml, 2),
                     "removed_within_mm_of_qc_brain_ml": {k: round(float((d <= k).sum()) * vml, 2) for k in (0, 4, 6, 10)},
                     "reference_cut_distance_to_qc_brain_mm": None if not cut.any() else
                     [round(float(np.percentile(dc_, q)), 1) for q in (0, 50, 100)]})
        log.info("%s", json.dumps(rows[-1]))
    rows[0]["cpu_seconds_case"] = round(time.process_time() - c0, 1)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="ds000031:5,ds000031:9,pycortex:1,pycortex:4,pycortex:10",
                   help="dev cases head:index of a deface_corpus build (default: h11f's five)")
    p.add_argument("--seed", type=int, default=97, help="deface_corpus build seed (h11f's dev97 set)")
    p.add_argument("--quick", action="store_true", help="the template part and ds000031:9 only")
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "cpu-results" / "deface-brainref.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(1)
    out = {"template": template_part(), "cases": []}
    log.info("template: %s", json.dumps(out["template"]))
    with tempfile.TemporaryDirectory() as tmp:
        for item in ("ds000031:9" if args.quick else args.cases).split(","):
            head, index = item.split(":")
            out["cases"] += case_part(head, int(index), args.seed, Path(tmp))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
