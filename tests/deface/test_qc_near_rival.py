"""QC's near rival (fourteenth wave, h14w): a runner-up start a little worse in MI that lands on another face region.

Dev case s707 pycortex_04 (1 mm T2/FLAIR-like archive head): the two best starts' face regions overlap Dice 0.735 and
the runner-up's MI is 0.043 lower, so under the 0.02 rival gap QC passed the best start, which kept 12.6 % of the
reference face. A runner-up within ``near_rival_gap`` (0.05) whose face region overlaps less than
``near_rival_dice`` (0.75) now counts as a rival on any grid (:class:`fedimg.deface.qc.QCThresholds`).
"""

from __future__ import annotations

from fedimg.deface.qc import QCThresholds, evaluate_qc

OK = dict(mutual_information=0.4, agreement_mm=0.5, protected_changed_ml=0.0, brain_removed_ml=0.0, brain_in_head=0.98,
          removed_ml=900.0, removed_fraction=0.06, face_near_removed=0.2, removal_offset_mm=1.0, brain_estimate_ml=1200.0)


def test_a_near_runner_up_on_another_face_region_is_a_rival_on_any_grid():
    t = QCThresholds()
    near = dict(OK, start_agreement_dice=0.735, loss_gap=0.043)  # s707 pycortex_04's numbers, isotropic 1 mm
    got = evaluate_qc(near, t)
    assert not got["passed"] and not got["checks"]["start_agreement"]
    assert "two best starts disagree" in got["failures"][0]
    assert not evaluate_qc(dict(near, slice_mm=5.0), t)["checks"]["start_agreement"]


def test_clearly_worse_or_agreeing_runner_ups_still_pass():
    t = QCThresholds()
    near = dict(OK, start_agreement_dice=0.735, loss_gap=0.043)
    assert evaluate_qc(dict(near, loss_gap=0.06), t)["passed"]  # clearly worse: not a rival
    assert evaluate_qc(dict(near, start_agreement_dice=0.76), t)["passed"]  # a correct dev pass: 0.753 at 0.044
    assert evaluate_qc(dict(near, start_agreement_dice=0.0, loss_gap=0.097), t)["passed"]  # a far basin, far worse
    off = QCThresholds(near_rival_gap=0.0)  # the rule before this wave: only within 0.02 (thick slices: 0.01/mm)
    assert evaluate_qc(near, off)["passed"]
