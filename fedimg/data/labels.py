"""Tumour label conventions of the supported layouts and the TC / WT / ET regions.

Every layout is mapped to the three standard, overlapping BraTS evaluation regions,
in this channel order:

- **TC** (tumour core) = necrotic / non-enhancing core + enhancing tumour,
- **WT** (whole tumour) = every tumour label (core + oedema),
- **ET** (enhancing tumour).

Label values per layout:

============ ============ =========== ============== ==============
layout        background   oedema      necrotic/NET   enhancing
============ ============ =========== ============== ==============
brats2021     0            2           1              4
brats2023     0            2           1              3
msd           0            1           2              3
============ ============ =========== ============== ==============

The MSD Task01_BrainTumour ``dataset.json`` says ``"labels": {"0": "background",
"1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}`` (note: oedema is 1
and the core is 2, the other way round from BraTS).

>>> import numpy as np
>>> lab = np.array([0, 1, 2, 4], dtype=np.uint8)
>>> labels_to_regions(lab, "brats2021").astype(int).tolist()   # rows: TC, WT, ET
[[0, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1]]
>>> regions_to_brats_labels(labels_to_regions(lab, "brats2021")).tolist()
[0, 1, 2, 4]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "LAYOUTS",
    "Layout",
    "REGIONS",
    "LABEL_VALUES",
    "labels_to_regions",
    "regions_to_brats_labels",
]

Layout = Literal["brats2021", "brats2023", "msd"]
LAYOUTS: tuple[str, ...] = ("brats2021", "brats2023", "msd")
REGIONS: tuple[str, str, str] = ("TC", "WT", "ET")


class _Codes:
    """Label values of one layout: oedema, necrotic/non-enhancing core, enhancing."""

    __slots__ = ("oedema", "necrotic", "enhancing")

    def __init__(self, oedema: int, necrotic: int, enhancing: int) -> None:
        self.oedema, self.necrotic, self.enhancing = oedema, necrotic, enhancing

    @property
    def values(self) -> frozenset[int]:
        return frozenset({0, self.oedema, self.necrotic, self.enhancing})


_CODES: dict[str, _Codes] = {
    "brats2021": _Codes(oedema=2, necrotic=1, enhancing=4),
    "brats2023": _Codes(oedema=2, necrotic=1, enhancing=3),
    "msd": _Codes(oedema=1, necrotic=2, enhancing=3),
}

#: Allowed label values per layout.
LABEL_VALUES: dict[str, frozenset[int]] = {k: v.values for k, v in _CODES.items()}


def _codes(layout: str) -> _Codes:
    try:
        return _CODES[layout]
    except KeyError:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}") from None


def labels_to_regions(label: np.ndarray, layout: str = "brats2021") -> np.ndarray:
    """Integer label map ``(X, Y, Z)`` → uint8 regions ``(3, X, Y, Z)`` (TC, WT, ET).

    Values outside the layout's set are not checked here (``load_case`` validates them).
    """
    c = _codes(layout)
    label = np.asarray(label)
    et = label == c.enhancing
    tc = et | (label == c.necrotic)
    wt = tc | (label == c.oedema)
    return np.stack([tc, wt, et]).astype(np.uint8)


def regions_to_brats_labels(regions: np.ndarray, layout: str = "brats2021") -> np.ndarray:
    """Regions ``(3, ...)`` (TC, WT, ET; bool or 0/1) → uint8 label map of ``layout``.

    ET → enhancing (4 for BraTS 2021, 3 for 2023/MSD), TC minus ET → necrotic core,
    WT minus TC → oedema. Predicted regions need not be nested: ET wins over TC, TC over
    WT, so an ET voxel is always labelled enhancing.

    >>> import numpy as np
    >>> r = np.zeros((3, 4), bool); r[1, 1:] = True; r[0, 2:] = True; r[2, 3] = True
    >>> regions_to_brats_labels(r, "brats2023").tolist()
    [0, 2, 1, 3]
    """
    c = _codes(layout)
    regions = np.asarray(regions)
    if regions.ndim < 1 or regions.shape[0] != 3:
        raise ValueError(f"regions must have 3 channels (TC, WT, ET) first, got shape {regions.shape}")
    tc, wt, et = (regions[i].astype(bool) for i in range(3))
    out = np.zeros(regions.shape[1:], dtype=np.uint8)
    out[wt] = c.oedema
    out[tc] = c.necrotic
    out[et] = c.enhancing
    return out
