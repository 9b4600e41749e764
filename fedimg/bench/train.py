"""``fedimg bench train``: training throughput of fedimg's engine on this machine.

fedimg's engine trains a SegResNet on synthetic BraTS-like cases (or ``--data``):
preprocessing cached once as tensors on the device, crops / flips / intensity augmentation
on the device, bf16 autocast where supported. One warm-up epoch is not timed. Prints
voxels/s, voxels per CPU second, seconds per epoch, the device name and the GPU telemetry
summary (utilisation, peak memory, power); writes JSON with ``--json``. ``--variants`` also
times fp32 and bf16 + channels-last-3d, interleaved epoch by epoch.

The comparison with the MONAI BraTS tutorial loop is ``benchmarks/train_throughput.py``,
which times :class:`EngineLoop` against the tutorial with :func:`measure`.

    fedimg bench train --quick --json bench-results/train.json
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["DESCRIPTION", "add_arguments", "run", "EngineLoop", "measure", "load_cases", "settings", "telemetry_lines", "table"]

log = logging.getLogger(__name__)

DESCRIPTION = "training voxels/s, GPU utilisation and memory of fedimg's engine (SegResNet, cached data, bf16 where supported)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="site folder to use (default: synthesise cases into a temp folder)")
    p.add_argument("--cases", type=int, default=None, help="synthetic cases (default 8, --quick 6)")
    p.add_argument("--epochs", type=int, default=None,
                   help="timed epochs per loop (CPU: 3, --quick 2; GPU: 6, --quick 4)")
    p.add_argument("--roi", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="crop (default 64 64 64 on a CPU, 128 128 128 on a GPU)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--init-filters", type=int, default=None, help="SegResNet width (default 8 on a CPU, 16 on a GPU)")
    p.add_argument("--samples-per-case", type=int, default=None,
                   help="engine crops per case per epoch (default 1 on a CPU, 8 on a GPU: longer epochs to sample)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--peer-workers", type=int, default=0, help=argparse.SUPPRESS)  # the peer lives in benchmarks/ now
    p.add_argument("--variants", action="store_true",
                   help="also time engine variants: fp32, bf16 + channels-last-3d (what each optimisation gives)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="small run (~1 minute on 2 CPU cores)")


class EngineLoop:
    """fedimg's engine on the given cases (preprocessing cached once on the device)."""

    def __init__(self, cases: list, *, roi, batch_size: int, init_filters: int, device, epochs: int,
                 amp: str = "auto", channels_last: bool = False, seed: int = 0, samples_per_case: int = 1) -> None:
        from fedimg.engine.cache import prepare_site_data
        from fedimg.engine.config import TrainConfig
        from fedimg.engine.loop import Trainer
        from fedimg.engine.models import build_model

        cfg = TrainConfig(roi=tuple(roi), batch_size=batch_size, init_filters=init_filters, epochs=epochs + 1,
                          val_fraction=0.0, amp=amp, channels_last=channels_last, seed=seed, lr=1e-4,
                          warmup_epochs=0, samples_per_case=samples_per_case)
        t0 = time.perf_counter()
        data = prepare_site_data(cases, cfg, device)
        self.trainer = Trainer(build_model("segresnet", init_filters=init_filters), data, cfg)
        self.setup_s = time.perf_counter() - t0
        self.bf16 = self.trainer.bf16
        self.name = f"fedimg engine ({'bf16' if self.bf16 else 'fp32'}{', channels-last-3d' if channels_last else ''})"
        self.loss = math.nan

    def epoch(self) -> int:
        """One epoch; returns the voxels trained on."""
        stats = self.trainer.train_epoch()
        self.loss = stats["loss"]
        return int(round(stats["voxels_per_s"] * stats["seconds"]))


def measure(loops: list, epochs: int, device, tel: Any = None) -> list[dict[str, Any]]:
    """One untimed warm-up epoch per loop, then ``epochs`` timed epochs, interleaved loop by loop.

    A loop is anything with ``epoch() -> voxels``, ``setup_s`` and ``loss``. Interleaving
    makes a busy machine slow every loop alike, so their ratios stay fair. With a running
    :class:`~fedimg.telemetry.Telemetry`, each loop gets the summary of the samples taken
    during its own timed epochs.
    """
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for lp in loops:
        lp.epoch()
    acc: list[dict[str, Any]] = [{"seconds": 0.0, "cpu_s": 0.0, "voxels": 0, "windows": []} for _ in loops]
    for _ in range(epochs):
        for lp, a in zip(loops, acc):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            w0 = tel.elapsed() if tel is not None else 0.0
            a["voxels"] += lp.epoch()
            sync()
            a["seconds"] += time.perf_counter() - t0
            a["cpu_s"] += time.process_time() - c0
            a["windows"].append((w0, tel.elapsed() if tel is not None else 0.0))
    return [{"voxels_per_s": a["voxels"] / a["seconds"], "epoch_s": a["seconds"] / epochs,
             "voxels_per_cpu_s": a["voxels"] / max(a["cpu_s"], 1e-9), "setup_s": lp.setup_s,
             "final_loss": lp.loss, **({"telemetry": tel.summary(a["windows"])} if tel is not None else {})}
            for lp, a in zip(loops, acc)]


