"""Twelfth wave's exact shortcuts give the old voxels and numbers (h12s).

``morph.fill_holes`` (one labelling) against ``scipy.ndimage.binary_fill_holes`` on random masks with holes,
touching the border, empty and full; QC's ``brain_in_head`` against its scipy slice-by-slice version on a real
head; ``head_frame`` (the cells it samples found with ``flatnonzero``) against the ``argwhere`` version on the
template brain, the frame QC's placed mid-plane comes from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from fedimg.deface import brainmask as bm
from fedimg.deface.morph import fill_holes

MRI = Path(__file__).resolve().parents[1] / "assets" / "mri"


@pytest.mark.parametrize("shape", [(30, 40, 20), (5, 60, 7), (1, 9, 9), (50, 50)])
@pytest.mark.parametrize("level", [0.45, 0.5, 0.55])
def test_fill_holes_is_scipys(shape, level):
    rng = np.random.default_rng(len(shape) * 100 + int(level * 100))
    mask = ndi.gaussian_filter(rng.random(shape), 1.5) > level
    mask.flat[rng.integers(0, mask.size, mask.size // 50)] ^= True  # speckle: many one-voxel holes and islands
    want = ndi.binary_fill_holes(mask)
    got = fill_holes(mask)
    assert got.dtype == bool and got.shape == mask.shape
    assert np.array_equal(got, want)
    if level == 0.45 and len(shape) == 3 and min(shape) > 1:
        assert (want & ~mask).any()  # the case holds holes to fill


def test_fill_holes_edges():
    for mask in (np.zeros((4, 5, 6), bool), np.ones((4, 5, 6), bool)):
        assert np.array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
    shell = np.ones((7, 7, 7), bool)
    shell[2:5, 2:5, 2:5] = False
    shell[3, 3, 3] = True  # an island inside a hole inside the shell
    assert fill_holes(shell).all()
    shell[0, 3, 3] = shell[1, 3, 3] = False  # the hole opened to the border: nothing to fill
    assert np.array_equal(fill_holes(shell), shell) and np.array_equal(ndi.binary_fill_holes(shell), shell)


def _brain_in_head_scipy(canonical, affine, template, subject_to_template, step_mm=4.0):
    """QC's ``brain_in_head`` as at ``a039553``: scipy's fills, one 2-D call per slice."""
    from fedimg.deface.qc import _warp_core

    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    st = [max(1, int(round(step_mm / s))) for s in spacing]
    small = canonical[:: st[0], :: st[1], :: st[2]].astype(np.float32)
    small_aff = affine @ np.diag([*st, 1.0])
    pos = small[small > 0]
    head = small > 0.08 * np.percentile(pos, 99)
    head = ndi.binary_closing(head, iterations=2)
    head = ndi.binary_fill_holes(np.pad(head, 1, constant_values=False))[1:-1, 1:-1, 1:-1]
    for axis in range(3):
        head |= np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(head, axis, 0)], axis=axis)
    core = _warp_core(template, small.shape, small_aff, subject_to_template)
    return float((core & head).sum() / core.sum())


def test_brain_in_head_equals_the_slice_by_slice_version():
    import json

    from fedimg.deface.qc import brain_in_head
    from fedimg.deface.template import load_template
    from fedimg.imageio.volume import load_volume, to_canonical

    vol = load_volume(MRI / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz", what="image")
    can, aff = to_canonical(vol.scaled().astype(np.float32), vol.affine)
    reg = np.array(json.loads((MRI / "registrations.json").read_text())["subject_to_template"]["ds000031_sub-01_ses-006_run-001_T1w.nii.gz"])
    template = load_template()
    for step, m in ((4.0, reg), (4.0, reg @ np.diag([1.0, 1.0, 1.25, 1.0])), (2.0, reg)):  # correct, stretched
        assert brain_in_head(can, aff, template, m, step_mm=step) == _brain_in_head_scipy(can, aff, template, m, step)
    cut = can.copy()
    cut[:, :, : can.shape[2] // 2] = 0  # a field of view that cuts the skull open: the per-slice fills matter
    assert brain_in_head(cut, aff, template, reg) == _brain_in_head_scipy(cut, aff, template, reg)


def test_head_frame_samples_argwheres_cells():
    from fedimg.deface.template import load_template

    t = load_template()
    brain = t.brain > 0.5
    got = bm.head_frame(brain, t.affine)
    cells = np.argwhere(brain)  # the cells the frame used to sample (the same every len // points + 1)
    flat = np.flatnonzero(brain)[:: len(cells) // 20000 + 1]
    assert np.array_equal(np.stack(np.unravel_index(flat, brain.shape), -1), cells[:: len(cells) // 20000 + 1])
    small = brain[::4, ::4, ::4]  # fewer cells than ``points``: every one
    assert np.array_equal(np.stack(np.unravel_index(np.flatnonzero(small), small.shape), -1), np.argwhere(small))
    centre, normal, anterior = got
    assert abs(normal[0]) > 0.95 and anterior[1] > 0.9 and np.all(np.isfinite(centre))
