"""The acquired field of view (:func:`fedimg.deface.coarse.acquired_fov`) on real heads.

A masked real head's exact-0 background is air and must keep the whole grid; the exact-0 fill
of an oblique cut (an oblique slab resampled onto the axes) is not acquired, and the MI
registration must not read it as "air where the template has face" (issue 11, h11k).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface.brainmask import estimate_brain
from fedimg.deface.coarse import acquired_fov, block_mean, padding_cells
from fedimg.imageio.volume import to_canonical

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
HEAD = MRI / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz"


def _canonical(path):
    img = nib.load(str(path))
    return to_canonical(np.asarray(img.dataobj, dtype=np.float32), img.affine.astype(np.float64))


def _below(shape, affine, centre, deg: float, height: float) -> np.ndarray:
    """Voxels below an oblique plane (pitched ``deg`` nose down, ``height`` mm from ``centre``)."""
    p = np.indices(shape).reshape(3, -1).T @ affine[:3, :3].T + affine[:3, 3]
    a = np.radians(deg)
    return ((p - centre) @ np.array([0.0, -np.sin(a), np.cos(a)]) < height).reshape(shape)


@pytest.mark.parametrize("name", ["pycortex_S1_T1w_2mm.nii.gz", HEAD.name])
def test_masked_real_heads_keep_the_whole_grid(name):
    data, aff = _canonical(MRI / name)
    for mm in (4.0, 2.0):
        small = block_mean(data, aff, mm)[0]
        assert acquired_fov(small, mm) is None
    if name.startswith("pycortex"):  # masked: 70 % of the grid is exact-0 fill, and it is air
        assert padding_cells(block_mean(data, aff, 4.0)[0]).mean() > 0.5
        assert estimate_brain(data, aff).acquired is None


def _cut_head(head_2mm, deg: float, height: float):
    img = nib.load(str(head_2mm))
    data = np.asarray(img.dataobj).astype(np.float32)
    p = np.indices(data.shape).reshape(3, -1).T @ img.affine[:3, :3].T + img.affine[:3, 3]
    centre = p[data.reshape(-1) > 100].mean(0)
    below = _below(data.shape, img.affine, centre, deg, height)
    return np.where(below, 0, data).astype(np.int16), img.affine, below


def test_an_oblique_cut_is_told_from_acquired_air(head_2mm):
    data, aff, below = _cut_head(head_2mm, 20.0, -45.0)
    small, cell_aff = block_mean(data, aff, 4.0)
    fov = acquired_fov(small, 4.0)
    assert fov is not None
    cut = block_mean(below.astype(np.float32), aff, 4.0)[0]
    assert not fov[cut == 1.0].any()  # every cell wholly beyond the cut: not acquired
    air = (cut == 0.0) & (small < 30)  # acquired air (noise above the masked-off 0) is acquired
    assert air.sum() > 1000 and fov[air].mean() > 0.97


@pytest.mark.slow
def test_registration_on_an_obliquely_cut_real_head_stays_on_the_face(head_2mm, tmp_path):
    """The face cut through the nose (15 degrees, 65 mm below the head's centre): at main 36509bd the MI
    registration, pulled by the fill, removed 15 303 voxels of the template brain (Dice 0.77 in the
    acquired part; QC refused it); sampling only acquired voxels keeps it on the face."""
    from fedimg.deface.masks import removal_mask, warp_template_maps
    from fedimg.deface.pipeline import DefaceJob, deface_job
    from fedimg.deface.template import load_template
    from fedimg.errors import QCError

    data, aff, below = _cut_head(head_2mm, 15.0, -65.0)
    src = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), str(src))
    out = tmp_path / "cut_defaced.nii.gz"
    try:
        deface_job(DefaceJob(reference=src, output=out))
        passed = True
    except QCError:
        passed = False
    record = json.loads(out.with_name("cut_defaced.qc.json").read_text())
    t = load_template()
    truth = np.array(json.loads((MRI / "registrations.json").read_text())["subject_to_template"][HEAD.name])
    ref, _ = removal_mask(*warp_template_maps(t, data.shape, aff, truth))
    got, _ = removal_mask(*warp_template_maps(t, data.shape, aff, np.array(record["subject_to_template"])))
    brain = warp_template_maps(t, data.shape, aff, truth)[1] > 0.5
    acq = ~below
    dice = 2 * (got & ref & acq).sum() / ((got & acq).sum() + (ref & acq).sum())
    assert dice > 0.9, f"removal Dice in the acquired part {dice:.3f}"
    assert int((got & brain & acq).sum()) < 1000
    if passed:  # a QC pass must be a correct removal, and the written file must carry it
        assert dice > 0.95 and (np.asarray(nib.load(str(out)).dataobj) != data).sum() > 1000
