"""``benchmarks/deface_corpus.py``: volpack is a scored development head with a base checked against landmarks.

The base (``BASES["volpack"]``, volpack world -> template world) was made by the masked SimpleITK registration of
``benchmarks/deface_corpus_volpack.py`` and checked by eye. Here it must carry the facial landmarks read off
volpack onto those read off the template (eye centres, nose tip, nasion within 10 mm, the reading error of a blurred
average template at 1 mm and volpack at 2 mm) and every landmark within 20 mm; the plain rotation-search base it
replaces put them 37-132 mm away. No volpack file is needed: its canonical affine is written out below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# volpack_brainsmall_T1.nii.gz in canonical (RAS) voxel order: 84x128x128, 2 mm, world = 2 * voxel + offset
VOLPACK_CANONICAL = np.array([[2.0, 0, 0, -84.0], [0, 2.0, 0, -126.0], [0, 0, 2.0, -126.0], [0, 0, 0, 1.0]])
FACE = ("eye_centre_a", "eye_centre_b", "nose_tip", "nasion")


def _landmark_errors(volpack, base: np.ndarray) -> dict[str, float]:
    from fedimg.deface.template import load_template

    ta = load_template().affine
    errors = {}
    for name, (v, t) in volpack.LANDMARKS.items():
        p = VOLPACK_CANONICAL[:3, :3] @ v + VOLPACK_CANONICAL[:3, 3]
        q = ta[:3, :3] @ t + ta[:3, 3]
        errors[name] = float(np.linalg.norm(base[:3, :3] @ p + base[:3, 3] - q))
    return errors


def test_volpack_is_a_dev_head_after_the_two_first(benchmark_script):
    corpus = benchmark_script("deface_corpus")
    # ds000031 and pycortex keep their generator streams (build seeds each head's cases by its index in the list)
    assert corpus.DEV_HEADS == ("ds000031", "pycortex", "volpack")
    assert corpus.HELD_OUT not in corpus.DEV_HEADS
    base = np.array(corpus.BASES["volpack"])
    assert base.shape == (4, 4) and np.allclose(base[3], [0, 0, 0, 1])
    assert np.linalg.det(base[:3, :3]) > 0  # proper, as volpack's header: left/right cannot be verified (RESULTS h14v)


def test_volpack_base_carries_its_landmarks_onto_the_template(benchmark_script):
    corpus = benchmark_script("deface_corpus")
    volpack = benchmark_script("deface_corpus_volpack")
    errors = _landmark_errors(volpack, np.array(corpus.BASES["volpack"]))
    assert all(errors[k] <= 10.0 for k in FACE), errors
    assert max(errors.values()) <= 20.0, errors


def test_the_plain_rotation_search_base_fails_the_landmark_check(benchmark_script):
    """The check can fail: the SimpleITK rotation search's volpack base (no mask; h14v's re-run) is refused."""
    volpack = benchmark_script("deface_corpus_volpack")
    plain = np.array([[-0.4610, 0.8400, 0.2110, 7.329], [-0.5300, -0.0040, -0.9310, -11.682],
                      [-1.0190, -0.5440, 0.5050, -18.306], [0, 0, 0, 1.0]])
    errors = _landmark_errors(volpack, plain)
    assert min(errors.values()) > 20.0, errors


@pytest.mark.skipif(not Path("/work/shared/data/mri/volpack_brainsmall_T1.nii.gz").is_file(),
                    reason="volpack is in ../shared/data only")
def test_volpack_canonical_affine_is_the_files(benchmark_script):
    volpack = benchmark_script("deface_corpus_volpack")
    from _corpus import _canonical_head

    data, affine = _canonical_head(volpack.IMAGE)
    assert data.shape == (84, 128, 128)
    np.testing.assert_allclose(affine, VOLPACK_CANONICAL, atol=1e-4)
