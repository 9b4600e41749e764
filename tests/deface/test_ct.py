"""CT heads: detection (HU and not), the air value, and ``fedimg deface --modality`` on a real head CT."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface.core import DefaceConfig
from fedimg.deface.ct import air_value, detect_modality, looks_like_hu, resolve_modality
from fedimg.errors import ConfigError

CT = Path(__file__).resolve().parent.parent / "assets" / "mri" / "vtkjs_headsq_CT.nii.gz"


@pytest.fixture(scope="module")
def ct():
    img = nib.load(str(CT))
    return np.asarray(img.dataobj).astype(np.float32), img.affine


def test_real_ct_is_detected_without_hu(ct):
    data, aff = ct
    assert not looks_like_hu(data)
    assert detect_modality(data, aff) == "ct"
    assert air_value(data, "ct") == pytest.approx(float(np.percentile(data[::2, ::2, ::2], 0.5)))


def test_real_ct_in_hounsfield_units_is_detected_and_air_is_minus_1000(ct):
    data, aff = ct
    hu = data - 1024.0  # the file stores HU + 1024 (air 0, brain ~1070)
    assert looks_like_hu(hu) and detect_modality(hu, aff) == "ct"
    assert air_value(hu, "ct") == -1000.0
    padded = hu.copy()
    padded[:6] = -2048.0  # outside the scanner's circle
    assert detect_modality(padded, aff) == "ct"


def test_real_mr_heads_are_not_ct(head_2mm):
    img = nib.load(str(head_2mm))
    data = np.asarray(img.dataobj, dtype=np.float32)
    assert detect_modality(data, img.affine) == "mr"
    assert air_value(data, "mr") == 0.0
    assert resolve_modality("ct", data, img.affine) == "ct"  # the user's word wins
    with pytest.raises(ConfigError):
        resolve_modality("pet", data, img.affine)
    with pytest.raises(ConfigError):
        DefaceConfig(modality="xray")


def test_real_ct_face_removal_is_anterior_and_filled_with_air(ct):
    """The head-shape route on the real CT (stored in HU here): the removal lies in front of the
    head's middle, the back of the head stays, and removed voxels become air (-1000 HU)."""
    from fedimg.deface.core import face_removal
    from fedimg.deface.masks import apply_removal

    data, aff = ct
    hu = data - 1024.0
    res = face_removal(hu, aff, config=DefaceConfig(modality="auto"))
    assert res.modality == "ct" and res.fill_value == -1000.0
    assert res.metrics["modality"] == "ct" and 0.0 <= res.metrics["start_agreement_dice"] <= 1.0
    vox = np.argwhere(res.remove)
    assert len(vox) > 1000
    world = vox @ aff[:3, :3].T + aff[:3, 3]
    head = np.argwhere(hu > -500) @ aff[:3, :3].T + aff[:3, 3]
    assert np.median(world[:, 1]) > np.median(head[:, 1]) + 20  # in front (A) of the head's middle
    assert (world[:, 1] < np.percentile(head[:, 1], 25)).mean() < 0.05  # almost nothing from the back of the head
    out = apply_removal(hu, res.remove, mode="zero", zero_value=res.fill_value)
    assert (out[res.remove] == -1000.0).all() and (out[~res.remove] == hu[~res.remove]).all()
