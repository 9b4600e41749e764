"""Whole-slide image reading: OpenSlide first, tifffile for plain (pyramidal) TIFF, PIL for
small plain images; one small interface whatever the backend.

Coordinates follow OpenSlide: ``(x, y)`` in level-0 pixels, sizes ``(width, height)`` in the
requested level's pixels. Regions come back as ``(H, W, 3)`` uint8 RGB, transparent areas
composited on white.

The tifffile backend (TIFFs OpenSlide does not take: stripped, or a compression it lacks)
decodes only the strips or tiles a region touches, so a multi-GB TIFF is read in bounded memory.

Whole levels (the tissue-mask thumbnail, or level 0 of a small slide) are read as horizontal
strips in parallel threads (OpenSlide decodes with the GIL released), and a level read whole
is kept in memory when it fits ``cache_bytes``, so tiling a slide whose mask level is also its
tile level decodes the slide once, not twice.

>>> from fedimg.pathology.synth import default_slide  # the real CMU small-region SVS of the test assets
>>> with open_slide(default_slide()) as s:
...     s.dimensions, round(s.mpp, 3), s.read_region((0, 0), 0, (64, 32)).shape
((2220, 2967), 0.499, (32, 64, 3))
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.device import available_cpus
from fedimg.errors import InputError

__all__ = ["Slide", "open_slide", "SUPPORTED_SUFFIXES"]

log = logging.getLogger(__name__)

OPENSLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".vms", ".vmu", ".tif", ".tiff", ".dcm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SUPPORTED_SUFFIXES = OPENSLIDE_SUFFIXES + IMAGE_SUFFIXES


@dataclass
class Slide:
    """An opened slide. Use :func:`open_slide`; close with :meth:`close` or ``with``."""

    path: Path
    backend: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float
    _reader: Any = field(repr=False, default=None)
    _levels: list[Any] = field(repr=False, default_factory=list)
    threads: int = field(default_factory=available_cpus)
    cache_bytes: int = 512 * 2**20
    _cache: dict[int, np.ndarray] = field(repr=False, default_factory=dict)
    _pool: ThreadPoolExecutor | None = field(repr=False, default=None)
    _pool_threads: int = field(repr=False, default=0)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def level_mpp(self, level: int) -> float:
        return self.mpp * self.level_downsamples[level]

    def best_level_for_mpp(self, mpp: float, tolerance: float = 0.02) -> int:
        """The coarsest level whose resolution is at least as fine as ``mpp`` (within ``tolerance``)."""
        ok = [lv for lv in range(self.level_count) if self.level_mpp(lv) <= mpp * (1 + tolerance)]
        if not ok:
            log.warning("%s: %.3f um/px asked, finest level is %.3f; tiles will be upsampled", self.path, mpp, self.mpp)
            return 0
        return max(ok, key=self.level_mpp)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 ``(h, w, 3)`` region at ``level``, top-left ``location`` in level-0 pixels."""
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        if level in self._cache:
            return _crop(self._cache[level], location, self.level_downsamples[level], w, h)
        try:
            if self.backend == "openslide":
                return _pil_rgb(self._reader.read_region((int(location[0]), int(location[1])), level, (w, h)))
            return self._read_array_region(location, level, w, h)
        except InputError:
            raise
        except Exception as exc:  # truncated/corrupt tile data surfaces only when read
            raise InputError(self.path, f"could not read a region at {tuple(location)} level {level} ({exc}); the file may be truncated or corrupt") from None

    def read_regions(self, requests: list[tuple[tuple[int, int], int, tuple[int, int]]]) -> list[np.ndarray]:
        """:meth:`read_region` for each ``(location, level, size)``, in parallel threads, in order."""
        if self.threads <= 1 or len(requests) <= 1 or self.backend != "openslide":
            return [self.read_region(*r) for r in requests]
        if self._pool is None or self._pool_threads != self.threads:  # one pool per slide, not per call
            if self._pool is not None:
                self._pool.shutdown()
            self._pool, self._pool_threads = ThreadPoolExecutor(self.threads, thread_name_prefix="fedimg-slide"), self.threads
        return list(self._pool.map(lambda r: self.read_region(*r), requests))

    def read_level(self, level: int) -> np.ndarray:
        """A whole level as RGB uint8 (a low-resolution one, or a small slide), read in parallel
        strips and kept in memory when it fits ``cache_bytes``."""
        if level in self._cache:
            return self._cache[level]
        w, h = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        # strips only where level rows map to whole level-0 rows (non-integer downsamples would
        # let OpenSlide round each strip's origin differently)
        n = max(1, min(4 * self.threads, h // 256)) if self.threads > 1 and float(ds).is_integer() else 1
        bounds = np.linspace(0, h, n + 1).round().astype(int)
        strips = self.read_regions([((0, int(round(y0 * ds))), level, (w, int(y1 - y0))) for y0, y1 in zip(bounds[:-1], bounds[1:])])
        img = strips[0] if n == 1 else np.concatenate(strips, axis=0)
        if img.nbytes <= self.cache_bytes:
            self._cache[level] = img
        return img

    def read_thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        """An RGB image whose longer side is at most ``max_side``; returns it and its downsample from level 0."""
        level = self.level_count - 1
        for lv in range(self.level_count):  # finest level that is already small enough
            if max(self.level_dimensions[lv]) <= max_side:
                level = lv
                break
        img = self.read_level(level)
        ds = self.level_downsamples[level]
        if max(img.shape[:2]) > max_side:
            from PIL import Image

            scale = max_side / max(img.shape[:2])
            size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
            img = np.asarray(Image.fromarray(img).resize(size, Image.BOX))
            ds = ds * self.level_dimensions[level][0] / size[0]
        return img, float(ds)

    def _read_array_region(self, location, level, w, h) -> np.ndarray:
        arr = self._levels[level]
        if self.backend == "tifffile" and _chunk_readable(arr):
            ds = self.level_downsamples[level]
            return _rgb(_tiff_region(self._reader, arr, int(round(location[0] / ds)), int(round(location[1] / ds)), w, h))
        if callable(arr):
            arr = self._levels[level] = _rgb(arr())
        elif not isinstance(arr, np.ndarray):  # a TIFF page stored in a way we do not read by chunks
            log.warning("%s: level %d is decoded whole (not a tiled/stripped contiguous uint8 TIFF)", self.path, level)
            arr = self._levels[level] = _rgb(arr.asarray())
        return _crop(arr, location, self.level_downsamples[level], w, h)

    def close(self) -> None:
        self._cache.clear()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _crop(arr: np.ndarray, location, ds: float, w: int, h: int) -> np.ndarray:
    """``(h, w)`` window of a level array at level-0 ``location``; outside the level is white."""
    x, y = int(round(location[0] / ds)), int(round(location[1] / ds))
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, arr.shape[1]), min(y + h, arr.shape[0])
    if x0 == x and y0 == y and x1 - x0 == w and y1 - y0 == h:
        return arr[y0:y1, x0:x1].copy()
    out = np.full((h, w, 3), 255, np.uint8)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = arr[y0:y1, x0:x1]
    return out


def _pil_rgb(img: Any) -> np.ndarray:
    """RGB array of an OpenSlide RGBA region: alpha dropped in C when opaque, else composited on white."""
    if img.getextrema()[3][0] == 255:
        return np.asarray(img.convert("RGB"))
    return _over_white(np.asarray(img))


def _over_white(rgba: np.ndarray) -> np.ndarray:
    if rgba.shape[-1] == 3:
        return np.ascontiguousarray(rgba)
    a = rgba[..., 3:4]
    if a.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    rgb = rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a.astype(np.uint16))
    return (rgb // 255).astype(np.uint8)


def _rgb(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint8:
        raise ValueError(f"expected an RGB(A) uint8 image, got shape {arr.shape} dtype {arr.dtype}")
    return _over_white(arr)


def open_slide(path: str | Path, *, mpp: float | None = None) -> Slide:
    """Open a slide; ``mpp`` overrides (or supplies) the level-0 microns per pixel.

    Raises :class:`InputError` for a missing, unsupported or unreadable file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist; check the --slide path")
    if path.is_dir() and path.suffix.lower() != ".mrxs":
        raise InputError(path, "is a folder; pass a slide file (.svs, .ndpi, .mrxs, .tif, ...)")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(path, f"unsupported slide format {suffix or '(no extension)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    if suffix in IMAGE_SUFFIXES:
        slide = _open_image(path)
    else:
        try:
            slide = _open_openslide(path)
        except InputError:
            if suffix not in (".tif", ".tiff"):
                raise
            slide = None  # e.g. a TIFF compression OpenSlide lacks: tifffile may still read it
        if slide is None:
            if suffix not in (".tif", ".tiff"):
                raise InputError(path, "is not a readable whole-slide image (OpenSlide cannot open it); the file may be corrupt or truncated")
            slide = _open_tifffile(path)
    if mpp is not None:
        if not mpp > 0:
            raise InputError(path, f"--slide-mpp must be positive, got {mpp}")
        slide.mpp = float(mpp)
    if not slide.mpp or not np.isfinite(slide.mpp):
        slide.close()
        raise InputError(path, "has no microns-per-pixel metadata; pass --slide-mpp (e.g. 0.25 for 40x, 0.5 for 20x)")
    log.debug("opened %s with %s: %s levels, %.4f um/px", path, slide.backend, slide.level_count, slide.mpp)
    return slide


def _open_openslide(path: Path) -> Slide | None:
    import openslide

    try:
        reader = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        return None
    except (openslide.OpenSlideError, OSError) as exc:
        raise InputError(path, f"OpenSlide cannot read it ({exc}); the file may be corrupt or truncated") from None
    props = reader.properties
    mpp = _float(props.get(openslide.PROPERTY_NAME_MPP_X))
    return Slide(
        path=path,
        backend="openslide",
        level_dimensions=tuple(tuple(int(v) for v in d) for d in reader.level_dimensions),
        level_downsamples=tuple(float(d) for d in reader.level_downsamples),
        mpp=mpp or 0.0,
        _reader=reader,
    )


def _open_tifffile(path: Path) -> Slide:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise InputError(path, f"is not a readable TIFF ({exc}); the file may be corrupt or truncated") from None
    try:
        series = tif.series[0]
        pages = [lv.keyframe for lv in getattr(series, "levels", [series])]
        mpp = _tiff_mpp(tif.pages[0])
    except Exception as exc:
        tif.close()
        raise InputError(path, f"is not a readable TIFF ({exc}); the file may be corrupt or truncated") from None
    dims = []
    for page in pages:
        shp = page.shape
        if len(shp) == 3 and shp[0] in (3, 4) and shp[-1] not in (3, 4):
            tif.close()
            raise InputError(path, f"has planar (channel-first) data {shp}; convert it to an RGB pyramidal TIFF")
        dims.append((int(shp[1]), int(shp[0])))
    return Slide(
        path=path,
        backend="tifffile",
        level_dimensions=tuple(dims),
        level_downsamples=tuple(dims[0][0] / d[0] for d in dims),
        mpp=mpp or 0.0,
        _reader=tif,
        _levels=pages,
    )


def _chunk_readable(page: Any) -> bool:
    """A TIFF page whose tiles/strips can be decoded one by one into RGB(A)/grey uint8."""
    return (hasattr(page, "dataoffsets") and getattr(page, "planarconfig", 1) == 1 and page.dtype == np.uint8
            and len(page.shape) in (2, 3) and len(page.dataoffsets) > 0 and len(page.chunks) in (2, 3))


def _tiff_region(tif: Any, page: Any, x: int, y: int, w: int, h: int) -> np.ndarray:
    """``(h, w[, spp])`` window at level pixel ``(x, y)`` of a tiled or stripped TIFF page, decoding
    only the tiles/strips it overlaps (white outside the image)."""
    ch, cw = page.chunks[0], page.chunks[1]
    H, W = page.shape[0], page.shape[1]
    spp = page.shape[2] if len(page.shape) == 3 else 1
    out = np.full((h, w, spp), 255, np.uint8)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return out
    per_row = -(-W // cw)
    fh = tif.filehandle
    for gy in range(y0 // ch, (y1 - 1) // ch + 1):
        for gx in range(x0 // cw, (x1 - 1) // cw + 1):
            i = gy * per_row + gx
            if not page.databytecounts[i]:
                continue  # a sparse (empty) tile: background
            fh.seek(page.dataoffsets[i])
            seg, _, _ = page.decode(fh.read(page.databytecounts[i]), i, jpegtables=page.jpegtables)
            seg = seg.reshape(-1, cw if page.is_tiled else W, spp)
            sy, sx = gy * ch, gx * cw
            ay, ax, by, bx = max(y0, sy), max(x0, sx), min(y1, sy + seg.shape[0]), min(x1, sx + seg.shape[1])
            out[ay - y : by - y, ax - x : bx - x] = seg[ay - sy : by - sy, ax - sx : bx - sx]
    return out[..., 0] if spp == 1 else out


def _open_image(path: Path) -> Slide:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = _rgb(np.asarray(im.convert("RGBA")))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(path, f"is not a readable image ({exc}); the file may be corrupt") from None
    return Slide(path=path, backend="pil", level_dimensions=((arr.shape[1], arr.shape[0]),), level_downsamples=(1.0,), mpp=0.0, _levels=[arr])


def _tiff_mpp(page: Any) -> float | None:
    try:
        tags = page.tags
        xres = tags["XResolution"].value
        unit = int(tags["ResolutionUnit"].value)
    except (KeyError, TypeError, ValueError):
        return None
    px_per_unit = xres[0] / xres[1] if isinstance(xres, tuple) else float(xres)
    if px_per_unit <= 0:
        return None
    return {3: 1e4, 2: 25400.0}.get(unit, 0.0) / px_per_unit or None


def _float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None
