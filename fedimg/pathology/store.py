"""Tile stores: one HDF5 file of uint8 tiles with labels and level-0 coordinates, plus a
``manifest.csv``; also reads PatchCamelyon-style HDF5 (``x`` N x 96 x 96 x 3 uint8 and
``y`` labels, in one file or in the ``*_x.h5`` / ``*_y.h5`` pair PCam ships).

Layout of a store folder ``T/``: ``T/tiles.h5`` with datasets ``x`` (N, S, S, 3) uint8
(chunked one tile per chunk), ``y`` (N,) int64 (-1 = unlabeled), ``coords`` (N, 2) int64
level-0 ``(x, y)``; attributes in ``x.attrs``/file attrs (JSON ``meta``).

>>> ts = TileSet(x=np.zeros((2, 8, 8, 3), np.uint8), y=np.array([0, 1]))
>>> len(ts), ts.tile_size
(2, 8)
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import InputError
from fedimg.io import atomic_path

__all__ = ["TileSet", "STORE_NAME", "MANIFEST_FIELDS", "load_tile_set", "write_tile_set", "write_manifest", "read_manifest"]

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


def _check(path: Path, x: Any, y: np.ndarray | None) -> None:
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2]:
        raise InputError(path, f"dataset 'x' has shape {tuple(x.shape)}; expected N x S x S x 3 RGB tiles")
    if x.dtype != np.uint8:
        raise InputError(path, f"dataset 'x' is {x.dtype}; expected uint8 RGB tiles")
    if x.shape[0] == 0:
        raise InputError(path, "holds no tiles; check the tiling (min tissue fraction?) or the file")
    if y is not None:
        if y.shape[0] != x.shape[0]:
            raise InputError(path, f"has {x.shape[0]} tiles but {y.shape[0]} labels; the x and y files do not match")
        if not np.issubdtype(y.dtype, np.integer) and not np.all(np.isfinite(y)):
            raise InputError(path, "labels contain NaN/Inf; fix the label dataset")


def load_tile_set(path: str | Path, *, max_tiles: int | None = None) -> TileSet:
    """Read a store folder, a store ``.h5``, or a PatchCamelyon ``x``/``y`` file (pair)."""
    import h5py

    path = Path(path)
    if path.is_dir():
        path = path / STORE_NAME
        if not path.exists():
            raise InputError(path.parent, f"has no {STORE_NAME}; make one with `fedimg tiles` or pass a PatchCamelyon .h5 file")
    if not path.exists():
        raise InputError(path, "does not exist; check the --data path")
    sl = slice(None) if max_tiles is None else slice(0, int(max_tiles))
    try:
        with h5py.File(path, "r") as f:
            if "x" not in f:
                raise InputError(path, f"has no dataset 'x' (found {sorted(f.keys())}); expected tiles as 'x' (N x S x S x 3 uint8)")
            x_ds = f["x"]
            y_ds = f["y"] if "y" in f else None
            if y_ds is not None and y_ds.shape[0] != x_ds.shape[0]:
                raise InputError(path, f"has {x_ds.shape[0]} tiles but {y_ds.shape[0]} labels; fix the 'y' dataset")
            y = None if y_ds is None else np.asarray(y_ds[sl]).reshape(-1)
            x = np.asarray(x_ds[sl])
            _check(path, x, y)
            coords = np.asarray(f["coords"][sl]) if "coords" in f else None
            meta = json.loads(f.attrs.get("meta", "{}"))
    except InputError:
        raise
    except OSError as exc:
        raise InputError(path, f"is not a readable HDF5 file ({exc}); it may be corrupt or truncated") from None
    if y is None:
        y = _pcam_labels(path, sl)
        if y is not None:
            _check(path, x, y)
    if y is None:
        y = np.full(len(x), -1, np.int64)
    y = y.astype(np.int64)
    if y.min() < -1:
        raise InputError(path, f"has label {int(y.min())}; labels must be >= 0 (or -1 for unlabeled)")
    return TileSet(x=x, y=y, coords=coords, meta=meta)


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


def write_tile_set(path: str | Path, ts: TileSet, *, compression: str | None = None) -> Path:
    """Atomically write ``ts`` as an HDF5 store (``path`` may be a folder or a file)."""
    import h5py

    path = Path(path)
    if path.suffix != ".h5":
        path = path / STORE_NAME
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            s = ts.tile_size
            f.create_dataset("x", data=ts.x, chunks=(1, s, s, 3) if len(ts) else None, compression=compression)
            f.create_dataset("y", data=np.asarray(ts.y, np.int64))
            if ts.coords is not None:
                f.create_dataset("coords", data=np.asarray(ts.coords, np.int64))
            f.attrs["meta"] = json.dumps(ts.meta)
    return path


def write_manifest(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Atomically write ``manifest.csv`` (columns :data:`MANIFEST_FIELDS`, extra keys ignored)."""
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
