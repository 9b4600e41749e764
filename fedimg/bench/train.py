"""``fedimg bench train``: training throughput of fedimg's engine on this machine.

fedimg's engine trains a SegResNet on synthetic BraTS-like cases (or ``--data``):
preprocessing cached once as tensors on the device (its time is reported as ``setup_s``),
crops / flips / intensity augmentation on the device, bf16 autocast where supported. One
warm-up epoch is not timed; then ``--runs`` timed epochs (default 5). Prints voxels/s,
cases/s (training crops per second) and seconds per optimizer step as the median of the
runs with min and max, voxels per CPU second, the device and, on a GPU, the utilisation
(NVML) and the peak memory (``torch.cuda.max_memory_allocated``); on a CPU these are
reported as skipped. Writes JSON with ``--json``. ``--variants`` also times fp32 and
fp32 / bf16 with channels-last-3d, interleaved epoch by epoch.

The comparison with MONAI's BraTS tutorial and fast-training recipe is
``benchmarks/train_throughput.py``, which times :class:`EngineLoop` against them with
:func:`measure` and checks bf16 against fp32 with :func:`quality_check`.

>>> spread([3.0, 1.0, 2.0, 5.0, 4.0])
{'median': 3.0, 'min': 1.0, 'max': 5.0, 'runs': 5}
>>> ratio_spread({"runs": [{"voxels_per_s": 4.0}, {"voxels_per_s": 6.0}]},
...              {"runs": [{"voxels_per_s": 2.0}, {"voxels_per_s": 2.0}]})["median"]
2.5
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["DESCRIPTION", "add_arguments", "run", "EngineLoop", "import_engine", "measure", "spread", "ratio_spread",
           "quality_check", "load_cases", "settings", "header", "telemetry_lines", "table"]

log = logging.getLogger(__name__)

DESCRIPTION = ("training voxels/s, cases/s, step time, GPU utilisation and memory of fedimg's engine "
               "(SegResNet, cached data, bf16 where supported)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="site folder to use (default: synthesise cases into a temp folder)")
    p.add_argument("--cases", type=int, default=None, help="synthetic cases (CPU: 6, --quick 4; GPU: 12, --quick 8)")
    p.add_argument("--runs", "--epochs", dest="epochs", type=int, default=None,
                   help="timed epochs per loop, interleaved; the median, min and max are reported (default 5)")
    p.add_argument("--roi", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="crop (default 64 64 64 on a CPU, 128 128 128 on a GPU)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--init-filters", type=int, default=None, help="SegResNet width (default 8 on a CPU, 16 on a GPU)")
    p.add_argument("--samples-per-case", type=int, default=None,
                   help="crops per case per epoch (default 1 on a CPU, 8 on a GPU: longer epochs to sample)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--variants", action="store_true",
                   help="also time engine variants: fp32, fp32 / bf16 + channels-last-3d (what each choice gives)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="small run (~1 minute on 2 CPU cores)")


class EngineLoop:
    """fedimg's engine on the given cases (preprocessing cached once on the device, timed as ``setup_s``)."""

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
        self.settings = {"precision": "bf16 autocast" if self.bf16 else "fp32", "amp": amp,
                         "channels_last_3d": channels_last, "optimizer": "AdamW (lr 1e-4, wd 1e-5)",
                         "loss": "DiceLoss(sigmoid, squared_pred)", "data": "fedimg.engine.cache: preprocessing cached "
                         "once on the device; crops, flips, intensity jitter on the device per step",
                         "samples_per_case": samples_per_case}
        self.loss = math.nan

    def epoch(self) -> dict[str, int]:
        """One epoch; returns the voxels, crops (samples) and optimizer steps trained on."""
        stats = self.trainer.train_epoch()
        self.loss = stats["loss"]
        steps = int(stats["steps"])
        return {"voxels": int(round(stats["voxels_per_s"] * stats["seconds"])), "steps": steps,
                "samples": self.trainer.samples_per_epoch}


