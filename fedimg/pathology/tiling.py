"""Tiling a slide at a given resolution: tissue-only grid, strip reads, HDF5 store,
``manifest.csv`` and ``thumbnail.png``, streamed: tiles go from each batch of row reads
straight into the store (:class:`~fedimg.pathology.store.TileStoreWriter`), so a 100k x 100k
px slide is tiled in memory that does not grow with its number of tiles.

The grid lives on the pyramid level nearest (and not coarser than) the requested mpp.
Each tile row is read with one ``read_region`` call and cut into tiles (far fewer
OpenSlide calls than one per tile), rows are read in parallel threads, and tiles are resized
as a batch when the level's mpp differs from the requested one by more than 1 %. When the
tissue mask was computed from the tile level itself (a small slide), the level decoded for
the mask is cut into tiles directly.

>>> cfg = TileConfig(tile_size=224, mpp=0.5)
>>> plan = plan_tiles(open_slide("tests/assets/pathology/cmu_small_region.svs"), cfg)  # doctest: +SKIP
>>> plan.x.shape == plan.y.shape  # doctest: +SKIP
True
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import ConfigError

from .slide import Slide, open_slide
from .store import TileStoreWriter, write_manifest
from .tissue import slide_tissue_mask

__all__ = ["TileConfig", "TilePlan", "plan_tiles", "iter_tiles", "extract_tiles", "draw_thumbnail"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TileConfig:
    """Tiling options: tile side in output pixels at ``mpp`` microns/pixel."""

    tile_size: int = 224
    mpp: float = 0.5
    overlap: int = 0
    min_tissue: float = 0.5
    tissue_method: str = "saturation"
    mask_mpp: float = 8.0
    max_tiles: int | None = None

    def __post_init__(self) -> None:
        if self.tile_size < 8:
            raise ConfigError(f"--tile-size {self.tile_size} is too small; use >= 8")
        if not self.mpp > 0:
            raise ConfigError(f"--mpp must be positive, got {self.mpp}")
        if not 0 <= self.overlap < self.tile_size:
            raise ConfigError(f"--overlap {self.overlap} must be in [0, tile size)")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ConfigError(f"--min-tissue {self.min_tissue} must be in [0, 1]")
        if self.tissue_method not in ("saturation", "od"):
            raise ConfigError(f"--tissue-method {self.tissue_method!r}: use saturation or od")
        if self.max_tiles is not None and self.max_tiles < 1:
            raise ConfigError("--max-tiles must be >= 1")


@dataclass
class TilePlan:
    """Tiles to extract: level-0 top-left ``x, y``; level grid ``read_size``; tissue fractions."""

    x: np.ndarray
    y: np.ndarray
    tissue_fraction: np.ndarray
    level: int
    read_size: int
    size0: float
    mask: np.ndarray
    thumb: np.ndarray
    mask_downsample: float

    def __len__(self) -> int:
        return int(self.x.shape[0])


def plan_tiles(slide: Slide, config: TileConfig, *, device=None) -> TilePlan:
    """Detect tissue and lay out the tile grid (only tiles with enough tissue)."""
    mask, thumb, mds = slide_tissue_mask(slide, mask_mpp=config.mask_mpp, method=config.tissue_method, device=device)
    level = slide.best_level_for_mpp(config.mpp)
    ds = slide.level_downsamples[level]
    scale = config.mpp / slide.level_mpp(level)
    read_size = config.tile_size if abs(scale - 1) <= 0.01 else int(round(config.tile_size * scale))
    stride = max(1, int(round((config.tile_size - config.overlap) * read_size / config.tile_size)))
    lw, lh = slide.level_dimensions[level]
    xs_l = np.arange(0, lw - read_size + 1, stride)
    ys_l = np.arange(0, lh - read_size + 1, stride)
    gx, gy = np.meshgrid(xs_l, ys_l)
    gx, gy = gx.ravel(), gy.ravel()
    x0 = np.round(gx * ds).astype(np.int64)
    y0 = np.round(gy * ds).astype(np.int64)
    size0 = read_size * ds
    frac = _window_fraction(mask, x0 / mds, y0 / mds, size0 / mds)
    keep = frac >= config.min_tissue
    if config.min_tissue == 0:
        keep = np.ones_like(keep)
    x0, y0, frac = x0[keep], y0[keep], frac[keep]
    if config.max_tiles is not None and len(x0) > config.max_tiles:
        order = np.argsort(-frac, kind="stable")[: config.max_tiles]
        order.sort()
        x0, y0, frac = x0[order], y0[order], frac[order]
    log.info("%s: level %d (%.3f um/px), %d tissue tiles of %d px", slide.path.name, level, slide.level_mpp(level), len(x0), read_size)
    return TilePlan(x=x0, y=y0, tissue_fraction=frac, level=level, read_size=read_size, size0=size0, mask=mask, thumb=thumb, mask_downsample=mds)


def _window_fraction(mask: np.ndarray, mx: np.ndarray, my: np.ndarray, side: float) -> np.ndarray:
    """Mean of ``mask`` over windows ``[mx, mx+side) x [my, my+side)`` (mask pixels), by integral image."""
    ii = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1))
    ii[1:, 1:] = mask.astype(np.float64).cumsum(0).cumsum(1)
    h, w = mask.shape
    x0 = np.clip(np.floor(mx).astype(int), 0, w)
    y0 = np.clip(np.floor(my).astype(int), 0, h)
    x1 = np.clip(np.maximum(np.ceil(mx + side).astype(int), x0 + 1), 0, w)
    y1 = np.clip(np.maximum(np.ceil(my + side).astype(int), y0 + 1), 0, h)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return (ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]) / area


def iter_tiles(slide: Slide, plan: TilePlan, tile_size: int, *, max_strip_px: int = 16384):
    """Yield ``(indices, tiles (n, S, S, 3) uint8)`` row by row, one region read per row segment.

    Segments are read ``slide.threads`` at a time in parallel threads (in order); a level the
    slide holds in memory (see :meth:`Slide.read_level`) is cut without decoding again.
    """
    ds = slide.level_downsamples[plan.level]
    rs = plan.read_size
    order = np.lexsort((plan.x, plan.y))
    if len(order) == 0:
        return

    def segments():  # lazily, row by row: memory does not grow with the number of tiles
        ys = plan.y[order]
        cuts = np.flatnonzero(np.diff(ys)) + 1
        for row in np.split(order, cuts):
            start = 0
            while start < len(row):  # split very wide rows into segments
                xl_all = (plan.x[row[start:]] - plan.x[row[start]]) / ds
                k = max(1, int(np.searchsorted(xl_all + rs, max_strip_px, side="right")))
                seg = row[start : start + k]
                start += k
                xl = np.round(xl_all[:k]).astype(int)
                yield seg, xl, ((int(plan.x[seg[0]]), int(plan.y[seg[0]])), plan.level, (int(xl[-1] + rs), rs))

    batch = max(1, 2 * slide.threads)
    it = segments()
    while chunk := list(itertools.islice(it, batch)):
        for (seg, xl, _), strip in zip(chunk, slide.read_regions([req for _, _, req in chunk])):
            tiles = np.stack([strip[:, a : a + rs] for a in xl])
            if rs != tile_size:
                tiles = _resize(tiles, tile_size)
            yield np.asarray(seg), tiles


def _resize(tiles: np.ndarray, size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(tiles).permute(0, 3, 1, 2).float()
    out = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def draw_thumbnail(plan: TilePlan, labels: np.ndarray | None = None):
    """PIL image: the low-res slide, tissue tinted green, each tile's box (red when labelled)."""
    from PIL import Image, ImageDraw

    base = plan.thumb.astype(np.float32)
    tint = np.array([40, 200, 80], np.float32)
    base[plan.mask] = 0.7 * base[plan.mask] + 0.3 * tint
    img = Image.fromarray(base.astype(np.uint8))
    scale = max(1, int(math.ceil(512 / max(img.size))))
    img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    f = scale / plan.mask_downsample
    for i in range(len(plan)):
        x, y = plan.x[i] * f, plan.y[i] * f
        colour = (220, 30, 30) if labels is not None and labels[i] > 0 else (30, 60, 220)
        draw.rectangle([x, y, x + plan.size0 * f - 1, y + plan.size0 * f - 1], outline=colour)
    return img


