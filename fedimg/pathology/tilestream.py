"""Tiles streamed from their HDF5 store instead of held in memory: a block-shuffling epoch
sampler with a seeded generator and in-order batches for evaluation.

A site's tiles are a list of :class:`StoreRows` (a store file and sorted row numbers;
pooling sites concatenates the lists). An epoch (:class:`StreamEpoch`) cuts the rows into
blocks of about 4 MiB of contiguous store rows, visits the blocks in a random order, reads
them a window at a time (one contiguous HDF5 read per block, the next window read by a
background thread while the current one trains) and shuffles the tiles inside each
window. Memory is two windows (``buffer_bytes``) whatever the number of tiles; every tile
is visited once per full epoch, in an order drawn from the trainer's ``torch.Generator``
(so ``--resume`` is exact).

>>> import tempfile, torch
>>> from fedimg.pathology.store import TileStoreWriter
>>> with tempfile.TemporaryDirectory() as d:
...     with TileStoreWriter(d, tile_size=4) as w:
...         w.append(np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((10, 4, 4, 3), np.uint8))
...     parts = [StoreRows(f"{d}/tiles.h5", np.array([0, 2, 3, 5, 7, 9]))]
...     epoch = StreamEpoch(parts, torch.arange(6), steps=3, batch_size=2, generator=torch.Generator().manual_seed(0),
...                         device=torch.device("cpu"), block_tiles=2)
...     batches = list(epoch)
...     evals = [(xb.shape, yb.tolist()) for xb, yb in iter_batches(parts, torch.arange(6), 4, torch.device("cpu"))]
>>> len(batches), batches[0][0].shape, sorted(int(v) for xb, _ in batches for v in xb[:, 0, 0, 0])
(3, torch.Size([2, 3, 4, 4]), [0, 2, 3, 5, 7, 9])
>>> all(int(x[0, 0, 0]) == [0, 2, 3, 5, 7, 9][int(y)] for xb, yb in batches for x, y in zip(xb, yb))
True
>>> evals
[(torch.Size([4, 3, 4, 4]), [0, 1, 2, 3]), (torch.Size([2, 3, 4, 4]), [4, 5])]
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import InputError

__all__ = ["StoreRows", "StreamEpoch", "iter_batches", "open_files", "read_rows", "BLOCK_BYTES"]

log = logging.getLogger(__name__)

#: target bytes of one block of contiguous store rows (one HDF5 read)
BLOCK_BYTES = 4 << 20


@dataclass(frozen=True)
class StoreRows:
    """Tiles ``rows`` (sorted store row numbers) of the store file ``path`` (its dataset ``x``)."""

    path: Path | str
    rows: np.ndarray

    def __len__(self) -> int:
        return int(len(self.rows))


class _Files:
    """Open HDF5 files by path, closed together (one reader at a time)."""

    def __init__(self) -> None:
        self._open: dict[str, Any] = {}

    def x(self, path: Path | str) -> Any:
        import h5py

        key = str(path)
        if key not in self._open:
            try:
                self._open[key] = h5py.File(key, "r")
            except OSError as exc:
                raise InputError(path, f"cannot be read ({exc}); the tile store may have been moved or truncated") from None
        return self._open[key]["x"]

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


def read_rows(files: _Files, part: StoreRows, a: int, b: int, *, max_gap: int = 8) -> np.ndarray:
    """Tiles ``part.rows[a:b]`` as uint8 ``(n, S, S, 3)``: one contiguous HDF5 read per run of rows
    whose gaps are at most ``max_gap`` rows (sparse rows are not read as one long span)."""
    rows = part.rows[a:b]
    x = files.x(part.path)
    out = []
    for run in np.split(rows, np.flatnonzero(np.diff(rows) > max_gap) + 1):
        lo, hi = int(run[0]), int(run[-1]) + 1
        try:
            block = x[lo:hi]
        except OSError as exc:
            raise InputError(part.path, f"tiles {lo}:{hi} cannot be read ({exc}); the tile store may be truncated") from None
        out.append(block if hi - lo == len(run) else block[run - lo])
    return out[0] if len(out) == 1 else np.concatenate(out)


def _tile_bytes(parts: list[StoreRows], files: _Files) -> int:
    shape = next((files.x(p.path).shape for p in parts if len(p)), (1, 1, 1, 3))
    return int(np.prod(shape[1:]))


def _blocks(parts: list[StoreRows], block_tiles: int) -> list[tuple[int, int, int, int]]:
    """``(part, a, b, position of part.rows[a] in the concatenated rows)`` blocks of at most ``block_tiles``."""
    out, offset = [], 0
    for i, p in enumerate(parts):
        out.extend((i, a, min(a + block_tiles, len(p)), offset + a) for a in range(0, len(p), block_tiles))
        offset += len(p)
    return out


def _to_device(tiles: np.ndarray, device: Any, transform: Callable | None) -> Any:
    """uint8 ``(n, S, S, 3)`` host tiles → uint8 ``(n, 3, S, S)`` on ``device`` (stain-normalised by ``transform``)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).contiguous().to(device)
    return transform(x) if transform is not None else x