def import_engine() -> None:
    """Import what the engine loop uses before any setup is timed (a first import is not setup)."""
    import monai.data
    import monai.losses
    import monai.networks.nets  # noqa: F401

    import fedimg.engine.cache
    import fedimg.engine.evaluate
    import fedimg.engine.loop  # noqa: F401


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min and max of ``values`` (and how many)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def ratio_spread(num: dict, den: dict, key: str = "voxels_per_s") -> dict[str, Any]:
    """Per-run ratio ``num / den`` of two loops' ``key`` (run i of one against run i of the other, timed
    back to back), summarised by :func:`spread`."""
    return spread([a[key] / b[key] for a, b in zip(num["runs"], den["runs"])])


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (a peer's DataLoader workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _gpu_peak(device: Any) -> tuple[Any, Any]:
    """(reset, read) of the peak allocated GPU memory, or no-ops on a CPU."""
    import torch

    if device.type != "cuda":
        return (lambda: None), (lambda: None)
    return (lambda: torch.cuda.reset_peak_memory_stats(device)), (lambda: torch.cuda.max_memory_allocated(device) / 2**20)


def measure(loops: list, epochs: int, device, tel: Any = None) -> list[dict[str, Any]]:
    """One untimed warm-up epoch per loop, then ``epochs`` timed epochs, interleaved loop by loop.

    A loop is anything with ``epoch() -> {"voxels", "samples", "steps"}``, ``setup_s`` and
    ``loss``; the warm-up epoch's time is kept as ``warmup_epoch_s``. Interleaving makes a
    busy machine slow every loop alike, so run-by-run ratios stay fair. CPU seconds include
    finished child processes (loader workers end with each epoch). Each loop gets its per-run
    rates (``runs``), their median/min/max, voxels per CPU second, its peak GPU memory on CUDA and, with a running
    :class:`~fedimg.telemetry.Telemetry`, the summary of the samples of its own timed epochs.
    """
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    reset_peak, read_peak = _gpu_peak(device)
    warm = []
    for lp in loops:
        t0 = time.perf_counter()
        lp.epoch()
        sync()
        warm.append(time.perf_counter() - t0)
    runs: list[list[dict]] = [[] for _ in loops]
    windows: list[list] = [[] for _ in loops]
    peaks: list[list] = [[] for _ in loops]
    for _ in range(epochs):
        for i, lp in enumerate(loops):
            reset_peak()
            sync()
            t0, c0 = time.perf_counter(), _cpu_seconds()
            w0 = tel.elapsed() if tel is not None else 0.0
            u = lp.epoch()
            sync()
            s, c = time.perf_counter() - t0, _cpu_seconds() - c0
            windows[i].append((w0, tel.elapsed() if tel is not None else 0.0))
            peaks[i].append(read_peak())
            runs[i].append({"seconds": s, "cpu_s": c, **u, "voxels_per_s": u["voxels"] / s,
                            "voxels_per_cpu_s": u["voxels"] / max(c, 1e-9), "cases_per_s": u["samples"] / s,
                            "step_s": s / max(1, u["steps"])})
    out = []
    for lp, r, w, pk, w0 in zip(loops, runs, windows, peaks, warm):
        vox = spread([x["voxels_per_s"] for x in r])
        res = {"voxels_per_s": vox["median"], "voxels_per_s_spread": vox,
               "cases_per_s": spread([x["cases_per_s"] for x in r]), "step_s": spread([x["step_s"] for x in r]),
               "epoch_s": statistics.median(x["seconds"] for x in r),
               "voxels_per_cpu_s": sum(x["voxels"] for x in r) / max(1e-9, sum(x["cpu_s"] for x in r)),
               "setup_s": lp.setup_s, "warmup_epoch_s": w0, "final_loss": lp.loss, "runs": r,
               "gpu_mem_peak_mib": max(pk) if device.type == "cuda" else None}
        if tel is not None:
            res["telemetry"] = tel.summary(w)
        out.append(res)
    return out


def quality_check(cases: list, *, roi, batch_size: int, init_filters: int, device, epochs: int,
                  samples_per_case: int = 2, seed: int = 0, lr: float = 3e-3) -> dict[str, Any]:
    """The engine trained twice from the same seed, fp32 and bf16 autocast, then Dice on held-out cases.

    A quarter of ``cases`` (at least one) is held out; both runs see the same crops in the
    same order (the trainer's own generator). Returns each run's Dice per region and the
    bf16 − fp32 differences.
    """
    from fedimg.device import seed_everything
    from fedimg.engine.cache import prepare_site_data
    from fedimg.engine.config import TrainConfig
    from fedimg.engine.evaluate import evaluate
    from fedimg.engine.loop import Trainer
    from fedimg.engine.models import build_model

    out: dict[str, Any] = {"epochs": epochs, "roi": list(roi), "batch_size": batch_size, "lr": lr,
                           "samples_per_case": samples_per_case, "seed": seed}
    for amp in ("fp32", "bf16"):
        cfg = TrainConfig(roi=tuple(roi), batch_size=batch_size, init_filters=init_filters, epochs=epochs,
                          val_fraction=0.25, amp=amp, seed=seed, lr=lr, samples_per_case=samples_per_case)
        data = prepare_site_data(cases, cfg, device)
        seed_everything(seed)
        model = build_model("segresnet", init_filters=init_filters)
        trainer = Trainer(model, data, cfg)
        t0 = time.perf_counter()
        for _ in range(epochs):
            stats = trainer.train_epoch()
        res = evaluate(model, data, cfg, device=device)
        out[amp] = {k: res[k] for k in ("dice_tc", "dice_wt", "dice_et", "dice_mean")}
        out[amp].update(final_loss=stats["loss"], train_s=time.perf_counter() - t0)
        out.update(train_cases=data.num_train, val_cases=data.num_val)
    out["bf16_minus_fp32"] = {k: out["bf16"][k] - out["fp32"][k] for k in ("dice_tc", "dice_wt", "dice_et", "dice_mean")}
    return out


def load_cases(args: argparse.Namespace, tmp: Path, *, spacing: float = 2.0, cases: int | None = None) -> list:
    """``--data``'s cases, or ``cases`` (default ``--cases``) synthetic ones written under ``tmp``."""
    from fedimg.data import discover, synthesize

    if args.data:
        return discover(args.data, require_labels=True)
    n = cases or args.cases or (4 if args.quick else 6)
    t0 = time.perf_counter()
    sites = synthesize(tmp / f"synth-{spacing:g}mm", sites=1, cases_per_site=n, seed=0, spacing=spacing)
    log.info("synthesised %d cases at %g mm in %.1f s", n, spacing, time.perf_counter() - t0)
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
            "epochs": args.epochs or 5}


