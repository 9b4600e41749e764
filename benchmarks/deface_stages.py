#!/usr/bin/env python
"""CPU seconds per stage of ``fedimg deface <1 mm head> --threads 1`` (every stage in the main thread),
from ``cProfile`` with a CPU-time clock; optionally against an older commit, interleaved run by run.

    python benchmarks/deface_stages.py --baseline 52d9d79 --json benchmarks/cpu-results/deface-stages.json  # ~1.5 min quiet
    python benchmarks/deface_stages.py --quick     # one run of this tree
    python benchmarks/deface_stages.py --threads 2 --baseline 93fbc2d   # the main thread's own CPU per stage

The profiler adds its own cost (about 10 %); the whole-command figure is ``time.process_time`` around
the command. ``--threads 2`` runs QC in its threads as ``fedimg deface`` does on two cores; the stages are then
the main thread's CPU (``main thread``: its whole; the critical path when the QC threads finish first). Each run is a fresh process (``--child`` is that process's entry point).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deface_cli import DEFAULT_HEADS, MACHINE, ROOT, _commit, _export  # noqa: E402

# stage name -> (file suffix, function name) of the profiled function whose cumulative CPU time it is
STAGES = {
    "load_volume (reading, nibabel import inside)": ("imageio/volume.py", "load_volume"),
    "import nibabel": ("nibabel/__init__.py", "<module>"),
    "load_template (from h11n: the face and brain maps only)": ("deface/template.py", "_load_template"),
    "template_intensity (h11n: the intensities, read first)": ("deface/template.py", "_template_intensity"),
    "template_head_mask (4 mm)": ("deface/template.py", "_template_head_mask"),
    "coarse_candidates": ("deface/coarse.py", "coarse_candidates"),
    "register (numpy MI)": ("deface/register.py", "register"),
    "warp_template_maps (core + QC head outline)": ("deface/masks.py", "warp_template_maps"),
    "resample_np.warp_maps (every call)": ("deface/resample_np.py", "warp_maps"),
    "warp_template_masks (h13s: the thresholded maps, core + QC head outline)": ("deface/masks.py", "warp_template_masks"),
    "resample_masks.warp_above (h13s: every thresholded warp)": ("deface/resample_masks.py", "warp_above"),
    "resample_masks.cube_codes (h13s: the corner tables, once per map)": ("deface/resample_masks.py", "cube_codes"),
    "QC estimate_brain": ("deface/brainmask.py", "estimate_brain"),
    "QC head_shape_brain": ("deface/qc.py", "head_shape_brain"),
    "QC head_shape_pose (12-parameter head-outline fit)": ("deface/qc_face.py", "head_shape_pose"),
    "QC shape_placement (head-outline removal)": ("deface/qc_face.py", "shape_placement"),
    "QC brain_distance (2 mm distance map, every computation)": ("deface/brainmask.py", "brain_distance"),
    "QC head_brain_distance (h13s: the distance map in the head's box)": ("deface/brainmask.py", "head_brain_distance"),
    "QC cell_counts (removed voxels per cell, every call)": ("deface/morph.py", "cell_counts"),
    "QC removal_metrics": ("deface/brainmask.py", "removal_metrics"),
    "QC brain_in_head (4 mm, main thread)": ("deface/qc.py", "brain_in_head"),
    "start_agreement_dice": ("deface/core.py", "start_agreement_dice"),
    "changed-voxel counts (pipeline._apply)": ("deface/pipeline.py", "_apply"),
    "to_canonical (every call)": ("imageio/volume.py", "to_canonical"),
    "check_removal (all QC)": ("deface/qc.py", "check_removal"),
    "save_like (writing)": ("imageio/volume.py", "save_like"),
}


def _child(head: str, out: str, threads: str = "1") -> None:
    """One profiled ``fedimg deface``; with ``threads`` >= 2 QC runs in its own threads, which ``cProfile`` does
    not see: the stages are then the main thread's own CPU time (``time.thread_time``), the critical path."""
    import cProfile
    import pstats
    import time

    from fedimg.cli import main

    prof = cProfile.Profile(time.process_time if threads == "1" else time.thread_time)
    t0, m0 = time.process_time(), time.thread_time()
    prof.enable()
    rc = main(["-q", "deface", head, "-o", out, "--no-png", "--threads", threads])
    prof.disable()
    total, main_thread = time.process_time() - t0, time.thread_time() - m0
    stats = pstats.Stats(prof).stats
    res = {"whole command": total, "main thread": main_thread, "exit": rc}
    for name, (suffix, fn) in STAGES.items():
        res[name] = sum(v[3] for k, v in stats.items() if k[0].endswith(suffix) and k[2] == fn)
    print(json.dumps(res))


def _one(src: Path, head: Path, out: Path, threads: int = 1) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, __file__, "--child", str(head), str(out), str(threads)], cwd=src, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"stage run from {src} failed: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head", type=Path, default=DEFAULT_HEADS[0], help="a 1 mm head (default: ds000031 from tests/assets)")
    ap.add_argument("--runs", type=int, default=3, help="runs per code tree (default 3; medians)")
    ap.add_argument("--quick", action="store_true", help="one run of this tree only")
    ap.add_argument("--baseline", metavar="REV", help="a commit of this repository to run interleaved (git archive)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--threads", type=int, default=1, help="fedimg deface --threads (default 1: every stage in the main "
                                                           "thread; 2: QC in its threads, stages = the main thread's CPU)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    runs = 1 if args.quick else args.runs
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this": ROOT}
        if args.baseline and not args.quick:
            trees["baseline"] = _export(args.baseline, Path(tmp) / f"base-{args.baseline}")
        got: dict[str, list[dict]] = {k: [] for k in trees}
        for i in range(runs):
            for name, src in trees.items():
                got[name].append(_one(src, args.head, Path(tmp) / f"{name}.nii.gz", args.threads))
                print(f"{name} run {i + 1}: whole {got[name][-1]['whole command']:.2f} CPU-s", flush=True)
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "exit"} for name, rs in got.items()}
    print(f"{'stage (CPU s, median)':48s}" + "".join(f"{n:>10s}" for n in medians))
    for k in medians["this"]:
        print(f"{k:48s}" + "".join(f"{m[k]:10.2f}" for m in medians.values()))
    if args.json:
        result = {"command": " ".join(sys.argv), "machine": MACHINE, "threads": args.threads, "load1": os.getloadavg()[0], "head": str(args.head),
                  "commits": {"this": _commit(ROOT), **({"baseline": args.baseline} if "baseline" in trees else {})},
                  "medians": medians, "runs": got}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
