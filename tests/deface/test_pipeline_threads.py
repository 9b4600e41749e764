"""Two cores for one head: QC's image-only work runs in a second thread, with the same result.

On the real head at 2 mm: ``deface_job`` with the QC thread writes the same voxels and the
same QC record as without it, and the brain estimate really ran in that thread; ``fedimg
deface`` through the CLI imports neither numba nor MONAI nor NVFlare (start-up time) and reads the
template in a background thread while torch is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np

import fedimg.deface.brainmask as brainmask
import fedimg.deface.qc_face as qc_face
from fedimg.deface.pipeline import DefaceJob, deface_job

ROOT = Path(__file__).resolve().parents[2]
VARYING = {"seconds", "registration_seconds", "output"}  # wall times and the output path


def test_qc_thread_writes_the_same_voxels_and_record_as_one_thread(head_2mm, tmp_path, monkeypatch):
    threads, shape_threads = [], []

    def spy(real, seen):
        def run(*args, **kwargs):
            seen.append(threading.current_thread().name)
            return real(*args, **kwargs)
        return run

    monkeypatch.setattr(brainmask, "estimate_brain", spy(brainmask.estimate_brain, threads))
    monkeypatch.setattr(qc_face, "shape_placement", spy(qc_face.shape_placement, shape_threads))
    records, voxels = {}, {}
    for mode in (False, True):
        out = tmp_path / f"thread_{mode}" / "head_defaced.nii.gz"
        records[mode] = deface_job(DefaceJob(reference=head_2mm, output=out, png="off"), qc_thread=mode)
        voxels[mode] = np.asarray(nib.load(str(out)).dataobj)
    assert threads[0] == threading.main_thread().name and threads[1].startswith("fedimg-qc"), threads
    # the head-outline placement ran beside the brain estimate, in the other helper thread
    assert shape_threads[0] == threading.main_thread().name and shape_threads[1].startswith("fedimg-qc"), shape_threads
    assert records[True]["passed"] and np.array_equal(voxels[False], voxels[True])
    assert (voxels[True] != np.asarray(nib.load(str(head_2mm)).dataobj)).sum() > 1000  # a face was removed
    same = {k: v for k, v in records[True].items() if k not in VARYING}
    assert same == {k: v for k, v in records[False].items() if k not in VARYING}


def test_deface_cli_imports_no_numba_monai_or_nvflare(head_2mm, tmp_path):
    out = tmp_path / "cli" / "head_defaced.nii.gz"
    code = ("import sys, json; from fedimg.cli import main; rc = main(sys.argv[1:]); "
            "print(json.dumps(sorted(m for m in ('numba', 'monai', 'nvflare', 'torch') if m in sys.modules))); "
            "from fedimg.deface.pipeline import _PREFETCH; print(json.dumps([f.exception() is None for f in _PREFETCH])); "
            "sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code, "-q", "deface", str(head_2mm), "-o", str(out), "--threads", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    imported, prefetched = run.stdout.strip().splitlines()[-2:]
    assert json.loads(imported) == []  # the CPU path is numpy/scipy from the coarse search to QC: torch never imported
    assert json.loads(prefetched) == [True]  # the template was read beside the subject, without error
    assert out.is_file()