def header(s: dict, cases: list, args: argparse.Namespace, tel: Any) -> dict[str, Any]:
    """The JSON/table header: device, sizes, software versions, commit-independent facts."""
    import torch

    from fedimg.device import bf16_supported
    from fedimg.telemetry import cpu_name

    device = s["device"]
    gpu = device.type == "cuda"
    return {"device": torch.cuda.get_device_name(device) if gpu else cpu_name(), "device_type": device.type,
            "threads": s["threads"], "cases": len(cases), "roi": list(s["roi"]), "batch_size": args.batch_size,
            "init_filters": s["init_filters"], "epochs": s["epochs"], "samples_per_case": s["samples_per_case"],
            "bf16_supported": bf16_supported(device), "telemetry": tel.summary(),
            "gpu_memory": "torch.cuda.max_memory_allocated per loop" if gpu else "skipped: no CUDA device",
            "torch": torch.__version__, "quick": bool(args.quick)}


def telemetry_lines(rows: list[tuple[str, dict]], available: bool) -> list[str]:
    """One GPU line per loop (utilisation, NVML and allocator peaks), or one line saying there is none."""
    if not available:
        return ["GPU telemetry: skipped (no NVIDIA GPU/NVML); GPU memory: skipped (no CUDA device)"]
    lines = []
    for name, r in rows:
        tel = r.get("telemetry", {})
        lines.append(f"GPU {name.split(')')[0] + ')'}: util mean {tel.get('gpu_util_mean', float('nan')):.0f} %"
                     f" ({tel.get('samples', 0)} samples), NVML memory peak {tel.get('mem_used_peak_mib', float('nan')):.0f}"
                     f" MiB, allocated peak {r.get('gpu_mem_peak_mib') or float('nan'):.0f} MiB,"
                     f" power mean {tel.get('power_mean_w', float('nan')):.0f} W")
    return lines


