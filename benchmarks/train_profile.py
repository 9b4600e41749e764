#!/usr/bin/env python
"""Where one training step of fedimg's engine spends its CPU time, and what each speed option gives.

The engine's step on cached data (``sample_batch`` → SegResNet forward in autocast → Dice
loss → backward → AdamW), on synthetic 2 mm cases, one torch thread, CPU seconds
(``time.process_time``, so other jobs on a shared machine change little):

* op breakdown from ``torch.profiler`` (self CPU time) for fp32 and bf16: convolution
  forward/backward, GroupNorm, upsampling, the optimizer, everything else;
* the data path alone (``sample_batch``: crop, flips, intensity jitter of one batch);
* step time of each option, interleaved ``--runs`` times: fp32, bf16, channels-last-3d
  (fp32 and bf16), fused AdamW and the for-each (multi-tensor) AdamW off, with bf16.

    python benchmarks/train_profile.py --json benchmarks/cpu-results/train-profile.json   # ~1-2 min
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common

__all__ = ["add_arguments", "run"]

DESCRIPTION = "CPU-time profile of one engine training step and of its speed options (1 thread)"

OPTIONS = {  # name: (bf16, channels_last, AdamW keyword)
    "fp32": (False, False, {}), "bf16": (True, False, {}), "fp32 + channels-last-3d": (False, True, {}),
    "bf16 + channels-last-3d": (True, True, {}), "bf16 + fused AdamW": (True, False, {"fused": True}),
    "bf16, AdamW foreach off": (True, False, {"foreach": False}),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--roi", type=int, default=64, help="cubic crop (default 64)")
    p.add_argument("--runs", type=int, default=5, help="interleaved timed steps per option (default 5)")
    p.add_argument("--init-filters", type=int, default=8)
    p.add_argument("--data", default=None, help="site folder to use (default: 2 synthetic cases at 2 mm)")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--quick", action="store_true", help="32^3 crops, 3 runs (~20 s)")


def _stepper(data, cfg, bf16: bool, channels_last: bool, opt_kw: dict):
    import torch

    from fedimg.engine.augment import sample_batch
    from fedimg.engine.loop import make_loss
    from fedimg.engine.models import build_model

    torch.manual_seed(0)
    model = build_model("segresnet", init_filters=cfg.init_filters)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **opt_kw)
    loss_fn, gen = make_loss(cfg), torch.Generator().manual_seed(0)

    def step() -> None:
        x, y = sample_batch(data.train_images, data.train_regions, data.train_fg, [0, 1], cfg, gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss_fn(out.float(), y).backward()
        opt.step()

    return step


def _breakdown(step) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    groups = {"convolution forward": ("mkldnn_convolution", "convolution_overrideable", "slow_conv3d_forward"),
              "convolution backward": ("convolution_backward",), "group norm": ("group_norm",),
              "upsampling": ("upsample",), "optimizer": ("Optimizer.", "_fused_adamw", "_foreach_")}
    share = dict.fromkeys([*groups, "other"], 0.0)
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    for e in events:
        g = next((k for k, keys in groups.items() if any(s in e.key for s in keys)), "other")
        share[g] += 100.0 * e.self_cpu_time_total / total
    return {k: round(v, 1) for k, v in share.items()}


def run(args: argparse.Namespace) -> int:
    import torch

    from fedimg.data import discover, synthesize
    from fedimg.device import configure_threads
    from fedimg.engine.augment import sample_batch
    from fedimg.engine.cache import prepare_site_data
    from fedimg.engine.config import TrainConfig
    from fedimg.io import write_json
    from fedimg.telemetry import cpu_name

    configure_threads(1)
    if args.quick:
        args.roi, args.runs = min(args.roi, 32), min(args.runs, 3)
    cfg = TrainConfig(roi=(args.roi,) * 3, init_filters=args.init_filters, val_fraction=0.0)
    with tempfile.TemporaryDirectory(prefix="fedimg-train-profile-") as tmp:
        site = args.data or synthesize(Path(tmp) / "d", sites=1, cases_per_site=2, seed=0, spacing=2.0)[0]
        data = prepare_site_data(discover(site, require_labels=True)[:2], cfg, torch.device("cpu"))
    steps = {name: _stepper(data, cfg, *opt) for name, opt in OPTIONS.items()}
    result = {"benchmark": "train_profile", "cpu": cpu_name(), "threads": 1, "roi": args.roi,
              "init_filters": args.init_filters, "batch_size": 2, "torch": torch.__version__,
              "op_share_percent": {"fp32": _breakdown(steps["fp32"]), "bf16": _breakdown(steps["bf16"])}}
    gen, t = torch.Generator().manual_seed(0), []
    for _ in range(20):
        c = time.process_time()
        sample_batch(data.train_images, data.train_regions, data.train_fg, [0, 1], cfg, gen)
        t.append(time.process_time() - c)
    result["data_path_cpu_s"] = statistics.median(t)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.runs):
        for name, step in steps.items():
            c = time.process_time()
            step()
            times[name].append(time.process_time() - c)
    base = statistics.median(times["bf16"])
    result["step_cpu_s"] = {n: {"median": statistics.median(v), "min": min(v), "max": max(v),
                                "vs_bf16": statistics.median(v) / base} for n, v in times.items()}
    print(f"train_profile  {cpu_name()}, 1 thread, crop {args.roi}^3, batch 2, SegResNet {args.init_filters} filters")
    for prec, share in result["op_share_percent"].items():
        print(f"  {prec} step, share of CPU time: " + ", ".join(f"{k} {v:.1f} %" for k, v in share.items()))
    print(f"  data path (sample_batch): {result['data_path_cpu_s'] * 1e3:.1f} ms per batch")
    for n, r in result["step_cpu_s"].items():
        print(f"  {n:<26} {r['median']:.3f} s/step [{r['min']:.3f}-{r['max']:.3f}]  {r['vs_bf16']:.2f}x bf16's time")
    if args.json:
        write_json(args.json, result)
    return 0


def main(argv=None) -> int:
    return _common.main(_common.parser(DESCRIPTION, add_arguments), run, argv)


if __name__ == "__main__":
    sys.exit(main())
