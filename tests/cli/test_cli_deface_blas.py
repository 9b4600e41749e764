"""``fedimg deface`` runs numpy's OpenBLAS at one thread (before numpy is imported) unless the user chose a count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE = ("import sys, os, json; from fedimg.cli import main; import fedimg.cli.deface as d; real = d.one_blas_thread; "
        "seen = []; d.one_blas_thread = lambda: (seen.append('numpy' in sys.modules), real()); "
        "rc = main(sys.argv[1:]); print(json.dumps([seen, os.environ.get('OPENBLAS_NUM_THREADS')]))")


@pytest.mark.parametrize("preset", [None, "3"])
def test_deface_sets_one_openblas_thread_before_numpy_unless_set(tmp_path, preset):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2", **({} if preset is None else {"OPENBLAS_NUM_THREADS": preset}))
    missing = tmp_path / "missing.nii.gz"  # fails after the thread count is set, before any work
    run = subprocess.run([sys.executable, "-c", CODE, "-q", "deface", str(missing), "-o", str(tmp_path / "o.nii.gz")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    seen, value = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen == [False], run.stderr[-2000:]  # numpy not imported yet when it ran: OpenBLAS reads it at import
    assert value == (preset or "1")
    assert "does not exist" in run.stderr and not (tmp_path / "o.nii.gz").exists()
