#!/usr/bin/env python
"""Seconds per head of a whole ``fedimg deface`` through the CLI (process start, imports, read,
registration, QC, writing), as a user runs it; optionally against an older checkout.

Each run is a fresh process (``python -c "from fedimg.cli import main; ..."``); its CPU time
(user + sys of the child, ``os.wait4``) is the number to compare on a shared machine, wall
time and the 1-minute load average are recorded beside it. With ``--baseline REV`` (a commit
of this repository, exported with ``git archive``) or ``--baseline-src DIR`` (another checkout)
the two code trees run interleaved, head by head (every run with one template cache folder,
``--template-cache``, filled first by one run of this tree that is reported apart), and the removal masks of their last runs are compared
(identical voxels, or the removal Dice), as are the written files (bytes) and the QC / provenance records
(every field but timings and paths). ``--batch`` also defaces all heads in one process
(a BIDS tree), whose CPU time per head leaves the start-up (torch import etc.) out.

    python benchmarks/deface_cli.py --json benchmarks/cpu-results/deface-cli.json
    python benchmarks/deface_cli.py --baseline 0434b74 --json benchmarks/cpu-results/deface-cli.json  # ~2 min quiet
    python benchmarks/deface_cli.py --quick    # one run of the first head (~15 s)

Wall time is what ``--threads`` buys: ``fedimg deface`` runs QC's own image work in a second
thread beside the registration (``fedimg.deface.pipeline``), so wall < CPU time on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# the workplace's real heads, when present (beside a checkout, or two levels up from a worktree)
SHARED = next((p for p in (ROOT.parent / "shared" / "data" / "mri", ROOT.parent.parent / "shared" / "data" / "mri")
               if p.is_dir()), ROOT.parent / "shared" / "data" / "mri")
DEFAULT_HEADS = [ROOT / "tests" / "assets" / "mri" / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz",
                 SHARED / "pycortex_S1_T1w.nii.gz"]


def _machine() -> str:
    """The CPU model (:func:`fedimg.telemetry.cpu_name`), logical CPU count and AMX of this machine, for the JSON."""
    from fedimg.telemetry import cpu_name

    try:
        amx = "amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        amx = False
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs" + (" (AMX)" if amx else "")


MACHINE = _machine()
# QC / provenance fields that differ between two runs of the same code (timings, paths)
VOLATILE = {"seconds", "registration_seconds", "reference", "output", "source", "qc_report", "qc_png", "apply_to", "protect"}


CACHE: list[str] = []  # FEDIMG_CACHE_DIR for every run (a tree without the template cache ignores it)


def _run(src: Path, argv: list[str], threads: int) -> dict:
    """One ``fedimg`` process from the code tree ``src``: CPU seconds (user + sys), wall, load, exit code."""
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads))
    if CACHE:
        env["FEDIMG_CACHE_DIR"] = CACHE[0]
    code = f"import sys; from fedimg.cli import main; sys.exit(main({argv!r}))"
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=src, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if rc != 0:
        raise SystemExit(f"fedimg {' '.join(argv)} (from {src}) exited {rc}: {text.strip()[-500:]}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024.0, "load1": load}


def _removed(src: Path, out: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(out)).dataobj) != np.asarray(nib.load(str(src)).dataobj)


def _same_outputs(a: Path, b: Path) -> dict:
    """Whether two trees wrote the same defaced file (bytes) and the same QC and provenance records (every
    field but :data:`VOLATILE`; floats compared exactly)."""
    import filecmp

    out = {"output_bytes_identical": filecmp.cmp(a, b, shallow=False), "record_differences": []}
    for suffix in (".qc.json", ".deface.json"):
        ra, rb = (json.loads(p.with_name(p.name.replace(".nii.gz", suffix)).read_text()) for p in (a, b))
        out["record_differences"] += [f"{suffix} {k}: {ra.get(k)!r} != {rb.get(k)!r}" for k in sorted(set(ra) | set(rb))
                                      if k not in VOLATILE and ra.get(k) != rb.get(k)]
    return out


def _commit(src: Path) -> str:
    r = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else src.name  # an exported tree: its folder name


def _export(rev: str, dest: Path) -> Path:
    """The tree of commit ``rev`` of this repository, exported to ``dest`` (``git archive``)."""
    import io
    import tarfile

    r = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True)
    if r.returncode != 0:
        raise SystemExit(f"--baseline {rev}: git archive failed: {r.stderr.decode(errors='replace').strip()}")
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        tar.extractall(dest, filter="tar")
    return dest


def _summary(runs: list[dict]) -> dict:
    return {"cpu_s_median": statistics.median(r["cpu_s"] for r in runs),
            "wall_s_median": statistics.median(r["wall_s"] for r in runs),
            "sys_s_median": statistics.median(r["sys_s"] for r in runs),
            "max_rss_mb_median": statistics.median(r["max_rss_mb"] for r in runs), "runs": runs}


def run(args: argparse.Namespace) -> int:
    """Long because it is the whole measurement: interleaved single-file runs, the mask comparison,
    the optional batch run, and the report."""
    heads = [Path(h) for h in (args.heads or DEFAULT_HEADS) if Path(h).is_file()]
    if args.quick:
        heads, args.runs = heads[:1], 1
    if not heads:
        raise SystemExit("no head images found; pass --heads PATH ...")
    trees = {"this": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            trees["baseline"] = _export(args.baseline, Path(tmp) / f"base-{args.baseline}")
        elif args.baseline_src:
            trees["baseline"] = args.baseline_src.resolve()
        CACHE[:] = [args.template_cache or str(Path(tmp) / "template-cache")]
        result = {"command": "python benchmarks/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
                  "machine": MACHINE, "cpus": len(os.sched_getaffinity(0)), "commits": {k: _commit(v) for k, v in trees.items()},
                  "threads": args.threads, "runs": args.runs, "template_cache": CACHE[0],
                  "load1_start": os.getloadavg()[0], "heads": {}}
        if CACHE[0].lower() not in ("", "off", "0", "none"):  # the first run fills an empty cache: timed apart
            argv = ["-q", "deface", str(heads[0]), "-o", str(Path(tmp) / "first" / heads[0].name), "--threads", str(args.threads)]
            result["first_run"] = _run(ROOT, argv, args.threads)
            print(f"{heads[0].name} this, first run (the cache as it was): {result['first_run']}", flush=True)
        for head in heads:
            runs = {k: [] for k in trees}
            outs = {k: Path(tmp) / k / head.name for k in trees}
            for i in range(args.runs):
                order = list(trees) if i % 2 == 0 else list(trees)[::-1]  # interleaved, alternating first
                for name in order:
                    argv = ["-q", "deface", str(head), "-o", str(outs[name]), "--threads", str(args.threads)]
                    runs[name].append(_run(trees[name], argv, args.threads))
                    print(f"{head.name} {name} run {i + 1}: {runs[name][-1]}", flush=True)
            entry = {k: _summary(v) for k, v in runs.items()}
            if "baseline" in trees:
                a, b = _removed(head, outs["this"]), _removed(head, outs["baseline"])
                entry["removal_identical"] = bool(np.array_equal(a, b))
                entry["removal_dice"] = float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
                entry.update(_same_outputs(outs["this"], outs["baseline"]))
            result["heads"][head.name] = entry
            _save(args.json, result)  # after every head: a cut-short run keeps what it measured
        if args.batch:
            bids = Path(tmp) / "bids"
            for i, head in enumerate(heads, 1):
                (bids / f"sub-{i:02d}" / "anat").mkdir(parents=True)
                (bids / f"sub-{i:02d}" / "anat" / f"sub-{i:02d}_T1w.nii.gz").symlink_to(head)
            result["batch"] = {}
            for name, src in trees.items():
                r = _run(src, ["-q", "deface", str(bids), "-o", str(Path(tmp) / f"bids-{name}"), "--threads",
                               str(args.threads)], args.threads)
                result["batch"][name] = dict(r, heads=len(heads), cpu_s_per_head=r["cpu_s"] / len(heads))
                print(f"batch {name}: {result['batch'][name]}", flush=True)
    for name, entry in result["heads"].items():
        line = ", ".join(f"{k} CPU {v['cpu_s_median']:.2f} s (sys {v['sys_s_median']:.2f}) wall {v['wall_s_median']:.2f} s"
                         for k, v in entry.items() if isinstance(v, dict))
        print(f"{name}: {line}" + (f", removal identical {entry['removal_identical']}"
                                   f" (Dice {entry['removal_dice']:.4f}), output bytes identical "
                                   f"{entry['output_bytes_identical']}, record differences "
                                   f"{entry['record_differences'] or 'none'}" if "removal_dice" in entry else ""))
    _save(args.json, result)
    return 0


def _save(path: Path | None, result: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", nargs="+", type=Path, help="1 mm head images (default: ds000031 from tests/assets, "
                                                           "pycortex from ../shared/data/mri when present)")
    ap.add_argument("--runs", type=int, default=5, help="runs per head and code tree (default 5; medians)")
    ap.add_argument("--quick", action="store_true", help="one run of the first head")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline", metavar="REV", help="a commit of this repository to run interleaved (git archive)")
    ap.add_argument("--baseline-src", type=Path, help="another checkout to run interleaved (e.g. an older commit)")
    ap.add_argument("--batch", action="store_true", help="also deface all heads in one process (CPU s per head)")
    ap.add_argument("--json", type=Path, help="write the results here (e.g. benchmarks/cpu-results/...)")
    ap.add_argument("--template-cache", metavar="DIR", help="FEDIMG_CACHE_DIR of every run (default: a fresh folder, "
                    "filled by one first run timed apart; 'off': none)")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
