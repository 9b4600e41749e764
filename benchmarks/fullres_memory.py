#!/usr/bin/env python
"""Peak memory of full-resolution BraTS on the CPU: ``fedimg predict`` (and ``fedimg train``) on 1 mm 240×240×155 cases.

Writes synthetic BraTS-2021-layout cases of the real full-resolution shape (four int16
contrasts of a head-sized ellipsoid with a tumour, 1 mm, .nii.gz), a SegResNet checkpoint
(fedimg's default model and width, random weights: memory does not depend on the values),
then runs each command in its own process and reads that process's peak resident memory
(VmHWM), first after importing torch, MONAI and fedimg's engine (the floor), then at the end.

- ``predict``: 128³ sliding windows, ``--sw-batch-size`` (default 1), overlap 0.25,
  ``torch.inference_mode``, stitched on the CPU.
- ``train`` (skipped with ``--quick``): one epoch of 128³ crops, batch 1, on two
  full-resolution cases (one trains, one is validated with the same sliding window).

Each peak is checked against its stated bound (README, "Full-resolution BraTS"): predict
<= 1.5 GiB; training <= 1.25 GiB + 0.2 GiB per cached case (bf16 autocast, which fedimg uses
where the CPU supports it; in fp32 the 128³ backward alone is ~580 MiB more). Exit code 1 when
a bound does not hold.

    PYTHONPATH=. OMP_NUM_THREADS=2 .venv/bin/python benchmarks/fullres_memory.py   # ~2-3 min quiet; --quick: predict only
        # JSON: benchmarks/cpu-results/fullres_memory.json (--json elsewhere)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (240, 240, 155)
#: the stated bounds (MiB): predict; training = base + per cached case (train and validation)
PREDICT_BOUND_MIB, TRAIN_BOUND_MIB, TRAIN_PER_CASE_MIB = 1536, 1280, 205
#: Run a fedimg command in a fresh process. It first imports what ``predict`` imports (torch, MONAI, nibabel,
#: fedimg's engine) and prints that high-water mark (the floor), then runs the command and prints the peak:
#: VmHWM, KiB, this process's own (``ru_maxrss`` would include the parent's from before ``exec``).
PEAK_SCRIPT = ("import sys\n"
               "def hwm():\n"
               "    return [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0].split()[1]\n"
               "import torch, monai.inferers, nibabel, fedimg.engine.evaluate, fedimg.engine.checkpoint\n"
               "from fedimg.cli import main\n"
               "sys.stderr.write('FLOOR_KIB %s\\n' % hwm())\n"
               "rc = main(sys.argv[1:])\n"
               "sys.stderr.write('PEAK_KIB %s\\n' % hwm())\n"
               "sys.exit(rc)\n")


def write_case(root: Path, case_id: str, seed: int, shape: tuple[int, int, int] = SHAPE, gz: bool = True) -> Path:
    """One BraTS-2021-layout case: int16 contrasts of an ellipsoidal head with a tumour; 1 mm voxels."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    g = np.ogrid[tuple(slice(0, s) for s in shape)]
    c = [s / 2 for s in shape]
    head = sum(((x - cc) / (cc - 8)) ** 2 for x, cc in zip(g, c)) <= 1.0
    t = [cc + rng.uniform(-0.2, 0.2) * cc for cc in c]
    d = np.sqrt(sum((x - tt) ** 2 for x, tt in zip(g, t)))
    label = np.zeros(shape, np.uint8)
    label[(d <= 30) & head] = 2
    label[(d <= 18) & head] = 4
    label[(d <= 9) & head] = 1
    folder = root / case_id
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    ext = ".nii.gz" if gz else ".nii"
    for i, m in enumerate(("t1", "t1ce", "t2", "flair")):
        bright = np.array([0, 400, 300 + 100 * i, 700 - 80 * i, 200 + 60 * i], np.float32)
        img = bright[np.where(label == 1, 4, np.where(label == 4, 3, np.where(label == 2, 2, head.astype(np.uint8))))]
        img += rng.normal(0, 20, shape).astype(np.float32) * head
        nib.save(nib.Nifti1Image(np.clip(img, 0, None).astype(np.int16), affine), str(folder / f"{case_id}_{m}{ext}"))
    nib.save(nib.Nifti1Image(label, affine), str(folder / f"{case_id}_seg{ext}"))
    return folder


