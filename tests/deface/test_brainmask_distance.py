"""``BrainEstimate.head_brain_distance``: the full 2 mm brain distance map's values on every cell of the head's box
(so on every head cell, where QC reads it), computed in that box only; inf outside it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface.brainmask import BrainEstimate, estimate_brain
from fedimg.deface.morph import bounding_box
from fedimg.imageio.volume import to_canonical

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"


def _check(est: BrainEstimate) -> None:
    full, near = est.brain_distance, est.head_brain_distance
    box = bounding_box(est.head | est.brain)
    assert np.array_equal(near[box], full[box])  # bit for bit, not to a tolerance
    assert np.array_equal(near[est.head], full[est.head])
    outside = np.ones(near.shape, bool)
    outside[box] = False
    assert np.isinf(near[outside]).all()


@pytest.mark.parametrize("name", ["ds000031_sub-01_ses-006_run-001_T1w.nii.gz", "pycortex_S1_T1w_2mm.nii.gz"])
def test_head_box_distance_equals_the_full_map_on_real_heads(name):
    img = nib.load(str(MRI / name))
    can, aff = to_canonical(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    est = estimate_brain(can, aff)
    assert est.brain.any() and est.head.any()
    _check(est)
    brain = est.brain.copy()  # a brain reaching the head's edge (as a head-shape core may) and a one-cell brain
    brain[tuple(np.argwhere(est.head)[0])] = True
    _check(dataclasses.replace(est, brain=brain))
    single = np.zeros_like(est.brain)
    single[tuple(np.argwhere(est.brain)[len(np.argwhere(est.brain)) // 2])] = True
    _check(dataclasses.replace(est, brain=single))


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.8, 1.875, 1.875), (2.0, 2.0, 5.0), (3.5, 2.4, 2.4)])
def test_head_box_distance_on_anisotropic_cells(spacing):
    rng = np.random.default_rng(7)
    zz, yy, xx = np.mgrid[:30, :34, :28]
    head = ((zz - 16) / 13.0) ** 2 + ((yy - 17) / 14.0) ** 2 + ((xx - 14) / 11.0) ** 2 < 1
    brain = head & (((zz - 15) / 8.0) ** 2 + ((yy - 15) / 9.0) ** 2 + ((xx - 14) / 7.0) ** 2 < 1)
    brain &= rng.random(brain.shape) < 0.97
    sp = np.array(spacing)
    _check(BrainEstimate(head=head, brain=brain, step=(2, 2, 2), cell_ml=float(np.prod(sp)) / 1000, cell_spacing=sp,
                         cell_affine=np.diag([*sp, 1.0]), reference=1.0))
