"""Registration maths: MI properties, config validation, recovery of a known affine (≤ 0.5 mm)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedimg.deface.register import RegistrationConfig, _mi, _rotation, downsample, register
from fedimg.deface.template import load_template
from fedimg.errors import ConfigError


def test_mi_is_highest_for_identical_intensities():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(5000, generator=g)
    shuffled = f[torch.randperm(5000, generator=g)]
    mi = _mi(torch.stack([f, 1.0 - f, shuffled]), f, 32)
    assert mi[0] > 2.0 and mi[1] > 2.0  # any one-to-one mapping is fully informative
    assert mi[2] < 0.2  # independent intensities carry ~no information
    # differentiable in the moving intensities
    m = f.clone().requires_grad_(True)
    _mi(m[None], f, 32).sum().backward()
    assert torch.isfinite(m.grad).all() and m.grad.abs().sum() > 0


def test_config_validation_and_presets():
    with pytest.raises(ConfigError):
        RegistrationConfig(levels_mm=(4.0,), iterations=(10, 10))
    with pytest.raises(ConfigError):
        RegistrationConfig(starts=0)
    with pytest.raises(ConfigError):
        RegistrationConfig.preset("slow")
    assert RegistrationConfig.preset("fast").starts < RegistrationConfig().starts


def test_downsample_keeps_world_positions():
    t = torch.arange(8 * 8 * 8, dtype=torch.float32).reshape(8, 8, 8)
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    small, saff = downsample(t, aff, 2.0)
    assert small.shape == (4, 4, 4)
    # voxel (0,0,0) of the small grid is the mean of the 2x2x2 block centred at world (0.5, 0.5, 0.5)
    assert np.allclose(saff @ [0, 0, 0, 1], [0.5, 0.5, 0.5, 1])
    assert float(small[0, 0, 0]) == float(t[:2, :2, :2].mean())


def _rms_error(est: np.ndarray, truth: np.ndarray, points: np.ndarray) -> float:
    d = points @ (est[:3, :3] - truth[:3, :3]).T + (est[:3, 3] - truth[:3, 3])
    return float(np.sqrt((d**2).sum(1).mean()))


def test_recovers_known_affine_within_half_a_millimetre():
    """Template registered to a perturbed copy of itself (rotation, shift, scale, shear)."""
    t = load_template()
    perturb = np.eye(4)
    perturb[:3, :3] = _rotation(6.0, -4.0, 3.0) @ np.array([[1.03, 0.02, 0], [0, 0.98, 0], [0, 0, 1.02]])
    perturb[:3, 3] = [4.0, -3.0, 5.0]
    # the subject is the template's voxels placed in the world by perturb @ template_affine
    subject_affine = perturb @ t.affine
    config = RegistrationConfig(levels_mm=(4.0, 2.0), iterations=(60, 80), starts=4, samples=6000, eval_samples=20000)
    reg = register(t.intensity, subject_affine, t.intensity, t.affine, config=config)
    truth = np.linalg.inv(perturb)  # subject world -> template world
    head = np.argwhere(t.intensity[::4, ::4, ::4] > 50) * 4.0
    points = np.c_[head, np.ones(len(head))] @ subject_affine.T
    err = _rms_error(reg.subject_to_template, truth, points[:, :3])
    assert err <= 0.5, f"RMS error {err:.2f} mm"
    assert reg.loss < reg.second_loss + 1e-6


def test_multistart_recovers_a_40_degree_tilt():
    """A head pitched by 40 degrees: the batched starts find it (one identity start would not need to)."""
    t = load_template()
    tilt = np.eye(4)
    tilt[:3, :3] = _rotation(40.0, 0.0, 0.0)
    subject_affine = tilt @ t.affine
    reg = register(t.intensity, subject_affine, t.intensity, t.affine, config=RegistrationConfig.preset("fast"))
    head = np.argwhere(t.intensity[::6, ::6, ::6] > 50) * 6.0
    points = (np.c_[head, np.ones(len(head))] @ subject_affine.T)[:, :3]
    assert _rms_error(reg.subject_to_template, np.linalg.inv(tilt), points) < 2.0
    assert math.isclose(abs(reg.start[0]), 40.0) or math.isclose(abs(reg.start[0]), 20.0)


def test_gradient_fields_see_edges_in_world_space_whatever_the_contrast():
    from fedimg.deface.mi import gradient_fields, world_gradient

    aff = np.eye(4)
    aff[:3, :3] = _rotation(0.0, 0.0, 30.0) @ np.diag([1.0, 2.0, 3.0])  # turned, anisotropic voxels
    idx = np.stack(np.meshgrid(*[np.arange(8.0)] * 3, indexing="ij"), -1)
    ramp = torch.as_tensor((idx @ aff[:3, :3].T)[..., 0], dtype=torch.float32)  # f = world x
    g = world_gradient(ramp, aff)
    assert torch.allclose(g[:, 2:-2, 2:-2, 2:-2].mean((1, 2, 3)), torch.tensor([1.0, 0.0, 0.0]), atol=1e-4)
    gf = g.reshape(3, -1).T
    turned = torch.tensor([[0.0, 1.0, 0.0]]).expand_as(gf)
    v = gradient_fields(torch.stack([-gf, turned]), gf, 0.01, 0.01)  # inverted contrast vs an edge turned 90 deg
    assert v[0] > 0.99 and v[1] < 0.01


def test_ngf_weight_is_validated_and_the_preset_carries_it():
    with pytest.raises(ConfigError):
        RegistrationConfig(ngf_weight=-1.0)
    assert RegistrationConfig.preset("fast").ngf_weight == RegistrationConfig.preset("default").ngf_weight