def _stream_tiles(slide: Slide, plan: TilePlan, tile_size: int, writer: Any, y: np.ndarray, progress: bool) -> None:
    """Append every planned tile to ``writer`` row by row (plan order), with a progress bar;
    only the tiles of one batch of row reads are in memory at a time."""
    from tqdm.auto import tqdm

    done = 0
    with tqdm(total=len(plan), desc="tiles", unit="tile", disable=not progress) as bar:
        for idx, tiles in iter_tiles(slide, plan, tile_size):
            if idx[0] != done or idx[-1] != done + len(idx) - 1:  # the plan is row-major: rows come in order
                raise RuntimeError(f"tile rows out of order at tile {done}")
            writer.append(tiles, y=y[idx], coords=np.stack([plan.x[idx], plan.y[idx]], axis=1))
            done += len(idx)
            bar.update(len(idx))


def _manifest_rows(plan: TilePlan, config: TileConfig, y: np.ndarray):
    """One ``manifest.csv`` row per tile (an empty label for unlabelled tiles), generated lazily."""
    return (
        {
            "index": i,
            "x": int(plan.x[i]),
            "y": int(plan.y[i]),
            "level": plan.level,
            "mpp": config.mpp,
            "tile_size": config.tile_size,
            "tissue_fraction": round(float(plan.tissue_fraction[i]), 4),
            "label": "" if y[i] < 0 else int(y[i]),
        }
        for i in range(len(plan))
    )


