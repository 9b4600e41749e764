"""A per-user cache of the template's decoded and derived arrays, so each ``fedimg deface`` process maps them.

Every defacing process decodes the template (8 MB of gzip, ~0.17 CPU s), thresholds its face and
brain maps (~0.1 s), makes its 4 mm head mask (~0.05 s) and the maps' corner tables (~0.04 s):
the same arrays every time. With a cache folder set (:func:`set_cache_dir`; ``fedimg deface`` sets
``$FEDIMG_CACHE_DIR``, else ``$XDG_CACHE_HOME/fedimg``, else ``~/.cache/fedimg``) the first process
writes them as ``.npy`` files (about 165 MB) and later ones memory-map them read-only: the same
values, bit for bit. Off by default in the library (no folder: nothing read or written).

The entry folder is named by a hash of what the arrays are made from: the three template files'
bytes, fedimg's defacing source files (``fedimg/deface/*.py``) and numpy's and scipy's versions,
so a changed template, code or library never reads an old entry; a new entry removes all but the
newest other one (:data:`KEEP`). Each file is written to a temporary name and renamed (atomic); a file that
cannot be read back with the expected shape and dtype (truncated, garbled) is ignored with a
warning, recomputed and rewritten. A folder that cannot be written to is logged once and skipped.

>>> set_cache_dir(None); cache_dir() is None
True
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["set_cache_dir", "cache_dir", "cached", "entry_dir"]

log = logging.getLogger(__name__)

FORMAT = "1"  # bump when the layout of an entry changes
KEEP = 2  # entries kept in a cache folder (this code's and one other version's); older ones are removed
_DIR: list[Path | None] = [None]
_LOCK = threading.Lock()
_WARNED: set[str] = set()


def set_cache_dir(path: str | os.PathLike | None) -> None:
    """Use ``path`` for the template cache from now on in this process (None: no cache)."""
    _DIR[0] = None if path is None else Path(path).expanduser()


def cache_dir() -> Path | None:
    """The cache folder set by :func:`set_cache_dir`, or None."""
    return _DIR[0]


@functools.lru_cache(maxsize=1)
def _key() -> str:
    import scipy

    from .template import BRAIN_PROTECT_NAME, FACEMASK_NAME, TEMPLATE_NAME, asset_path

    h = hashlib.sha256(f"fedimg-template-cache {FORMAT} numpy {np.__version__} scipy {scipy.__version__}".encode())
    for name in (TEMPLATE_NAME, FACEMASK_NAME, BRAIN_PROTECT_NAME):
        h.update(name.encode() + b"\0" + asset_path(name).read_bytes())
    for src in sorted(Path(__file__).parent.glob("*.py")):  # the code that makes the arrays, and everything near it
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    return h.hexdigest()[:24]


def entry_dir() -> Path | None:
    """This process's cache entry folder (the cache folder / ``template-<hash>``), or None when no cache is set."""
    root = _DIR[0]
    return None if root is None else root / f"template-{_key()}"


def cached(name: str, build: Callable[[], dict[str, np.ndarray]], spec: dict[str, tuple[tuple, str]]) -> dict[str, np.ndarray]:
    """``build()``'s arrays (``{field: array}``, shapes and dtypes as ``spec`` says: ``{field: (shape, dtype)}``, shape None: any),
    read from the cache entry ``name`` when it holds them, else built and written there. Read arrays are read-only."""
    entry = entry_dir()
    if entry is None:
        return build()
    paths = {f: entry / f"{name}.{f}.npy" for f in spec}
    if all(p.is_file() for p in paths.values()):
        try:
            got = {f: _read(p, *spec[f]) for f, p in paths.items()}
            log.debug("template cache: %s read from %s", name, entry)
            return got
        except (OSError, ValueError) as exc:
            log.warning("template cache: %s in %s is unreadable (%s); recomputing it", name, entry, exc)
    arrays = build()
    _write(entry, paths, arrays)
    return arrays


def _prune(entry: Path, keep: int = KEEP) -> None:
    """Remove all but the ``keep`` newest ``template-*`` entries beside ``entry`` (another version's: stale). A
    process that maps a removed file keeps its mapping; one writing into a removed entry logs and goes on."""
    import shutil

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    others = sorted((p for p in entry.parent.glob("template-*") if p != entry and p.is_dir()), key=mtime, reverse=True)
    for old in others[max(0, keep - 1):]:
        shutil.rmtree(old, ignore_errors=True)
        log.info("template cache: removed the stale entry %s", old)


def _read(path: Path, shape: tuple, dtype: str) -> np.ndarray:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if (shape is not None and arr.shape != tuple(shape)) or arr.dtype != np.dtype(dtype) or not arr.flags.c_contiguous:
        raise ValueError(f"{path.name}: {arr.dtype}{arr.shape}, expected {np.dtype(dtype)}{tuple(shape)}")
    return np.asarray(arr)  # a plain read-only ndarray over the mapped file


def _write(entry: Path, paths: dict[str, Path], arrays: dict[str, np.ndarray]) -> None:
    try:
        if not entry.is_dir():
            entry.mkdir(parents=True, exist_ok=True)
            _prune(entry)
        for field, path in paths.items():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                with open(tmp, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(arrays[field]), allow_pickle=False)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        log.debug("template cache: wrote %s", ", ".join(p.name for p in paths.values()))
    except OSError as exc:
        with _LOCK:
            if str(entry) not in _WARNED:
                _WARNED.add(str(entry))
                log.warning("template cache: cannot write %s (%s); going on without it", entry, exc)
