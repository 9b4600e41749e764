#!/usr/bin/env python
"""Pathology tiles/s: extraction + Macenko + training, fedimg vs a plain fp32 loop, measured in
the same process on the real CMU slide.

Peer (how tutorials write it):

* extraction: ``openslide.read_region`` once per grid position over the whole slide, then a
  per-tile saturation check keeps the tissue tiles;
* normalisation: per-tile numpy Macenko (:mod:`fedimg.transforms.stain_reference`, staintools-style);
* training: a ``Dataset`` whose ``__getitem__`` converts one HWC uint8 tile to a float CHW
  tensor with a random flip, a ``DataLoader`` (no workers: 2 cores), fp32 model.

fedimg: the functions of :mod:`fedimg.bench.tiles` (what ``fedimg bench tiles`` times), with
the stain matrix fitted by the numpy reference so both normalise with the same numbers. Same
model, tiles, batch size and number of steps; fedimg also pays for stain augmentation, the
peer only flips. Training alternates peer and fedimg round by round.

Pipeline tiles/s = 1 / (1/extract + 1/normalise + 1/train): one tile through all three.
Wall-clock tiles/s are the result; the process CPU-time ratio is printed beside them because
on a shared, oversubscribed CPU the wall clock mostly measures the neighbours.

    python benchmarks/tiles.py --json bench-results/tiles.json
    python benchmarks/tiles.py --quick
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

import _common
from fedimg.bench import tiles as ftiles

__all__ = ["add_arguments", "run"]

log = logging.getLogger("benchmarks.tiles")

DESCRIPTION = "pathology tiles/s (extract + Macenko + train): fedimg vs per-tile numpy Macenko and a plain fp32 DataLoader loop"


def add_arguments(p: argparse.ArgumentParser) -> None:
    ftiles.add_arguments(p)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:n] (the peer runs on the same device)")
    p.add_argument("--quick", action="store_true", help="fewer training steps (< ~3 minutes on 2 cores)")


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


def _train_both(model_name: str, tiles: np.ndarray, labels: np.ndarray, batch: int, steps: int, rounds: int, device, sync,
                cpu: dict[str, float]):
    """Interleave peer and fedimg training (``rounds`` x ``steps`` each) so load changes hit both."""
    import torch

    from fedimg.tasks.tiles import TileTrainConfig, build_tile_model

    torch.manual_seed(0)
    peer = _PeerTrainer(build_tile_model(TileTrainConfig(model=model_name)), tiles, labels, batch, device)
    trainer = ftiles.tile_trainer(model_name, tiles, labels, batch, steps, rounds, device)
    peer.steps(1)  # warm-up steps
    ftiles.warm_up(trainer, steps)
    t_peer = t_fed = 0.0
    for _ in range(rounds):
        _, t = ftiles.timed(lambda: peer.steps(steps), sync=sync, cpu=cpu, key="peer.train")
        t_peer += t
        t_fed += ftiles.train_rounds(trainer, 1, sync=sync, cpu=cpu, key="fedimg.train")
    n = rounds * steps * batch
    return t_peer / n, t_fed / n, {"bf16": trainer.bf16, "channels_last": trainer.channels_last}


def _rows(res: dict[str, dict[str, float]], cpu: dict[str, float], counts: dict[str, tuple[int, int]]) -> list[dict]:
    """Per stage and for the pipeline: both sides' tiles/s, CPU s per tile and the ratios."""
    for side in res.values():
        side["pipeline_s_per_tile"] = side["extract_s_per_tile"] + side["normalize_s_per_tile"] + side["train_s_per_tile"]
    cpu_per = {side: {st: cpu.get(f"{side}.{st}", 0.0) / counts[st][i] for st in counts}
               for i, side in enumerate(("peer", "fedimg"))}
    for side in cpu_per.values():
        side["pipeline"] = sum(side.values())
    rows = []
    for stage in ("extract", "normalize", "train", "pipeline"):
        p, f = res["peer"][f"{stage}_s_per_tile"], res["fedimg"][f"{stage}_s_per_tile"]
        cp, cf = cpu_per["peer"][stage], cpu_per["fedimg"][stage]
        rows.append({"stage": stage, "peer_tiles_per_s": 1 / p, "fedimg_tiles_per_s": 1 / f, "ratio": p / f,
                     "peer_cpu_s_per_tile": cp, "fedimg_cpu_s_per_tile": cf, "cpu_ratio": cp / max(cf, 1e-12)})
    return rows