class StreamEpoch:
    """One epoch of ``steps`` batches ``(x uint8 (B, 3, S, S) on device, y)`` streamed from the store.

    ``y`` holds the labels of the concatenated ``parts`` rows. Blocks of ``block_tiles``
    (default: about :data:`BLOCK_BYTES`) are visited in an order drawn from ``generator``
    when iteration starts; windows of ``buffer_bytes // 2`` are shuffled within (the next one
    read in a background thread). ``len()`` is ``steps``.
    """

    def __init__(self, parts: list[StoreRows], y: Any, *, steps: int, batch_size: int, generator: Any, device: Any,
                 transform: Callable | None = None, buffer_bytes: int = 256 << 20, block_tiles: int | None = None,
                 prefetch: bool = True) -> None:
        self.parts, self.y, self.steps, self.batch_size = parts, y, int(steps), int(batch_size)
        self.generator, self.device, self.transform = generator, device, transform
        self.buffer_bytes, self.block_tiles, self.prefetch = int(buffer_bytes), block_tiles, prefetch

    def __len__(self) -> int:
        return self.steps

    def _read(self, files: _Files, blocks: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
        tiles = [read_rows(files, self.parts[i], a, b) for i, a, b, _ in blocks]
        pos = [np.arange(o, o + b - a) for _, a, b, o in blocks]
        return np.concatenate(tiles), np.concatenate(pos)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        import torch

        files = _Files()
        pool = ThreadPoolExecutor(1, thread_name_prefix="fedimg-tiles") if self.prefetch else None
        try:
            tile_bytes = _tile_bytes(self.parts, files)
            block = self.block_tiles or max(1, BLOCK_BYTES // tile_bytes)
            blocks = _blocks(self.parts, block)
            if not blocks:
                raise ValueError("no training tiles")
            order = torch.randperm(len(blocks), generator=self.generator).tolist()
            per_window = max(1, (self.buffer_bytes // 2) // (block * tile_bytes))
            per_window = min(per_window, -(-self.steps * self.batch_size // block))  # a capped epoch reads what it uses
            windows = [[blocks[k] for k in order[w : w + per_window]] for w in range(0, len(order), per_window)]
            submit = (lambda w: pool.submit(self._read, files, w)) if pool else (lambda w: _Done(self._read(files, w)))
            pending = submit(windows[0])
            left_x, left_p = np.empty((0,), np.uint8), np.empty((0,), np.int64)
            emitted = 0
            for k in range(len(windows)):
                if pending is None:
                    break
                x, p = pending.result()
                pending = None
                if k + 1 < len(windows) and (self.steps - emitted) * self.batch_size > len(p) + len(left_p):
                    pending = submit(windows[k + 1])  # read ahead while this window trains, only if needed
                if len(left_p):
                    x, p = np.concatenate([left_x, x]), np.concatenate([left_p, p])
                perm = torch.randperm(len(p), generator=self.generator).numpy()
                last = k + 1 == len(windows)
                n_full = len(p) if last else len(p) // self.batch_size * self.batch_size
                for s in range(0, n_full, self.batch_size):
                    sel = np.sort(perm[s : min(s + self.batch_size, n_full)])
                    yield _to_device(x[sel], self.device, self.transform), self.y[torch.from_numpy(p[sel]).to(self.y.device)]
                    emitted += 1
                    if emitted == self.steps:
                        return
                left_x, left_p = x[perm[n_full:]], p[perm[n_full:]]
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            files.close()


class _Done:
    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def iter_batches(parts: list[StoreRows], y: Any, batch: int, device: Any, transform: Callable | None = None
                 ) -> Iterator[tuple[Any, Any]]:
    """``(x uint8 (B, 3, S, S) on device, y)`` of every tile of ``parts`` in order, ``batch`` at a time (evaluation)."""
    files = _Files()
    try:
        offset = 0
        for part in parts:
            for a in range(0, len(part), batch):
                b = min(a + batch, len(part))
                yield _to_device(read_rows(files, part, a, b), device, transform), y[offset + a : offset + b]
            offset += len(part)
    finally:
        files.close()


@contextlib.contextmanager
def open_files() -> Iterator[_Files]:
    """Open store files for :func:`read_rows`, closed on exit."""
    files = _Files()
    try:
        yield files
    finally:
        files.close()
