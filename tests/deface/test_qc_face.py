"""QC's head-outline face placement on a real head with PD-like contrast: a tilted removal the
other checks pass is refused, the correct one passes (``fedimg.deface.qc_face``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface import face_removal
from fedimg.deface.brainmask import estimate_brain
from fedimg.deface.coarse import Candidate
from fedimg.deface.qc import QCThresholds, check_removal
from fedimg.deface.qc_face import MAX_TURN_DEG, face_shape_dice, head_shape_pose, turn_deg, upright
from fedimg.deface.register import Registration, _rotation
from fedimg.errors import ConfigError
from fedimg.imageio.volume import to_canonical

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
S2T = json.loads((MRI / "registrations.json").read_text())["subject_to_template"]["ds000031_sub-01_ses-006_run-001_T1w.nii.gz"]
PD = (0.0, 0.05, 0.8, 0.78, 0.66, 0.9)  # benchmarks/deface_corpus.py's PD-like map of T1 intensities


def _pd_head(head_2mm):
    img = nib.load(str(head_2mm))
    data = np.asarray(img.dataobj, dtype=np.float32)
    hi = np.percentile(data[data > 0], 99)
    x = np.interp(np.clip(data / hi, 0, 1.3), (0.0, 0.08, 0.25, 0.5, 0.7, 1.0, 1.3), PD + (PD[-1] * 1.1,))
    return (x * 1000).astype(np.float32), img.affine


def _qc(x, aff, s2t, est):
    reg = Registration(subject_to_template=s2t, loss=-0.6, second_loss=-0.5, agreement_mm=0.0, start=(0.0, 0.0, 0.0),
                       seconds=0.0, losses=())
    return check_removal(x, aff, face_removal(x, aff, registration=reg), QCThresholds(), estimate=est)


def test_a_tilted_removal_that_passed_every_other_check_is_refused(head_2mm):
    x, aff = _pd_head(head_2mm)
    est = estimate_brain(*to_canonical(x, aff))
    ok = _qc(x, aff, np.asarray(S2T), est)
    assert ok["passed"], ok["failures"]
    assert ok["face_shape_dice"] >= 0.8
    centre = np.eye(4)
    centre[:3, 3] = (aff @ np.r_[(np.array(x.shape) - 1) / 2.0, 1.0])[:3]
    tilt = np.eye(4)
    tilt[:3, :3] = _rotation(18.0, 0.0, 0.0)  # about the image centre: ~28 % of the correct removal lost
    bad = _qc(x, aff, np.asarray(S2T) @ centre @ tilt @ np.linalg.inv(centre), est)
    others = {k: v for k, v in bad["checks"].items() if k != "face_matches_head_shape"}
    assert all(others.values()), others  # the checks before this one pass it ...
    assert not bad["checks"]["face_matches_head_shape"] and not bad["passed"]  # ... this one does not
    assert any("head's outline" in f for f in bad["failures"])


def test_head_shape_placement_needs_candidates_and_improves_on_a_poor_start(head_2mm):
    x, aff = _pd_head(head_2mm)
    can, can_aff = to_canonical(x, aff)
    assert head_shape_pose(can, can_aff, ()) is None and face_shape_dice(can, can_aff, can > 0, ()) is None
    reg = Registration(subject_to_template=np.asarray(S2T), loss=-0.6, second_loss=-0.5, agreement_mm=0.0,
                       start=(0.0, 0.0, 0.0), seconds=0.0, losses=())
    correct, _ = to_canonical(face_removal(x, aff, registration=reg).remove, aff)
    off = np.eye(4)  # a start 15 degrees and 10 mm off the correct registration
    off[:3, :3] = _rotation(15.0, 0.0, 0.0)
    off[2, 3] = 10.0
    start = Candidate(matrix=np.asarray(S2T) @ off, dice=0.9)
    from_start = face_shape_dice(can, can_aff, correct, (dataclasses.replace(start),))
    moved = dataclasses.replace(reg, subject_to_template=start.matrix)
    start_only, _ = to_canonical(face_removal(x, aff, registration=moved).remove, aff)
    from fedimg.deface.qc_face import removal_dice

    before = removal_dice(correct, start_only)
    assert from_start > before + 0.1, (before, from_start)  # the head-mask fit comes back towards the face


def _template_shift(s2t: np.ndarray, shift_mm) -> np.ndarray:
    """``s2t`` followed by a shift in template space (template axes are the head's own: +y anterior)."""
    m = np.eye(4)
    m[:3, 3] = shift_mm
    return m @ s2t


def test_a_removal_slid_forward_that_keeps_a_quarter_of_the_face_is_refused(head_2mm):
    """The correct removal slid 12 mm forward (the template's face region placed 12 mm in front of
    the face): a quarter of the correct removal stays, no brain is touched, and every check before
    ``face_covered`` passes it; the head-outline placement's face tissue is then mostly kept."""
    x, aff = _pd_head(head_2mm)
    can, can_aff = to_canonical(x, aff)
    est = estimate_brain(can, can_aff)
    s2t = np.asarray(S2T)
    ok = _qc(x, aff, s2t, est)
    assert ok["passed"], ok["failures"]
    assert ok["face_shape_recall"] >= QCThresholds().min_face_shape_recall + 0.1
    reg = Registration(subject_to_template=s2t, loss=-0.6, second_loss=-0.5, agreement_mm=0.0, start=(0.0, 0.0, 0.0),
                       seconds=0.0, losses=())
    correct = face_removal(x, aff, registration=reg).remove
    slid = _template_shift(s2t, (0.0, -12.0, 0.0))
    moved = face_removal(x, aff, registration=dataclasses.replace(reg, subject_to_template=slid)).remove
    kept = 1.0 - float((moved & correct).sum()) / float(correct.sum())
    assert 0.2 <= kept <= 0.3, kept
    bad = _qc(x, aff, slid, est)
    others = {k: v for k, v in bad["checks"].items() if k != "face_covered"}
    assert all(others.values()), others  # every other check passes it ...
    assert not bad["checks"]["face_covered"] and not bad["passed"]  # ... this one does not
    assert any("part of the face is kept" in f for f in bad["failures"])


def test_turned_over_head_shape_placements_are_not_used_unless_none_is_upright():
    up = Candidate(matrix=_rotation(20.0, -15.0, 10.0), dice=0.90)
    over = Candidate(matrix=np.diag([1.0, -1.0, -1.0, 1.0]), dice=0.91)  # upside down: 180 degrees
    assert turn_deg(up.matrix) < MAX_TURN_DEG < turn_deg(over.matrix)
    assert [c is up for c in upright([over, up])] == [True]
    assert [c is over for c in upright([over])] == [True]  # a header that turns the head over: all are kept
    with pytest.raises(ConfigError):
        QCThresholds(min_face_shape_recall=1.5)
