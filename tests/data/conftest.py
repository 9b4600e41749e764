"""Fixtures writing tiny BraTS 2021 / 2023 and MSD Task01 data sets (see data_helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import write_brats_case, write_msd


@pytest.fixture
def brats2021(tmp_path) -> Path:
    root = tmp_path / "brats2021"
    for i in range(3):
        write_brats_case(root, f"BraTS2021_{i:05d}", "brats2021")
    return root


@pytest.fixture
def brats2023(tmp_path) -> Path:
    root = tmp_path / "brats2023"
    for i in range(2):
        write_brats_case(root, f"BraTS-GLI-{i:05d}-000", "brats2023")
    return root


@pytest.fixture
def msd(tmp_path) -> Path:
    return write_msd(tmp_path / "Task01_BrainTumour")