def run(args: argparse.Namespace) -> int:
    import torch

    from fedimg.io import write_json
    from fedimg.pathology.tiledata import load_target_image
    from fedimg.telemetry import Telemetry, cpu_name
    from fedimg.transforms.stain import MacenkoNormalize
    from fedimg.transforms.stain_reference import macenko_fit_numpy, macenko_normalize_numpy

    cpu: dict[str, float] = {}
    threads, device, sync, slide, target_path, steps, rounds, tile = ftiles.settings(args)
    read = ftiles.read_size(slide, tile, args.mpp)
    tel = Telemetry(device_index=(device.index or 0) if device.type == "cuda" else None, interval=0.5).start()
    res: dict[str, dict[str, float]] = {"peer": {}, "fedimg": {}}
    # 1. extraction (each side once, alternating order would not change much: disk cache is warm after the first)
    ftiles.fedimg_extract(slide, tile, args.mpp, device)  # warm the OS cache and imports
    peer_tiles, t = ftiles.timed(lambda: _peer_extract(slide, tile, read), sync=sync, cpu=cpu, key="peer.extract")
    res["peer"]["extract_s_per_tile"] = t / len(peer_tiles)
    tiles, t = ftiles.timed(lambda: ftiles.fedimg_extract(slide, tile, args.mpp, device), sync=sync, cpu=cpu,
                            key="fedimg.extract")
    res["fedimg"]["extract_s_per_tile"] = t / len(tiles)
    log.info("extraction: peer %d tiles, fedimg %d tiles", len(peer_tiles), len(tiles))
    # 2. Macenko normalisation of the same tiles
    target = load_target_image(str(target_path))
    stains, max_c = macenko_fit_numpy(target.permute(1, 2, 0).numpy())
    _, t = ftiles.timed(lambda: [macenko_normalize_numpy(x, stains, max_c) for x in tiles], sync=sync, cpu=cpu,
                        key="peer.normalize")
    res["peer"]["normalize_s_per_tile"] = t / len(tiles)
    norm = MacenkoNormalize(stains=torch.from_numpy(stains).float(), max_conc=torch.from_numpy(max_c).float())
    xt = torch.from_numpy(tiles).to(device).permute(0, 3, 1, 2)
    normed, t = ftiles.normalize_tiles(norm, xt, sync=sync, cpu=cpu, key="fedimg.normalize")
    res["fedimg"]["normalize_s_per_tile"] = t / len(tiles)
    # 3. training on the normalised tiles (synthetic labels: which half of the slide)
    train_tiles, labels = ftiles.training_tiles(normed, args.batch_size)
    res["peer"]["train_s_per_tile"], res["fedimg"]["train_s_per_tile"], train_opts = _train_both(
        args.model, train_tiles, labels, args.batch_size, steps, rounds, device, sync, cpu)
    tel.stop()
    counts = {"extract": (len(peer_tiles), len(tiles)), "normalize": (len(tiles), len(tiles)),
              "train": (rounds * steps * args.batch_size,) * 2}
    rows = _rows(res, cpu, counts)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"\nbenchmarks/tiles.py — {dev_name} ({device}, {threads} threads), {args.model}, {tile} px at {args.mpp} um/px, "
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


def main(argv=None) -> int:
    return _common.main(_common.parser(DESCRIPTION, add_arguments), run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
