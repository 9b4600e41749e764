"""Whole-slide-scale test slides: a real H&E slide repeated into a large pyramidal TIFF.

:func:`write_mosaic_slide` tiles a real slide (default: the CMU small-region SVS of the test
assets) ``cols x rows`` times into one tiled, zlib-compressed, pyramidal TIFF written by
``tifffile`` (levels halve down to ``max(w, h) <= 1024``, each level its own page, microns per
pixel in the resolution tags), as OpenSlide's generic-TIFF reader and
:func:`fedimg.pathology.slide.open_slide` expect. The TIFF is written tile by tile from a
generator: the memory is the source slide (about 20 MB), not the mosaic, so slides of many
GB can be made on a small machine to test that tiling and training stay in bounded memory.

>>> import tempfile
>>> from fedimg.pathology.slide import open_slide
>>> with tempfile.TemporaryDirectory() as d:
...     path = write_mosaic_slide(f"{d}/mosaic.tif", cols=2, rows=1)
...     with open_slide(path) as s:
...         s.dimensions, s.level_count, round(s.mpp, 3)
((4432, 2960), 4, 0.499)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fedimg.errors import ConfigError

__all__ = ["write_mosaic_slide"]

log = logging.getLogger(__name__)

_TILE = 256


def _pyramid(src: np.ndarray, levels: int) -> list[np.ndarray]:
    """``src`` cropped to a multiple of ``2**(levels-1)`` and its 2x block-mean downsamples."""
    f = 2 ** (levels - 1)
    h, w = src.shape[0] // f * f, src.shape[1] // f * f
    out = [np.ascontiguousarray(src[:h, :w])]
    for _ in range(levels - 1):
        a = out[-1].astype(np.uint16)
        a = (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) // 4
        out.append(a.astype(np.uint8))
    return out


def _tiles(cell: np.ndarray, shape: tuple[int, int]):
    """The ``shape`` mosaic of ``cell`` (periodic), as ``_TILE``-square tiles in row-major order (white beyond)."""
    ch, cw = cell.shape[:2]
    for y0 in range(0, shape[0], _TILE):
        ys = np.arange(y0, y0 + _TILE)
        for x0 in range(0, shape[1], _TILE):
            xs = np.arange(x0, x0 + _TILE)
            t = cell[np.ix_(ys % ch, xs % cw)]
            t[ys >= shape[0]] = 255
            t[:, xs >= shape[1]] = 255
            yield t


def write_mosaic_slide(path: str | Path, *, cols: int, rows: int, slide: str | Path | None = None,
                       compression_level: int = 1) -> Path:
    """Write ``path`` (a ``.tif``): the slide repeated ``cols x rows`` times, pyramidal, tiled; returns ``path``."""
    import tifffile

    from fedimg.io import atomic_path

    from .slide import open_slide
    from .synth import default_slide

    if cols < 1 or rows < 1:
        raise ConfigError(f"a mosaic needs cols, rows >= 1, got {cols} x {rows}")
    with open_slide(slide or default_slide()) as s:
        src, mpp = s.read_level(0), s.mpp
    h, w = src.shape[0] * rows, src.shape[1] * cols
    levels = 1
    while max(h, w) >> (levels - 1) > 1024 and min(src.shape[:2]) >> levels >= 16:
        levels += 1
    cells = _pyramid(src, levels)
    opts = {"tile": (_TILE, _TILE), "photometric": "rgb", "compression": "zlib",
            "compressionargs": {"level": compression_level}, "resolutionunit": "CENTIMETER"}
    path = Path(path)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for k, cell in enumerate(cells):
            shape = (cell.shape[0] * rows, cell.shape[1] * cols)
            res = 1e4 / (mpp * 2**k)
            tif.write(_tiles(cell, shape), shape=(*shape, 3), dtype=np.uint8, resolution=(res, res),
                      subfiletype=1 if k else 0, **opts)
    log.info("wrote %s: %d x %d px, %d levels, %.3f um/px", path, cells[0].shape[1] * cols, cells[0].shape[0] * rows,
             levels, mpp)
    return path
