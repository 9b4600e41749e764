"""Tail averaging of the final level's iterates and the face-weighted refinement's guards (h12r)."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.deface.register import RegistrationConfig, _tail_from, register
from fedimg.deface.register_face import face_region_mm, is_shipped_template, refine_face
from fedimg.deface.template import load_template, template_intensity
from fedimg.errors import ConfigError


def test_tail_window_is_the_final_levels_last_part_only():
    cfg = RegistrationConfig(levels_mm=(4.0, 2.0), iterations=(70, 40), tail_average=0.5)
    assert _tail_from(cfg, 0, 70) == 70  # no averaging before the final level
    assert _tail_from(cfg, 1, 40) == 20
    assert _tail_from(RegistrationConfig(), 1, 40) == 40  # off by default
    one = RegistrationConfig(levels_mm=(2.0,), iterations=(30,), tail_average=0.9)
    assert _tail_from(one, 0, 30) == 11  # a single level: never before the first-level pruning (iteration 10)
    with pytest.raises(ConfigError):
        RegistrationConfig(tail_average=1.0)
    with pytest.raises(ConfigError):
        RegistrationConfig(face_iterations=-1)


def _shifted_template(shift):
    t = load_template()
    moved = np.eye(4)
    moved[:3, 3] = shift
    return t, moved @ t.affine


def test_tail_average_changes_the_result_but_keeps_it_on_the_optimum():
    """The template against a shifted copy of itself: both settings recover the shift; the averaged one differs."""
    t, subject_affine = _shifted_template([3.0, -2.0, 4.0])
    base = dict(levels_mm=(4.0,), iterations=(30,), starts=1, keep=1, prune_to=1, samples=2000, eval_samples=4000)
    plain = register(t.intensity, subject_affine, t.intensity, t.affine, config=RegistrationConfig(**base))
    tail = register(t.intensity, subject_affine, t.intensity, t.affine,
                    config=RegistrationConfig(**base, tail_average=0.5))
    assert not np.allclose(plain.subject_to_template, tail.subject_to_template)
    head = np.argwhere(t.intensity[::6, ::6, ::6] > 50) * 6.0
    pts = head @ subject_affine[:3, :3].T + subject_affine[:3, 3]
    for reg in (plain, tail):  # subject world -> template world undoes the shift: p - (3, -2, 4)
        m = reg.subject_to_template
        err = pts @ m[:3, :3].T + m[:3, 3] - (pts - [3.0, -2.0, 4.0])
        assert float(np.sqrt((err ** 2).sum(1).mean())) < 1.0


def test_face_refinement_only_on_the_shipped_template_grid():
    ti, ta = template_intensity()
    assert is_shipped_template(ti, ta)
    assert not is_shipped_template(ti[::2], ta)
    region = face_region_mm(25.0)
    assert region.shape == load_template().face.shape and region.sum() > (load_template().face > 0.5).sum()


def test_face_refinement_refused_when_the_brain_region_would_move():
    """A zero bound on the brain region's movement: the global result comes back unchanged; a loose one takes the fit."""
    t, subject_affine = _shifted_template([2.0, 0.0, 0.0])
    cfg = RegistrationConfig(levels_mm=(4.0,), iterations=(10,), starts=1, keep=1, prune_to=1, samples=2000,
                             eval_samples=4000, face_iterations=10, face_max_brain_mm=0.0)
    glob = register(t.intensity, subject_affine, t.intensity, t.affine,
                    config=RegistrationConfig(**{**cfg.__dict__, "face_iterations": 0}))
    out = refine_face(t.intensity, subject_affine, t.intensity, t.affine, glob, cfg)
    assert out is glob
    loose = RegistrationConfig(**{**cfg.__dict__, "face_max_brain_mm": 50.0})
    taken = refine_face(t.intensity, subject_affine, t.intensity, t.affine, glob, loose)
    assert taken is not glob and not np.allclose(taken.subject_to_template, glob.subject_to_template)
