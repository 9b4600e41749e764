"""Tile stores: one HDF5 file of uint8 tiles with labels and level-0 coordinates, plus a
``manifest.csv``; also reads PatchCamelyon-style HDF5 (``x`` N x 96 x 96 x 3 uint8 and
``y`` labels, in one file or in the ``*_x.h5`` / ``*_y.h5`` pair PCam ships).

Layout of a store folder ``T/``: ``T/tiles.h5`` with datasets ``x`` (N, S, S, 3) uint8
(chunked about 1 MiB of tiles per chunk), ``y`` (N,) int64 (-1 = unlabeled), ``coords`` (N, 2)
int64 level-0 ``(x, y)``; attributes in ``x.attrs``/file attrs (JSON ``meta``).

A whole-slide store is written tile row by tile row with :class:`TileStoreWriter` (resizable
chunked datasets, renamed into place on success), and read without loading the tiles with
:func:`open_tile_store` (labels, coordinates and metadata only; tiles are read by range).

>>> ts = TileSet(x=np.zeros((2, 8, 8, 3), np.uint8), y=np.array([0, 1]))
>>> len(ts), ts.tile_size
(2, 8)
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     with TileStoreWriter(d, tile_size=8) as w:
...         w.append(np.ones((3, 8, 8, 3), np.uint8), y=np.array([0, 1, -1]), coords=np.zeros((3, 2)))
...         w.meta["classes"] = ["a", "b"]
...     info = open_tile_store(d)
...     info.n, info.tile_size, info.y.tolist(), info.meta["classes"], info.read(1, 3).shape
(3, 8, [0, 1, -1], ['a', 'b'], (2, 8, 8, 3))
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import InputError
from fedimg.io import atomic_path

__all__ = ["TileSet", "StoreInfo", "TileStoreWriter", "STORE_NAME", "MANIFEST_FIELDS", "open_tile_store", "load_tile_set",
           "write_tile_set", "write_manifest", "read_manifest"]

log = logging.getLogger(__name__)

STORE_NAME = "tiles.h5"
MANIFEST_FIELDS = ["index", "x", "y", "level", "mpp", "tile_size", "tissue_fraction", "label"]


@dataclass
class TileSet:
    """Tiles ``x`` (N, S, S, 3) uint8 in memory, labels ``y`` (N,) int (-1 unlabeled)."""

    x: np.ndarray
    y: np.ndarray
    coords: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def tile_size(self) -> int:
        return int(self.x.shape[1])

    @property
    def labeled(self) -> np.ndarray:
        return self.y >= 0


def _check(path: Path, x: Any, y: np.ndarray | None, n: int) -> None:
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2]:
        raise InputError(path, f"dataset 'x' has shape {tuple(x.shape)}; expected N x S x S x 3 RGB tiles")
    if x.dtype != np.uint8:
        raise InputError(path, f"dataset 'x' is {x.dtype}; expected uint8 RGB tiles")
    if n == 0:
        raise InputError(path, "holds no tiles; check the tiling (min tissue fraction?) or the file")
    if y is not None and y.shape[0] != n:
        raise InputError(path, f"has {n} tiles but {y.shape[0]} labels; the x and y files do not match")


@dataclass
class StoreInfo:
    """A tile store opened without its tiles: the ``.h5`` holding ``x``, tile count (after
    ``max_tiles``), tile side, labels ``y`` (int64, -1 unlabeled), ``coords`` and ``meta``."""

    path: Path
    n: int
    tile_size: int
    y: np.ndarray
    coords: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tiles ``start:stop`` as uint8 ``(n, S, S, 3)`` (one contiguous HDF5 read)."""
        import h5py

        with h5py.File(self.path, "r") as f:
            return np.asarray(f["x"][start:stop])


def _store_file(path: Path) -> Path:
    if path.is_dir():
        path = path / STORE_NAME
        if not path.exists():
            raise InputError(path.parent, f"has no {STORE_NAME}; make one with `fedimg tiles` or pass a PatchCamelyon .h5 file")
    if not path.exists():
        raise InputError(path, "does not exist; check the --data path")
    return path


def open_tile_store(path: str | Path, *, max_tiles: int | None = None) -> StoreInfo:
    """Check a store folder, store ``.h5`` or PatchCamelyon ``x``/``y`` file (pair) and read
    everything but the tiles (memory: a few bytes per tile)."""
    import h5py

    path = _store_file(Path(path))
    sl = slice(None) if max_tiles is None else slice(0, int(max_tiles))
    try:
        with h5py.File(path, "r") as f:
            if "x" not in f:
                raise InputError(path, f"has no dataset 'x' (found {sorted(f.keys())}); expected tiles as 'x' (N x S x S x 3 uint8)")
            x_ds = f["x"]
            y_ds = f["y"] if "y" in f else None
            if y_ds is not None and y_ds.shape[0] != x_ds.shape[0]:
                raise InputError(path, f"has {x_ds.shape[0]} tiles but {y_ds.shape[0]} labels; fix the 'y' dataset")
            n = len(range(x_ds.shape[0])[sl]) if x_ds.ndim else 0
            y = None if y_ds is None else np.asarray(y_ds[sl]).reshape(-1)
            _check(path, x_ds, y, n)
            coords = np.asarray(f["coords"][sl]) if "coords" in f else None
            meta = json.loads(f.attrs.get("meta", "{}"))
    except InputError:
        raise
    except OSError as exc:
        raise InputError(path, f"is not a readable HDF5 file ({exc}); it may be corrupt or truncated") from None
    if y is None:
        y = _pcam_labels(path, sl)
        if y is not None and y.shape[0] != n:
            raise InputError(path, f"has {n} tiles but {y.shape[0]} labels; the x and y files do not match")
    if y is None:
        y = np.full(n, -1, np.int64)
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.isfinite(y)):
        raise InputError(path, "labels contain NaN/Inf; fix the label dataset")
    y = y.astype(np.int64)
    if y.min() < -1:
        raise InputError(path, f"has label {int(y.min())}; labels must be >= 0 (or -1 for unlabeled)")
    return StoreInfo(path=path, n=n, tile_size=int(x_ds.shape[1]), y=y, coords=coords, meta=meta)


