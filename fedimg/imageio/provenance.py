"""Provenance records: was this image defaced? is it synthetic?

A defaced NIfTI carries two records, both written by ``fedimg deface``:

- the header ``descrip`` field starts with ``DEFACED_TAG`` (``"fedimg-defaced"``), and
- a sidecar JSON next to it, ``<name>.deface.json`` (``sub-01_T1w.nii.gz`` →
  ``sub-01_T1w.deface.json``), with at least ``{"defaced": true, "tool": "fedimg", ...}``
  and the QC summary.

The defacer writes them with :func:`defaced_descrip` (through
:func:`fedimg.imageio.volume.save_like`) and :func:`write_deface_record`; either record is
accepted by the training gate (``is_defaced``). Synthetic data from ``fedimg synth`` are
marked with :data:`SYNTHETIC_DESCRIP` but still have faces (they are built from a real head
template), so they are *not* exempt: deface them, or pass ``--allow-identifiable``.

>>> sidecar_path("data/sub-01_T1w.nii.gz").name
'sub-01_T1w.deface.json'
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

from fedimg.io import sha256_file, write_json

from .suffixes import is_nifti, stem

__all__ = [
    "DEFACED_TAG",
    "DEFACE_METHOD",
    "sidecar_path",
    "stem",
    "is_defaced",
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


def write_deface_record(
    image: str | PathLike[str], *, source: str | PathLike[str], reference: str, version: str, mode: str,
    qc: dict[str, Any], qc_report: str, method: str = DEFACE_METHOD,
) -> Path:
    """Atomically write the sidecar record of the defaced ``image`` made from ``source``; returns its path."""
    source = Path(source)
    side = sidecar_path(image)
    write_json(side, {
        "defaced": True, "tool": "fedimg", "version": version, "method": method,
        "mode": mode, "source": source.name, "source_sha256": sha256_file(source),
        "reference": reference, "qc": qc, "qc_report": qc_report,
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


def is_defaced(path: str | PathLike[str]) -> bool:
    """True when the image has a defacing record (sidecar or NIfTI header tag)."""
    if read_deface_record(path) is not None:
        return True
    descrip = read_descrip(path)
    return descrip is not None and descrip.startswith(DEFACED_TAG)
