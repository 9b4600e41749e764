"""``fedimg bench tiles``: tiles/s for extraction + stain normalisation + training with fedimg,
measured in one process on the real CMU slide (or ``--slide``).

* extraction: low-resolution tissue mask + one ``read_region`` per tile row, rows decoded in
  parallel threads, and a level already decoded for the mask cut into tiles without decoding
  it again (:func:`fedimg.pathology.tiling.iter_tiles`);
* normalisation: batched Macenko (:class:`fedimg.transforms.stain.MacenkoNormalize`: numba
  kernels on the CPU, torch on a GPU), fitted to ``--target``;
* training: the tile trainer (uint8 tiles cached on the device; gather, flips/rotations,
  stain augmentation and scaling in one pass; bf16 autocast and channels-last where
  supported; fused AdamW).

Pipeline tiles/s = 1 / (1/extract + 1/normalise + 1/train): one tile through all three.
Prints wall-clock tiles/s and process CPU milliseconds per tile for each stage (on a shared,
oversubscribed CPU the wall clock mostly measures the neighbours) and, on a GPU, its
utilisation and memory (NVML, and PyTorch's peak allocation; absent on a CPU). The comparison with per-tile ``read_region``, per-tile numpy Macenko and a plain
fp32 DataLoader loop is ``benchmarks/tiles.py``, which reuses the functions here.

    fedimg bench tiles --quick --json bench-results/tiles.json
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["DESCRIPTION", "STAGES", "add_arguments", "run", "settings", "timed", "read_size", "fedimg_extract", "normalize_tiles",
           "training_tiles", "tile_trainer", "warm_up", "train_rounds"]

log = logging.getLogger(__name__)

DESCRIPTION = "pathology tiles/s (extract + Macenko + train) and CPU time per tile of fedimg's tile pipeline"
STAGES = ("extract", "normalize", "train")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slide", default=None, help="slide to tile (default: the bundled CMU small-region SVS)")
    p.add_argument("--target", default=None, help="Macenko target image (default: the bundled tiatoolbox tile)")
    p.add_argument("--tile-size", type=int, default=224, help="tile side in pixels (default 224)")
    p.add_argument("--mpp", type=float, default=0.5, help="tile resolution (default 0.5 um/px)")
    p.add_argument("--model", choices=["resnet18", "densenet121", "resnet10"], default="resnet18")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="training steps per timed round (default 6 x 3 rounds; --quick 2 x 2)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:n]")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all usable)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="fewer training steps (< ~2 minutes on 2 cores)")


def timed(fn: Callable[[], Any], *, sync: Callable[[], Any], cpu: dict[str, float] | None = None,
          key: str | None = None) -> tuple[Any, float]:
    """``(fn(), wall seconds)``; with ``cpu`` and ``key``, the process CPU seconds are added to ``cpu[key]``."""
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync()
    if cpu is not None and key:
        cpu[key] = cpu.get(key, 0.0) + time.process_time() - c0
    return out, time.perf_counter() - t0


def read_size(slide_path, tile: int, mpp: float) -> int:
    """Level-0 pixels per tile side at ``mpp`` (``tile`` when the slide is already at that resolution)."""
    from fedimg.pathology.slide import open_slide

    with open_slide(slide_path) as s:
        return int(round(tile * mpp / s.mpp)) if abs(mpp / s.mpp - 1) > 0.01 else tile


def fedimg_extract(slide_path, tile: int, mpp: float, device) -> np.ndarray:
    """All tissue tiles of the slide as uint8 ``(N, tile, tile, 3)`` (tissue mask, row reads, parallel decode)."""
    from fedimg.pathology.slide import open_slide
    from fedimg.pathology.tiling import TileConfig, iter_tiles, plan_tiles

    with open_slide(slide_path) as s:
        plan = plan_tiles(s, TileConfig(tile_size=tile, mpp=mpp), device=device)
        out = np.empty((len(plan), tile, tile, 3), np.uint8)
        for idx, tiles in iter_tiles(s, plan, tile):
            out[idx] = tiles
    return out


def normalize_tiles(norm, xt, *, sync, cpu: dict[str, float] | None = None, key: str | None = None):
    """``(normalised (N, 3, S, S) tiles, seconds)`` in batches of 64 after a warm-up on 4 tiles."""
    import torch

    norm(xt[:4])  # warm-up
    return timed(lambda: torch.cat([norm(xt[i : i + 64]) for i in range(0, len(xt), 64)]), sync=sync, cpu=cpu, key=key)


def training_tiles(normed, batch: int, min_tiles: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Host HWC tiles (repeated to at least two batches and ``min_tiles``) and synthetic labels (alternating halves)."""
    train_tiles = normed.permute(0, 2, 3, 1).cpu().numpy()
    reps = max(1, int(np.ceil(max(2 * batch, min_tiles) / len(train_tiles))))
    train_tiles = np.concatenate([train_tiles] * reps)
    return train_tiles, (np.arange(len(train_tiles)) % 2).astype(np.int64)


