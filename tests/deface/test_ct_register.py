"""CT registration pieces: the tissue map, the isotropic restart that undoes a squash, the neck trim."""

from __future__ import annotations

import numpy as np

from fedimg.deface.coarse import rotation_matrix
from fedimg.deface.ct_register import _below_chin, ct_tissue, isotropic


def test_tissue_map_keeps_air_fat_soft_tissue_and_bone_apart():
    air, fat, soft, bone = ct_tissue(np.array([-1000.0, -100.0, 40.0, 1200.0]))
    assert air == 0.0 and 0.2 < fat < soft < bone <= 1.0
    assert soft - fat > 0.2 and ct_tissue(np.array([-3000.0, 5000.0])).tolist() == [0.0, 1.0]  # clipped
    assert ct_tissue(np.zeros((2, 3, 4))).dtype == np.float32


def test_isotropic_restart_keeps_rotation_and_the_brain_centre_and_undoes_a_squash():
    rot = rotation_matrix(20.0, -10.0, 30.0)
    squash = np.eye(4)
    squash[:3, :3] = rot @ np.diag([1.1, 1.0, 0.6])  # squashed along one axis (as over a neck)
    squash[:3, 3] = [5.0, -7.0, 12.0]
    centre_t = np.array([0.0, 10.0, 20.0])
    iso = isotropic(squash, centre_t)
    s = np.sqrt(1.1 * 1.0)
    assert np.allclose(iso[:3, :3], rot * s, atol=1e-9)
    p = np.linalg.solve(squash[:3, :3], centre_t - squash[:3, 3])  # the subject point squash sends to centre_t
    assert np.allclose(iso[:3, :3] @ p + iso[:3, 3], centre_t)
    rigid = np.eye(4)
    rigid[:3, :3] = 1.05 * rot
    assert np.allclose(isotropic(rigid, centre_t), rigid)  # identity on a similarity transform


def test_below_chin_follows_the_template_z_of_each_voxel():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    m = np.eye(4)
    m[2, 3] = -10.0  # template z = subject z - 10
    cut = _below_chin((3, 3, 10), aff, m, chin_z=0.0)
    assert cut[:, :, :5].all() and not cut[:, :, 5:].any()  # subject z < 10 mm, i.e. voxels 0-4
    turned = np.eye(4)
    turned[:3, :3] = rotation_matrix(0.0, 90.0, 0.0)  # subject x becomes template -z
    cut = _below_chin((4, 2, 2), aff, turned, chin_z=-3.0)
    assert not cut[:2].any() and cut[2:].all()  # x = 4, 6 mm lie below template z = -3