def write_checkpoint(run: Path, *, model: str = "segresnet", init_filters: int = 8, roi: int = 128,
                     sw_batch_size: int = 1) -> Path:
    """A checkpoint as ``fedimg train`` writes it (random weights; default: fedimg's default SegResNet)."""
    import torch

    from fedimg.engine.checkpoint import save_checkpoint
    from fedimg.engine.config import TrainConfig
    from fedimg.engine.models import build_model, model_kwargs

    cfg = TrainConfig(model=model, init_filters=init_filters, roi=(roi,) * 3, sw_batch_size=sw_batch_size, device="cpu")
    torch.manual_seed(0)
    net = build_model(cfg.model, **model_kwargs(cfg))
    save_checkpoint(run / "model.safetensors", net, {"model": cfg.model, "model_kwargs": model_kwargs(cfg),
                                                     "config": cfg.to_dict()})
    return run


def peak_of(args: list[str], threads: int, timeout: float = 1200.0) -> dict:
    """Run ``fedimg ARGS`` in a fresh process: its peak RSS and the floor after imports (MiB), wall and CPU s."""
    import os
    import resource

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "FEDIMG_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                         env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = {ln.split()[0]: int(ln.split()[1]) / 1024 for ln in res.stderr.splitlines() if ln.endswith(tuple("0123456789"))
             and ln.startswith(("FLOOR_KIB ", "PEAK_KIB "))}
    if res.returncode != 0 or len(found) != 2:
        raise SystemExit(f"fedimg {' '.join(args)} failed ({res.returncode}):\n{(res.stdout + res.stderr)[-2000:]}")
    return {"peak_mib": found["PEAK_KIB"], "floor_mib": found["FLOOR_KIB"], "wall_s": time.perf_counter() - t0,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), "rc": res.returncode}


def _show(name: str, r: dict) -> dict:
    print(f"{name:8s} peak {r['peak_mib']:6.0f} MiB (after imports {r['floor_mib']:4.0f})   wall {r['wall_s']:6.1f} s   "
          f"cpu {r['cpu_s']:6.1f} s", flush=True)
    return r


def run(a: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="fedimg-fullres-") as tmp:
        tmp = Path(tmp)
        site = tmp / "site-1"
        cases = [write_case(site, f"BraTS2021_{i:05d}", seed=i) for i in range(1 if a.quick else 2)]
        ckpt = write_checkpoint(tmp / "model", roi=a.roi, sw_batch_size=a.sw_batch_size)
        out: dict = {"shape": list(SHAPE), "roi": a.roi, "sw_batch_size": a.sw_batch_size, "threads": a.threads,
                     "model": "segresnet init_filters=8 (fedimg default)", "commit": _commit(),
                     "machine": platform.processor() or platform.machine()}
        out["predict"] = _show("predict", peak_of(["-q", "predict", "--model", str(ckpt), "--case", str(cases[0]), "-o",
                                  str(tmp / "pred.nii.gz"), "--device", "cpu", "--roi", *[str(a.roi)] * 3,
                                  "--sw-batch-size", str(a.sw_batch_size)], a.threads))
        if not a.quick:
            cfg = tmp / "train.json"
            cfg.write_text(json.dumps({"sw_batch_size": a.sw_batch_size}))
            out["train"] = _show("train", peak_of(["-q", "train", "--data", str(site), "--out", str(tmp / "run"), "--allow-identifiable",
                                    "--epochs", "1", "--roi", *[str(a.roi)] * 3, "--batch-size", "1", "--val-fraction",
                                    "0.5", "--config", str(cfg), "--device", "cpu", "--no-progress"], a.threads))
        out["bounds_mib"] = {"predict": PREDICT_BOUND_MIB}
        if "train" in out:
            out["bounds_mib"]["train"] = TRAIN_BOUND_MIB + len(cases) * TRAIN_PER_CASE_MIB
    out["bounds_hold"] = all(out[k]["peak_mib"] <= b for k, b in out["bounds_mib"].items())
    for k, b in out["bounds_mib"].items():
        print(f"{k:8s} bound {b} MiB: {'holds' if out[k]['peak_mib'] <= b else 'BROKEN'} "
              f"(margin {b - out[k]['peak_mib']:.0f} MiB)", flush=True)
    return out


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="predict only, one case (~1 min)")
    p.add_argument("--roi", type=int, default=128, help="window / crop edge (default 128)")
    p.add_argument("--sw-batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=str(Path(__file__).resolve().parent / "cpu-results" / "fullres_memory.json"),
                   help="write the results here (default: benchmarks/cpu-results/fullres_memory.json)")
    a = p.parse_args(argv)
    res = run(a)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    return 0 if res["bounds_hold"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
