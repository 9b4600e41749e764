"""The template in the subject's contrast (``benchmarks/_contrast_template.py``, an experiment) on hand-made phantoms.

A three-tissue phantom is the "template"; the "subject" is the same phantom with a non-monotonic
(T2-like) intensity map, placed with a known translation. The class medians read through the true
affine give back the map; NCC against the painted template ranks the true affine above a shifted one.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "_contrast_template", Path(__file__).resolve().parents[2] / "benchmarks" / "_contrast_template.py")
_CT = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_CT)
class_intensities, class_map, level_samples = _CT.class_intensities, _CT.class_map, _CT.level_samples
ncc_objective, synthetic_template = _CT.ncc_objective, _CT.synthetic_template


def _phantom(n: int = 48) -> np.ndarray:
    """Nested boxes, 6-voxel shells: air 0, skin 300, dark 60 (CSF-like), mid 180 (core)."""
    v = np.zeros((n, n, n), np.float32)
    v[4:-4, 4:-4, 4:-4] = 300.0
    v[10:-10, 10:-10, 10:-10] = 60.0
    v[16:-16, 16:-16, 16:-16] = 180.0
    return v


T2_MAP = {0.0: 0.0, 300.0: 0.5, 60.0: 1.0, 180.0: 0.3}  # the dark tissue turns bright, the bright one mid-grey


def _subject(shift_mm: float = 3.0):
    tmpl = _phantom()
    subj = np.vectorize(T2_MAP.get, otypes=[np.float32])(tmpl)
    aff = np.eye(4)
    aff[:3, 3] = shift_mm  # subject voxel i sits at world i + shift; it holds the template voxel i
    truth = np.eye(4)
    truth[:3, 3] = -shift_mm  # subject world -> template world
    return tmpl, subj, aff, truth


def test_class_map_orders_classes_by_template_intensity():
    labels = class_map(_phantom(), n_classes=3)
    assert labels[0, 0, 0] == 0  # outside the head
    assert labels[12, 12, 12] == 1 and labels[24, 24, 24] == 2 and labels[5, 5, 5] == 3  # 60 < 180 < 300
    with pytest.raises(ValueError, match="n_classes"):
        class_map(_phantom(), n_classes=0)
    with pytest.raises(ValueError, match="no positive voxel"):
        class_map(np.zeros((4, 4, 4), np.float32))


def test_class_intensities_recover_a_non_monotonic_contrast_through_the_true_affine():
    tmpl, subj, aff, truth = _subject()
    labels = class_map(tmpl, n_classes=3)
    vals = class_intensities(subj, aff, truth, labels, np.eye(4), erode_mm=1.0)
    np.testing.assert_allclose(vals, [0.0, 1.0, 0.3, 0.5], atol=1e-6)  # air, dark->bright, mid->0.3, skin->0.5


def test_class_intensities_outside_the_subject_raise():
    tmpl, subj, aff, truth = _subject()
    far = truth.copy()
    far[:3, 3] = 1000.0
    with pytest.raises(ValueError, match="field of view"):
        class_intensities(subj, aff, far, class_map(tmpl, 3), np.eye(4))


def test_ncc_against_the_synthetic_template_ranks_the_true_affine_first():
    tmpl, subj, aff, truth = _subject()
    labels = (class_map(tmpl, n_classes=3), np.eye(4))
    synth, saff = synthetic_template(subj, aff, truth, labels=labels, erode_mm=1.0)
    pts, vals = level_samples(subj, aff, mm=1.0, samples=5000)
    off = truth.copy()
    off[:3, 3] += [2.0, 0.0, 0.0]
    ncc = ncc_objective(pts, vals, synth, saff, [truth, off], mm=1.0)
    assert ncc[0] > 0.999 and ncc[0] - ncc[1] > 0.05
    # the same ranking when the template is painted through the 2 mm-off affine (what a refinement starts from)
    synth2, _ = synthetic_template(subj, aff, off, labels=labels, erode_mm=2.0)
    ncc2 = ncc_objective(pts, vals, synth2, saff, [truth, off], mm=1.0)
    assert ncc2[0] > ncc2[1]
