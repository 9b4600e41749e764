"""Shared inputs of the imageio tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


@pytest.fixture
def scaled_nifti(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """``(path, stored voxels, affine)`` of a small int16 ``.nii.gz`` with slope 2, intercept -5 and a qform."""
    data = (np.arange(16 * 17 * 18) % 300).reshape(16, 17, 18).astype(np.int16)
    aff = np.diag([-0.9, 0.94, 0.94, 1.0])
    img = nib.Nifti1Image(data, aff)
    img.header.set_slope_inter(2.0, -5.0)
    img.header.set_qform(aff, code=1)
    src = tmp_path / "in.nii.gz"
    nib.save(img, str(src))
    return src, data, aff
