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

    python benchmarks/deface_brainref.py            # 2 dev cases, ~2 min on 2 quiet cores
    python benchmarks/deface_brainref.py --quick    # the template part only (seconds)

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

SHIFTS = {"z-5": (0, 0, -5), "z-10": (0, 0, -10), "y+5": (0, 5, 0), "y+10": (0, 10, 0)}


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
    case = dc.make_case(dc.DATA / dc.HEADS[head], dc.base_registration(head, folder), dc._params(rng), rng)
    x, aff = case["image"], case["affine"]
    vml = abs(np.linalg.det(aff[:3, :3])) / 1000
    protect = case["tumour"] if case["tumour"].any() else None
    c0 = time.process_time()
    rem = face_removal(x, aff, protect=protect)
    can, can_aff = to_canonical(x, aff)
    est, shape = _shape_checks(can, can_aff, estimate_brain(can, can_aff), rem.head_shape)
    brain, _ = to_canonical(case["brain"], aff)
    rows = []
    for name, shift in {"none": None, **SHIFTS}.items():
        r = rem
        if shift is not None:
            move = np.eye(4)
            move[:3, 3] = shift  # a translation about any centre is the same translation
            reg = dataclasses.replace(rem.registration, subject_to_template=move @ np.asarray(rem.registration.subject_to_template))
            r = dataclasses.replace(face_removal(x, aff, protect=protect, registration=reg), metrics=dict(rem.metrics),
                                    head_shape=rem.head_shape)
        rec = check_removal(x, aff, r, QCThresholds(), estimate=est, estimate_checked=True, face_shape=shape)
        rc, _ = to_canonical(r.remove, aff)
        d = est.brain_distance[_cells(est, rc)]
        cut = rc & brain
        dc_ = est.brain_distance[_cells(est, cut)]
        rows.append({"case": f"{head}_{index:02d}", "params": {k: case["params"][k] for k in ("contrast", "spacing", "crop")},
                     "move": name, "qc_passed": rec["passed"], "qc_failed": [k for k, v in rec["checks"].items() if not v],
                     "qc_brain_estimate_ml": round(est.brain_ml), "qc_brain_source": est.source,
                     "reference_brain_ml": round(float(brain.sum()) * vml),
                     "removed_in_qc_brain_ml": round(rec["brain_removed_ml"], 2),
                     "removed_in_reference_brain_ml": round(float(cut.sum()) * vml, 2),
                     "removed_within_mm_of_qc_brain_ml": {k: round(float((d <= k).sum()) * vml, 2) for k in (0, 4, 6, 10)},
                     "reference_cut_distance_to_qc_brain_mm": None if not cut.any() else
                     [round(float(np.percentile(dc_, q)), 1) for q in (0, 50, 100)]})
        log.info("%s", json.dumps(rows[-1]))
    rows[0]["cpu_seconds_case"] = round(time.process_time() - c0, 1)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="ds000031:9,pycortex:10", help="dev cases head:index of a deface_corpus build")
    p.add_argument("--seed", type=int, default=97, help="deface_corpus build seed (h11f's dev97 set)")
    p.add_argument("--quick", action="store_true", help="the template part only")
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "cpu-results" / "deface-brainref.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(1)
    out = {"template": template_part(), "cases": []}
    log.info("template: %s", json.dumps(out["template"]))
    if not args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            for item in args.cases.split(","):
                head, index = item.split(":")
                out["cases"] += case_part(head, int(index), args.seed, Path(tmp))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
