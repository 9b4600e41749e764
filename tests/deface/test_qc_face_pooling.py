"""``head_shape_pose`` pools the image to 4 mm once: the head mask of those block means is the head mask of the
image itself (the second pooling is one voxel per block), on the real 1 mm head and on other voxel sizes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface.coarse import block_mean, head_mask
from fedimg.deface.qc_face import _pooled_once
from fedimg.imageio.volume import to_canonical

HEAD = Path(__file__).resolve().parent.parent / "assets" / "mri" / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz"


@pytest.fixture(scope="module")
def head():
    img = nib.load(str(HEAD))
    return to_canonical(np.asarray(img.dataobj, dtype=np.float32), img.affine)


@pytest.mark.parametrize("zoom", [(1.0, 1.0, 1.0), (1.2, 0.9, 1.0), (2.0, 2.0, 2.0), (0.8, 1.3, 3.0)])
def test_mask_of_the_block_means_is_the_mask_of_the_image(head, zoom):
    can, aff = head
    aff = aff @ np.diag([*zoom, 1.0])  # the same voxels read as another voxel size
    small = block_mean(can, aff, 4.0)
    assert _pooled_once(small, 4.0)
    got, got_aff = head_mask(*small, step_mm=4.0)
    want, want_aff = head_mask(can, aff, step_mm=4.0)
    assert got.any() and np.array_equal(got, want) and np.array_equal(got_aff, want_aff)


def test_a_grid_that_would_be_pooled_again_is_told_apart():
    assert not _pooled_once((np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 1.0, 1.0])), 4.0)
    assert _pooled_once((np.zeros((4, 4, 4), np.float32), np.diag([4.0, 3.9, 6.0, 1.0])), 4.0)
