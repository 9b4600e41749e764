"""Synthetic multi-site pathology tile sets (for demos and tests; the labels are SYNTHETIC).

How they are made:

1. Real H&E tiles are cut at random tissue positions (>= 70 % tissue) from a real slide
   (default: the CMU small-region SVS shipped in ``tests/assets/pathology``), at
   ``mpp`` microns/pixel, randomly flipped/rotated.
2. **Label (synthetic)**: a tile is positive when 2-4 round clusters of extra
   haematoxylin ("synthetic dense-nuclei foci", radius 12-20 % of the tile) are painted
   into its haematoxylin concentration map; negative tiles are left as they are. The
   label is therefore clear and learnable but has no clinical meaning.
3. **Site stain shift**: every site re-renders its tiles with its own stain vectors (the
   slide's Macenko vectors jittered), concentration scale and offset, plus a small
   per-tile jitter, so sites differ the way scanners and staining protocols do. Sites
   also differ in their fraction of positives (non-IID labels).

Each site folder ``OUT/site-k`` is a normal tile store (``tiles.h5``, ``manifest.csv``,
``site.json``) that ``fedimg train-tiles`` and the federated ``tiles`` task read.

>>> import tempfile
>>> from fedimg.pathology.store import load_tile_set
>>> sites = make_synthetic_sites(tempfile.mkdtemp(), sites=2, tiles_per_site=4, tile_size=16)
>>> [s.name for s in sites], load_tile_set(sites[0]).x.shape, load_tile_set(sites[0]).meta["synthetic"]
(['site-1', 'site-2'], (4, 16, 16, 3), True)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fedimg.errors import ConfigError, InputError

__all__ = ["default_slide", "make_synthetic_sites", "paint_foci"]

log = logging.getLogger(__name__)

_README = """# Synthetic multi-site pathology tiles (SYNTHETIC LABELS)

Made by `fedimg tiles --synthetic-sites {sites}` from the real H&E slide `{slide}`.
Tiles are real tissue; the **labels are synthetic**: label 1 tiles had 2-4 round clusters (radius 12-20 % of the tile)
of extra haematoxylin painted into them ("synthetic dense-nuclei foci"), label 0 tiles
did not. Each site re-renders its tiles with its own stain vectors, stain concentration
scale/offset and fraction of positives, imitating scanner/protocol differences between
hospitals. Not for any clinical use. Seed {seed}; tile size {tile_size} px at {mpp} um/px.

| site | tiles | positives | stain scale (H, E) | stain offset (H, E) |
|---|---|---|---|---|
{rows}
"""


def default_slide() -> Path:
    """The real CMU small-region slide from the repository's test assets or ``../shared/data``."""
    here = Path(__file__).resolve()
    candidates = [
        here.parents[2] / "tests" / "assets" / "pathology" / "cmu_small_region.svs",
        here.parents[3] / "shared" / "data" / "pathology" / "cmu_small_region.svs",
    ]
    for c in candidates:
        if c.exists():
            return c
    raise InputError(candidates[0], "the default slide is not available (installed without the test assets); pass --slide SLIDE")


