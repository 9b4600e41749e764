"""Fixtures for the pathology tests: the real slide and target, tiny synthetic sites."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ASSETS = Path(__file__).parent.parent / "assets" / "pathology"


@pytest.fixture(scope="session")
def slide_path() -> Path:
    """Real H&E slide (CMU small region, CC0): 2220 x 2967 px at 0.499 um/px."""
    return ASSETS / "cmu_small_region.svs"


@pytest.fixture(scope="session")
def target_path() -> Path:
    """Real H&E target tile (tiatoolbox, BSD-3), 1000 x 1000."""
    return ASSETS / "tiatoolbox_target_image.png"


@pytest.fixture(scope="session")
def target_image(target_path) -> np.ndarray:
    from PIL import Image

    with Image.open(target_path) as im:
        return np.array(im.convert("RGB"))


@pytest.fixture(scope="session")
def synth_sites(tmp_path_factory, slide_path) -> list[Path]:
    """Two synthetic sites of 96 tiles of 32 px at 2 um/px (seeded)."""
    from fedimg.pathology.synth import make_synthetic_sites

    out = tmp_path_factory.mktemp("pathology_sites")
    return make_synthetic_sites(out, sites=2, tiles_per_site=96, tile_size=32, mpp=2.0, seed=0, slide=slide_path)
