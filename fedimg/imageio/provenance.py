"""Provenance records: was this image defaced? is it synthetic?

A defaced NIfTI carries two records, both written by ``fedimg deface``:

- the header ``descrip`` field starts with ``DEFACED_TAG`` (``"fedimg-defaced"``), and
- a sidecar JSON next to it, ``<name>.deface.json`` (``sub-01_T1w.nii.gz`` →
  ``sub-01_T1w.deface.json``), with at least ``{"defaced": true, "tool": "fedimg", ...}``,
  the QC summary and ``voxel_sha256``, a hash of the defaced image's *contents*.

The defacer writes them with :func:`defaced_descrip` (through
:func:`fedimg.imageio.volume.save_like`) and :func:`write_deface_record`. The training gate
(:func:`defacing_problem`, :func:`is_defaced`) accepts an image only when its sidecar's
``voxel_sha256`` matches the image as read now: a header tag alone, a record without a hash,
an image edited after defacing or a sidecar copied from another case is refused.

The hash (:func:`voxel_sha256`) covers the decoded voxel array as stored (Fortran order,
NIfTI's own, little-endian), its dtype and shape, the affine (mm, rounded to 1 um) and the scaling
(slope, intercept), not the file's bytes: re-compressing (``.nii.gz`` level, ``.nii`` ↔
``.nii.gz``) or rewriting other header fields keeps it valid; any voxel, geometry or
scaling change breaks it. Hashing runs at about 1-2 GB/s (SHA-256), a few percent of
decompressing the same ``.nii.gz`` (see ``benchmarks/RESULTS.md``).

Synthetic data from ``fedimg synth`` are marked with :data:`SYNTHETIC_DESCRIP` but still
have faces (they are built from a real head template), so they are *not* exempt: deface
them, or pass ``--allow-identifiable``.

>>> sidecar_path("data/sub-01_T1w.nii.gz").name
'sub-01_T1w.deface.json'
"""

from __future__ import annotations

import hashlib
import json
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.io import sha256_file, write_json

from .suffixes import is_nifti, stem

__all__ = [
    "DEFACED_TAG",
    "DEFACE_METHOD",
    "sidecar_path",
    "stem",
    "is_defaced",
    "defacing_problem",
    "voxel_sha256",
    "written_voxel_sha256",
    "read_deface_record",
    "write_deface_record",
    "read_descrip",
    "defaced_descrip",
    "SYNTHETIC_DESCRIP",
]

DEFACED_TAG = "fedimg-defaced"
#: The ``method`` of the sidecar record written by ``fedimg deface``.
DEFACE_METHOD = "mi-affine-template-facemask"
#: NIfTI ``descrip`` of the images written by ``fedimg synth`` (they still have faces).
SYNTHETIC_DESCRIP = b"fedimg synth: synthetic, not patient data"


def sidecar_path(path: str | PathLike[str]) -> Path:
    """Where the defacing sidecar of an image lives."""
    p = Path(path)
    return p.with_name(f"{stem(p)}.deface.json")


def defaced_descrip(version: str) -> bytes:
    """Value for the NIfTI ``descrip`` header field (80 bytes max)."""
    return f"{DEFACED_TAG} {version}".encode()[:80]


