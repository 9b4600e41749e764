"""CT QC on the real head CT: the intracranial estimate, a correct removal passes, wrong ones fail, air out.

The correct subject→template affine of the CT is stored in ``tests/assets/mri/ct_registration.json``
(fedimg's CT route on the CT cut at the chin, checked by eye). A wrong registration is that one
composed with a 25 mm move back or 20 mm up (template space), a 30 degree pitch or a flipped
A-P axis about the brain: CT QC must fail each of them and pass the correct one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface.coarse import rotation_matrix
from fedimg.deface.core import DefaceConfig, face_removal
from fedimg.deface.ct_qc import ct_brain_estimate, to_hu
from fedimg.deface.qc import QCThresholds, check_removal
from fedimg.deface.register import Registration
from fedimg.errors import ConfigError
from fedimg.imageio.volume import to_canonical

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
CT = MRI / "vtkjs_headsq_CT.nii.gz"
S2T = np.array(json.loads((MRI / "ct_registration.json").read_text())["subject_to_template"][CT.name])


@pytest.fixture(scope="module")
def ct():
    img = nib.load(str(CT))
    return np.asarray(img.dataobj).astype(np.float32), img.affine


def _wrong(kind: str, centre: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    if kind == "back25":
        m[1, 3] = 25.0  # the face region moves 25 mm back, towards the brain
    elif kind == "up20":
        m[2, 3] = -20.0  # ... 20 mm up, into the anterior cranial fossa
    else:
        rot = rotation_matrix(30.0, 0.0, 0.0) if kind == "pitch30" else np.diag([1.0, -1.0, -1.0])
        c = S2T[:3, :3] @ centre + S2T[:3, 3]
        m[:3, :3] = rot
        m[:3, 3] = c - rot @ c
    return m @ S2T


def _qc(data, aff, s2t, estimate=None):
    reg = Registration(subject_to_template=s2t, loss=-0.6, second_loss=-0.5, agreement_mm=0.0, start=(0.0, 0.0, 0.0),
                       seconds=0.0, losses=())
    removal = face_removal(data, aff, registration=reg, config=DefaceConfig(modality="auto"))
    return removal, check_removal(data, aff, removal, QCThresholds(), estimate=estimate)


def test_intracranial_estimate_of_the_real_ct_is_the_same_in_hu_and_stored_values(ct):
    data, aff = ct
    can, can_aff = to_canonical(data, aff)
    est = ct_brain_estimate(can, can_aff, air=0.0)
    hu = ct_brain_estimate(can - 1024.0, can_aff, air=-1000.0)
    assert est.source == "ct" and (est.brain == hu.brain).all()
    # the field of view ends at the orbital roofs: only the lower brain (temporal lobes, cerebellum) is in it
    assert 200.0 < est.brain_ml < 400.0 and est.head_ml > 5 * est.brain_ml
    z = est.cell_world(np.argwhere(est.brain))[:, 2]
    head_z = est.cell_world(np.argwhere(est.head))[:, 2]
    assert z.min() > np.percentile(head_z, 40)  # nothing in the face or neck below the skull base
    assert float(to_hu(np.array([1064.0]), air=0.0)[0]) == 40.0 and float(to_hu(np.array([40.0]), air=-1000.0)[0]) == 40.0


@pytest.mark.parametrize("hu", [False, True])
def test_real_ct_correct_registration_passes_with_no_intracranial_voxel_removed(ct, hu):
    data, aff = ct
    data = data - 1024.0 if hu else data
    removal, rec = _qc(data, aff, S2T)
    assert removal.modality == "ct" and removal.fill_value == (-1000.0 if hu else 0.0)
    assert rec["passed"], rec["failures"]
    assert rec["brain_source"] == "ct" and rec["brain_removed_ml"] == 0.0 and rec["fill_is_air"]
    assert rec["brain_in_head"] > 0.95 and rec["face_near_removed"] > 0.2
    lo, hi = QCThresholds().ct_removed_fraction_range
    assert lo < rec["removed_fraction"] < hi
    # removing the face with 0 (not air) in an HU image is refused
    bad = check_removal(data, aff, dataclasses.replace(removal, fill_value=0.0), QCThresholds())
    assert not bad["passed"] if hu else bad["passed"]


@pytest.mark.parametrize("kind, checks", [
    ("back25", ("removed_volume",)),  # the removal slides back over the pharynx and neck
    ("up20", ("protected_untouched",)),  # into the anterior cranial fossa
    ("pitch30", ("protected_untouched", "face_removed", "removed_volume")),
    ("flipAP", ("protected_untouched", "face_removed", "removed_volume", "face_centred")),
])
def test_real_ct_wrong_registrations_fail(ct, kind, checks):
    data, aff = ct
    can, can_aff = to_canonical(data, aff)
    est = ct_brain_estimate(can, can_aff, air=0.0)
    centre = est.cell_world(np.argwhere(est.brain)).mean(0)
    _, rec = _qc(data, aff, _wrong(kind, centre), estimate=est)
    assert not rec["passed"]
    assert any(not rec["checks"][c] for c in checks), (kind, rec["failures"])


def test_ct_bounds_are_validated():
    with pytest.raises(ConfigError):
        QCThresholds(ct_removed_fraction_range=(0.2, 0.1))


def test_real_ct_registration_moved_10mm_up_is_refused_by_the_ct_tolerance(ct):
    """10 mm up removes about 0.15 mL of the intracranial estimate: under the MR limit (1 mL), which let such
    CT removals through, but over CT's own (0 mL: correct removals stay >= 4 mm away from the estimate)."""
    data, aff = ct
    can, can_aff = to_canonical(data, aff)
    est = ct_brain_estimate(can, can_aff, air=0.0)
    up = np.eye(4)
    up[2, 3] = -10.0
    removal, rec = _qc(data, aff, up @ S2T, estimate=est)
    assert not rec["passed"] and not rec["checks"]["protected_untouched"] and 0.0 < rec["brain_removed_ml"] < 1.0
    assert check_removal(data, aff, removal, QCThresholds(ct_max_brain_removed_ml=1.0), estimate=est)["passed"]


