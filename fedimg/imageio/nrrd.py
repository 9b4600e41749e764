"""A small NRRD reader (attached header, raw or gzip encoding), enough for 3-D scans.

nibabel cannot read NRRD and ITK/pynrrd are not fedimg dependencies, so the defacer reads
NRRD itself. The voxel-to-world affine is returned in RAS (NIfTI convention): NRRD's
``left-posterior-superior`` space is flipped on its first two axes.

>>> import numpy as np, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "x.nrrd"
>>> hdr = "NRRD0004\\ntype: short\\ndimension: 3\\nsizes: 2 3 4\\nencoding: raw\\nendian: little\\n\\n"
>>> _ = p.write_bytes(hdr.encode() + np.arange(24, dtype="<i2").tobytes())
>>> data, affine, _ = read_nrrd(p)
>>> data.shape, int(data[1, 0, 0]), float(affine[0, 0])
((2, 3, 4), 1, 1.0)
"""

from __future__ import annotations

import gzip
import zlib
from os import PathLike
from pathlib import Path

import numpy as np

from fedimg.errors import InputError

__all__ = ["read_nrrd"]

_TYPES = {
    "signed char": "i1", "int8": "i1", "int8_t": "i1",
    "uchar": "u1", "unsigned char": "u1", "uint8": "u1", "uint8_t": "u1",
    "short": "i2", "short int": "i2", "signed short": "i2", "signed short int": "i2", "int16": "i2", "int16_t": "i2",
    "ushort": "u2", "unsigned short": "u2", "unsigned short int": "u2", "uint16": "u2", "uint16_t": "u2",
    "int": "i4", "signed int": "i4", "int32": "i4", "int32_t": "i4",
    "uint": "u4", "unsigned int": "u4", "uint32": "u4", "uint32_t": "u4",
    "longlong": "i8", "long long": "i8", "int64": "i8", "int64_t": "i8",
    "ulonglong": "u8", "unsigned long long": "u8", "uint64": "u8", "uint64_t": "u8",
    "float": "f4", "double": "f8",
}
_LPS = {"left-posterior-superior", "lps"}
_RAS = {"right-anterior-superior", "ras"}


def _vector(text: str, path: Path) -> list[float] | None:
    text = text.strip()
    if text == "none":
        return None
    try:
        return [float(v) for v in text.strip("()").split(",")]
    except ValueError:
        raise InputError(path, f"NRRD vector {text!r} is not understood; re-save the file with a standard writer") from None


def read_nrrd(path: str | PathLike[str]) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Read an NRRD file: ``(data with shape = sizes, RAS affine (4, 4), header fields)``."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(b"NRRD000"):
        raise InputError(path, "is not an NRRD file (no NRRD magic); pass a .nrrd or NIfTI file")
    end = raw.find(b"\n\n")
    if end < 0:
        raise InputError(path, "NRRD header has no end (truncated file?); re-export the image")
    fields: dict[str, str] = {}
    for line in raw[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    if "data file" in fields or "datafile" in fields:
        raise InputError(path, "detached NRRD data files are not supported; save as a single .nrrd or NIfTI")
    try:
        dtype = np.dtype(_TYPES[fields["type"].lower()])
        sizes = [int(v) for v in fields["sizes"].split()]
    except (KeyError, ValueError):
        raise InputError(path, "NRRD header lacks a valid 'type' or 'sizes'; re-export the image") from None
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if fields.get("endian", "little") == "big" else "<")
    body = raw[end + 2 :]
    encoding = fields.get("encoding", "raw").lower()
    try:
        if encoding in ("gzip", "gz"):
            body = gzip.decompress(body)
        elif encoding != "raw":
            raise InputError(path, f"NRRD encoding {encoding!r} is not supported; use raw or gzip")
    except (OSError, EOFError, zlib.error):
        raise InputError(path, "NRRD data cannot be decompressed (corrupt or truncated); re-export the image") from None
    count = int(np.prod(sizes))
    if len(body) < count * dtype.itemsize:
        raise InputError(path, f"NRRD data is truncated ({len(body)} of {count * dtype.itemsize} bytes)")
    data = np.frombuffer(body, dtype=dtype, count=count).reshape(sizes[::-1]).T
    data = np.ascontiguousarray(data.astype(dtype.newbyteorder("=")))
    affine = np.eye(4)
    if "space directions" in fields:
        vecs = [_vector(v, path) for v in fields["space directions"].replace(") (", ")|(").split("|")]
        vecs = [v for v in vecs if v is not None]
        for i, v in enumerate(vecs[:3]):
            affine[: len(v[:3]), i] = v[:3]
    elif "spacings" in fields:
        for i, s in enumerate(fields["spacings"].split()[:3]):
            affine[i, i] = float(s) if s.lower() != "nan" else 1.0
    if "space origin" in fields:
        origin = _vector(fields["space origin"], path) or [0.0, 0.0, 0.0]
        affine[: len(origin[:3]), 3] = origin[:3]
    space = fields.get("space", "").lower()
    if space in _LPS:
        affine[:2] *= -1.0
    elif space and space not in _RAS:
        raise InputError(path, f"NRRD space {space!r} is not supported; use LPS or RAS")
    return data, affine, fields
