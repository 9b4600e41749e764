"""``fedimg tiles``: tile a whole-slide image into a tile store, or make synthetic sites.

    fedimg tiles --slide slide.svs --out tiles/ --tile-size 224 --mpp 0.5 [--labels annotations.geojson]
    fedimg tiles --synthetic-sites 3 --out pathology_sites/      # demo/test data, labels synthetic
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tiles",
        help="tile a whole-slide image (tissue only) into an HDF5 tile store, or make synthetic pathology sites",
        description="Detect tissue at low resolution, cut fixed-size tiles at --mpp, write OUT/tiles.h5 "
        "(x: N x S x S x 3 uint8, y: labels, coords: level-0 x,y), OUT/manifest.csv (x, y, level, mpp, "
        "tissue_fraction, label) and OUT/thumbnail.png (tissue mask and tile grid). "
        "With --synthetic-sites N instead writes OUT/site-1..site-N: real H&E tiles from --slide (default: the "
        "bundled CMU small-region slide) with site-specific stain shifts and a SYNTHETIC label (1 = painted "
        "clusters of extra haematoxylin, 0 = none), for demos and tests of train-tiles and simulate --task tiles.",
    )
    p.add_argument("--slide", default=None, help="slide file (.svs .ndpi .mrxs .tif .tiff ...; .png/.jpg with --slide-mpp)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tile-size", type=int, default=None, help="tile side in pixels at --mpp (default 224; synthetic 96)")
    p.add_argument("--mpp", type=float, default=None, help="microns per pixel of the tiles (default 0.5; synthetic 1.0)")
    p.add_argument("--overlap", type=int, default=0, help="overlap between neighbouring tiles in pixels")
    p.add_argument("--min-tissue", type=float, default=0.5, help="minimum tissue fraction of a kept tile (0..1)")
    p.add_argument("--tissue-method", choices=["saturation", "od"], default="saturation", help="Otsu on HSV saturation or optical density")
    p.add_argument("--mask-mpp", type=float, default=8.0, help="resolution of the tissue mask (um/px)")
    p.add_argument("--max-tiles", type=int, default=None, help="keep at most N tiles (the most tissue-rich)")
    p.add_argument("--labels", default=None, help="GeoJSON/QuPath polygons or CSV (x, y, label) in level-0 pixels")
    p.add_argument("--default-label", default=None, help="class of tiles outside every annotation (default: unlabeled)")
    p.add_argument("--slide-mpp", type=float, default=None, help="override/supply the slide's level-0 um/px")
    p.add_argument("--device", default="auto", help="device for tissue detection: auto | cpu | cuda[:N]")
    p.add_argument("--synthetic-sites", type=int, default=None, metavar="N", help="write N synthetic sites instead of tiling")
    p.add_argument("--tiles-per-site", type=int, default=128, help="synthetic: tiles per site")
    p.add_argument("--seed", type=int, default=0, help="synthetic: random seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedimg.device import resolve_device
    from fedimg.errors import ConfigError

    if args.synthetic_sites is not None:
        from fedimg.pathology.synth import make_synthetic_sites

        folders = make_synthetic_sites(args.out, sites=args.synthetic_sites, tiles_per_site=args.tiles_per_site,
                                       tile_size=args.tile_size or 96, mpp=args.mpp or 1.0, seed=args.seed, slide=args.slide)
        log.info("wrote %d synthetic sites (labels are synthetic; see %s/README.md): %s", len(folders), args.out,
                 ", ".join(str(f) for f in folders))
        return 0
    if not args.slide:
        raise ConfigError("pass --slide SLIDE (or --synthetic-sites N for demo data)")
    from fedimg.pathology.tiling import TileConfig, extract_tiles

    cfg = TileConfig(tile_size=args.tile_size or 224, mpp=args.mpp or 0.5, overlap=args.overlap, min_tissue=args.min_tissue,
                     tissue_method=args.tissue_method, mask_mpp=args.mask_mpp, max_tiles=args.max_tiles)
    summary = extract_tiles(args.slide, args.out, cfg, labels_path=args.labels, default_label=args.default_label,
                            slide_mpp=args.slide_mpp, device=resolve_device(args.device), progress=not args.no_progress)
    log.info("%d tiles (%d labelled) of %d px at %.3g um/px from level %d -> %s", summary["tiles"], summary["labeled"],
             cfg.tile_size, cfg.mpp, summary["level"], args.out)
    return 0