def load_cases(args: argparse.Namespace, tmp: Path) -> list:
    """``--data``'s cases, or ``--cases`` synthetic ones written under ``tmp``."""
    from fedimg.data import discover, synthesize

    if args.data:
        return discover(args.data, require_labels=True)
    n = args.cases or (6 if args.quick else 8)
    t0 = time.perf_counter()
    sites = synthesize(tmp / "synth", sites=1, cases_per_site=n, seed=0)
    log.info("synthesised %d cases in %.1f s", n, time.perf_counter() - t0)
    return discover(sites[0], require_labels=True)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Threads, device and the sizes that follow from the flags and the device (GPU: larger)."""
    from fedimg.device import configure_threads, resolve_device

    threads = configure_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    if args.cases is None and gpu:
        args.cases = 8 if args.quick else 12
    return {"threads": threads, "device": device,
            "roi": tuple(args.roi) if args.roi else ((128, 128, 128) if gpu else (64, 64, 64)),
            "init_filters": args.init_filters or (16 if gpu else 8),
            "samples_per_case": args.samples_per_case or (8 if gpu else 1),
            "epochs": args.epochs or ((4 if args.quick else 6) if gpu else (2 if args.quick else 3))}


def telemetry_lines(rows: list[tuple[str, dict]], available: bool) -> list[str]:
    """One GPU-telemetry line per loop (or one line saying there is none)."""
    if not available:
        return ["GPU telemetry: not available (no NVIDIA GPU/NVML)"]
    lines = []
    for name, r in rows:
        tel = r.get("telemetry", {})
        lines.append(f"GPU telemetry {name.split(')')[0] + ')'}: util mean {tel.get('gpu_util_mean', float('nan')):.0f} %"
                     f" ({tel.get('samples', 0)} samples), peak memory {tel.get('mem_used_peak_mib', float('nan')):.0f} MiB,"
                     f" power mean {tel.get('power_mean_w', float('nan')):.0f} W")
    return lines


def table(rows: list[tuple[str, dict]], header: dict, *, title: str = "fedimg bench train", ratio: bool = False) -> str:
    """The printed table of training loops; ``ratio`` adds each loop's voxels/s over the first loop's."""
    lines = [f"{title}  device: {header['device']}  ({header['device_type']}, {header['threads']} threads)",
             f"cases {header['cases']}, crop {'x'.join(map(str, header['roi']))}, batch {header['batch_size']}, "
             f"SegResNet init_filters {header['init_filters']}, {header['epochs']} timed epochs",
             f"{'loop':<44}{'voxels/s':>11}{'vox/cpu-s':>12}{'s/epoch':>9}{'setup s':>8}" + (f"{'ratio':>8}" if ratio else "")]
    base = rows[0][1]["voxels_per_s"]
    for name, r in rows:
        lines.append(f"{name:<44}{r['voxels_per_s']:>11.4g}{r['voxels_per_cpu_s']:>12.4g}{r['epoch_s']:>9.2f}"
                     f"{r['setup_s']:>8.1f}" + (f"{r['voxels_per_s'] / base:>7.2f}x" if ratio else ""))
    return "\n".join(lines + telemetry_lines(rows, header["telemetry"].get("available", False)))


def run(args: argparse.Namespace) -> int:
    import torch

    from fedimg.device import seed_everything
    from fedimg.io import write_json
    from fedimg.telemetry import Telemetry, cpu_name

    s = settings(args)
    device, epochs = s["device"], s["epochs"]
    kw = dict(roi=s["roi"], batch_size=args.batch_size, init_filters=s["init_filters"], device=device, epochs=epochs,
              samples_per_case=s["samples_per_case"])
    tel_index = (device.index or 0) if device.type == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="fedimg-bench-train-") as tmp:
        cases = load_cases(args, Path(tmp))
        seed_everything(0)
        loops: list = [EngineLoop(cases, **kw)]
        if args.variants:
            loops += [EngineLoop(cases, amp="fp32", **kw), EngineLoop(cases, amp="bf16", channels_last=True, **kw)]
        with Telemetry(tel_index, interval=0.1 if device.type == "cuda" else 0.5) as tel:
            res = measure(loops, epochs, device, tel)
        rows = [(lp.name, r) for lp, r in zip(loops, res)]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    header = {"device": dev_name, "device_type": device.type, "threads": s["threads"], "cases": len(cases),
              "roi": list(s["roi"]), "batch_size": args.batch_size, "init_filters": s["init_filters"], "epochs": epochs,
              "samples_per_case": s["samples_per_case"], "telemetry": tel.summary()}
    print(table(rows, header))
    result = {"benchmark": "train", **header, "engine_voxels_per_s": rows[0][1]["voxels_per_s"],
              "engine_gpu_util_mean": rows[0][1].get("telemetry", {}).get("gpu_util_mean"),
              "results": {name.strip(): r for name, r in rows}, "quick": bool(args.quick),
              "torch": torch.__version__}
    if args.json:
        write_json(args.json, result)
    return 0
