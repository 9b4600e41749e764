"""The bad-input corpus of issue 15: each bad input through the ``fedimg`` command a user would run.

Every entry is run as a separate process (``python -m fedimg ...``); the table gives the exit
code, the seconds, the peak resident memory of that process (``wait4`` rusage) and the first
line of the error. Prints a markdown table (for benchmarks/RESULTS.md) and, with ``--json``,
writes the rows.

    .venv/bin/python benchmarks/bad_inputs.py [--json bad_inputs.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AFF = np.diag([-2.0, 2.0, 2.0, 1.0])


def _case(root: Path, cid: str, seed: int, shape=(32, 32, 24)) -> Path:
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    c = np.array(shape, np.float32)[:, None, None, None] / 2
    head = (((g - c) / (c - 2)) ** 2).sum(0) <= 1.0
    label = np.zeros(shape, np.uint8)
    label[((g - c) ** 2).sum(0) <= 16] = 2
    label[((g - c) ** 2).sum(0) <= 4] = 4
    folder = root / cid
    folder.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(("t1", "t1ce", "t2", "flair")):
        img = (100.0 + 40 * i * (label > 0) + rng.normal(0, 5, shape)) * head
        nib.save(nib.Nifti1Image(img.astype(np.float32), AFF), str(folder / f"{cid}_{m}.nii.gz"))
    nib.save(nib.Nifti1Image(label, AFF), str(folder / f"{cid}_seg.nii.gz"))
    return folder


def _site(root: Path, n: int, seed: int) -> Path:
    for i in range(n):
        _case(root, f"c{i}", seed + i)
    return root


def _header_only(path: Path, shape, dtype=np.float32, edit=None) -> Path:
    img = nib.Nifti1Image(np.zeros((2, 2, 2), dtype), np.eye(4))
    img.header.set_data_shape(shape)
    if edit:
        edit(img.header)
    raw = img.header.binaryblock + b"\0" * 4 + b"\0" * 64
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def corpus(tmp: Path) -> list[tuple[str, list[str]]]:
    """(what, fedimg arguments) for each bad input; the files are written under ``tmp``."""
    good = _case(tmp / "good", "g0", 0) / "g0_t1.nii.gz"
    huge = _header_only(tmp / "huge.nii.gz", (4096, 4096, 4096))
    huge_site = _site(tmp / "huge_site", 2, 10)
    _header_only(huge_site / "c1" / "c1_t2.nii.gz", (4096, 4096, 4096))
    ok = tmp / "ok.nii"
    nib.save(nib.Nifti1Image(np.ones((64, 64, 64), np.float32), np.eye(4)), str(ok))
    short = tmp / "short.nii"
    short.write_bytes(ok.read_bytes()[:50000])
    nrrd = tmp / "huge.nrrd"
    nrrd.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 5000 5000 5000\nencoding: gzip\n\n" +
                     gzip.compress(b"\0" * 1024))
    complex_img = _header_only(tmp / "complex.nii", (16, 16, 16), np.complex64)
    inf_slope = tmp / "inf_slope.nii"
    h = nib.Nifti1Image(np.ones((16, 16, 16), np.int16), np.eye(4)).header
    h["scl_slope"] = np.inf
    inf_slope.write_bytes(h.binaryblock + b"\0" * 4 + np.ones((16, 16, 16), np.int16).tobytes())
    zero_site = _site(tmp / "zero_site", 3, 20)
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 24), np.float32), AFF), str(zero_site / "c1" / "c1_flair.nii.gz"))
    speck_site = _site(tmp / "speck_site", 3, 30)
    speck = np.zeros((32, 32, 24), np.float32)
    speck[10:12, 10:12, 10:12] = 50.0
    nib.save(nib.Nifti1Image(speck, AFF), str(speck_site / "c2" / "c2_t1.nii.gz"))
    empty_site = _site(tmp / "empty_site", 3, 40)
    (empty_site / "c9").mkdir()
    fed = tmp / "fed"
    _site(fed / "site-1", 2, 50)
    bad = _site(fed / "site-2", 2, 60)
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 24), np.float32), AFF), str(bad / "c0" / "c0_t2.nii.gz"))
    (bad / "c7").mkdir()
    blocker = tmp / "a-file"
    blocker.write_text("x")
    train = ["--epochs", "1", "--roi", "16", "16", "16", "--threads", "1", "--no-progress", "--allow-identifiable"]
    return [
        ("NIfTI header declaring 4096^3 float32 (256 GiB), 0.4 kB file", ["deface", str(huge), "-o", str(tmp / "o1.nii.gz")]),
        ("same header as one modality of a case", ["train", "--data", str(huge_site), "--out", str(tmp / "r1"), *train]),
        ("NRRD header declaring 5000^3 float, gzip body", ["deface", str(nrrd), "-o", str(tmp / "o2.nii.gz")]),
        ("uncompressed .nii cut short (50 kB of 1 MiB)", ["deface", str(short), "-o", str(tmp / "o3.nii.gz")]),
        ("complex64 voxels", ["deface", str(complex_img), "-o", str(tmp / "o4.nii.gz")]),
        ("scl_slope = inf in the header", ["deface", str(inf_slope), "-o", str(tmp / "o5.nii.gz")]),
        ("all-zero FLAIR in one case", ["train", "--data", str(zero_site), "--out", str(tmp / "r2"), *train]),
        ("T1 with 8 non-zero voxels (0.03 %)", ["train", "--data", str(speck_site), "--out", str(tmp / "r3"), *train]),
        ("empty case folder", ["train", "--data", str(empty_site), "--out", str(tmp / "r4"), *train]),
        ("empty case folder, --skip-bad-cases",
         ["train", "--data", str(empty_site), "--out", str(tmp / "r5"), *train, "--skip-bad-cases"]),
        ("deface output under a regular file", ["deface", str(good), "-o", str(blocker / "out" / "t1.nii.gz")]),
        ("deface output under /proc (not writable)", ["deface", str(good), "-o", "/proc/fedimg/out/t1.nii.gz"]),
        ("simulate: sites without defacing records",
         ["simulate", "--data", str(fed), "--out", str(tmp / "s1"), "--rounds", "1"]),
        ("simulate: a blank image and an empty case folder in site-2",
         ["simulate", "--data", str(fed), "--out", str(tmp / "s2"), "--rounds", "1", "--allow-identifiable"]),
    ]


def run_one(args: list[str], cwd: Path) -> dict:
    """Run ``fedimg ARGS`` in a child process: exit code, seconds, its own peak RSS (wait4), output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "fedimg", *args], cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return {"rc": proc.returncode, "seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024,
                "stderr": err.read().strip(), "stdout": out.read().strip()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for what, args in corpus(tmp):
            res = run_one(args, tmp)
            lines = [ln for ln in res["stderr"].splitlines() if ln.strip()]
            first = lines[0].replace(str(tmp) + "/", "") if lines else "(no error)"
            rows.append({"input": what, "command": args[0], "rc": res["rc"], "seconds": round(res["seconds"], 1),
                         "peak_rss_mib": round(res["peak_rss_mib"]), "lines": len(lines), "first_line": first,
                         "stdout_tail": res["stdout"][-600:].replace(str(tmp) + "/", "")})
    print("| bad input | command | exit | s | peak RSS MiB | error lines | first line of the error |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | {r['command']} | {r['rc']} | {r['seconds']} | {r['peak_rss_mib']} | {r['lines']} | "
              f"{r['first_line'][:220]} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
