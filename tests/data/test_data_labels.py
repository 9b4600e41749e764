"""Label conventions: every layout maps to TC / WT / ET, and back for predict."""

import numpy as np
import pytest

from fedimg.data import LABEL_VALUES, labels_to_regions, regions_to_brats_labels

# (layout, background, oedema, necrotic/non-enhancing, enhancing)
CODES = [("brats2021", 0, 2, 1, 4), ("brats2023", 0, 2, 1, 3), ("msd", 0, 1, 2, 3)]


@pytest.mark.parametrize("layout,bg,ed,ncr,et", CODES)
def test_regions_from_labels(layout, bg, ed, ncr, et):
    lab = np.array([bg, ed, ncr, et])
    tc, wt, etr = labels_to_regions(lab, layout).astype(int)
    assert tc.tolist() == [0, 0, 1, 1]  # core = necrotic + enhancing
    assert wt.tolist() == [0, 1, 1, 1]  # whole tumour = every tumour label
    assert etr.tolist() == [0, 0, 0, 1]
    assert LABEL_VALUES[layout] == {bg, ed, ncr, et}


@pytest.mark.parametrize("layout", ["brats2021", "brats2023", "msd"])
def test_round_trip(layout, rng):
    values = sorted(LABEL_VALUES[layout])
    lab = rng.choice(values, size=(5, 6, 7)).astype(np.uint8)
    regions = labels_to_regions(lab, layout)
    assert regions.dtype == np.uint8 and regions.shape == (3, 5, 6, 7)
    back = regions_to_brats_labels(regions.astype(bool), layout)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, lab)


def test_non_nested_predictions_prefer_inner_regions():
    # ET without TC or WT (a network can predict that) is still labelled enhancing;
    # TC without WT is necrotic.
    r = np.zeros((3, 3), bool)
    r[2, 0] = True
    r[0, 1] = True
    assert regions_to_brats_labels(r).tolist() == [4, 1, 0]
    assert regions_to_brats_labels(r, "brats2023").tolist() == [3, 1, 0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="layout"):
        labels_to_regions(np.zeros(3), "brats2019")
    with pytest.raises(ValueError, match="3 channels"):
        regions_to_brats_labels(np.zeros((2, 4)))
