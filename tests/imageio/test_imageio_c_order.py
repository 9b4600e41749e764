"""``c_order`` gives exactly ``np.ascontiguousarray``'s array (values, dtype, C order) for every memory layout a
reoriented volume has: Fortran order, flips (negative strides), axis permutations, and each cast the template
read makes; and the real template's three maps equal the plain conversion."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedimg.imageio.volume import c_order, from_canonical, to_canonical


def _layouts(rng):
    base = rng.normal(0, 300, (7, 9, 11))
    for order, perm, flips in itertools.product("CF", itertools.permutations(range(3)), ((), (0,), (1, 2), (0, 1, 2))):
        arr = np.asarray(base, order=order).transpose(perm)
        yield np.flip(arr, flips) if flips else arr


@pytest.mark.parametrize("src, dst", [(np.float64, np.float32), (np.int16, np.float32), (np.uint8, np.float32),
                                      (np.float32, None), (bool, None), (bool, np.float32), (np.int16, None)])
def test_same_array_as_ascontiguousarray(src, dst):
    rng = np.random.default_rng(541)
    for arr in _layouts(rng):
        arr = arr.astype(src) if src is not bool else arr > 0
        got, want = c_order(arr, dst), np.ascontiguousarray(arr, dtype=dst)
        assert got.flags.c_contiguous and got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want, equal_nan=True)


def test_already_c_ordered_is_not_copied_and_other_ranks_fall_back():
    a = np.zeros((3, 4, 5), np.float32)
    assert c_order(a) is a
    f = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    assert np.array_equal(c_order(f, np.float32), np.ascontiguousarray(f, dtype=np.float32))
    assert c_order(np.zeros((0, 3, 2), np.int16, order="F"), np.float32).shape == (0, 3, 2)


def test_canonical_round_trip_of_a_fortran_volume():
    rng = np.random.default_rng(542)
    raw = np.asfortranarray(rng.integers(0, 1000, (6, 8, 5)).astype(np.int16))
    affine = np.array([[0, 0, -1.0, 10], [-1.0, 0, 0, 5], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    can, _ = to_canonical(raw, affine)
    import nibabel.orientations as nio

    from fedimg.imageio.volume import _orientation

    assert np.array_equal(can, np.ascontiguousarray(nio.apply_orientation(raw, _orientation(affine))))

    class _Vol:
        pass

    vol = _Vol()
    vol.affine = affine
    assert np.array_equal(from_canonical(vol, can), raw)


def test_template_maps_equal_the_plain_conversion():
    from fedimg.deface.template import BRAIN_PROTECT_NAME, FACEMASK_NAME, TEMPLATE_NAME, _voxels, asset_path, load_template
    from fedimg.imageio.nifti import open_nifti

    t = load_template()
    want = {"intensity": np.ascontiguousarray(_voxels(open_nifti(asset_path(TEMPLATE_NAME))), dtype=np.float32),
            "face": np.ascontiguousarray(_voxels(open_nifti(asset_path(FACEMASK_NAME))) < 0.5, dtype=np.float32),
            "brain": np.ascontiguousarray(_voxels(open_nifti(asset_path(BRAIN_PROTECT_NAME))) > 0, dtype=np.float32)}
    for name, arr in want.items():
        got = getattr(t, name)
        assert got.flags.c_contiguous and got.dtype == np.float32 and np.array_equal(got, arr), name
