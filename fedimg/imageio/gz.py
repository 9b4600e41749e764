"""Fast gzip for ``.nii.gz`` voxels: ISA-L (the ``isal`` package) when installed, else zlib.

nibabel decodes a ``.nii.gz`` through a zlib stream and writes it with zlib at level 1; ISA-L
decodes the same streams about twice as fast and writes level 1 about four times as fast
(a 1 mm head: 24 MB of voxels). The files are ordinary gzip (RFC 1952) either way, so any
reader opens them; the voxels read are the same bytes. Without ``isal`` the standard
library's ``gzip`` does the same work (``BACKEND`` says which one runs). Used by
:func:`fedimg.imageio.volume.load_volume`, :func:`~fedimg.imageio.volume.save_like` and the
defacing template (:mod:`fedimg.deface.template`).

>>> data = b"fedimg " * 1000
>>> decompress(compress(data)) == data
True
>>> compress(data) == compress(data)   # no time stamp, no file name: the same bytes every run
True
>>> BACKEND in ("isal", "zlib")
True
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np

__all__ = ["BACKEND", "compress", "decompress", "read_unscaled", "settle_vector_state"]

log = logging.getLogger(__name__)

try:  # ISA-L releases the GIL like zlib does, so a second thread keeps working while it runs
    from isal import igzip as _gz
    from isal import isal_zlib as _zlib

    BACKEND = "isal"
except ImportError:  # pragma: no cover - the plain-zlib fallback (isal is a dependency)
    import zlib as _zlib

    _gz = gzip
    BACKEND = "zlib"


def settle_vector_state() -> None:
    """Leave the CPU's vector registers as numpy's kernels expect them, after an ISA-L call in this thread.

    Measured on a 2-vCPU Intel Xeon with AMX and AVX-512 (the eighth wave's machine; not measured on AMD):
    right after an ISA-L (de)compression the next numpy float32 sum in the same thread ran about 9x slower
    for its whole call (the first block mean of the template after reading it: 0.35 CPU-s instead of 0.04),
    then speed came back, consistent with wide vector registers left dirty. The maximum of 64 float32 zeros
    (numpy's wide SIMD kernel, which leaves the wide registers clean; a plain sum's does not) clears that
    state in a microsecond. It changes no value. With zlib (no ``isal``) there is nothing to clear.
    """
    if BACKEND == "isal":
        _SETTLE.max()


_SETTLE = np.zeros(64, np.float32)


def decompress(data: bytes, max_length: int = 0) -> bytes:
    """The bytes of a whole gzip stream, or (``max_length`` > 0) its first ``max_length`` bytes and no more decoded
    (a truncated stream then gives fewer); a corrupt or truncated stream raises ``OSError``/``EOFError``."""
    try:
        if max_length > 0:  # never inflate more than asked (a gzip bomb stops here, as in :mod:`.nrrd`)
            return _first_bytes(data, max_length)
        return _gz.decompress(data)
    except (OSError, EOFError):
        raise
    except Exception as exc:  # isal's IsalError and zlib.error: name the problem as an I/O error
        raise OSError(f"corrupt gzip data ({exc})") from None
    finally:
        settle_vector_state()


def _first_bytes(data: bytes, max_length: int) -> bytes:
    """The first ``max_length`` decoded bytes of a gzip stream of one or more members (as ``gzip``
    reads them: e.g. ``bgzip`` writes many), decoding no more than that."""
    out: list[bytes] = []
    left = max_length
    while data and left > 0:
        d = _zlib.decompressobj(wbits=31)
        out.append(d.decompress(data, left))
        left -= len(out[-1])
        if not d.eof:  # stopped at max_length, or the stream is truncated
            break
        data = d.unused_data.lstrip(b"\0")  # gzip, too, skips zero padding between members
    return b"".join(out)


def compress(data: bytes, level: int = 1) -> bytes:
    """A gzip stream of ``data`` at ``level`` (1: nibabel's default for ``.nii.gz``), time stamp 0."""
    try:
        return _gz.compress(data, compresslevel=level, mtime=0)
    finally:
        settle_vector_state()


def read_unscaled(img, path: str | Path, *, writable: bool = True) -> np.ndarray:
    """The stored voxels of a nibabel image opened from ``path`` (``img.dataobj.get_unscaled()``), writable.

    For a ``.nii.gz`` with a plain array proxy the file is decoded in one call (:func:`decompress`,
    up to the header's declared size) and the voxels taken from the decoded bytes; anything else is read by
    nibabel as before. The array is the same either way (dtype, byte order, shape, values).
    ``writable=False``: a caller that only reads the voxels (the defacing template, cast and copied at once)
    may get them as a read-only view of the decoded bytes, without the copy that makes them writable.
    """
    from nibabel.arrayproxy import ArrayProxy

    proxy = img.dataobj
    if not str(path).lower().endswith(".gz") or type(proxy) is not ArrayProxy or proxy.order != "F":
        return np.asanyarray(proxy.get_unscaled())
    shape = tuple(int(s) for s in proxy.shape)
    count = int(np.prod(shape, dtype=np.int64))
    need = int(proxy.offset) + count * proxy.dtype.itemsize
    raw = decompress(Path(path).read_bytes(), need)  # what the (size-checked) header declares, as nibabel reads
    if len(raw) < need:
        raise EOFError(f"expected {need} bytes of header and voxels, the file holds {len(raw)}")
    arr = np.frombuffer(raw, dtype=proxy.dtype, count=count, offset=int(proxy.offset))
    arr = arr.reshape(shape, order="F")
    return arr.copy(order="F") if writable else arr  # writable, as nibabel's own read