def load_tile_set(path: str | Path, *, max_tiles: int | None = None) -> TileSet:
    """Read a store folder, a store ``.h5``, or a PatchCamelyon ``x``/``y`` file (pair), tiles included."""
    info = open_tile_store(path, max_tiles=max_tiles)
    try:
        x = info.read(0, info.n)
    except OSError as exc:
        raise InputError(info.path, f"tiles cannot be read ({exc}); the file may be corrupt or truncated") from None
    return TileSet(x=x, y=info.y, coords=info.coords, meta=info.meta)


def _pcam_labels(path: Path, sl: slice) -> np.ndarray | None:
    """PCam ships ``..._x.h5`` and ``..._y.h5`` side by side (``y`` is N x 1 x 1 x 1)."""
    import h5py

    stem = path.name
    if "_x" not in stem:
        return None
    ypath = path.with_name(stem[::-1].replace("x_", "y_", 1)[::-1])
    if not ypath.exists():
        return None
    try:
        with h5py.File(ypath, "r") as f:
            return np.asarray(f["y"][sl]).reshape(-1)
    except (OSError, KeyError) as exc:
        raise InputError(ypath, f"cannot read labels 'y' ({exc}); fix or remove the label file") from None


def _chunk_tiles(tile_size: int) -> int:
    """Tiles per HDF5 chunk: about 1 MiB (one tile when a tile is larger)."""
    return max(1, (1 << 20) // (tile_size * tile_size * 3))


def write_tile_set(path: str | Path, ts: TileSet, *, compression: str | None = None) -> Path:
    """Atomically write ``ts`` as an HDF5 store (``path`` may be a folder or a file)."""
    with TileStoreWriter(path, tile_size=ts.tile_size, compression=compression, meta=ts.meta) as w:
        w.append(ts.x, y=ts.y, coords=ts.coords)
    return w.path


class TileStoreWriter:
    """Write a store incrementally: ``append`` tiles row by row into resizable chunked HDF5
    datasets (memory: one HDF5 chunk cache, whatever the tile count); on a clean exit the
    file (with ``meta``) is renamed onto ``path``/``tiles.h5``, on an error it is removed."""

    def __init__(self, path: str | Path, *, tile_size: int, compression: str | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        path = Path(path)
        self.path = path if path.suffix == ".h5" else path / STORE_NAME
        self.tile_size, self.compression, self.meta, self.n = int(tile_size), compression, dict(meta or {}), 0
        self._with_coords: bool | None = None

    def __enter__(self) -> TileStoreWriter:
        import h5py

        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        s = self.tile_size
        self._f = h5py.File(tmp, "w")
        self._x = self._f.create_dataset("x", shape=(0, s, s, 3), maxshape=(None, s, s, 3), dtype=np.uint8,
                                         chunks=(_chunk_tiles(s), s, s, 3), compression=self.compression)
        self._y = self._f.create_dataset("y", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(65536,))
        return self

    def append(self, x: np.ndarray, *, y: np.ndarray | None = None, coords: np.ndarray | None = None) -> None:
        """Add tiles ``x`` (n, S, S, 3) uint8 with labels ``y`` (default -1) and level-0 ``coords`` (n, 2)."""
        k = int(x.shape[0])
        if x.shape[1:] != (self.tile_size, self.tile_size, 3) or x.dtype != np.uint8:
            raise ValueError(f"tiles must be uint8 (n, {self.tile_size}, {self.tile_size}, 3), got {x.dtype} {x.shape}")
        if self._with_coords is None:
            self._with_coords = coords is not None
            if coords is not None:
                self._c = self._f.create_dataset("coords", shape=(0, 2), maxshape=(None, 2), dtype=np.int64, chunks=(65536, 2))
        if self._with_coords != (coords is not None):
            raise ValueError("pass coords with every append or with none")
        a, self.n = self.n, self.n + k
        for ds, v in ((self._x, x), (self._y, np.full(k, -1) if y is None else y)):
            ds.resize(self.n, axis=0)
            ds[a:] = v
        if coords is not None:
            self._c.resize(self.n, axis=0)
            self._c[a:] = np.asarray(coords, np.int64)

    def __exit__(self, *exc: Any) -> None:
        try:
            if exc[0] is None:
                self._f.attrs["meta"] = json.dumps(self.meta)
        finally:
            self._f.close()
            self._atomic.__exit__(*exc)


def write_manifest(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Atomically write ``manifest.csv`` (columns :data:`MANIFEST_FIELDS`, extra keys ignored);
    ``rows`` may be a generator (written as it goes)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in MANIFEST_FIELDS})


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``manifest.csv`` as dictionaries of strings."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        raise InputError(path, "does not exist; re-run `fedimg tiles`") from None
