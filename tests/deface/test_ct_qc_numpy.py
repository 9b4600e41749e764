"""CT QC without torch: the numpy block pooling and placed template brain equal what torch computed
(the maximum exactly, the mean and the placed brain to float32 rounding), on random grids and the real CT."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface.ct_qc import _placed_brain, _pool
from fedimg.deface.template import load_template
from fedimg.imageio.volume import to_canonical

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
CT = MRI / "vtkjs_headsq_CT.nii.gz"
S2T = np.array(json.loads((MRI / "ct_registration.json").read_text())["subject_to_template"][CT.name])


def _torch_pool(image, st, how):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    pool = F.max_pool3d if how == "max" else F.avg_pool3d
    return pool(t, kernel_size=st, stride=st, ceil_mode=True)[0, 0].numpy()


def _torch_placed(template, shape, affine, s2t):
    torch = pytest.importorskip("torch")
    m = np.linalg.inv(template.affine) @ s2t @ affine
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    grid = ((idx @ m[:3, :3].T + m[:3, 3]) * 2.0 / (np.array(template.brain.shape) - 1.0) - 1.0)[..., ::-1]
    out = torch.nn.functional.grid_sample(torch.as_tensor(template.brain)[None, None],
                                          torch.as_tensor(grid.astype(np.float32).copy())[None], align_corners=True)
    return out[0, 0].numpy() > 0.5


@pytest.mark.parametrize("shape,st", [((9, 10, 11), (2, 2, 2)), ((16, 7, 5), (3, 1, 2)), ((8, 8, 8), (1, 1, 1)),
                                      ((13, 6, 9), (4, 3, 2))])
def test_pool_matches_torch_ceil_mode(shape, st):
    img = np.random.default_rng(sum(shape)).normal(0.0, 300.0, shape).astype(np.float32) - 500.0
    np.testing.assert_array_equal(_pool(img, st, "max"), _torch_pool(img, st, "max"))
    mean = _pool(img, st, "mean")
    assert mean.dtype == np.float32 and mean.shape == _torch_pool(img, st, "mean").shape
    np.testing.assert_allclose(mean, _torch_pool(img, st, "mean"), rtol=1e-5, atol=1e-3)


def test_pool_by_hand():
    img = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    top = _pool(img, (2, 2, 2), "max")
    assert top.shape == (2, 2, 2) and top[0, 0, 0] == 13.0 and top[1, 1, 1] == 26.0  # the edge block holds one voxel
    assert _pool(img, (2, 2, 2), "mean")[1, 1, 1] == 26.0


def test_placed_brain_matches_torch_on_the_real_ct():
    img = nib.load(str(CT))
    can, aff = to_canonical(np.asarray(img.dataobj).astype(np.float32), img.affine)
    t = load_template()
    ours, theirs = _placed_brain(t, can.shape, aff, S2T), _torch_placed(t, can.shape, aff, S2T)
    assert ours.sum() > 1000  # the brain is placed in the field of view
    assert int((ours != theirs).sum()) <= max(2, ours.sum() // 100000)  # float32 placement: a voxel at most on the 0.5 edge
