"""QC on a real head with receive-coil shading (eighth wave, h11o): a leaking brain estimate is cut, not thrown away.

The real ds000031 T1 at 2 mm, mapped to the corpus's T2-like contrast and shaded as an
unnormalised receive array leaves it (``benchmarks/deface_corpus.py build --archive``: gain
``1 + 0.8 (r / R)^2``, brighter towards the head's surface). The image's brain estimate then
leaks a little past the placed brain (about 30 mL more than 10 mm outside it); QC keeps the
estimate less that leak (``brain_source`` "image, trimmed") instead of the eroded head-shape
core. It must pass the correct registration and still fail the wrong ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface import face_removal
from fedimg.deface.qc import QCThresholds, _warp_core, check_removal
from fedimg.deface.register import Registration, _rotation
from fedimg.deface.template import load_template

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
T2 = ((0.0, 0.08, 0.25, 0.5, 0.7, 1.0, 1.3), (0.0, 0.05, 1.0, 0.6, 0.42, 0.75, 0.825))  # benchmarks/_corpus.py


def _shaded_t2(head_2mm: Path, coil: float = 0.8):
    img = nib.load(str(head_2mm))
    d = np.asarray(img.dataobj).astype(np.float32)
    aff = img.affine
    hi = np.percentile(d[d > 0], 99)
    world = np.indices(d.shape).reshape(3, -1).T @ aff[:3, :3].T + aff[:3, 3]
    head = (d > 0.1 * hi).ravel()
    centre = world[head].mean(0)
    radius = np.percentile(np.linalg.norm(world[head] - centre, axis=1), 90)
    r = (np.linalg.norm(world - centre, axis=1) / radius).reshape(d.shape)
    x = np.interp(np.clip(d / hi, 0, 1.3), *T2) * (1 + coil * np.clip(r, 0, 1.3) ** 2)
    return (x * 1000).astype(np.float32), aff


def _qc(image, aff, s2t, move: np.ndarray) -> dict:
    centre = np.eye(4)
    centre[:3, 3] = (aff @ np.r_[(np.array(image.shape) - 1) / 2.0, 1.0])[:3]
    reg = Registration(subject_to_template=np.asarray(s2t) @ centre @ move @ np.linalg.inv(centre), loss=-0.6,
                       second_loss=-0.5, agreement_mm=0.0, start=(0.0, 0.0, 0.0), seconds=0.0, losses=())
    return check_removal(image, aff, face_removal(image, aff, registration=reg), QCThresholds())


def _move(pitch=0.0, yaw=0.0, shift=(0.0, 0.0, 0.0), flip_ap=False) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = _rotation(pitch, 0.0, yaw)
    m[:3, 3] = shift
    if flip_ap:
        m[1, 1] = -1.0
    return m


@pytest.mark.slow
def test_coil_shaded_t2_head_keeps_its_trimmed_brain_passes_correct_and_fails_wrong(head_2mm):
    from fedimg.deface.brainmask import estimate_brain
    from fedimg.deface.qc import head_shape_brain
    from fedimg.imageio.volume import to_canonical

    image, aff = _shaded_t2(head_2mm)
    s2t = json.loads((MRI / "registrations.json").read_text())["subject_to_template"]["ds000031_sub-01_ses-006_run-001_T1w.nii.gz"]
    can, caff = to_canonical(image, aff)
    est = head_shape_brain(can, caff, estimate_brain(can, caff))
    assert est.source == "image, trimmed"
    placed = _warp_core(load_template(), est.head.shape, est.cell_affine, np.asarray(s2t))  # by the correct registration
    assert (est.brain & placed).sum() >= 0.97 * est.brain.sum()  # what is left of the estimate is inside the brain mask
    ok = _qc(image, aff, s2t, np.eye(4))
    assert ok["passed"], ok["failures"]
    assert ok["brain_source"] == "image, trimmed" and ok["brain_removed_ml"] == 0.0 and ok["removal_offset_mm"] < 5.0
    wrong = {"pitch+30": _move(pitch=30.0), "yaw+30": _move(yaw=30.0), "shifty-25": _move(shift=(0.0, -25.0, 0.0)),
             "flipAP": _move(flip_ap=True)}
    for kind, move in wrong.items():
        bad = _qc(image, aff, s2t, move)
        assert not bad["passed"], (kind, bad["checks"])
    # not caught, before this change (head-shape core) or after: the face region slid 25 mm down (shiftz+25)
