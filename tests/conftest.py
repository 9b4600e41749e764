"""Shared fixtures: thread counts, seeds, real test data, input hashing, GPU marker."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")
os.environ.setdefault("FEDIMG_CACHE_DIR", "off")  # `fedimg deface` in tests writes no template cache to ~/.cache

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ASSETS = Path(__file__).parent / "assets"
PKG_ASSETS = Path(__file__).parent.parent / "fedimg" / "assets"


def _gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _threads_and_seed():
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def assets() -> Path:
    return ASSETS


@pytest.fixture(scope="session")
def head_t1() -> Path:
    """Real full-head T1 with a face (OpenNeuro ds000031, CC0)."""
    return ASSETS / "mri" / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz"


@pytest.fixture(scope="session")
def template_paths() -> tuple[Path, Path]:
    """pydeface head template and its face keep-mask (MIT), shipped as package data."""
    return PKG_ASSETS / "mean_reg2mean.nii.gz", PKG_ASSETS / "facemask.nii.gz"


def hash_tree(*paths: Path) -> dict[str, str]:
    """SHA-256 of every file under ``paths`` (use before/after a command to prove inputs are untouched)."""
    out: dict[str, str] = {}
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture
def hashed():
    """``hashed(*paths)`` returns a checker; call ``.assert_unchanged()`` after the command."""

    class _Checker:
        def __init__(self, paths):
            self.paths = paths
            self.before = hash_tree(*paths)

        def assert_unchanged(self):
            assert hash_tree(*self.paths) == self.before, "an input file was modified"

    return lambda *paths: _Checker(paths)


PATHOLOGY_ASSETS = Path(__file__).parent / "assets" / "pathology"


@pytest.fixture(scope="session")
def slide_path() -> Path:
    """Real H&E slide (CMU small region, CC0): 2220 x 2967 px at 0.499 um/px."""
    return PATHOLOGY_ASSETS / "cmu_small_region.svs"


@pytest.fixture(scope="session")
def target_path() -> Path:
    """Real H&E target tile (tiatoolbox, BSD-3), 1000 x 1000."""
    return PATHOLOGY_ASSETS / "tiatoolbox_target_image.png"


@pytest.fixture(scope="session")
def target_image(target_path) -> np.ndarray:
    from PIL import Image

    with Image.open(target_path) as im:
        return np.array(im.convert("RGB"))


@pytest.fixture(scope="session")
def synth_sites(tmp_path_factory, slide_path) -> list[Path]:
    """Two synthetic tile sites of 96 tiles of 32 px at 2 um/px (seeded), cut from the real slide."""
    from fedimg.pathology.synth import make_synthetic_sites

    out = tmp_path_factory.mktemp("pathology_sites")
    return make_synthetic_sites(out, sites=2, tiles_per_site=96, tile_size=32, mpp=2.0, seed=0, slide=slide_path)
