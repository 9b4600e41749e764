"""QC on thick 2-D slices (ninth wave, h11p): two near-equal starts that disagree are refused there.

Slabs averaged over 5-6 mm flatten the MI along the slice axis, so a start that keeps part of
the face can score within 0.021 of one that removes it (dev case s431 ds000031_07: 31 % of the
face kept, start agreement Dice 0.78). On thick slices a runner-up counts as a rival within
``slab_gap_per_mm`` per mm of slice (:class:`fedimg.deface.qc.QCThresholds`), not only 0.02.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface import face_removal
from fedimg.deface.qc import QCThresholds, check_removal, evaluate_qc
from fedimg.deface.register import Registration, _rotation

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
REG = json.loads((MRI / "registrations.json").read_text())["subject_to_template"]["ds000031_sub-01_ses-006_run-001_T1w.nii.gz"]
OK = dict(mutual_information=0.4, agreement_mm=0.5, protected_changed_ml=0.0, brain_removed_ml=0.0, brain_in_head=0.98,
          removed_ml=900.0, removed_fraction=0.06, face_near_removed=0.2, removal_offset_mm=1.0, brain_estimate_ml=1200.0)


def test_a_close_runner_up_is_a_rival_on_thick_slices_only():
    t = QCThresholds()
    close = dict(OK, start_agreement_dice=0.78, loss_gap=0.021)
    assert evaluate_qc(close, t)["passed"]  # isotropic voxels: 0.021 is clearly worse
    assert not evaluate_qc(dict(close, slice_mm=5.0), t)["checks"]["start_agreement"]
    assert evaluate_qc(dict(close, slice_mm=5.0, loss_gap=0.06), t)["passed"]  # clearly worse on 5 mm slices too
    assert evaluate_qc(dict(close, slice_mm=5.0, start_agreement_dice=0.9), t)["passed"]  # the two starts agree


def _slabs(data: np.ndarray, aff: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Average ``k`` slices along the last voxel axis (a thick 2-D acquisition of the same head)."""
    n = data.shape[2] - data.shape[2] % k
    out = data[:, :, :n].reshape(*data.shape[:2], n // k, k).mean(-1)
    shift = np.eye(4)
    shift[2, 3] = (k - 1) / 2.0
    return out.astype(np.float32), aff @ shift @ np.diag([1.0, 1.0, float(k), 1.0])


def _qc(data, aff, loss_gap: float) -> dict:
    """QC of the correct removal whose runner-up start is pitched 15 degrees, ``loss_gap`` nats worse."""
    centre = np.eye(4)
    centre[:3, 3] = (aff @ np.r_[(np.array(data.shape) - 1) / 2.0, 1.0])[:3]
    pitch = np.eye(4)
    pitch[:3, :3] = _rotation(15.0, 0.0, 0.0)
    best = np.asarray(REG)
    second = best @ centre @ pitch @ np.linalg.inv(centre)
    reg = Registration(subject_to_template=best, loss=-0.4, second_loss=-0.4 + loss_gap, agreement_mm=0.0,
                       start=(0.0, 0.0, 0.0), seconds=0.0, losses=(), candidates=(best, second))
    return check_removal(data, aff, face_removal(data, aff, registration=reg), QCThresholds())


@pytest.mark.slow
def test_thick_slice_head_refuses_near_equal_disagreeing_starts_and_passes_a_clear_best(head_2mm):
    img = nib.load(str(head_2mm))
    data, aff = np.asarray(img.dataobj).astype(np.float32), img.affine
    thick, thick_aff = _slabs(data, aff, 3)  # about 2 x 2 x 6 mm
    close = _qc(thick, thick_aff, 0.021)
    assert 5.0 < close["slice_mm"] < 6.5 and close["start_agreement_dice"] < 0.8
    assert not close["passed"] and not close["checks"]["start_agreement"], close["checks"]
    assert _qc(data, aff, 0.021)["checks"]["start_agreement"]  # 2 mm isotropic: not a thick slice
    clear = _qc(thick, thick_aff, 0.1)
    assert clear["passed"], clear["failures"]
