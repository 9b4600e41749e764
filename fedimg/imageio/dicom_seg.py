"""Tumour labels for imported cases: a DICOM SEG (read with highdicom) or a NIfTI label file,
its codes mapped to BraTS 2021 (1 necrotic / non-enhancing core, 2 oedema, 4 enhancing), and
resampled nearest-neighbour onto a case's image grid.

:func:`read_seg` reads one Segmentation instance: every segment's binary mask with its
geometry (``Segmentation.get_volume``), each segment mapped to a BraTS code by its
``SegmentLabel`` (``codes``: glob -> code, case-insensitive, else the defaults in
:func:`default_segment_code`); overlapping segments are refused. :func:`read_label_nifti`
reads a NIfTI (or NRRD) label whose values map through ``codes`` (value -> code; 1, 2, 4 not in it are kept).
:func:`label_onto_grid` resamples either onto a case's grid in world coordinates; a label of
which no voxel falls inside the grid does not overlap the image and is refused.

>>> lab = LabelVolume(codes=np.zeros((4, 4, 4), np.uint8), affine=np.eye(4), source="nifti", segments={})
>>> lab.codes[1:3, 1:3, 1:3] = 2
>>> shifted = np.eye(4); shifted[0, 3] = 1.0        # the case grid starts 1 mm further along x
>>> out, info = label_onto_grid(lab, (4, 4, 4), shifted, where="seg.nii.gz")
>>> int(out[0:2, 1:3, 1:3].min()), int(out.sum() // 2), info["inside_share"]
(2, 8, 1.0)
>>> default_segment_code("Necrotic core"), default_segment_code("Peritumoral edema"), default_segment_code("GD-enhancing tumor")
(1, 2, 4)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import InputError

from .dicom import LPS_TO_RAS

__all__ = ["LabelVolume", "BRATS_CODES", "default_segment_code", "read_seg", "read_label_nifti", "label_onto_grid"]

log = logging.getLogger(__name__)

#: BraTS 2021 label codes: the convention every imported label is written in.
BRATS_CODES = {"necrotic": 1, "oedema": 2, "enhancing": 4}
_KEYWORDS = ((("necro", "non-enhanc", "non enhanc", "nonenhanc", "core", "ncr", "net"), 1),
             (("edema", "oedema", "ed"), 2), (("enhanc", "et", "gd"), 4))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelVolume:
    """A label map already in BraTS 2021 codes (uint8), its RAS affine, where it came from, and
    ``segments``: each source segment number / label value -> code (never the free-text segment labels)."""

    codes: np.ndarray
    affine: np.ndarray
    source: str
    segments: dict[str, int]


def default_segment_code(label: str) -> int | None:
    """BraTS code for a segment label such as "Necrotic core", "Edema", "Enhancing tumor" (None: unknown)."""
    words = label.lower().replace("_", " ").replace("/", " ")
    tokens = set(words.split())
    for keys, code in _KEYWORDS:
        if any((k in tokens) if len(k) <= 3 else (k in words) for k in keys):
            return code
    return None


def _segment_code(label: str, codes: dict[str, int] | None) -> int | None:
    for pattern, code in (codes or {}).items():
        if fnmatch.fnmatchcase(label.lower(), str(pattern).lower()):
            return int(code)
    return default_segment_code(label)


def read_seg(path: str | PathLike[str], *, codes: dict[str, int] | None = None) -> LabelVolume:
    """One DICOM Segmentation instance as a BraTS-coded label map (highdicom)."""
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
        numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
        names = {int(s.SegmentNumber): str(s.get("SegmentLabel", f"segment {int(s.SegmentNumber)}"))
                 for s in seg.SegmentSequence}
        vol = seg.get_volume(segment_numbers=numbers, combine_segments=False)
    except Exception as exc:  # highdicom / pydicom raise assorted errors for unusable files
        raise InputError(path, f"cannot be read as a DICOM Segmentation with geometry ({type(exc).__name__}: "
                               f"{exc}); export the SEG with plane positions (3-D), or give a NIfTI label") from None
    mapping = {}
    for n in numbers:
        code = _segment_code(names[n], codes)
        if code is None:
            raise InputError(path, f"segment {n} ({names[n]!r}) has no BraTS code; map it in the series map "
                                   f"(seg: codes: {{'{names[n]}': 1|2|4|0}})")
        mapping[n] = code
    masks = np.asarray(vol.array)  # (slice, row, column, segment); FRACTIONAL: probabilities in [0, 1]
    masks = masks >= 0.5 if masks.dtype.kind == "f" else masks > 0
    if masks.ndim == 3:
        masks = masks[..., None]
    if int(masks.sum(axis=-1).max(initial=0)) > 1:
        raise InputError(path, "has overlapping segments; BraTS labels are exclusive: export non-overlapping "
                               "segments (necrotic core, oedema, enhancing tumour)")
    out = np.zeros(masks.shape[:3], np.uint8)
    for i, n in enumerate(numbers):
        out[masks[..., i]] = mapping[n]
    return LabelVolume(codes=out, affine=LPS_TO_RAS @ np.asarray(vol.affine, dtype=np.float64), source="dicom-seg",
                       segments={str(n): mapping[n] for n in numbers})  # by number: labels are free text


def read_label_nifti(path: str | PathLike[str], *, codes: dict[int, int] | None = None) -> LabelVolume:
    """A NIfTI label file with its values mapped through ``codes`` (default: 1, 2 and 4 kept as they are)."""
    from .volume import load_volume

    path = Path(path)
    vol = load_volume(path, what="label", require_signal=False)  # NIfTI or NRRD, header checks, 3-D only
    data, affine = vol.scaled(), vol.affine
    if np.issubdtype(data.dtype, np.floating) and not np.array_equal(data, np.round(data)):
        raise InputError(path, "has non-integer values; a label map holds integer codes")
    values = np.unique(data.astype(np.int64))
    table = {int(k): int(v) for k, v in (codes or {}).items()}
    mapping = {}
    for v in (int(x) for x in values if x != 0):
        code = table.get(v, v if v in BRATS_CODES.values() else None)
        if code is None:
            raise InputError(path, f"has label value {v}, which the series map does not map to a BraTS code "
                                   f"(seg: codes: {{{v}: 1|2|4|0}})")
        mapping[v] = code
    out = np.zeros(data.shape, np.uint8)
    for v, code in mapping.items():
        out[data == v] = code
    return LabelVolume(codes=out, affine=np.asarray(affine, dtype=np.float64), source="nifti",
                       segments={str(v): c for v, c in mapping.items()})


def label_onto_grid(label: LabelVolume, shape: tuple[int, ...], affine: np.ndarray, *,
                    where: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """``label`` resampled (nearest neighbour, world coordinates) onto the grid ``shape``/``affine``.

    Returns the uint8 codes and what was kept (label volume in mL before and after, the share
    inside the grid). Refuses (naming ``where``) a label that has voxels but none inside the grid.
    """
    from scipy import ndimage

    m = np.linalg.inv(label.affine) @ np.asarray(affine, dtype=np.float64)
    out = ndimage.affine_transform(label.codes, m[:3, :3], offset=m[:3, 3], output_shape=tuple(shape), order=0,
                                   mode="grid-constant", cval=0, prefilter=False)
    voxel_src = abs(float(np.linalg.det(label.affine[:3, :3]))) / 1000.0
    voxel_dst = abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    src_ml = float(np.count_nonzero(label.codes)) * voxel_src
    dst_ml = float(np.count_nonzero(out)) * voxel_dst
    if src_ml > 0 and dst_ml == 0:
        raise InputError(where, f"none of its labelled voxels ({src_ml:.1f} mL) falls inside the image's grid: "
                                "the label does not overlap the image; give the label drawn on this patient's images")
    share = 1.0 if src_ml == 0 else round(min(dst_ml / src_ml, 1.0), 4)
    if share < 0.95:
        log.warning("%s: only %.0f%% of the label's volume falls inside the image grid", where, 100 * share)
    return out, {"label_ml": round(src_ml, 3), "label_ml_on_grid": round(dst_ml, 3), "inside_share": share}
