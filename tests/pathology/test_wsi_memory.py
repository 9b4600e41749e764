"""Whole-slide scale in bounded memory: ``fedimg tiles`` and ``fedimg train-tiles --stream on``
on a pyramidal TIFF of the real H&E slide (written tile by tile by tifffile), tiled into ~2.4k
and ~38k tiles, each run in a fresh child process reporting its peak RSS: the peak must not
grow with the tile count, while the cached (``--stream off``) run shows that the same
measurement does see tiles held in memory. The >= 50k-tile runs (a 5 x 5 mosaic, ~59k tiles
without overlap, and ~150k with) are ``benchmarks/wsi_memory.py``, recorded in benchmarks/RESULTS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedimg.pathology.mosaic import write_mosaic_slide

ROOT = Path(__file__).resolve().parents[2]
# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's RSS (kept across fork and exec)
_CHILD = ("import json, sys; from fedimg.cli import main; rc = main(sys.argv[1:]); "
          "hwm = [int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0]; "
          "print(json.dumps({'rc': rc, 'peak_mb': hwm / 1024}))")


def peak_mb(*args: str) -> float:
    """Peak RSS (MB, the kernel's VmHWM) of ``fedimg ARGS`` in a fresh process (one thread)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0
    return float(out["peak_mb"])


def left_half_labels(path: Path, width: int, height: int) -> Path:
    """GeoJSON: the left half of the slide is class "left", the rest (``--default-label``) "right"."""
    ring = [[0, 0], [width // 2, 0], [width // 2, height], [0, height], [0, 0]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"label": "left"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return path


TRAIN = ("--model", "resnet10", "--width", "0.25", "--epochs", "1", "--steps-per-epoch", "4", "--batch-size", "32",
         "--amp", "fp32", "--val-fraction", "0.02", "--threads", "1", "--no-augment", "--no-progress")


def tile_and_train(tmp: Path, slide: Path, labels: Path, overlap: int) -> dict:
    """Tile ``slide`` (32 px at 0.5 um/px, ``overlap`` px) and train 4 streamed steps on it, each in a child process."""
    store = tmp / f"tiles-{overlap}"
    tiles = peak_mb("tiles", "--slide", str(slide), "--out", str(store), "--tile-size", "32", "--mpp", "0.5", "--overlap",
                    str(overlap), "--labels", str(labels), "--default-label", "right", "--no-progress", "--device", "cpu")
    train = peak_mb("train-tiles", "--data", str(store), "--out", str(tmp / f"run-{overlap}"), "--stream", "on", *TRAIN)
    summary = json.loads((store / "tiles.json").read_text())
    assert summary["labeled"] == summary["tiles"] and summary["classes"] == ["left", "right"]
    return {"n": summary["tiles"], "tiles_mb": tiles, "train_mb": train, "store": store}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak RSS read from /proc (Linux)")
def test_tiling_and_streamed_training_memory_does_not_grow_with_the_tile_count(tmp_path):
    """The same pyramidal TIFF tiled without overlap (~2.4k tiles) and with 24 px overlap (16x the
    tiles, ~38k): the peaks stay within a few MB; the cached run holds the tiles."""
    from fedimg.pathology.slide import open_slide

    slide = write_mosaic_slide(tmp_path / "mosaic.tif", cols=1, rows=1)
    with open_slide(slide) as s:
        labels = left_half_labels(tmp_path / "labels.geojson", *s.dimensions)
    few = tile_and_train(tmp_path, slide, labels, 0)
    many = tile_and_train(tmp_path, slide, labels, 24)
    cached = peak_mb("train-tiles", "--data", str(many["store"]), "--out", str(tmp_path / "cached"), "--stream", "off", *TRAIN)
    grow_mb = (many["n"] - few["n"]) * 32 * 32 * 3 / 2**20  # the extra tiles' bytes
    print(f"tiles {few['n']} -> {many['n']} (+{grow_mb:.0f} MB of tiles); peak MB: tiles {few['tiles_mb']:.0f} -> "
          f"{many['tiles_mb']:.0f}, streamed training {few['train_mb']:.0f} -> {many['train_mb']:.0f}, cached {cached:.0f}")
    assert many["n"] >= 12 * few["n"]
    assert many["tiles_mb"] - few["tiles_mb"] < 0.2 * grow_mb  # the grid plan: ~100 B per position
    assert many["train_mb"] - few["train_mb"] < 0.2 * grow_mb
    assert cached - many["train_mb"] > 0.75 * grow_mb  # the measurement sees tiles held in memory
