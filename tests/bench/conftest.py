"""Fixtures for the ``fedimg bench`` tests and the peer scripts in ``benchmarks/``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"


@pytest.fixture(scope="session")
def benchmark_script():
    """``benchmark_script("aggregate")``: the module ``benchmarks/aggregate.py`` (its folder on ``sys.path``)."""
    def load(name: str):
        if str(BENCHMARKS) not in sys.path:
            sys.path.insert(0, str(BENCHMARKS))  # the scripts import their neighbour ``_common``
        key = f"benchmarks_{name}"
        if key not in sys.modules:
            spec = importlib.util.spec_from_file_location(key, BENCHMARKS / f"{name}.py")
            sys.modules[key] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(sys.modules[key])
        return sys.modules[key]

    return load


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """A site of 4 synthetic BraTS-layout cases at 4 mm (``fedimg synth``)."""
    from fedimg.data import synthesize

    return synthesize(tmp_path_factory.mktemp("bench-site") / "d", sites=1, cases_per_site=4, seed=0, spacing=4.0)[0]


@pytest.fixture(autouse=True)
def _one_thread(_threads_and_seed):
    """One torch thread: on a shared 2-core machine OpenMP barriers make 2 threads far slower."""
    import torch

    torch.set_num_threads(1)
    yield
    torch.set_num_threads(2)
