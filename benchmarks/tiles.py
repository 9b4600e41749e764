#!/usr/bin/env python
"""Pathology tiles/s: extraction, Macenko normalisation and training, fedimg vs the peers a user
would write, interleaved in one process on the real CMU slide.

Peers, configured as their authors show them:

* extraction: ``openslide.read_region`` once per grid position (OpenSlide's own examples),
  then a per-tile saturation check keeps the tissue tiles;
* normalisation: torchstain's ``MacenkoNormalizer(backend="torch")`` as its README shows
  (``fit`` on the target once, then ``normalize(I=tile)`` on each CHW 0-255 tensor, on the
  benchmark's device); without torchstain, the per-tile numpy Macenko of
  :mod:`fedimg.transforms.stain_reference` (staintools-style). The JSON says which;
* training: a ``Dataset`` whose ``__getitem__`` turns one HWC uint8 tile into a float CHW
  tensor with a random flip, a ``DataLoader`` with ``num_workers`` (persistent workers) and
  ``pin_memory`` on CUDA (PyTorch's data-loading advice), AdamW, and the same precision as
  fedimg's trainer (bf16 autocast where fedimg uses it, else fp32: ``--peer-precision``).

fedimg: the functions of :mod:`fedimg.bench.tiles` (what ``fedimg bench tiles`` times). Same
slide, tiles, model, batch and optimizer steps; fedimg's training also pays for stain
augmentation, the peer only flips. One-time setup (loader workers, model, caching the tiles on
the device, first step) is timed separately for both sides.

Every run does all three stages on both sides, the order alternating from run to run; the
result is the median of ``--runs`` (>= 5) per-run ratios with min and max, wall clock and
process CPU time (loader workers included). The training ratio is reported apart from the
pipeline ratio, 1 / (1/extract + 1/normalise + 1/train), and from the pipeline without
normalisation, because a fast normaliser can carry the pipeline alone.

    python benchmarks/tiles.py --json benchmarks/cpu-results/tiles.json     # 5 runs, <= 4 min on 2 cores
    python benchmarks/tiles.py --quick --runs 5
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

import numpy as np

import _common
from fedimg.bench import tiles as ftiles

__all__ = ["add_arguments", "run", "summarise"]

log = logging.getLogger("benchmarks.tiles")

DESCRIPTION = ("pathology tiles/s (extract + Macenko + train), interleaved runs: fedimg vs per-tile read_region, "
               "torchstain Macenko and a DataLoader loop with workers")
STAGES = ("extract", "normalize", "train")


def add_arguments(p: argparse.ArgumentParser) -> None:
    ftiles.add_arguments(p)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:n] (the peers run on the same device)")
    p.add_argument("--runs", type=int, default=5, help="interleaved runs, each doing every stage on both sides (default 5)")
    p.add_argument("--peer-workers", type=int, default=None,
                   help="DataLoader workers of the peer (default min(4, CPUs usable))")
    p.add_argument("--peer-normalizer", choices=["auto", "torchstain", "numpy"], default="auto",
                   help="auto: torchstain if installed, else the per-tile numpy reference")
    p.add_argument("--peer-precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 autocast where fedimg's trainer uses bf16, else fp32")
    p.add_argument("--quick", action="store_true", help="2 training steps per run (full: 6)")


def cpu_seconds() -> float:
    """CPU seconds of this process and its live children (the peer's loader workers)."""
    t = time.process_time()
    try:
        import psutil

        for c in psutil.Process().children(recursive=True):
            try:
                ct = c.cpu_times()
                t += ct.user + ct.system
            except psutil.Error:
                pass
    except ImportError:
        pass
    return t


def timed(fn, sync):
    """``(fn(), wall s, CPU s)``."""
    sync()
    t0, c0 = time.perf_counter(), cpu_seconds()
    out = fn()
    sync()
    return out, time.perf_counter() - t0, cpu_seconds() - c0


def peer_extract(slide_path, tile: int, read: int) -> np.ndarray:
    import openslide
    from PIL import Image

    s = openslide.OpenSlide(str(slide_path))
    w, h = s.dimensions
    keep = []
    for y in range(0, h - read + 1, read):
        for x in range(0, w - read + 1, read):
            rgb = np.asarray(s.read_region((x, y), 0, (read, read)).convert("RGB"))
            mx, mn = rgb.max(-1).astype(np.float32), rgb.min(-1).astype(np.float32)
            sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0)
            if (sat > 0.15).mean() >= 0.5:
                keep.append(rgb if read == tile else np.asarray(Image.fromarray(rgb).resize((tile, tile))))
    s.close()
    return np.stack(keep)


