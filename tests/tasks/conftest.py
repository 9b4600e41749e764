"""Fixtures for the task tests: tiny synthetic tile sites (the real slide is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_sites(tmp_path_factory, slide_path) -> list[Path]:
    """Two synthetic sites of 96 tiles of 32 px at 2 um/px (seeded; the same as tests/pathology's)."""
    from fedimg.pathology.synth import make_synthetic_sites

    out = tmp_path_factory.mktemp("task_tile_sites")
    return make_synthetic_sites(out, sites=2, tiles_per_site=96, tile_size=32, mpp=2.0, seed=0, slide=slide_path)
