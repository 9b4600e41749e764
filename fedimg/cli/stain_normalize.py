"""``fedimg stain-normalize``: Macenko/Reinhard-normalise a tile store to a target tile.

    fedimg stain-normalize --input tiles/ --target target.png --out tiles_norm/ [--method reinhard]
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stain-normalize", help="stain-normalise a tile store to a target H&E tile (Macenko or Reinhard)",
                       description="Reads INPUT (a tile store folder or .h5, PatchCamelyon x/y files too), normalises "
                                   "every tile in batches on --device, writes OUT/tiles.h5 and OUT/manifest.csv. "
                                   "The input is never modified.")
    p.add_argument("--input", required=True, help="tile store folder (tiles.h5) or .h5 file")
    p.add_argument("--target", required=True, help="target H&E image (PNG/JPEG/TIFF)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", choices=["macenko", "reinhard"], default="macenko")
    p.add_argument("--batch-size", type=int, default=64, help="tiles per batch")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shutil
    import time
    from pathlib import Path

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from fedimg.device import resolve_device
    from fedimg.errors import ConfigError, InputError
    from fedimg.io import ensure_not_input, write_json
    from fedimg.pathology.store import TileSet, load_tile_set, write_tile_set
    from fedimg.pathology.tiledata import stain_normalizer

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    src, out = Path(args.input), Path(args.out)
    ensure_not_input(out, src, args.target)
    if src.is_dir() and out.resolve() == src.resolve():
        raise InputError(out, "is the input folder; choose another --out (inputs are never modified)")
    device = resolve_device(args.device)
    ts = load_tile_set(src)
    norm = stain_normalizer(args.method, args.target)
    result = np.empty_like(ts.x)
    t0 = time.perf_counter()
    with tqdm(total=len(ts), desc=args.method, unit="tile", disable=args.no_progress) as bar:
        for i in range(0, len(ts), args.batch_size):
            xb = torch.from_numpy(ts.x[i : i + args.batch_size]).to(device).permute(0, 3, 1, 2)
            result[i : i + len(xb)] = norm(xb).permute(0, 2, 3, 1).cpu().numpy()
            bar.update(len(xb))
    seconds = time.perf_counter() - t0
    meta = {**ts.meta, "stain_normalized": {"method": args.method, "target": str(args.target), "source": str(src)}}
    write_tile_set(out, TileSet(x=result, y=ts.y, coords=ts.coords, meta=meta))
    manifest = (src if src.is_dir() else src.parent) / "manifest.csv"
    if manifest.is_file() and src.is_dir():
        shutil.copyfile(manifest, out / "manifest.csv")
    write_json(out / "stain_normalize.json", {"method": args.method, "target": str(args.target), "input": str(src),
                                               "tiles": len(ts), "seconds": seconds, "tiles_per_s": len(ts) / max(seconds, 1e-9),
                                               "device": str(device)})
    log.info("normalised %d tiles (%s) in %.1f s -> %s", len(ts), args.method, seconds, out)
    return 0
