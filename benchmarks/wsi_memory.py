#!/usr/bin/env python
"""Whole-slide scale: peak memory of ``fedimg tiles`` and ``fedimg train-tiles`` on a large
pyramidal TIFF, and training tiles/s cached vs streamed on the same store.

The slide is the real CMU H&E region repeated ``--cols x --rows`` times into a tiled, zlib,
pyramidal TIFF written tile by tile by tifffile (:func:`fedimg.pathology.mosaic.write_mosaic_slide`;
5 x 5 gives 11040 x 14800 px and ~59k tissue tiles of 32 px at 0.5 um/px). Every command runs in
a fresh child process that reports its peak RSS (``VmHWM``) and CPU seconds; training runs
alternate ``--stream off`` (the whole store on the device, as before) and ``--stream on``
(block-shuffled reads from the store), ``--reps`` times, and report the tiles/s of their last
epoch (the first pays for compilation and warm-up); then, in this process, cached and streamed
epochs alternate ``--interleave-reps`` times on the same store (median tiles/s and tiles per
CPU second: on a shared CPU the wall clock mostly measures the neighbours). ``--before DIR`` also runs the tiling and
the cached training with the fedimg source tree in ``DIR`` (e.g. ``git archive`` of an older
commit) for a before/after row.

    python benchmarks/wsi_memory.py --json bench-results/wsi_memory.json
    python benchmarks/wsi_memory.py --train-reps 0 --threads 1 --steps 60           # tiles/s, interleaved only
    python benchmarks/wsi_memory.py --cols 2 --rows 2 --overlap 24 --train-reps 0 --interleave-reps 0  # ~150k tiles
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

log = logging.getLogger("benchmarks.wsi_memory")

ROOT = Path(__file__).resolve().parents[1]
# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's RSS (kept across fork and exec)
_CHILD = ("import json, resource, sys; from fedimg.cli import main; rc = main(sys.argv[1:]); "
          "r = resource.getrusage(resource.RUSAGE_SELF); "
          "hwm = [int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0]; "
          "print(json.dumps({'rc': rc, 'peak_mb': hwm / 1024, 'cpu_s': r.ru_utime + r.ru_stime}))")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cols", type=int, default=5)
    p.add_argument("--rows", type=int, default=5)
    p.add_argument("--tile-size", type=int, default=32)
    p.add_argument("--overlap", type=int, default=0)
    p.add_argument("--train-reps", type=int, default=2, help="cached/streamed training child processes (peak memory)")
    p.add_argument("--interleave-reps", type=int, default=5,
                   help="in one process: cached and streamed epochs alternated this many times (tiles/s, tiles per CPU s)")
    p.add_argument("--steps", type=int, default=150, help="optimizer steps per epoch (2 epochs per run)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default=None, help="where the slide and stores go (default: a temp dir, removed)")
    p.add_argument("--before", default=None, help="an older fedimg source tree: tile and train (cached) with it too")
    p.add_argument("--json", default=None, help="write the results here")


def child(args: list[str], root: Path, threads: int) -> dict:
    """``fedimg ARGS`` in a fresh process with ``root`` first on the path: rc, peak MB, CPU s, wall s."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env, cwd=root)
    if proc.returncode != 0:
        raise SystemExit(f"fedimg {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "wall_s": time.perf_counter() - t0}


def labels_for(slide: Path, path: Path) -> Path:
    """GeoJSON: the left half of the slide is class "left", the rest (``--default-label``) "right"."""
    from fedimg.pathology.slide import open_slide

    with open_slide(slide) as s:
        w, h = s.dimensions
    ring = [[0, 0], [w // 2, 0], [w // 2, h], [0, h], [0, 0]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"label": "left"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return path


def tile(a: argparse.Namespace, work: Path, slide: Path, labels: Path, root: Path, name: str) -> dict:
    store = work / f"tiles-{name}"
    res = child(["tiles", "--slide", str(slide), "--out", str(store), "--tile-size", str(a.tile_size), "--mpp", "0.5",
                 "--overlap", str(a.overlap), "--labels", str(labels), "--default-label", "right", "--no-progress"],
                root, a.threads)
    summary = json.loads((store / "tiles.json").read_text())
    res.update(tiles=summary["tiles"], store=str(store), store_mb=(store / "tiles.h5").stat().st_size / 2**20)
    log.info("%s tiling: %d tiles, peak %.0f MB, %.1f s wall, %.1f CPU s", name, res["tiles"], res["peak_mb"],
             res["wall_s"], res["cpu_s"])
    return res


def train(a: argparse.Namespace, work: Path, store: str, root: Path, mode: str | None, name: str) -> dict:
    run = work / f"run-{name}"
    args = ["train-tiles", "--data", store, "--out", str(run), "--model", "resnet10", "--width", "0.25", "--epochs", "2",
            "--steps-per-epoch", str(a.steps), "--batch-size", str(a.batch_size),
            "--val-fraction", "0.02", "--threads", str(a.threads), "--no-progress", "--seed", "0"]
    if mode is not None:
        args += ["--stream", mode]
    res = child(args, root, a.threads)
    epochs = json.loads((run / "metrics.json").read_text())["epochs"]
    res["tiles_per_s"] = epochs[-1]["tiles_per_s"]
    log.info("%s training: %.0f tiles/s (last epoch), peak %.0f MB, %.1f CPU s", name, res["tiles_per_s"],
             res["peak_mb"], res["cpu_s"])
    return res


def interleaved(a: argparse.Namespace, store: str) -> dict:
    """Cached and streamed training epochs alternated in this process (after one warm-up epoch
    each): median wall tiles/s and tiles per CPU second (``time.process_time``)."""
    import statistics

    import torch

    from fedimg.device import configure_threads
    from fedimg.pathology.config import TileTrainConfig
    from fedimg.pathology.models import build_tile_model
    from fedimg.pathology.tiledata import prepare_tile_data
    from fedimg.tasks.tiles_train import TileTrainer

    configure_threads(a.threads)
    trainers = {}
    for mode in ("off", "on"):
        cfg = TileTrainConfig(model="resnet10", width=0.25, batch_size=a.batch_size, val_fraction=0.02, stream=mode,
                              steps_per_epoch=a.steps, epochs=a.interleave_reps + 1, seed=0)
        data = prepare_tile_data(store, cfg, torch.device("cpu"))
        torch.manual_seed(0)
        trainers[mode] = TileTrainer(build_tile_model(cfg), data, cfg)
        trainers[mode].train_epoch()  # warm-up: numba compilation, first allocations
    rows: dict[str, list] = {"cached": [], "streamed": []}
    for _ in range(a.interleave_reps):
        for mode, key in (("off", "cached"), ("on", "streamed")):
            c0 = time.process_time()
            stats = trainers[mode].train_epoch()
            cpu = time.process_time() - c0
            rows[key].append({"tiles_per_s": stats["tiles_per_s"], "tiles_per_cpu_s": a.steps * a.batch_size / cpu})
    out = {k: {"median_tiles_per_s": statistics.median(r["tiles_per_s"] for r in v),
               "median_tiles_per_cpu_s": statistics.median(r["tiles_per_cpu_s"] for r in v), "epochs": v}
           for k, v in rows.items()}
    log.info("interleaved: cached %.0f tiles/s (%.0f per CPU s), streamed %.0f tiles/s (%.0f per CPU s)",
             out["cached"]["median_tiles_per_s"], out["cached"]["median_tiles_per_cpu_s"],
             out["streamed"]["median_tiles_per_s"], out["streamed"]["median_tiles_per_cpu_s"])
    return out


def run(a: argparse.Namespace) -> int:
    from fedimg.io import write_json
    from fedimg.pathology.mosaic import write_mosaic_slide

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        slide = write_mosaic_slide(work / f"mosaic-{a.cols}x{a.rows}.tif", cols=a.cols, rows=a.rows)
        res: dict = {"slide": {"cols": a.cols, "rows": a.rows, "bytes": slide.stat().st_size,
                               "write_s": time.perf_counter() - t0}, "tile_size": a.tile_size, "overlap": a.overlap}
        labels = labels_for(slide, work / "labels.geojson")
        res["tiling"] = {"after": tile(a, work, slide, labels, ROOT, "after")}
        if a.before:
            res["tiling"]["before"] = tile(a, work, slide, labels, Path(a.before), "before")
        store = res["tiling"]["after"]["store"]
        res["training"] = {"cached": [], "streamed": [], "before": []}
        for r in range(a.train_reps):
            res["training"]["cached"].append(train(a, work, store, ROOT, "off", f"cached-{r}"))
            res["training"]["streamed"].append(train(a, work, store, ROOT, "on", f"streamed-{r}"))
            if a.before:
                res["training"]["before"].append(train(a, work, store, Path(a.before), None, f"before-{r}"))
        if a.interleave_reps:
            res["interleaved"] = interleaved(a, store)
    print(json.dumps(res, indent=1))
    if a.json:
        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(_common.main(_common.parser(__doc__.splitlines()[0], add_arguments), run, None))
