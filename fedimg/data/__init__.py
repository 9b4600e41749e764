"""Data: find cases (BraTS 2021 / 2023 folders, MSD Task01), load and validate them,
map labels to the TC / WT / ET regions, and synthesise a multi-site BraTS-like data set.

>>> import numpy as np
>>> from fedimg.data import discover, labels_to_regions, load_case
>>> labels_to_regions(np.array([0, 1, 2, 4], np.uint8)).tolist()    # TC, WT, ET of BraTS 2021 labels
[[0, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1]]
>>> arrays = load_case(discover("data/site-1")[0])           # doctest: +SKIP
>>> arrays.image.shape, arrays.regions.shape                 # doctest: +SKIP
((4, 88, 128, 112), (3, 88, 128, 112))
"""

from __future__ import annotations

from fedimg.data.discover import MODALITIES, MSD_CHANNELS, Case, discover
from fedimg.data.labels import LABEL_VALUES, LAYOUTS, REGIONS, labels_to_regions, regions_to_brats_labels
from fedimg.data.load import CaseArrays, load_case

__all__ = [
    "Case",
    "CaseArrays",
    "LABEL_VALUES",
    "LAYOUTS",
    "MODALITIES",
    "MSD_CHANNELS",
    "REGIONS",
    "discover",
    "labels_to_regions",
    "load_case",
    "regions_to_brats_labels",
    "synthesize",
]


def synthesize(*args, **kwargs):
    """Write a synthetic multi-site BraTS 2021-layout data set; see :mod:`fedimg.data.synth`."""
    from fedimg.data.synth import synthesize as _synthesize

    return _synthesize(*args, **kwargs)