def tile_trainer(model_name: str, tiles: np.ndarray, labels: np.ndarray, batch: int, steps: int, rounds: int, device):
    """fedimg's :class:`TileTrainer` on ``tiles`` (cached on ``device``), seeded, ``steps`` per epoch, not warmed up."""
    import torch

    from fedimg.tasks.tiles import TileSiteData, TileTrainConfig, TileTrainer, build_tile_model

    cfg = TileTrainConfig(model=model_name, batch_size=batch, epochs=rounds + 1, steps_per_epoch=steps, warmup_epochs=0,
                          val_fraction=0.0)
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous().to(device)
    y = torch.from_numpy(labels).to(device)
    data = TileSiteData(x_train=x, y_train=y, x_val=x[:0], y_val=y[:0], device=device, fingerprint="bench", classes=["0", "1"])
    torch.manual_seed(0)
    return TileTrainer(build_tile_model(cfg), data, cfg)


def warm_up(trainer, steps: int) -> None:
    """One untimed training step, then ``steps`` per epoch."""
    trainer.steps_per_epoch = 1
    trainer.train_epoch()
    trainer.steps_per_epoch = steps


def train_rounds(trainer, rounds: int, *, sync, cpu: dict[str, float] | None = None, key: str | None = None) -> float:
    """Seconds of ``rounds`` training epochs (``trainer.steps_per_epoch`` steps each)."""
    return sum(timed(trainer.train_epoch, sync=sync, cpu=cpu, key=key)[1] for _ in range(rounds))


def settings(args: argparse.Namespace) -> tuple[int, Any, Callable[[], None], Path, Path, int, int, int]:
    """What ``fedimg bench tiles`` and ``benchmarks/tiles.py`` share: ``(threads, device, sync,
    slide, target_path, steps, rounds, tile)`` from the parsed arguments (threads configured)."""
    import torch

    from fedimg.device import configure_threads, resolve_device
    from fedimg.pathology.synth import default_slide

    threads = configure_threads(args.threads)
    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    slide = Path(args.slide or default_slide())
    target_path = Path(args.target or default_slide().parent / "tiatoolbox_target_image.png")
    steps = args.steps or (2 if args.quick else 6)
    rounds = 2 if args.quick else 3
    return threads, device, sync, slide, target_path, steps, rounds, args.tile_size


def run(args: argparse.Namespace) -> int:
    import torch

    from fedimg.io import write_json
    from fedimg.pathology.tiledata import stain_normalizer
    from fedimg.telemetry import Telemetry, cpu_name, format_summary

    cpu: dict[str, float] = {}
    threads, device, sync, slide, target_path, steps, rounds, tile = settings(args)
    tel = Telemetry(device_index=(device.index or 0) if device.type == "cuda" else None, interval=0.5,
                    torch_device=device).start()
    sec: dict[str, float] = {}
    fedimg_extract(slide, tile, args.mpp, device)  # warm the OS cache and imports
    tiles, t = timed(lambda: fedimg_extract(slide, tile, args.mpp, device), sync=sync, cpu=cpu, key="extract")
    sec["extract"] = t / len(tiles)
    norm = stain_normalizer("macenko", str(target_path))
    normed, t = normalize_tiles(norm, torch.from_numpy(tiles).to(device).permute(0, 3, 1, 2), sync=sync, cpu=cpu,
                                key="normalize")
    sec["normalize"] = t / len(tiles)
    train_tiles, labels = training_tiles(normed, args.batch_size)
    trainer = tile_trainer(args.model, train_tiles, labels, args.batch_size, steps, rounds, device)
    warm_up(trainer, steps)
    n_train = rounds * steps * args.batch_size
    sec["train"] = train_rounds(trainer, rounds, sync=sync, cpu=cpu, key="train") / n_train
    tel.stop()
    counts = {"extract": len(tiles), "normalize": len(tiles), "train": n_train}
    rows = [{"stage": st, "tiles_per_s": 1 / sec[st], "cpu_s_per_tile": cpu.get(st, 0.0) / counts[st]} for st in STAGES]
    rows.append({"stage": "pipeline", "tiles_per_s": 1 / sum(sec.values()),
                 "cpu_s_per_tile": sum(r["cpu_s_per_tile"] for r in rows)})
    opts = {"bf16": trainer.bf16, "channels_last": trainer.channels_last}
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    summary = tel.summary()
    print(f"\nfedimg bench tiles — {dev_name} ({device}, {threads} threads), {args.model}, {tile} px at {args.mpp} um/px, "
          f"batch {args.batch_size}, {rounds}x{steps} steps; training: {'bf16' if opts['bf16'] else 'fp32'}"
          f"{' + channels-last' if opts['channels_last'] else ''}; {len(tiles)} tissue tiles")
    print(f"{'stage':<10} {'tiles/s':>10} {'CPU ms/tile':>12}")
    for r in rows:
        print(f"{r['stage']:<10} {r['tiles_per_s']:>10.1f} {r['cpu_s_per_tile'] * 1e3:>12.2f}")
    if (line := format_summary(summary)):
        print(line)
    result = {"benchmark": "tiles", "device": str(device), "device_name": dev_name, "threads": threads, "model": args.model,
              "tile_size": tile, "mpp": args.mpp, "batch_size": args.batch_size, "steps": steps, "rounds": rounds,
              "quick": bool(args.quick), "tiles_extracted": int(len(tiles)), "fedimg_training": opts, "stages": rows,
              "pipeline_tiles_per_s": rows[-1]["tiles_per_s"], "telemetry": summary}
    if args.json:
        write_json(args.json, result)
    return 0