class PeerNormalizer:
    """torchstain's torch Macenko as its README uses it, or the numpy reference; ``settings`` for the JSON."""

    def __init__(self, kind: str, target_rgb: np.ndarray, device) -> None:
        if kind == "auto":
            try:
                import torchstain  # noqa: F401

                kind = "torchstain"
            except ImportError:
                kind = "numpy"
        self.kind, self.device = kind, device
        if kind == "torchstain":
            import importlib.metadata

            import torchstain

            self.settings = {"peer": "torchstain", "version": importlib.metadata.version("torchstain"),
                             "backend": "torch", "call": "normalize(I=CHW float 0-255, stains=False)",
                             "device": str(device), "Io": 240, "alpha": 1, "beta": 0.15}
            try:
                self._fit(target_rgb)
            except Exception as exc:  # torchstain on this device failed: run it where its README does
                if getattr(device, "type", "cpu") == "cpu":
                    raise
                log.warning("torchstain on %s failed (%s); the peer normalises on the CPU", device, exc)
                self.device = "cpu"
                self.settings["device"] = f"cpu ({device} failed: {str(exc)[:120]})"
                self._fit(target_rgb)
        else:
            from fedimg.transforms.stain_reference import macenko_fit_numpy

            self.stains, self.max_c = macenko_fit_numpy(target_rgb)
            self.settings = {"peer": "fedimg.transforms.stain_reference (numpy, per tile)", "device": "cpu"}

    def _fit(self, target_rgb: np.ndarray) -> None:
        import torchstain

        self.norm = torchstain.normalizers.MacenkoNormalizer(backend="torch")
        self.norm.fit(self._t(target_rgb))
        h, w = target_rgb.shape[0] // 2, target_rgb.shape[1] // 2
        crop = target_rgb[max(0, h - 112) : h + 112, max(0, w - 112) : w + 112]
        self.norm.normalize(I=self._t(crop), stains=False)  # fails here, not mid-run, if it fails

    def _t(self, rgb: np.ndarray):
        """torchstain's README transform: ToTensor() then x*255, i.e. a float CHW tensor in 0..255."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1).float()

    def __call__(self, tiles: np.ndarray) -> list:
        if self.kind == "torchstain":
            return [self.norm.normalize(I=self._t(t), stains=False)[0] for t in tiles]
        from fedimg.transforms.stain_reference import macenko_normalize_numpy

        return [macenko_normalize_numpy(t, self.stains, self.max_c) for t in tiles]


class PeerTrainer:
    """The plain loop: per-tile ``Dataset`` + ``DataLoader`` with workers, AdamW, optional bf16 autocast."""

    def __init__(self, model, tiles: np.ndarray, labels: np.ndarray, batch: int, device, workers: int, bf16: bool) -> None:
        import torch

        class TileDataset(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return len(tiles)

            def __getitem__(self, i: int):
                t = tiles[i][:, ::-1] if np.random.rand() < 0.5 else tiles[i]
                return torch.from_numpy(np.ascontiguousarray(t.transpose(2, 0, 1))).float() / 255.0, int(labels[i])

        cuda = device.type == "cuda"
        self.loader = torch.utils.data.DataLoader(TileDataset(), batch_size=batch, shuffle=True, num_workers=workers,
                                                  pin_memory=cuda, persistent_workers=workers > 0, drop_last=True)
        self.model, self.device, self.bf16 = model.to(device).train(), device, bf16
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self.settings = {"num_workers": workers, "persistent_workers": workers > 0, "pin_memory": cuda,
                         "shuffle": True, "precision": "bf16 autocast" if bf16 else "fp32", "optimizer": "AdamW(lr=1e-3)",
                         "augmentation": "random horizontal flip in __getitem__"}
        self._it = iter(self.loader)

    def steps(self, n: int) -> None:
        import torch
        import torch.nn.functional as F

        for _ in range(n):
            try:
                x, y = next(self._it)
            except StopIteration:
                self._it = iter(self.loader)
                x, y = next(self._it)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


def _spread(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def summarise(runs: list[dict]) -> list[dict]:
    """Per stage (and the pipelines): median/min/max of tiles/s per side and of the per-run ratios.

    >>> r = {"peer": {"extract": (1.0, 1.0), "normalize": (1.0, 1.0), "train": (2.0, 2.0)},
    ...      "fedimg": {"extract": (0.5, 0.5), "normalize": (0.1, 0.1), "train": (1.0, 1.0)}}
    >>> rows = {row["stage"]: row for row in summarise([r])}
    >>> rows["train"]["ratio"]["median"], rows["pipeline"]["ratio"]["median"], rows["extract+train"]["ratio"]["median"]
    (2.0, 2.5, 2.0)
    """
    combos = {**{s: (s,) for s in STAGES}, "pipeline": STAGES, "extract+train": ("extract", "train")}
    rows = []
    for name, parts in combos.items():
        per = {side: [(sum(r[side][s][0] for s in parts), sum(r[side][s][1] for s in parts)) for r in runs]
               for side in ("peer", "fedimg")}
        rows.append({"stage": name,
                     "peer_tiles_per_s": _spread([1 / w for w, _ in per["peer"]]),
                     "fedimg_tiles_per_s": _spread([1 / w for w, _ in per["fedimg"]]),
                     "ratio": _spread([p[0] / f[0] for p, f in zip(per["peer"], per["fedimg"])]),
                     "cpu_ratio": _spread([p[1] / max(f[1], 1e-12) for p, f in zip(per["peer"], per["fedimg"])]),
                     "runs_ratio": [p[0] / f[0] for p, f in zip(per["peer"], per["fedimg"])]})
    return rows


def _setup(args, device, sync, slide, target_path, tile, steps):
    """Both sides' one-time work (timed apart): tiles for training, the normalisers, the trainers."""
    import torch

    from fedimg.pathology.tiledata import load_target_image, stain_normalizer
    from fedimg.tasks.tiles import TileTrainConfig, build_tile_model

    setup = {}
    tiles = ftiles.fedimg_extract(slide, tile, args.mpp, device)  # also warms the OS cache and imports
    target_rgb = load_target_image(str(target_path)).permute(1, 2, 0).numpy()
    (peer_norm, setup["peer.normalize"], _) = timed(lambda: PeerNormalizer(args.peer_normalizer, target_rgb, device), sync)
    (fed_norm, setup["fedimg.normalize"], _) = timed(lambda: stain_normalizer("macenko", str(target_path)), sync)
    xt = torch.from_numpy(tiles).to(device).permute(0, 3, 1, 2)
    normed, _ = ftiles.normalize_tiles(fed_norm, xt, sync=sync)
    peer_out = peer_norm(tiles[:4])
    agree = float(np.mean([np.abs(np.asarray(torch.as_tensor(p).cpu(), np.float32)
                                  - normed[i].permute(1, 2, 0).cpu().numpy()).mean() for i, p in enumerate(peer_out)]))
    # enough tiles that the peer's DataLoader starts a new epoch at most once per run
    train_tiles, labels = ftiles.training_tiles(normed, args.batch_size, min_tiles=(steps + 1) * args.batch_size)
    t0 = time.perf_counter()
    trainer = ftiles.tile_trainer(args.model, train_tiles, labels, args.batch_size, steps, args.runs, device)
    ftiles.warm_up(trainer, steps)
    sync()
    setup["fedimg.train"] = time.perf_counter() - t0
    bf16 = trainer.bf16 if args.peer_precision == "auto" else args.peer_precision == "bf16"
    workers = args.peer_workers if args.peer_workers is not None else min(4, len(os.sched_getaffinity(0)))
    t0 = time.perf_counter()
    torch.manual_seed(0)
    peer = PeerTrainer(build_tile_model(TileTrainConfig(model=args.model)), train_tiles, labels, args.batch_size, device,
                       workers, bf16)
    peer.steps(1)
    sync()
    setup["peer.train"] = time.perf_counter() - t0
    return tiles, xt, peer_norm, fed_norm, peer, trainer, setup, agree


