"""Provenance records: was this image defaced? is it synthetic?

A defaced NIfTI carries two records, both written by ``fedimg deface``:

- the header ``descrip`` field starts with ``DEFACED_TAG`` (``"fedimg-defaced"``), and
- a sidecar JSON next to it, ``<name>.deface.json`` (``sub-01_T1w.nii.gz`` →
  ``sub-01_T1w.deface.json``), with at least ``{"defaced": true, "tool": "fedimg", ...}``
  and the QC summary.

Either record is accepted by the training gate (``is_defaced``). Synthetic data from
``fedimg synth`` still have faces (they are built from a real head template), so they are
*not* exempt: deface them, or pass ``--allow-identifiable``.

>>> sidecar_path("data/sub-01_T1w.nii.gz").name
'sub-01_T1w.deface.json'
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

__all__ = ["DEFACED_TAG", "sidecar_path", "stem", "is_defaced", "read_deface_record", "defaced_descrip"]

DEFACED_TAG = "fedimg-defaced"


def stem(path: str | PathLike[str]) -> str:
    """File name without ``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.mha`` etc."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".mgz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


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


def is_defaced(path: str | PathLike[str]) -> bool:
    """True when the image has a defacing record (sidecar or NIfTI header tag)."""
    if read_deface_record(path) is not None:
        return True
    name = str(path).lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return False
    try:
        import nibabel as nib

        hdr = nib.load(str(path)).header
        descrip = bytes(hdr["descrip"].tobytes()).split(b"\0", 1)[0].decode(errors="ignore")
    except Exception:
        return False
    return descrip.startswith(DEFACED_TAG)
