"""The removal margin (``removal_mask(..., margin_mm=...)``): grows the removal, never into the protection."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from fedimg.deface.core import DefaceConfig
from fedimg.deface.masks import removal_mask, warp_template_maps
from fedimg.deface.template import load_template
from fedimg.errors import ConfigError

# ds000031's subject-world -> template-world affine by the SimpleITK peer (benchmarks/deface_corpus.py BASES)
DS000031_TO_TEMPLATE = np.array([
    [0.9810091548213399, 0.041298495275858896, 0.06176663831955797, -3.873284817606776],
    [-0.05831297305878957, 0.9111272523817661, 0.1421951184983943, 15.598845915551479],
    [-0.0648982754742266, -0.13766475231996986, 0.9063370979853298, -5.456339698302898], [0, 0, 0, 1]])


def test_margin_on_a_tiny_grid_grows_by_the_ball_and_stops_at_the_protection():
    face = np.zeros((9, 9, 9), np.float32)
    face[4, 4, 4] = 1.0
    brain = np.zeros_like(face)
    brain[5:] = 1.0  # everything at x >= 5 is protected
    remove0, protected = removal_mask(face, brain)
    remove1, _ = removal_mask(face, brain, margin_mm=1.0, spacing=(1.0, 1.0, 1.0))
    assert int(remove0.sum()) == 1
    # the 6 face neighbours at 1 mm, less the one at x = 5 (protected)
    assert int(remove1.sum()) == 6 and not (remove1 & protected).any() and remove1[4, 4, 4]
    # anisotropic voxels: a 2 mm margin reaches one 2 mm voxel along z only
    remove2, _ = removal_mask(face, np.zeros_like(face), margin_mm=2.0, spacing=(4.0, 4.0, 2.0))
    assert sorted(map(tuple, np.argwhere(remove2))) == [(4, 4, 3), (4, 4, 4), (4, 4, 5)]


def test_margin_on_the_real_head_contains_the_removal_and_never_enters_the_protection(head_2mm, make_blob):
    img = nib.load(str(head_2mm))
    shape, aff = img.shape, img.affine
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(0))
    face, brain = warp_template_maps(load_template(), shape, aff, DS000031_TO_TEMPLATE)
    label = make_blob(shape, aff) != 0
    remove0, protected = removal_mask(face, brain, label)
    assert remove0.sum() > 10_000 and label.any()
    for margin in (2.0, 4.0):
        grown, prot = removal_mask(face, brain, label, margin_mm=margin, spacing=spacing)
        assert np.array_equal(prot, protected)
        assert not (grown & protected).any() and not (grown & label).any()
        assert (grown | remove0).sum() == grown.sum()  # contains the unmargined removal
        assert grown.sum() > remove0.sum() * 1.05
    assert np.array_equal(removal_mask(face, brain, label, margin_mm=0.0, spacing=spacing)[0], remove0)


def test_negative_margin_is_refused():
    with pytest.raises(ConfigError, match="removal_margin_mm"):
        DefaceConfig(removal_margin_mm=-1.0)
