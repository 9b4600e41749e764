"""The template's products: the intensities alone are the same array load_template returns, every map is
in C order, and the 4 mm head mask is the coarse stage's head mask of those intensities."""

from __future__ import annotations

import threading

import numpy as np

from fedimg.deface.coarse import head_mask
from fedimg.deface.template import load_template, template_head_mask, template_intensity


def test_intensity_alone_is_the_template_array_in_c_order():
    intensity, affine = template_intensity()
    t = load_template()
    assert intensity is t.intensity and np.array_equal(affine, t.affine)
    for a in (t.intensity, t.face, t.brain):
        assert a.flags.c_contiguous and a.dtype == np.float32 and a.shape == (176, 256, 256)
    assert set(np.unique(t.face)) <= {0.0, 1.0} and 0 < t.face.mean() < 0.5


def test_head_mask_is_that_of_the_intensities():
    intensity, affine = template_intensity()
    mask, aff = template_head_mask(4.0)
    ref, ref_aff = head_mask(np.asfortranarray(intensity), affine, step_mm=4.0)  # the layout does not matter
    assert np.array_equal(mask, ref) and np.array_equal(aff, ref_aff)
    assert template_head_mask(4.0)[0] is mask  # cached


def test_products_from_two_threads_are_one_read():
    got = []
    threads = [threading.Thread(target=lambda: got.append(template_intensity()[0])) for _ in range(2)]
    threads += [threading.Thread(target=lambda: got.append(load_template().intensity))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(got) == 3 and all(g is got[0] for g in got)
