"""DP-SGD step time against the plain step: same model, same batch, same trainer (CPU or GPU).

    python benchmarks/privacy.py [--task tiles|brats|both] [--repeats 5] [--device auto] [--json out.json]

Each repeat times ``--steps`` training steps of the plain trainer and of the same trainer made
private (Opacus per-sample gradients via ExpandedWeights, clipping, noise; fp32 in both, so the
ratio is the cost of DP itself), interleaved, from the same initial weights and the same index
batch (the DP path is handed the fixed batch instead of a Poisson draw, so both do the same
work). Reports the median seconds per step, wall and process CPU time, and DP/plain ratios.
Not part of the wheel; the HE cost is not measured here (NVFlare HE is not wired in fedimg yet).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import _common


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=["tiles", "brats", "both"], default="both")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="one repeat of two steps (a smoke run)")


def _tile_trainer(device, private: bool):
    import torch

    from fedimg.pathology.config import TileTrainConfig
    from fedimg.pathology.models import build_tile_model
    from fedimg.pathology.tiledata import TileSiteData
    from fedimg.privacy import DPConfig, PatientDP
    from fedimg.tasks.tiles_train import TileTrainer

    cfg = TileTrainConfig(model="resnet18", norm="group", width=0.5, batch_size=32, epochs=1, amp="fp32",
                          augment=False, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 64, 64), generator=g, dtype=torch.uint8).to(device)
    data = TileSiteData(x_train=x, y_train=(torch.arange(64) % 2).to(device), x_val=x[:8], y_val=torch.zeros(8, dtype=torch.long).to(device),
                        device=device, fingerprint="bench", classes=["0", "1"])
    torch.manual_seed(0)
    trainer = TileTrainer(build_tile_model(cfg), data, cfg)
    if private:
        trainer.make_private(PatientDP(DPConfig(noise_multiplier=1.0), total_epochs=1000))
    return trainer, torch.arange(32).to(device), "resnet18 x0.5 GroupNorm, 32 tiles of 64 px"


def _brats_trainer(device, private: bool):
    import torch

    from fedimg.data import synthesize
    from fedimg.engine.config import TrainConfig
    from fedimg.engine.loop import Trainer
    from fedimg.privacy import DPConfig, PatientDP
    from fedimg.tasks import brats

    root = Path("/tmp/fedimg-bench-privacy")
    site = root / "d" / "site-1"
    if not site.exists():
        synthesize(root / "d", sites=1, cases_per_site=4, seed=0, spacing=4.0)
    cfg = TrainConfig(roi=(48, 48, 48), batch_size=2, epochs=1, amp="fp32", seed=0, allow_identifiable=True,
                      device=str(device), val_fraction=0.0)
    data = brats.load_site(site, cfg, device)
    torch.manual_seed(0)
    trainer = Trainer(brats.build_model(cfg), data, cfg)
    if private:
        trainer.make_private(PatientDP(DPConfig(noise_multiplier=1.0), total_epochs=1000))
    return trainer, [0, 1], "SegResNet (8 filters), 2 crops of 48^3"


def _time(trainer, batch, steps: int) -> tuple[float, float]:
    import torch

    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.optimizer.zero_grad(set_to_none=True)
        loss, _ = trainer.step_loss(batch)
        loss.backward()
        trainer.optimizer.step()
    sync()
    return (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps


def run(args: argparse.Namespace) -> int:
    import torch

    from fedimg.device import resolve_device
    from fedimg.io import write_json

    if args.quick:
        args.repeats, args.steps = 1, 2
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    tasks = ["tiles", "brats"] if args.task == "both" else [args.task]
    out = {"device": str(device), "threads": args.threads, "steps": args.steps, "repeats": args.repeats, "tasks": {}}
    for task in tasks:
        make = _tile_trainer if task == "tiles" else _brats_trainer
        (plain, batch, what), (private, _, _) = make(device, False), make(device, True)
        _time(plain, batch, 1), _time(private, batch, 1)  # warm-up
        rows = {"plain": [], "dp": []}
        for _ in range(args.repeats):  # interleaved
            rows["plain"].append(_time(plain, batch, args.steps))
            rows["dp"].append(_time(private, batch, args.steps))
        med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rows.items()}
        res = {"what": what, "plain_s_per_step": med["plain"][0], "dp_s_per_step": med["dp"][0],
               "plain_cpu_s_per_step": med["plain"][1], "dp_cpu_s_per_step": med["dp"][1],
               "ratio_wall": med["dp"][0] / med["plain"][0], "ratio_cpu": med["dp"][1] / med["plain"][1]}
        out["tasks"][task] = res
        print(f"{task}: {what} on {device}: plain {res['plain_s_per_step']:.3f} s/step, DP-SGD {res['dp_s_per_step']:.3f} "
              f"s/step -> {res['ratio_wall']:.2f}x wall, {res['ratio_cpu']:.2f}x CPU time (median of {args.repeats})")
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(_common.main(_common.parser(__doc__.splitlines()[0], _add), run, None))