def extract_tiles(
    slide_path: str | Path,
    out: str | Path,
    config: TileConfig,
    *,
    labels_path: str | Path | None = None,
    default_label: str | None = None,
    slide_mpp: float | None = None,
    device=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Tile one slide into ``out/`` (``tiles.h5``, ``manifest.csv``, ``thumbnail.png``); returns a summary."""
    from fedimg.io import atomic_path, ensure_not_input, sha256_file, write_json

    from .labels import label_tiles, load_annotations

    out = Path(out)
    ensure_not_input(out, slide_path, *([labels_path] if labels_path else []))
    ann = load_annotations(labels_path) if labels_path else None
    with open_slide(slide_path, mpp=slide_mpp) as slide:
        plan = plan_tiles(slide, config, device=device)
        if len(plan) == 0:
            from fedimg.errors import InputError

            raise InputError(slide_path, f"no tile has >= {config.min_tissue:.0%} tissue; lower --min-tissue or check the slide")
        if ann is not None:
            y, classes = label_tiles(ann, plan.x, plan.y, plan.size0, default=default_label)
        else:
            y, classes = np.full(len(plan), -1, np.int64), []
        level_mpp = slide.level_mpp(plan.level)
        meta = {
            "slide": str(slide_path),
            "slide_sha256": sha256_file(slide_path),
            "backend": slide.backend,
            "level": plan.level,
            "level_mpp": level_mpp,
            "mpp": config.mpp,
            "tile_size": config.tile_size,
            "classes": classes,
            "config": asdict(config),
        }
        with TileStoreWriter(out, tile_size=config.tile_size, meta=meta) as writer:
            _stream_tiles(slide, plan, config.tile_size, writer, y, progress)
    write_manifest(out / "manifest.csv", _manifest_rows(plan, config, y))
    with atomic_path(out / "thumbnail.png") as tmp:
        draw_thumbnail(plan, y if ann is not None else None).save(tmp, format="PNG")
    summary = {**meta, "tiles": len(plan), "labeled": int((y >= 0).sum()), "out": str(out)}
    write_json(out / "tiles.json", summary)
    return summary