def read_deface_record(path: str | PathLike[str]) -> dict[str, Any] | None:
    """The sidecar record of ``path`` if it exists and says ``defaced: true``."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        rec = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and rec.get("defaced") is True else None


#: What :func:`voxel_sha256` covers (stored in every record next to the hash).
VOXEL_HASH_COVERS = ("sha256 of dtype, shape, affine (mm, 1e-3), slope/inter as JSON, "
                     "then the raw voxels (Fortran order, little-endian)")


def voxel_sha256(volume) -> str:
    """Content hash of a :class:`~fedimg.imageio.volume.Volume` (see the module text).

    >>> import numpy as np
    >>> from fedimg.imageio.volume import Volume
    >>> v = Volume(path=None, raw=np.zeros((2, 2, 2), np.int16), affine=np.eye(4))
    >>> voxel_sha256(v) == voxel_sha256(Volume(path=None, raw=np.zeros((2, 2, 2), ">i2"), affine=np.eye(4)))
    True
    """
    # Fortran order is NIfTI's own: hashing the decoded array needs no copy
    raw = np.asfortranarray(volume.raw, dtype=volume.raw.dtype.newbyteorder("<"))
    meta = {"dtype": raw.dtype.str, "shape": list(raw.shape),
            "affine": (np.round(np.asarray(volume.affine, dtype=np.float64), 3) + 0.0).tolist(),
            "slope": float(volume.slope), "inter": float(volume.inter)}
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    h.update(memoryview(raw.T).cast("B"))
    return h.hexdigest()


def written_voxel_sha256(path: str | PathLike[str], raw: np.ndarray) -> str:
    """:func:`voxel_sha256` of the image just written to ``path`` from the stored voxels ``raw``.

    The voxels are not decoded from the file again: they are ``raw`` (in the file's dtype),
    while shape, dtype, affine and scaling come from the written header as
    :func:`~fedimg.imageio.volume.load_volume` reads them, so the result equals the hash of a
    fresh read (``tests/deface`` checks this). An NRRD file is read back in full.
    """
    from .volume import Volume, load_volume, nifti_scaling

    if not is_nifti(path):
        return voxel_sha256(load_volume(path, what="defaced output", require_signal=False))
    import nibabel as nib

    img = nib.load(str(path))  # header only: the voxels stay on disk
    slope, inter = nifti_scaling(img)
    stored = np.asarray(raw, dtype=img.get_data_dtype())
    return voxel_sha256(Volume(path=None, raw=stored, affine=np.asarray(img.affine, dtype=np.float64),
                               slope=slope, inter=inter))


def write_deface_record(
    image: str | PathLike[str], *, source: str | PathLike[str], reference: str, version: str, mode: str,
    qc: dict[str, Any], qc_report: str, voxel_hash: str, method: str = DEFACE_METHOD,
) -> Path:
    """Atomically write the sidecar record of the defaced ``image`` made from ``source``; returns its path.

    ``voxel_hash``: :func:`voxel_sha256` of ``image`` as written (:func:`written_voxel_sha256`).
    """
    source = Path(source)
    side = sidecar_path(image)
    write_json(side, {
        "defaced": True, "tool": "fedimg", "version": version, "method": method,
        "mode": mode, "source": source.name, "source_sha256": sha256_file(source),
        "reference": reference, "qc": qc, "qc_report": qc_report,
        "image": Path(image).name, "voxel_sha256": voxel_hash, "voxel_hash": VOXEL_HASH_COVERS,
    })
    return side


def read_descrip(path: str | PathLike[str]) -> str | None:
    """The NIfTI header ``descrip`` text of ``path`` (up to the first NUL); None if not a readable NIfTI."""
    if not is_nifti(path):
        return None
    from .nifti import open_nifti

    try:
        hdr = open_nifti(path).header
        return bytes(hdr["descrip"].tobytes()).split(b"\0", 1)[0].decode(errors="ignore")
    except Exception:
        return None


_OR_ALLOW = "or pass --allow-identifiable if the data may be used as they are"


def defacing_problem(path: str | PathLike[str]) -> str | None:
    """None when ``path`` has a defacing record whose content hash matches the image; else the problem and fix.

    Raises :class:`~fedimg.errors.InputError` when the image itself cannot be read.
    """
    from .volume import load_volume

    rec = read_deface_record(path)
    side = sidecar_path(path).name
    if rec is None:
        descrip = read_descrip(path)
        if descrip is not None and descrip.startswith(DEFACED_TAG):
            return (f"has only a header tag saying it was defaced, no defacing record ({side}) with a content hash; "
                    f"re-run `fedimg deface` on the original scan, {_OR_ALLOW}")
        return f"has no defacing record and may show a face; run `fedimg deface` on the data first, {_OR_ALLOW}"
    want = rec.get("voxel_sha256")
    if not isinstance(want, str):
        return (f"its defacing record {side} has no content hash (an older fedimg wrote it); "
                f"re-run `fedimg deface` on the original scan, {_OR_ALLOW}")
    if voxel_sha256(load_volume(path, what="defaced image", require_signal=False)) != want:
        return (f"does not match its defacing record {side} (the image changed after defacing, or the record "
                f"belongs to another file); re-run `fedimg deface` on the original scan, {_OR_ALLOW}")
    return None


def is_defaced(path: str | PathLike[str]) -> bool:
    """True when the image has a defacing record whose content hash matches it (:func:`defacing_problem`)."""
    from fedimg.errors import InputError

    try:
        return defacing_problem(path) is None
    except InputError:
        return False