def _one_run(i: int, args, device, sync, slide, tile, read, tiles, xt, peer_norm, fed_norm, peer, trainer, steps) -> dict:
    """One interleaved run: every stage on both sides (order alternating); (wall, CPU) s per tile."""
    from fedimg.pathology.tiledata import normalize_batches

    n_train = steps * args.batch_size
    sides = {
        "peer": {"extract": lambda: peer_extract(slide, tile, read), "normalize": lambda: peer_norm(tiles),
                 "train": lambda: peer.steps(steps)},
        "fedimg": {"extract": lambda: ftiles.fedimg_extract(slide, tile, args.mpp, device),
                   "normalize": lambda: normalize_batches(xt, fed_norm),
                   "train": trainer.train_epoch},
    }
    counts = {"extract": None, "normalize": len(tiles), "train": n_train}
    order = ("peer", "fedimg") if i % 2 == 0 else ("fedimg", "peer")
    res: dict[str, dict] = {"peer": {}, "fedimg": {}}
    for stage in STAGES:
        for side in order:
            out, wall, cpu = timed(sides[side][stage], sync)
            n = len(out) if stage == "extract" else counts[stage]
            res[side][stage] = (wall / n, cpu / n)
            if stage == "extract":
                res[side]["tiles"] = len(out)
    return res


