#!/usr/bin/env python
"""What ``benchmarks/gpu/run.sh`` ran on, as JSON: commit, card, driver, CUDA, library versions,
and whether numba can compile and run a CUDA kernel (with the error when it cannot).

    python benchmarks/gpu/device_info.py --json gpu-out/device.json
    python benchmarks/gpu/device_info.py --numba-probe   # exit 0 iff numba CUDA works

Every field that cannot be read here (no GPU, no nvidia-smi, a library missing) is ``null``:
the dry run on a CPU writes the same file.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMI_FIELDS = ("name", "memory.total", "driver_version", "clocks.max.sm", "pci.bus_id")


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def commit() -> dict:
    """HEAD from git when .git travelled, else ``.gpu/commit.txt`` written by make_wheels.sh."""
    head = _run(["git", "rev-parse", "HEAD"], cwd=REPO)
    if head:
        dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO)
        return {"commit": head, "dirty": bool(dirty), "source": "git"}
    f = REPO / ".gpu" / "commit.txt"
    if f.is_file():
        lines = f.read_text().split()
        return {"commit": lines[0] if lines else None, "dirty": len(lines) > 1 and lines[1] == "dirty",
                "source": ".gpu/commit.txt (written by make_wheels.sh; .git not carried)"}
    return {"commit": None, "dirty": None, "source": "unknown: no .git and no .gpu/commit.txt"}


def gpus() -> list[dict]:
    out = _run(["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader"])
    if not out:
        return []
    return [dict(zip(SMI_FIELDS, (v.strip() for v in line.split(",")))) for line in out.splitlines()]


def cuda_driver_version() -> str | None:
    out = _run(["nvidia-smi"])
    for tok in (out or "").split("CUDA Version:")[1:2]:
        return tok.split()[0]
    return None


def versions() -> dict:
    names = ("torch", "cupy-cuda13x", "cupy-cuda12x", "numba", "numba-cuda", "monai", "nibabel", "nvidia-ml-py",
             "torchstain", "nvflare", "flwr", "SimpleITK", "openslide-python")
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = None
    try:
        import torch

        out["torch_cuda"] = torch.version.cuda
        out["torch_cuda_available"] = torch.cuda.is_available()
        out["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    except Exception as exc:  # torch missing or broken: say so
        out["torch_error"] = repr(exc)[:300]
    return out


def numba_probe() -> dict:
    """Compile and run a one-element kernel (what fedimg.kernels checks before using numba CUDA)."""
    try:
        import numpy as np
        from numba import cuda

        if not cuda.is_available():
            return {"ok": False, "error": "numba: no CUDA device"}

        @cuda.jit
        def probe(a):  # pragma: no cover - device code
            a[0] = a[0] + 1.0

        d = cuda.to_device(np.zeros(1, np.float32))
        probe[1, 1](d)
        ok = float(d.copy_to_host()[0]) == 1.0
        return {"ok": ok, "error": None if ok else "wrong result"}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).strip()[:400]}"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the record here")
    p.add_argument("--numba-probe", action="store_true", help="only probe numba CUDA; exit 0 if it works")
    p.add_argument("--dry-run", action="store_true", help="recorded in the JSON: the script ran on the CPU")
    args = p.parse_args(argv)
    probe = numba_probe()
    if args.numba_probe:
        print(json.dumps(probe))
        return 0 if probe["ok"] else 1
    rec = {"dry_run": args.dry_run, **commit(), "gpus": gpus(), "cuda_driver_version": cuda_driver_version(),
           "host": platform.node(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
           "versions": versions(), "numba_cuda": probe,
           "env": {k: os.environ.get(k) for k in ("CUDA_HOME", "FEDIMG_NVVM_SOURCE", "NUMBA_ENABLE_CUDASIM")}}
    text = json.dumps(rec, indent=2)
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.json)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