@pytest.mark.slow
def test_cli_defaces_the_whole_real_ct_neck_kept_and_fills_air(ct, tmp_path):
    """``fedimg deface`` on the whole real CT in HU (int16), 45 mm of neck below the chin kept (the template ends
    at the chin): detected as CT, QC passes, no voxel of the intracranial estimate removed, the removal is
    the stored reference's region (Dice), the fit is not squashed over the neck, removed voxels are -1000 HU,
    every other voxel is unchanged and the input is byte-identical."""
    from fedimg.cli import main
    from fedimg.deface.masks import removal_mask, warp_template_maps
    from fedimg.deface.template import load_template

    data, aff = ct
    can, can_aff = to_canonical(data, aff)
    hu = np.rint(can - 1024.0).astype(np.int16)
    src = tmp_path / "ct_hu.nii.gz"
    nib.save(nib.Nifti1Image(hu, can_aff), str(src))
    before = src.read_bytes()
    out = tmp_path / "out" / "ct_hu.nii.gz"
    # --threads 2: QC's image-only work runs in its own thread; on CT it must not hand QC the MR estimate
    assert main(["deface", str(src), "-o", str(out), "--modality", "auto", "--threads", "2"]) == 0
    rec = json.loads(out.with_name("ct_hu.qc.json").read_text())
    assert rec["passed"] and rec["modality"] == "ct" and rec["brain_removed_ml"] == 0.0
    got = np.asarray(nib.load(str(out)).dataobj)
    changed = got != hu
    assert changed.sum() > 1000 and (got[changed] == -1000).all()
    assert src.read_bytes() == before
    est = ct_brain_estimate(can, can_aff, air=0.0)
    assert not (changed & est.lookup(np.ones(can.shape, bool)).reshape(can.shape)).any()
    face, brain = warp_template_maps(load_template(), can.shape, can_aff, S2T)
    ref = removal_mask(face, brain, None)[0]
    assert 2.0 * (changed & ref).sum() / (changed.sum() + ref.sum()) > 0.8  # measured 0.92 at this commit
    sv = np.linalg.svd(np.array(rec["subject_to_template"])[:3, :3])[1]
    assert sv.max() / sv.min() < 1.3  # 1.11 at this commit (stored reference 1.10); the head-mask route: 1.19 / 0.73 = 1.63
