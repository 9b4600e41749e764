"""``fedimg bench train``: training throughput of fedimg's engine vs the MONAI BraTS tutorial loop.

Both train the same SegResNet on the same synthetic cases, crop size and batch size, in
one process on one device:

(a) the tutorial way: fp32, ``monai.data.Dataset`` + ``DataLoader``, LoadImaged /
    ConvertToMultiChannelBasedOnBratsClassesd / Orientationd / RandSpatialCropd /
    RandFlipd / NormalizeIntensityd / RandScale+ShiftIntensityd re-run from the NIfTI
    files every epoch;
(b) fedimg's engine: preprocessing cached once as tensors on the device, crops / flips /
    intensity augmentation on the device, bf16 autocast where supported.

One warm-up epoch each is not timed. Prints voxels/s, the ratio, device name and the GPU
telemetry summary; writes JSON with ``--json``.

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

__all__ = ["DESCRIPTION", "add_arguments", "run", "TutorialLoop", "EngineLoop", "measure"]

log = logging.getLogger(__name__)

DESCRIPTION = "training voxels/s: fedimg engine vs the MONAI BraTS tutorial loop (fp32, transforms every epoch)"


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
    p.add_argument("--peer-workers", type=int, default=0, help="DataLoader workers for the tutorial loop (default 0)")
    p.add_argument("--variants", action="store_true",
                   help="also time engine variants: fp32, bf16 + channels-last-3d (what each optimisation gives)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="small run (~1-3 minutes on 2 CPU cores)")


def _datalist(cases: list) -> list[dict]:
    return [{"image": [str(p) for p in c.images], "label": str(c.label)} for c in cases]


class TutorialLoop:
    """The MONAI BraTS tutorial's training loop (fp32, transforms re-applied every epoch)."""

    name = "(a) MONAI tutorial loop, fp32"

    def __init__(self, cases: list, *, roi, batch_size: int, init_filters: int, device, epochs: int,
                 workers: int = 0, seed: int = 0) -> None:
        import torch
        from monai.data import DataLoader, Dataset
        from monai.losses import DiceLoss
        from monai.networks.nets import SegResNet
        from monai.transforms import (
            Compose,
            ConvertToMultiChannelBasedOnBratsClassesd,
            EnsureChannelFirstd,
            EnsureTyped,
            LoadImaged,
            NormalizeIntensityd,
            Orientationd,
            RandFlipd,
            RandScaleIntensityd,
            RandShiftIntensityd,
            RandSpatialCropd,
        )

        t0 = time.perf_counter()
        et = 3 if cases and cases[0].layout == "brats2023" else 4
        transform = Compose([
            LoadImaged(keys=["image", "label"]),
            EnsureChannelFirstd(keys="image"),
            EnsureTyped(keys=["image", "label"]),
            ConvertToMultiChannelBasedOnBratsClassesd(keys="label", et_label=et),
            EnsureTyped(keys="label", dtype=torch.float32),  # bool regions -> float for DiceLoss
            Orientationd(keys=["image", "label"], axcodes="RAS"),
            RandSpatialCropd(keys=["image", "label"], roi_size=list(roi), random_size=False),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=2),
            NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
            RandScaleIntensityd(keys="image", factors=0.1, prob=1.0),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
        ])
        transform.set_random_state(seed)
        gen = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(Dataset(data=_datalist(cases), transform=transform), batch_size=batch_size,
                                 shuffle=True, num_workers=workers, generator=gen)
        self.device = device
        self.model = SegResNet(blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1], init_filters=init_filters,
                               in_channels=4, out_channels=3).to(device)
        self.loss_fn = DiceLoss(smooth_nr=0, smooth_dr=1e-5, squared_pred=True, to_onehot_y=False, sigmoid=True)
        self.opt = torch.optim.Adam(self.model.parameters(), 1e-4, weight_decay=1e-5)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=epochs + 1)
        self.setup_s = time.perf_counter() - t0
        self.loss = math.nan

    def epoch(self) -> int:
        """One epoch; returns the voxels trained on."""
        self.model.train()
        vox = 0
        for batch in self.loader:
            x, y = batch["image"].to(self.device), batch["label"].to(self.device)
            self.opt.zero_grad()
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.opt.step()
            vox += x.shape[0] * math.prod(x.shape[2:])
            self.loss = float(loss)
        self.sched.step()
        return vox


class EngineLoop:
    """fedimg's engine on the same cases (preprocessing cached once on the device)."""

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
        self.name = f"(b) fedimg engine ({'bf16' if self.bf16 else 'fp32'}{', channels-last-3d' if channels_last else ''})"
        self.loss = math.nan

    def epoch(self) -> int:
        stats = self.trainer.train_epoch()
        self.loss = stats["loss"]
        return int(round(stats["voxels_per_s"] * stats["seconds"]))


