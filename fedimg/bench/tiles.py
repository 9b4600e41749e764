"""``fedimg bench tiles``: tiles/s for extraction + stain normalisation + training, fedimg vs
a plain fp32 loop, measured in the same process on the real CMU slide.

Peer (how tutorials write it):

* extraction: ``openslide.read_region`` once per grid position over the whole slide, then a
  per-tile saturation check keeps the tissue tiles;
* normalisation: per-tile numpy Macenko (:mod:`fedimg.transforms.stain_reference`, staintools-style);
* training: a ``Dataset`` whose ``__getitem__`` converts one HWC uint8 tile to a float CHW
  tensor with a random flip, a ``DataLoader`` (no workers: 2 cores), fp32 model.

fedimg: low-resolution tissue mask + one ``read_region`` per tile row, rows decoded in
parallel threads, and a level already decoded for the mask cut into tiles without decoding it
again (:func:`fedimg.pathology.tiling.iter_tiles`); batched Macenko
(:class:`fedimg.transforms.stain.MacenkoNormalize`: numba kernels on the CPU, torch on a GPU);
and the tile trainer (uint8 tiles cached on the device; gather, flips/rotations, stain
augmentation and scaling in one pass; bf16 autocast and channels-last where supported; fused
AdamW). Same model, tiles, batch size and number of steps; fedimg also pays for stain
augmentation, the peer only flips.

Pipeline tiles/s = 1 / (1/extract + 1/normalise + 1/train): one tile through all three.
Wall-clock tiles/s are the result; the process CPU-time ratio is printed beside them because
on a shared, oversubscribed CPU the wall clock mostly measures the neighbours.

    fedimg bench tiles --quick --json bench-results/tiles.json
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np

__all__ = ["DESCRIPTION", "add_arguments", "run"]

log = logging.getLogger(__name__)

DESCRIPTION = "pathology tiles/s (extract + Macenko + train): fedimg vs per-tile numpy Macenko and a plain fp32 DataLoader loop"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slide", default=None, help="slide to tile (default: the bundled CMU small-region SVS)")
    p.add_argument("--target", default=None, help="Macenko target image (default: the bundled tiatoolbox tile)")
    p.add_argument("--tile-size", type=int, default=224, help="tile side in pixels (default 224)")
    p.add_argument("--mpp", type=float, default=0.5, help="tile resolution (default 0.5 um/px)")
    p.add_argument("--model", choices=["resnet18", "densenet121", "resnet10"], default="resnet18")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="training steps per timed round (default 6 x 3 rounds; --quick 2 x 2)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:n] (the peer runs on the same device)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all usable)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="fewer training steps (< ~3 minutes on 2 cores)")


_CPU: dict[str, float] = {}


def _timed(fn, *, sync, key: str | None = None) -> tuple[Any, float]:
    """Wall seconds of ``fn()``; its process CPU seconds are added to ``_CPU[key]``."""
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync()
    if key:
        _CPU[key] = _CPU.get(key, 0.0) + time.process_time() - c0
    return out, time.perf_counter() - t0


def _peer_extract(slide_path, tile: int, read: int) -> np.ndarray:
    import openslide

    s = openslide.OpenSlide(str(slide_path))
    w, h = s.dimensions
    keep = []
    for y in range(0, h - read + 1, read):
        for x in range(0, w - read + 1, read):
            rgb = np.asarray(s.read_region((x, y), 0, (read, read)).convert("RGB"))
            mx, mn = rgb.max(-1).astype(np.float32), rgb.min(-1).astype(np.float32)
            sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0)
            if (sat > 0.15).mean() >= 0.5:
                keep.append(rgb if read == tile else np.asarray(__import__("PIL.Image").Image.fromarray(rgb).resize((tile, tile))))
    s.close()
    return np.stack(keep)


def _fedimg_extract(slide_path, tile: int, mpp: float, device) -> np.ndarray:
    from fedimg.pathology.slide import open_slide
    from fedimg.pathology.tiling import TileConfig, iter_tiles, plan_tiles

    with open_slide(slide_path) as s:
        plan = plan_tiles(s, TileConfig(tile_size=tile, mpp=mpp), device=device)
        out = np.empty((len(plan), tile, tile, 3), np.uint8)
        for idx, tiles in iter_tiles(s, plan, tile):
            out[idx] = tiles
    return out


class _PeerTrainer:
    """The plain loop: per-tile ``Dataset`` + ``DataLoader``, fp32, contiguous memory."""

    def __init__(self, model, tiles: np.ndarray, labels: np.ndarray, batch: int, device) -> None:
        import torch

        class TileDataset(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return len(tiles)

            def __getitem__(self, i: int):
                t = tiles[i][:, ::-1] if np.random.rand() < 0.5 else tiles[i]
                return torch.from_numpy(np.ascontiguousarray(t.transpose(2, 0, 1))).float() / 255.0, int(labels[i])

        self.loader = torch.utils.data.DataLoader(TileDataset(), batch_size=batch, shuffle=True, num_workers=0, drop_last=True)
        self.model, self.device = model.to(device).train(), device
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self._it = iter(self.loader)

    def steps(self, n: int) -> None:
        import torch.nn.functional as F

        for _ in range(n):
            try:
                x, y = next(self._it)
            except StopIteration:
                self._it = iter(self.loader)
                x, y = next(self._it)
            loss = F.cross_entropy(self.model(x.to(self.device)), y.to(self.device))
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()


def _train_both(model_name: str, tiles: np.ndarray, labels: np.ndarray, batch: int, steps: int, rounds: int, device, sync):
    """Interleave peer and fedimg training (``rounds`` x ``steps`` each) so load changes hit both."""
    import torch

    from fedimg.pathology.train import TileSiteData, TileTrainConfig, TileTrainer, build_tile_model

    torch.manual_seed(0)
    peer = _PeerTrainer(build_tile_model(TileTrainConfig(model=model_name)), tiles, labels, batch, device)
    cfg = TileTrainConfig(model=model_name, batch_size=batch, epochs=rounds + 1, steps_per_epoch=steps, warmup_epochs=0,
                          val_fraction=0.0)
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous().to(device)
    y = torch.from_numpy(labels).to(device)
    data = TileSiteData(x_train=x, y_train=y, x_val=x[:0], y_val=y[:0], device=device, fingerprint="bench", classes=["0", "1"])
    torch.manual_seed(0)
    trainer = TileTrainer(build_tile_model(cfg), data, cfg)
    trainer.steps_per_epoch = 1
    peer.steps(1)  # warm-up steps
    trainer.train_epoch()
    trainer.steps_per_epoch = steps
    t_peer = t_fed = 0.0
    for _ in range(rounds):
        _, t = _timed(lambda: peer.steps(steps), sync=sync, key="peer.train")
        t_peer += t
        _, t = _timed(trainer.train_epoch, sync=sync, key="fedimg.train")
        t_fed += t
    n = rounds * steps * batch
    return t_peer / n, t_fed / n, {"bf16": trainer.bf16, "channels_last": trainer.channels_last}


def run(args: argparse.Namespace) -> int:
    import torch

    from fedimg.device import configure_threads, resolve_device
    from fedimg.io import write_json
    from fedimg.transforms.stain_reference import macenko_fit_numpy, macenko_normalize_numpy
    from fedimg.pathology.synth import default_slide
    from fedimg.pathology.train import _load_target
    from fedimg.telemetry import Telemetry, cpu_name
    from fedimg.transforms.stain import MacenkoNormalize

    _CPU.clear()
    threads = configure_threads(args.threads)
    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    slide = args.slide or default_slide()
    target_path = args.target or default_slide().parent / "tiatoolbox_target_image.png"
    steps = args.steps or (2 if args.quick else 6)
    rounds = 2 if args.quick else 3
    tile = args.tile_size
    from fedimg.pathology.slide import open_slide

    with open_slide(slide) as s:
        read = int(round(tile * args.mpp / s.mpp)) if abs(args.mpp / s.mpp - 1) > 0.01 else tile
    tel = Telemetry(device_index=(device.index or 0) if device.type == "cuda" else None, interval=0.5).start()
    res: dict[str, dict[str, float]] = {"peer": {}, "fedimg": {}}
    # 1. extraction (each side once, alternating order would not change much: disk cache is warm after the first)
    _fedimg_extract(slide, tile, args.mpp, device)  # warm the OS cache and imports
    peer_tiles, t = _timed(lambda: _peer_extract(slide, tile, read), sync=sync, key="peer.extract")
    res["peer"]["extract_s_per_tile"] = t / len(peer_tiles)
    tiles, t = _timed(lambda: _fedimg_extract(slide, tile, args.mpp, device), sync=sync, key="fedimg.extract")
    res["fedimg"]["extract_s_per_tile"] = t / len(tiles)
    log.info("extraction: peer %d tiles, fedimg %d tiles", len(peer_tiles), len(tiles))
    # 2. Macenko normalisation of the same tiles
    target = _load_target(str(target_path))
    stains, max_c = macenko_fit_numpy(target.permute(1, 2, 0).numpy())
    _, t = _timed(lambda: [macenko_normalize_numpy(x, stains, max_c) for x in tiles], sync=sync, key="peer.normalize")
    res["peer"]["normalize_s_per_tile"] = t / len(tiles)
    norm = MacenkoNormalize(stains=torch.from_numpy(stains).float(), max_conc=torch.from_numpy(max_c).float())
    xt = torch.from_numpy(tiles).to(device).permute(0, 3, 1, 2)
    norm(xt[:4])  # warm-up
    normed, t = _timed(lambda: torch.cat([norm(xt[i : i + 64]) for i in range(0, len(xt), 64)]), sync=sync,
                       key="fedimg.normalize")
    res["fedimg"]["normalize_s_per_tile"] = t / len(tiles)
    # 3. training on the normalised tiles (synthetic labels: which half of the slide)
    train_tiles = normed.permute(0, 2, 3, 1).cpu().numpy()
    reps = max(1, int(np.ceil(2 * args.batch_size / len(train_tiles))))
    train_tiles = np.concatenate([train_tiles] * reps)
    labels = (np.arange(len(train_tiles)) % 2).astype(np.int64)
    res["peer"]["train_s_per_tile"], res["fedimg"]["train_s_per_tile"], train_opts = _train_both(
        args.model, train_tiles, labels, args.batch_size, steps, rounds, device, sync)
    tel.stop()
    for side in res.values():
        side["pipeline_s_per_tile"] = side["extract_s_per_tile"] + side["normalize_s_per_tile"] + side["train_s_per_tile"]
    counts = {"extract": (len(peer_tiles), len(tiles)), "normalize": (len(tiles), len(tiles)),
              "train": (rounds * steps * args.batch_size,) * 2}
    cpu = {side: {st: _CPU.get(f"{side}.{st}", 0.0) / counts[st][i] for st in counts} for i, side in enumerate(("peer", "fedimg"))}
    for side in cpu.values():
        side["pipeline"] = sum(side.values())
    rows = []
    for stage in ("extract", "normalize", "train", "pipeline"):
        p, f = res["peer"][f"{stage}_s_per_tile"], res["fedimg"][f"{stage}_s_per_tile"]
        cp, cf = cpu["peer"][stage], cpu["fedimg"][stage]
        rows.append({"stage": stage, "peer_tiles_per_s": 1 / p, "fedimg_tiles_per_s": 1 / f, "ratio": p / f,
                     "peer_cpu_s_per_tile": cp, "fedimg_cpu_s_per_tile": cf, "cpu_ratio": cp / max(cf, 1e-12)})
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"\nfedimg bench tiles — {dev_name} ({device}, {threads} threads), {args.model}, {tile} px at {args.mpp} um/px, "
          f"batch {args.batch_size}, {rounds}x{steps} interleaved steps; fedimg training: {'bf16' if train_opts['bf16'] else 'fp32'}"
          f"{' + channels-last' if train_opts['channels_last'] else ''}")
    print(f"{'stage':<10} {'peer tiles/s':>14} {'fedimg tiles/s':>15} {'ratio':>7} {'CPU-time ratio':>15}")
    for r in rows:
        print(f"{r['stage']:<10} {r['peer_tiles_per_s']:>14.1f} {r['fedimg_tiles_per_s']:>15.1f} {r['ratio']:>6.2f}x"
              f" {r['cpu_ratio']:>14.2f}x")
    result = {"benchmark": "tiles", "device": str(device), "device_name": dev_name, "threads": threads, "model": args.model,
              "tile_size": tile, "mpp": args.mpp, "batch_size": args.batch_size, "steps": steps, "rounds": rounds, "quick": bool(args.quick),
              "tiles_extracted": {"peer": int(len(peer_tiles)), "fedimg": int(len(tiles))}, "fedimg_training": train_opts,
              "stages": rows, "ratio": rows[-1]["ratio"], "telemetry": tel.summary()}
    if args.json:
        write_json(args.json, result)
    return 0
