#!/usr/bin/env python
"""Training throughput: fedimg's engine vs MONAI's BraTS tutorial loop and fast-training recipe.

Every loop trains the same SegResNet on the same cases with the same crop, batch and number
of optimizer steps per epoch, in one process on one device; the peers are written as their
authors write them (``benchmarks/_train_peers.py`` cites the tutorial files and commit, and
each loop's settings go into the JSON):

* MONAI BraTS tutorial loop — on a GPU with its AMP (fp16 autocast + GradScaler), 4 loader
  workers, ``cudnn.benchmark``; on a CPU as written there (fp32) and a bf16-autocast variant;
* MONAI fast-training recipe — CacheDataset of the deterministic transforms on the device,
  ThreadDataLoader, ``set_track_meta(False)``, AMP (CPU: fp32 and bf16), Novograd;
* fedimg's engine (:class:`fedimg.bench.train.EngineLoop`, what ``fedimg bench train`` times).

Setup (the recipe's caching, the engine's preprocessing) is timed and shown for every loop
(``setup s``), apart from the epochs. After one untimed warm-up epoch each, ``--runs`` timed
epochs alternate loop by loop; each ratio is the median of the run-by-run ratios with min and
max. A quality check trains the engine twice from one seed, fp32 and bf16, and reports the
held-out Dice of both (``--quality-epochs 0`` skips it).

    python benchmarks/train_throughput.py --json benchmarks/cpu-results/train.json      # <= 4 min, 2 CPUs
    python benchmarks/train_throughput.py --device cuda --json train.json                # GPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _common
from _train_peers import TUTORIALS_COMMIT, FastRecipeLoop, TutorialLoop

from fedimg.bench import train

__all__ = ["add_arguments", "run", "build_loops"]

DESCRIPTION = "training voxels/s: fedimg engine vs MONAI's BraTS tutorial loop and fast-training recipe"


def add_arguments(p: argparse.ArgumentParser) -> None:
    train.add_arguments(p)
    p.add_argument("--peer-workers", type=int, default=4,
                   help="DataLoader workers of the tutorial loop and CacheDataset workers of the recipe (tutorials: 4)")
    p.add_argument("--peers", default="tutorial,fast",
                   help="comma-separated peers to time: tutorial, fast (default both)")
    p.add_argument("--quality-epochs", type=int, default=None,
                   help="epochs of the bf16-vs-fp32 Dice check (default 10, --quick 5; 0 skips it)")
    p.add_argument("--quick", action="store_true", help="smaller run (4 cases; ~2 minutes on 2 quiet CPU cores)")


def build_loops(cases: list, args: argparse.Namespace, s: dict) -> list:
    """The peers (each precision the device allows) and the engine, with their names prefixed."""
    device = s["device"]
    kw = dict(roi=s["roi"], batch_size=args.batch_size, init_filters=s["init_filters"], device=device,
              epochs=s["epochs"], samples_per_case=s["samples_per_case"])
    precisions = ["amp"] if device.type == "cuda" else ["fp32", "bf16"]
    peers = {"tutorial": TutorialLoop, "fast": FastRecipeLoop}
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(peers))
    if unknown:
        raise SystemExit(f"train_throughput.py: error: unknown peer(s) {', '.join(unknown)}; choose tutorial, fast")
    loops: list = [peers[p](cases, precision=pr, workers=args.peer_workers, **kw) for p in wanted for pr in precisions]
    loops.append(train.EngineLoop(cases, **kw))
    if args.variants:
        loops += [train.EngineLoop(cases, amp="fp32", **kw), train.EngineLoop(cases, amp="fp32", channels_last=True, **kw),
                  train.EngineLoop(cases, amp="bf16", channels_last=True, **kw)]
    for i, lp in enumerate(loops):
        lp.name = f"({chr(ord('a') + i)}) {lp.name}"
    return loops


def _import_peers() -> None:
    """Import what the loops use before any setup is timed (a first import is not setup)."""
    import monai.data
    import monai.losses
    import monai.networks.nets
    import monai.optimizers
    import monai.transforms  # noqa: F401

    train.import_engine()


def _summary_lines(rows: list, ratios: dict, cpu_ratios: dict) -> list[str]:
    eng = next(n for n, _ in rows if "fedimg engine" in n)
    return [f"engine / {peer}: wall {q['median']:.2f}x (min {q['min']:.2f}, max {q['max']:.2f}), CPU time "
            f"{c['median']:.2f}x (min {c['min']:.2f}, max {c['max']:.2f}), {q['runs']} interleaved runs"
            for (peer, q), c in zip(ratios.items(), cpu_ratios.values()) if peer != eng]


def _quality(args: argparse.Namespace, s: dict, tmp: Path) -> dict | None:
    epochs = args.quality_epochs if args.quality_epochs is not None else (5 if args.quick else 10)
    if epochs <= 0:
        return None
    cases = train.load_cases(args, tmp, spacing=4.0, cases=8)
    roi = (32, 32, 32) if s["device"].type == "cpu" else (64, 64, 64)
    t0 = time.perf_counter()
    q = train.quality_check(cases, roi=roi, batch_size=args.batch_size, init_filters=s["init_filters"],
                            device=s["device"], epochs=epochs)
    q["data"] = args.data or "fedimg synth, 8 cases at 4 mm (6 train, 2 held out)"
    q["seconds"] = time.perf_counter() - t0
    print(f"quality: held-out Dice after {epochs} epochs from one seed: fp32 mean {q['fp32']['dice_mean']:.3f} "
          f"(WT {q['fp32']['dice_wt']:.3f}), bf16 mean {q['bf16']['dice_mean']:.3f} (WT {q['bf16']['dice_wt']:.3f}); "
          f"bf16 - fp32 = {q['bf16_minus_fp32']['dice_mean']:+.3f}")
    return q


def run(args: argparse.Namespace) -> int:
    import torch

    from fedimg.device import seed_everything
    from fedimg.io import write_json
    from fedimg.telemetry import Telemetry

    s = train.settings(args)
    device, epochs = s["device"], s["epochs"]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both tutorials set it; process-wide, so every loop has it
    tel_index = (device.index or 0) if device.type == "cuda" else None
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedimg-bench-train-") as tmp:
        cases = train.load_cases(args, Path(tmp))
        _import_peers()
        seed_everything(0)
        loops = build_loops(cases, args, s)
        with Telemetry(tel_index, interval=0.1 if device.type == "cuda" else 0.5) as tel:
            res = train.measure(loops, epochs, device, tel)
        quality = _quality(args, s, Path(tmp))
    rows = [(lp.name, r) for lp, r in zip(loops, res)]
    eng_i = next(i for i, lp in enumerate(loops) if isinstance(lp, train.EngineLoop))
    ratios = {name: train.ratio_spread(res[eng_i], r) for name, r in rows}
    cpu_ratios = {name: train.ratio_spread(res[eng_i], r, key="voxels_per_cpu_s") for name, r in rows}
    head = train.header(s, cases, args, tel)
    print(train.table(rows, head, title="benchmarks/train_throughput.py  (ratio = engine / loop)",
                      ratios=[ratios[n] for n, _ in rows]))
    print("\n".join(_summary_lines(rows, ratios, cpu_ratios)))
    result = {"benchmark": "train_throughput", **head, "peer_workers": args.peer_workers,
              "monai_tutorials_commit": TUTORIALS_COMMIT, "cudnn_benchmark": device.type == "cuda",
              "ratios_engine_over": ratios, "cpu_time_ratios_engine_over": cpu_ratios, "quality_bf16_vs_fp32": quality,
              "results": {lp.name: {**r, "settings": lp.settings} for lp, r in zip(loops, res)},
              "wall_s": time.perf_counter() - t_all, "argv": sys.argv[1:]}
    if args.json:
        write_json(args.json, result)
    return 0


def main(argv=None) -> int:
    return _common.main(_common.parser(DESCRIPTION, add_arguments), run, argv)


if __name__ == "__main__":
    sys.exit(main())
