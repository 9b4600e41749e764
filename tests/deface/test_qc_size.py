"""QC's near-face band follows the head's size (ninth wave, h11p): a larger head passes, wrong removals still fail.

The real ds000031 T1 at 2 mm, made 1.18x larger about its centre (the header's voxel size, as
the corpus's ``--archive`` head-size draw does for heads 0.85x the template scale): its eyes and
cheeks lie 1.18x further from the brain, and the fixed 25-45 mm band measured forehead that is
kept. The band now scales with the head's size from the head-outline placement
(:func:`fedimg.deface.qc_face.near_band`); the correct removal passes, and removals slid forward
into the air or down into the neck, or pitched, still fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface import face_removal
from fedimg.deface.qc import QCThresholds, check_removal
from fedimg.deface.qc_face import NEAR_MM, REFERENCE_HEAD_SIZE, ShapePlacement, head_size, near_band
from fedimg.deface.register import Registration, _rotation

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
REG = json.loads((MRI / "registrations.json").read_text())["subject_to_template"]["ds000031_sub-01_ses-006_run-001_T1w.nii.gz"]
SCALE = 1.18


def _qc(data: np.ndarray, aff: np.ndarray, s2t: np.ndarray, centre: np.ndarray, move: np.ndarray) -> dict:
    reg = Registration(subject_to_template=s2t @ centre @ move @ np.linalg.inv(centre), loss=-0.6, second_loss=-0.5,
                       agreement_mm=0.0, start=(0.0, 0.0, 0.0), seconds=0.0, losses=())
    return check_removal(data, aff, face_removal(data, aff, registration=reg), QCThresholds())


def test_near_band_scales_with_the_placed_head_size_within_bounds():
    assert near_band(None) == NEAR_MM
    one = ShapePlacement(remove=np.zeros((2, 2, 2), bool), size=REFERENCE_HEAD_SIZE)
    assert near_band(one) == pytest.approx(NEAR_MM)
    big = ShapePlacement(remove=one.remove, size=1.15 * REFERENCE_HEAD_SIZE)
    assert near_band(big) == pytest.approx((25.0 * 1.15, 45.0 * 1.15))
    huge = ShapePlacement(remove=one.remove, size=3.0)  # a placement that far off is not trusted past 1.25x
    assert near_band(huge) == pytest.approx((25.0 * 1.25, 45.0 * 1.25))
    assert head_size(np.diag([0.5, 0.5, 0.5, 1.0])) == pytest.approx(2.0)


@pytest.mark.slow
def test_a_larger_head_passes_its_correct_removal_and_fails_wrong_ones(head_2mm):
    img = nib.load(str(head_2mm))
    data, aff0 = np.asarray(img.dataobj).astype(np.float32), img.affine
    centre = np.eye(4)
    centre[:3, 3] = (aff0 @ np.r_[(np.array(data.shape) - 1) / 2.0, 1.0])[:3]
    grow = centre @ np.diag([SCALE, SCALE, SCALE, 1.0]) @ np.linalg.inv(centre)
    aff, s2t = grow @ aff0, np.asarray(REG) @ np.linalg.inv(grow)  # the correct registration follows the head
    ok = _qc(data, aff, s2t, centre, np.eye(4))
    assert ok["passed"], ok["failures"]
    assert 1.1 < ok["head_size"] / REFERENCE_HEAD_SIZE < 1.3 and ok["near_face_scale"] > 1.08
    for kind, axis, mm in (("forward into the air", 1, -25.0), ("down into the neck", 2, 25.0)):
        move = np.eye(4)
        move[axis, 3] = mm * SCALE
        bad = _qc(data, aff, s2t, centre, move)
        assert not bad["passed"] and not bad["checks"]["face_removed"], (kind, bad["checks"], bad["face_near_removed"])
    pitch = np.eye(4)
    pitch[:3, :3] = _rotation(30.0, 0.0, 0.0)
    bad = _qc(data, aff, s2t, centre, pitch)
    assert not bad["passed"], bad["checks"]
