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

import zlib
from os import PathLike
from pathlib import Path

import numpy as np

from fedimg.errors import InputError

from .limits import Limits, check_affine, check_declared

__all__ = ["read_nrrd", "read_nrrd_header", "MAX_HEADER_BYTES"]

#: An NRRD header longer than this is refused (real headers are a few hundred bytes).
MAX_HEADER_BYTES = 1 << 20

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


def read_nrrd_header(path: str | PathLike[str]) -> tuple[bytes, dict[str, str], int]:
    """Only the header of an NRRD file: ``(header bytes up to its last newline, fields, data offset)``.

    Reads at most :data:`MAX_HEADER_BYTES`; never the voxel data.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_HEADER_BYTES)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc}); check the path and permissions") from None
    if not head.startswith(b"NRRD000"):
        raise InputError(path, "is not an NRRD file (no NRRD magic); pass a .nrrd or NIfTI file")
    end = head.find(b"\n\n")
    if end < 0:
        raise InputError(path, "NRRD header has no end (truncated file?); re-export the image")
    fields: dict[str, str] = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    return head[: end + 1], fields, end + 2


def _declared(path: Path, fields: dict[str, str]) -> tuple[np.dtype, list[int]]:
    if "data file" in fields or "datafile" in fields:
        raise InputError(path, "detached NRRD data files are not supported; save as a single .nrrd or NIfTI")
    try:
        dtype = np.dtype(_TYPES[fields["type"].lower()])
        sizes = [int(v) for v in fields["sizes"].split()]
    except (KeyError, ValueError):
        raise InputError(path, "NRRD header lacks a valid 'type' or 'sizes'; re-export the image") from None
    if "dimension" in fields and fields["dimension"].strip() != str(len(sizes)):
        raise InputError(path, f"NRRD header says dimension {fields['dimension']} but lists {len(sizes)} sizes; "
                               "re-export the image")
    return dtype, sizes


def read_nrrd(path: str | PathLike[str], *, limits: Limits | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Read an NRRD file: ``(data with shape = sizes, RAS affine (4, 4), header fields)``.

    The header is checked first (:mod:`.limits`): a volume above the size limit, an impossible
    size or type, or a raw file shorter than declared is refused before the data are read.
    """
    path = Path(path)
    _, fields, offset = read_nrrd_header(path)
    dtype, sizes = _declared(path, fields)
    count = check_declared(path, tuple(sizes), dtype, limits)
    encoding = fields.get("encoding", "raw").lower()
    if encoding not in ("raw", "gzip", "gz"):
        raise InputError(path, f"NRRD encoding {encoding!r} is not supported; use raw or gzip")
    if encoding == "raw" and path.stat().st_size - offset < count * dtype.itemsize:
        raise InputError(path, f"NRRD data is truncated ({path.stat().st_size - offset} of {count * dtype.itemsize} bytes)")
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if fields.get("endian", "little") == "big" else "<")
    with open(path, "rb") as f:
        f.seek(offset)
        body = f.read() if encoding == "raw" else b""
        if encoding != "raw":
            try:
                # never inflate more than the header declares (a gzip bomb stops here)
                body = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(f.read(), count * dtype.itemsize)
            except (OSError, EOFError, zlib.error):
                raise InputError(path, "NRRD data cannot be decompressed (corrupt or truncated); re-export the image") from None
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
    check_affine(path, affine)
    return data, affine, fields