def paint_foci(shape: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(S, S)`` map of 2-4 soft discs (radius 12-20 % of the tile, values up to ~1) placed at random."""
    yy, xx = np.mgrid[0:shape, 0:shape].astype(np.float32)
    out = np.zeros((shape, shape), np.float32)
    for _ in range(int(rng.integers(2, 5))):
        cy, cx = rng.uniform(0.1, 0.9, 2) * shape
        r = rng.uniform(0.12, 0.2) * shape
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        out = np.maximum(out, rng.uniform(0.8, 1.2) / (1 + np.exp((d - r) / max(0.8, r * 0.15))))
    return out


def _cut_tiles(slide_path: Path, n_all: int, tile_size: int, mpp: float, rng: np.random.Generator) -> tuple:
    """``n_all`` real tiles (>= 70 % tissue) at random positions, resized to ``tile_size`` at
    ``mpp`` and randomly flipped/rotated; returns ``(tiles (N, S, S, 3), xs, ys, tissue
    fractions, slide stain vectors (3, 2))``."""
    import torch

    from fedimg.transforms.stain import fit_macenko

    from .slide import open_slide
    from .tiling import _resize, _window_fraction
    from .tissue import slide_tissue_mask

    with open_slide(slide_path) as sl:
        mask, _, mds = slide_tissue_mask(sl)
        read = int(round(tile_size * mpp / sl.mpp))
        w0, h0 = sl.dimensions
        if read >= min(w0, h0):
            raise ConfigError(f"tile of {tile_size} px at {mpp} um/px does not fit in {slide_path}")
        cand_x = rng.integers(0, w0 - read, n_all * 30)
        cand_y = rng.integers(0, h0 - read, n_all * 30)
        frac = _window_fraction(mask, cand_x / mds, cand_y / mds, read / mds)
        good = np.flatnonzero(frac >= 0.7)
        if len(good) < n_all:
            raise InputError(slide_path, f"has too little tissue for {n_all} tiles; use fewer tiles or another --slide")
        pick = good[:n_all]
        xs, ys = cand_x[pick], cand_y[pick]
        raw = np.stack([sl.read_region((int(x), int(y)), 0, (read, read)) for x, y in zip(xs, ys)])
        stains, _ = fit_macenko(torch.from_numpy(sl.read_thumbnail(1024)[0].copy()).permute(2, 0, 1))
    tiles = _resize(raw, tile_size) if read != tile_size else raw
    k = rng.integers(0, 4, n_all)
    flip = rng.random(n_all) < 0.5
    tiles = np.stack([np.rot90(t[:, ::-1] if f else t, int(r)) for t, f, r in zip(tiles, flip, k)])
    return tiles, xs, ys, frac[pick], stains


def _restain_site(tiles: np.ndarray, stains, pos_frac: float, srng: np.random.Generator) -> tuple:
    """One site's tiles: synthetic foci painted into the positives (``pos_frac`` of them, both
    classes always present), re-rendered with the site's stain vectors, scale, offset and a
    per-tile jitter; returns ``(uint8 (N, S, S, 3), labels, site stains, scale, offset)``."""
    import torch

    from fedimg.transforms.stain import od_to_rgb, stain_concentrations

    n, size = len(tiles), tiles.shape[1]
    x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float()
    labels = (srng.random(n) < pos_frac).astype(np.int64)
    labels[:2] = [0, 1]  # both classes present at every site
    conc = stain_concentrations(x, stains).reshape(n, 2, size, size)
    for i in np.flatnonzero(labels):
        conc[i, 0] += 1.2 * torch.from_numpy(paint_foci(size, srng))
    site_shift = torch.from_numpy(srng.uniform(-0.12, 0.12, (3, 2))).float()
    site_stains = (stains + site_shift).clamp_min(0.02)
    site_stains = site_stains / site_stains.norm(dim=0, keepdim=True)
    scale = srng.uniform(0.75, 1.3, 2)
    offset = srng.uniform(-0.08, 0.08, 2)
    jitter = torch.from_numpy(srng.normal(1.0, 0.04, (n, 2, 1, 1))).float()
    c = conc * torch.tensor(scale, dtype=torch.float32)[None, :, None, None] * jitter
    c = c + torch.tensor(offset, dtype=torch.float32)[None, :, None, None] * (conc > 0.05)
    rgb = od_to_rgb(torch.einsum("ck,bkhw->bchw", site_stains, c))
    return rgb.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy(), labels, site_stains, scale, offset


def _write_site(folder: Path, x: np.ndarray, labels: np.ndarray, coords: np.ndarray, fracs: np.ndarray,
                meta: dict, mpp: float) -> None:
    """A site's tile store: ``tiles.h5``, ``manifest.csv`` and ``site.json``."""
    from fedimg.io import write_json

    from .store import TileSet, write_manifest, write_tile_set

    tile_size = x.shape[1]
    write_tile_set(folder, TileSet(x=x, y=labels, coords=coords, meta=meta))
    write_manifest(
        folder / "manifest.csv",
        [
            {"index": i, "x": int(coords[i, 0]), "y": int(coords[i, 1]), "level": 0, "mpp": mpp, "tile_size": tile_size,
             "tissue_fraction": round(float(fracs[i]), 4), "label": int(labels[i])}
            for i in range(len(x))
        ],
    )
    write_json(folder / "site.json", meta)


def make_synthetic_sites(
    out: str | Path,
    *,
    sites: int = 3,
    tiles_per_site: int = 128,
    tile_size: int = 96,
    mpp: float = 1.0,
    seed: int = 0,
    slide: str | Path | None = None,
) -> list[Path]:
    """Write ``out/site-1`` ... ``out/site-N`` tile stores and ``out/README.md``; return the site folders."""
    from fedimg.io import atomic_path

    if sites < 1 or tiles_per_site < 4 or tile_size < 16 or not mpp > 0:
        raise ConfigError("synthetic sites need sites >= 1, tiles per site >= 4, tile size >= 16, mpp > 0")
    slide_path = Path(slide) if slide else default_slide()
    out = Path(out)
    rng = np.random.default_rng(seed)
    tiles, xs, ys, fracs, stains = _cut_tiles(slide_path, sites * tiles_per_site, tile_size, mpp, rng)
    folders, rows_md = [], []
    pos_fracs = np.linspace(0.3, 0.7, sites) if sites > 1 else np.array([0.5])
    for s in range(sites):
        sel = slice(s * tiles_per_site, (s + 1) * tiles_per_site)
        x_out, labels, site_stains, scale, offset = _restain_site(tiles[sel], stains, pos_fracs[s],
                                                                  np.random.default_rng([seed, s + 1]))
        folder = out / f"site-{s + 1}"
        meta = {
            "synthetic": True,
            "site": s + 1,
            "slide": str(slide_path),
            "mpp": mpp,
            "tile_size": tile_size,
            "classes": ["no_foci", "synthetic_foci"],
            "stains": site_stains.tolist(),
            "stain_scale": scale.tolist(),
            "stain_offset": offset.tolist(),
            "seed": seed,
        }
        _write_site(folder, x_out, labels, np.stack([xs[sel], ys[sel]], axis=1), fracs[sel], meta, mpp)
        folders.append(folder)
        rows_md.append(f"| site-{s + 1} | {tiles_per_site} | {int(labels.sum())} | {scale[0]:.2f}, {scale[1]:.2f} | {offset[0]:+.2f}, {offset[1]:+.2f} |")
        log.info("synthetic site-%d: %d tiles, %d positive", s + 1, tiles_per_site, int(labels.sum()))
    text = _README.format(sites=sites, slide=slide_path.name, seed=seed, tile_size=tile_size, mpp=mpp, rows="\n".join(rows_md))
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text(text)
    return folders