def measure(loops: list, epochs: int, device, tel: Any = None) -> list[dict[str, Any]]:
    """One untimed warm-up epoch per loop, then ``epochs`` timed epochs, interleaved loop by loop.

    Interleaving makes a busy machine slow every loop alike, so the ratio stays fair. With
    a running :class:`~fedimg.telemetry.Telemetry`, each loop gets the summary of the
    samples taken during its own timed epochs.
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


def _cases(args: argparse.Namespace, tmp: Path) -> list:
    from fedimg.data import discover, synthesize

    if args.data:
        return discover(args.data, require_labels=True)
    n = args.cases or (6 if args.quick else 8)
    t0 = time.perf_counter()
    sites = synthesize(tmp / "synth", sites=1, cases_per_site=n, seed=0)
    log.info("synthesised %d cases in %.1f s", n, time.perf_counter() - t0)
    return discover(sites[0], require_labels=True)


def _table(rows: list[tuple[str, dict]], header: dict) -> str:
    lines = [f"fedimg bench train  device: {header['device']}  ({header['device_type']}, {header['threads']} threads)",
             f"cases {header['cases']}, crop {'x'.join(map(str, header['roi']))}, batch {header['batch_size']}, "
             f"SegResNet init_filters {header['init_filters']}, {header['epochs']} timed epochs",
             f"{'loop':<44}{'voxels/s':>11}{'vox/cpu-s':>12}{'s/epoch':>9}{'setup s':>8}{'ratio':>8}"]
    base = rows[0][1]["voxels_per_s"]
    for name, r in rows:
        lines.append(f"{name:<44}{r['voxels_per_s']:>11.4g}{r['voxels_per_cpu_s']:>12.4g}{r['epoch_s']:>9.2f}"
                     f"{r['setup_s']:>8.1f}{r['voxels_per_s'] / base:>7.2f}x")
    if header["telemetry"].get("available"):
        for name, r in rows:
            tel = r.get("telemetry", {})
            lines.append(f"GPU telemetry {name.split(')')[0] + ')'}: util mean {tel.get('gpu_util_mean', float('nan')):.0f} %"
                         f" ({tel.get('samples', 0)} samples), peak memory {tel.get('mem_used_peak_mib', float('nan')):.0f} MiB,"
                         f" power mean {tel.get('power_mean_w', float('nan')):.0f} W")
    else:
        lines.append("GPU telemetry: not available (no NVIDIA GPU/NVML)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from fedimg.device import configure_threads, resolve_device, seed_everything
    from fedimg.io import write_json
    from fedimg.telemetry import Telemetry, cpu_name

    threads = configure_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    roi = tuple(args.roi) if args.roi else ((128, 128, 128) if gpu else (64, 64, 64))
    init_filters = args.init_filters or (16 if gpu else 8)
    spc = args.samples_per_case or (8 if gpu else 1)
    if args.cases is None and gpu:
        args.cases = 8 if args.quick else 12
    epochs = args.epochs or ((4 if args.quick else 6) if gpu else (2 if args.quick else 3))
    kw = dict(roi=roi, batch_size=args.batch_size, init_filters=init_filters, device=device, epochs=epochs)
    tel_index = (device.index or 0) if device.type == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="fedimg-bench-train-") as tmp:
        cases = _cases(args, Path(tmp))
        seed_everything(0)
        loops: list = [TutorialLoop(cases, workers=args.peer_workers, **kw),
                       EngineLoop(cases, samples_per_case=spc, **kw)]
        if args.variants:
            loops += [EngineLoop(cases, amp="fp32", samples_per_case=spc, **kw),
                      EngineLoop(cases, amp="bf16", channels_last=True, samples_per_case=spc, **kw)]
        from monai.data import set_track_meta

        set_track_meta(True)  # the tutorial keeps MONAI's metadata tracking on
        with Telemetry(tel_index, interval=0.1 if gpu else 0.5) as tel:
            res = measure(loops, epochs, device, tel)
        rows = [(lp.name, r) for lp, r in zip(loops, res)]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    header = {"device": dev_name, "device_type": device.type, "threads": threads, "cases": len(cases), "roi": list(roi),
              "batch_size": args.batch_size, "init_filters": init_filters, "epochs": epochs, "samples_per_case": spc,
              "telemetry": tel.summary()}
    print(_table(rows, header))
    ratio = rows[1][1]["voxels_per_s"] / rows[0][1]["voxels_per_s"]
    print(f"ratio engine / tutorial: {ratio:.2f}x")
    result = {"benchmark": "train", **header, "ratio": ratio,
              "engine_gpu_util_mean": rows[1][1].get("telemetry", {}).get("gpu_util_mean"),
              "results": {name.strip(): r for name, r in rows}, "quick": bool(args.quick),
              "torch": torch.__version__}
    if args.json:
        write_json(args.json, result)
    return 0