def run(args: argparse.Namespace) -> int:
    import torch

    from fedimg.io import write_json
    from fedimg.telemetry import Telemetry, cpu_name

    if args.runs < 1:
        raise SystemExit("benchmarks/tiles.py: --runs must be >= 1 (5 or more for a median the RESULTS can quote)")
    threads, device, sync, slide, target_path, steps, _, tile = ftiles.settings(args)
    read = ftiles.read_size(slide, tile, args.mpp)
    tel = Telemetry(device_index=(device.index or 0) if device.type == "cuda" else None, interval=0.5, torch_device=device)
    tel.start()
    tiles, xt, peer_norm, fed_norm, peer, trainer, setup, agree = _setup(args, device, sync, slide, target_path, tile, steps)
    runs = []
    for i in range(args.runs):
        runs.append(_one_run(i, args, device, sync, slide, tile, read, tiles, xt, peer_norm, fed_norm, peer, trainer, steps))
        log.info("run %d/%d: train ratio %.2f", i + 1, args.runs, runs[-1]["peer"]["train"][0] / runs[-1]["fedimg"]["train"][0])
    tel.stop()
    rows = summarise(runs)
    opts = {"bf16": trainer.bf16, "channels_last": trainer.channels_last}
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    _print(args, dev_name, device, threads, tile, steps, opts, peer, peer_norm, rows, setup, tel.summary())
    result = {"benchmark": "tiles", "device": str(device), "device_name": dev_name, "threads": threads, "model": args.model,
              "tile_size": tile, "mpp": args.mpp, "batch_size": args.batch_size, "steps_per_run": steps, "runs": args.runs,
              "quick": bool(args.quick), "interleaved": "every run does each stage on both sides, order alternating",
              "tiles_extracted": {"peer": runs[0]["peer"]["tiles"], "fedimg": runs[0]["fedimg"]["tiles"]},
              "fedimg_training": opts, "peer_settings": {"extract": "openslide read_region per grid position + saturation check",
                                                         "normalize": peer_norm.settings, "train": peer.settings},
              "normalize_mean_abs_diff_0_255": agree, "setup_s": setup, "stages": rows,
              "train_ratio": next(r["ratio"] for r in rows if r["stage"] == "train"),
              "pipeline_ratio": next(r["ratio"] for r in rows if r["stage"] == "pipeline"),
              "extract_train_ratio": next(r["ratio"] for r in rows if r["stage"] == "extract+train"),
              "telemetry": tel.summary()}
    if args.json:
        write_json(args.json, result)
    return 0


def _print(args, dev_name, device, threads, tile, steps, opts, peer, peer_norm, rows, setup, tel) -> None:
    from fedimg.telemetry import format_summary

    print(f"\nbenchmarks/tiles.py — {dev_name} ({device}, {threads} threads), {args.model}, {tile} px at {args.mpp} um/px, "
          f"batch {args.batch_size}, {args.runs} interleaved runs x {steps} steps; fedimg training "
          f"{'bf16' if opts['bf16'] else 'fp32'}{' + channels-last' if opts['channels_last'] else ''}; peer "
          f"{peer.settings['precision']}, {peer.settings['num_workers']} loader workers, normaliser {peer_norm.settings['peer']}")
    print(f"{'stage':<14} {'peer tiles/s':>13} {'fedimg tiles/s':>15} {'ratio median [min, max]':>26} {'CPU-time ratio':>15}")
    for r in rows:
        rr = r["ratio"]
        print(f"{r['stage']:<14} {r['peer_tiles_per_s']['median']:>13.1f} {r['fedimg_tiles_per_s']['median']:>15.1f} "
              f"{rr['median']:>9.2f}x [{rr['min']:.2f}, {rr['max']:.2f}]{'':>4} {r['cpu_ratio']['median']:>14.2f}x")
    print("setup s (not in the ratios): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(setup.items())))
    if (line := format_summary(tel)):
        print(line)


def main(argv=None) -> int:
    return _common.main(_common.parser(DESCRIPTION, add_arguments), run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
