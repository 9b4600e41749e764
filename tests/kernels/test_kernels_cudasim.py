"""Run the numba CUDA parity cases under NUMBA_ENABLE_CUDASIM=1 in a fresh interpreter.

The simulator must be switched on before numba is imported, which this process already did,
hence the subprocess. The cases themselves live in ``cudasim_cases.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.timeout(300)
def test_numba_cuda_kernels_under_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_NUM_THREADS="2", OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(HERE / "cudasim_cases.py"), "-q", "-p", "no:cacheprovider", "-W",
         "ignore::RuntimeWarning", "--rootdir", str(HERE.parent.parent)],
        cwd=HERE.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail, tail