def table(rows: list[tuple[str, dict]], head: dict, *, title: str = "fedimg bench train",
          ratios: list | None = None) -> str:
    """The printed table; ``ratios`` (one per row, or None) adds each loop's median run ratio [min-max]."""
    lines = [f"{title}  device: {head['device']}  ({head['device_type']}, {head['threads']} threads)",
             f"cases {head['cases']}, crop {'x'.join(map(str, head['roi']))}, batch {head['batch_size']}, "
             f"SegResNet init_filters {head['init_filters']}, {head['epochs']} timed epochs interleaved "
             "(median [min-max] of the runs)",
             f"{'loop':<58}{'voxels/s':>10}{'[min-max]':>20}{'cases/s':>9}{'s/step':>8}{'vox/cpu-s':>11}{'setup s':>8}"
             + (f"{'ratio [min-max]':>22}" if ratios else "")]
    for i, (name, r) in enumerate(rows):
        sp = r["voxels_per_s_spread"]
        rng = f"[{sp['min']:.3g}-{sp['max']:.3g}]"
        line = (f"{name:<58}{sp['median']:>10.3g}{rng:>20}"
                f"{r['cases_per_s']['median']:>9.3g}{r['step_s']['median']:>8.2f}{r['voxels_per_cpu_s']:>11.3g}"
                f"{r['setup_s']:>8.1f}")
        if ratios and ratios[i] is not None:
            q = ratios[i]
            line += f"{q['median']:>9.2f}x [{q['min']:.2f}-{q['max']:.2f}]"
        lines.append(line)
    return "\n".join(lines + telemetry_lines(rows, head["telemetry"].get("available", False)))


def run(args: argparse.Namespace) -> int:
    from fedimg.device import seed_everything
    from fedimg.io import write_json
    from fedimg.telemetry import Telemetry

    s = settings(args)
    device, epochs = s["device"], s["epochs"]
    kw = dict(roi=s["roi"], batch_size=args.batch_size, init_filters=s["init_filters"], device=device, epochs=epochs,
              samples_per_case=s["samples_per_case"])
    tel_index = (device.index or 0) if device.type == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="fedimg-bench-train-") as tmp:
        cases = load_cases(args, Path(tmp))
        import_engine()
        seed_everything(0)
        loops: list = [EngineLoop(cases, **kw)]
        if args.variants:
            loops += [EngineLoop(cases, amp="fp32", **kw), EngineLoop(cases, amp="fp32", channels_last=True, **kw),
                      EngineLoop(cases, amp="bf16", channels_last=True, **kw)]
        with Telemetry(tel_index, interval=0.1 if device.type == "cuda" else 0.5) as tel:
            res = measure(loops, epochs, device, tel)
        rows = [(lp.name, r) for lp, r in zip(loops, res)]
    head = header(s, cases, args, tel)
    print(table(rows, head))
    eng = rows[0][1]
    result = {"benchmark": "train", **head, "engine_voxels_per_s": eng["voxels_per_s"],
              "engine_cases_per_s": eng["cases_per_s"]["median"], "engine_step_s": eng["step_s"]["median"],
              "engine_gpu_util_mean": eng.get("telemetry", {}).get("gpu_util_mean"),
              "engine_gpu_mem_peak_mib": eng["gpu_mem_peak_mib"],
              "results": {name: {**r, "settings": lp.settings} for (name, r), lp in zip(rows, loops)}}
    if args.json:
        write_json(args.json, result)
    return 0
