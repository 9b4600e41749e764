#!/usr/bin/env python
"""Training throughput: fedimg's engine vs the MONAI BraTS tutorial loop.

Both train the same SegResNet on the same synthetic cases, crop size and batch size, in
one process on one device:

(a) the tutorial way: fp32, ``monai.data.Dataset`` + ``DataLoader``, LoadImaged /
    ConvertToMultiChannelBasedOnBratsClassesd / Orientationd / RandSpatialCropd /
    RandFlipd / NormalizeIntensityd / RandScale+ShiftIntensityd re-run from the NIfTI
    files every epoch;
(b) fedimg's engine (:class:`fedimg.bench.train.EngineLoop`, what ``fedimg bench train``
    times): preprocessing cached once as tensors on the device, crops / flips / intensity
    augmentation on the device, bf16 autocast where supported.

One warm-up epoch each is not timed; timed epochs alternate loop by loop
(:func:`fedimg.bench.train.measure`). Prints voxels/s, the ratio, device name and the GPU
telemetry summary; writes JSON with ``--json``.

    python benchmarks/train_throughput.py --quick --json bench-results/train.json
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import _common
from fedimg.bench import train

__all__ = ["add_arguments", "run", "TutorialLoop"]

DESCRIPTION = "training voxels/s: fedimg engine vs the MONAI BraTS tutorial loop (fp32, transforms every epoch)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    train.add_arguments(p)
    p.add_argument("--peer-workers", type=int, default=0, help="DataLoader workers for the tutorial loop (default 0)")
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


def _engine(cases, **kw) -> train.EngineLoop:
    loop = train.EngineLoop(cases, **kw)
    loop.name = "(b) " + loop.name
    return loop


def run(args: argparse.Namespace) -> int:
    import torch

    from fedimg.device import seed_everything
    from fedimg.io import write_json
    from fedimg.telemetry import Telemetry, cpu_name

    s = train.settings(args)
    device, epochs, spc = s["device"], s["epochs"], s["samples_per_case"]
    kw = dict(roi=s["roi"], batch_size=args.batch_size, init_filters=s["init_filters"], device=device, epochs=epochs)
    tel_index = (device.index or 0) if device.type == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="fedimg-bench-train-") as tmp:
        cases = train.load_cases(args, Path(tmp))
        seed_everything(0)
        loops: list = [TutorialLoop(cases, workers=args.peer_workers, **kw), _engine(cases, samples_per_case=spc, **kw)]
        if args.variants:
            loops += [_engine(cases, amp="fp32", samples_per_case=spc, **kw),
                      _engine(cases, amp="bf16", channels_last=True, samples_per_case=spc, **kw)]
        from monai.data import set_track_meta

        set_track_meta(True)  # the tutorial keeps MONAI's metadata tracking on
        with Telemetry(tel_index, interval=0.1 if device.type == "cuda" else 0.5) as tel:
            res = train.measure(loops, epochs, device, tel)
        rows = [(lp.name, r) for lp, r in zip(loops, res)]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    header = {"device": dev_name, "device_type": device.type, "threads": s["threads"], "cases": len(cases),
              "roi": list(s["roi"]), "batch_size": args.batch_size, "init_filters": s["init_filters"], "epochs": epochs,
              "samples_per_case": spc, "telemetry": tel.summary()}
    print(train.table(rows, header, title="benchmarks/train_throughput.py", ratio=True))
    ratio = rows[1][1]["voxels_per_s"] / rows[0][1]["voxels_per_s"]
    print(f"ratio engine / tutorial: {ratio:.2f}x")
    result = {"benchmark": "train", **header, "ratio": ratio,
              "engine_gpu_util_mean": rows[1][1].get("telemetry", {}).get("gpu_util_mean"),
              "results": {name.strip(): r for name, r in rows}, "quick": bool(args.quick),
              "torch": torch.__version__}
    if args.json:
        write_json(args.json, result)
    return 0


def main(argv=None) -> int:
    return _common.main(_common.parser(DESCRIPTION, add_arguments), run, argv)


if __name__ == "__main__":
    sys.exit(main())
