"""``DefaceConfig.mi_fill_as_air`` (experiment h13f, issue 11): off by default; on, the MI stage gets ``fov=None``.

The real 2 mm head cut obliquely (the fill :func:`fedimg.deface.coarse.acquired_fov` finds) is handed to
``core._register_head`` with ``register`` replaced by a recorder that stops before any optimisation.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface import core
from fedimg.deface.coarse import acquired_fov, block_mean
from fedimg.imageio.volume import to_canonical


class _Stop(Exception):
    pass


def _cut_head(head_2mm, deg: float = 20.0, height: float = -45.0):
    """The head with every voxel below an oblique plane (pitched ``deg``, ``height`` mm from its centre) set to 0."""
    img = nib.load(str(head_2mm))
    data = np.asarray(img.dataobj).astype(np.float32)
    p = np.indices(data.shape).reshape(3, -1).T @ img.affine[:3, :3].T + img.affine[:3, 3]
    centre = p[data.reshape(-1) > 100].mean(0)
    a = np.radians(deg)
    below = ((p - centre) @ np.array([0.0, -np.sin(a), np.cos(a)]) < height).reshape(data.shape)
    return to_canonical(np.where(below, 0, data).astype(np.float32), img.affine.astype(np.float64))


def _fov_seen(monkeypatch, can, aff, config):
    seen = []

    def record(*args, fov=None, **kwargs):
        seen.append(fov)
        raise _Stop

    monkeypatch.setattr(core, "register", record)
    small = block_mean(can, aff, 4.0)
    with pytest.raises(_Stop):
        core._register_head(can, aff, small, "mr", config, np.sqrt((aff[:3, :3] ** 2).sum(0)), "cpu", None)
    return seen[0]


def test_off_by_default():
    assert core.DefaceConfig().mi_fill_as_air is False


def test_on_the_mi_stage_samples_every_voxel_of_a_cut_head(head_2mm, monkeypatch):
    can, aff = _cut_head(head_2mm)
    assert acquired_fov(block_mean(can, aff, 4.0)[0]) is not None  # the case has a slab
    off = _fov_seen(monkeypatch, can, aff, core.DefaceConfig(coarse=False))
    assert off is not None and not off[0].all()  # the default: the fill is left out
    assert _fov_seen(monkeypatch, can, aff, core.DefaceConfig(coarse=False, mi_fill_as_air=True)) is None
