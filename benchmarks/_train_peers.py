"""The training peers of ``benchmarks/train_throughput.py``, written as their authors write them.

Read from Project-MONAI/tutorials at commit ``b3c6c998c931d78b61c4d32b37f962a987400f8a``
(2026-08-13):

* :class:`TutorialLoop` — ``3d_segmentation/brats_segmentation_3d.ipynb``: ``Dataset`` +
  ``DataLoader(shuffle=True, num_workers=4)``, every transform re-run from the NIfTI files each
  epoch (LoadImaged … Spacingd, RandSpatialCropd, three RandFlipd, NormalizeIntensityd,
  RandScale/ShiftIntensityd prob 1.0), SegResNet(blocks_down 1,2,2,4), DiceLoss(smooth_nr 0,
  smooth_dr 1e-5, squared_pred, sigmoid), Adam(1e-4, wd 1e-5), CosineAnnealingLR per epoch,
  ``torch.autocast("cuda")`` + ``torch.GradScaler("cuda")`` and ``cudnn.benchmark = True``.
* :class:`FastRecipeLoop` — MONAI's fast-training recipe (``acceleration/fast_training_tutorial.ipynb``)
  as that repository applies it to BraTS (``acceleration/distributed_training/brats_training_ddp.py``,
  one process here): ``CacheDataset(cache_rate=1.0, num_workers=4)`` caching every transform up
  to the first random one, the cached tensors moved to the training device
  (``EnsureTyped(device=..., track_meta=False)``, the fast tutorial's form of ``ToDeviced``),
  ``set_track_meta(False)``, ``ThreadDataLoader(num_workers=0, shuffle=True)``, AMP +
  GradScaler, ``cudnn.benchmark``, ``Novograd(lr=1e-4)``, DiceFocalLoss(smooth 1e-5,
  squared_pred, sigmoid, batch=True), CosineAnnealingLR.

The tutorials' AMP is CUDA-only (``torch.autocast("cuda")``). On a GPU a peer runs it
(``precision="amp"``: fp16 autocast + GradScaler); on a CPU it runs as written there, fp32
(``precision="fp32"``), and the benchmark adds a ``precision="bf16"`` variant
(``torch.autocast("cpu", dtype=torch.bfloat16)``, no scaler: bf16 needs none). Changes made
for "same work": the benchmark's crop, batch, model width and number of crops per epoch
(``samples_per_case`` repeats of every case) on every side, SegResNet's dropout 0 (the
engine's model), Spacingd to the data's own voxel size (the tutorial's 1 mm on 1 mm MSD data),
SpatialPadd to the crop after it (a volume smaller than the crop is padded, as the engine pads;
BraTS volumes are larger than the tutorial's crop, so it never pads there), the BraTS-2021 label
map (ET = 4) and float labels.
"""

from __future__ import annotations

import math
import time
from typing import Any

__all__ = ["TUTORIALS_COMMIT", "TutorialLoop", "FastRecipeLoop", "LoadImagedThreadUnsafe"]

TUTORIALS_COMMIT = "b3c6c998c931d78b61c4d32b37f962a987400f8a"
_SRC = "https://github.com/Project-MONAI/tutorials/blob/" + TUTORIALS_COMMIT + "/"


def _datalist(cases: list) -> list[dict]:
    return [{"image": [str(p) for p in c.images], "label": str(c.label)} for c in cases]


def _thread_unsafe_loader() -> type:
    """``LoadImaged`` marked :class:`monai.transforms.ThreadUnsafe`, as MONAI's ``Transform``
    docs ask of a transform with state (built on first use: MONAI is imported lazily here).

    ``CacheDataset(num_workers=4)`` caches in 4 threads through one ``Compose``, which
    deep-copies each thread-unsafe transform per call. Stock ``LoadImaged`` is not marked, yet
    its ``NibabelReader`` keeps the files of the last ``read`` on itself (``self.filenames``)
    and zips the loaded images with them in ``get_data``: a thread reading a case's 4 images
    while another reads a label gets a 1-channel image (measured: 43 of 640 cached items, 80
    cachings of 8 cases; 0 with this class), and the batch then fails to collate ("stack
    expects each tensor to be equal size, [4, 64, 64, 64] and [1, 64, 64, 64]"). The tutorial
    loop's loader workers are processes (one reader each).
    """
    from monai.transforms import LoadImaged, ThreadUnsafe

    cls = type("LoadImagedThreadUnsafe", (LoadImaged, ThreadUnsafe), {"__doc__": _thread_unsafe_loader.__doc__})
    cls.__module__, cls.__qualname__ = __name__, "LoadImagedThreadUnsafe"  # pickle finds it via __getattr__
    return cls


def __getattr__(name: str) -> Any:
    """``LoadImagedThreadUnsafe``: ``LoadImaged`` marked thread-unsafe (found by pickle, too)."""
    if name == "LoadImagedThreadUnsafe":
        cls = globals()[name] = _thread_unsafe_loader()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _deterministic(cases: list, roi) -> list:
    """Load … SpatialPadd: the transforms before the first random one (what the recipe caches)."""
    import nibabel as nib
    import torch
    from monai.transforms import (
        ConvertToMultiChannelBasedOnBratsClassesd,
        EnsureChannelFirstd,
        EnsureTyped,
        Orientationd,
        Spacingd,
        SpatialPadd,
    )

    et = 3 if cases and cases[0].layout == "brats2023" else 4
    pixdim = tuple(float(z) for z in nib.load(str(cases[0].images[0])).header.get_zooms()[:3])
    return [
        __getattr__("LoadImagedThreadUnsafe")(keys=["image", "label"]),
        EnsureChannelFirstd(keys="image"),
        EnsureTyped(keys=["image", "label"]),
        ConvertToMultiChannelBasedOnBratsClassesd(keys="label", et_label=et),
        EnsureTyped(keys="label", dtype=torch.float32),  # bool regions -> float for the loss
        Orientationd(keys=["image", "label"], axcodes="RAS"),
        Spacingd(keys=["image", "label"], pixdim=pixdim, mode=("bilinear", "nearest")),
        SpatialPadd(keys=["image", "label"], spatial_size=list(roi)),  # smaller than the crop: pad, as the engine
    ]


def _random(roi) -> list:
    """RandSpatialCropd … RandShiftIntensityd: the per-epoch random part (both peers)."""
    from monai.transforms import (
        NormalizeIntensityd,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
    )

    return [
        RandSpatialCropd(keys=["image", "label"], roi_size=list(roi), random_size=False),
        RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
        RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1),
        RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=2),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
        RandScaleIntensityd(keys="image", factors=0.1, prob=1.0),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
    ]


class _PeerLoop:
    """The tutorials' shared training step: autocast per ``precision``, GradScaler with fp16."""

    track_meta = True
    precision = "fp32"

    def _model(self, init_filters: int, device) -> Any:
        from monai.networks.nets import SegResNet

        return SegResNet(blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1], init_filters=init_filters, in_channels=4,
                         out_channels=3, dropout_prob=None).to(device)

    def _amp(self, precision: str, device) -> None:
        import torch

        if precision == "amp" and device.type != "cuda":
            raise ValueError("the tutorials' AMP is CUDA-only: use precision fp32 or bf16 on a CPU")
        self.precision = precision
        self.scaler = torch.GradScaler("cuda") if precision == "amp" else None

    def _autocast(self) -> Any:
        import torch

        if self.precision == "amp":
            return torch.autocast("cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def epoch(self) -> dict[str, int]:
        """One epoch over the loader; returns the voxels, crops and optimizer steps trained on."""
        from monai.data import set_track_meta

        set_track_meta(self.track_meta)  # a process-wide switch: each peer sets its own before its epoch
        self.model.train()
        vox = samples = steps = 0
        for batch in self.loader:
            x, y = batch["image"].to(self.device), batch["label"].to(self.device)
            self.opt.zero_grad()
            with self._autocast():
                loss = self.loss_fn(self.model(x), y)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                loss.backward()
                self.opt.step()
            vox += x.shape[0] * math.prod(x.shape[2:])
            samples += x.shape[0]
            steps += 1
            self.loss = loss.item()  # the tutorials print loss.item() every step
        self.sched.step()
        return {"voxels": vox, "samples": samples, "steps": steps}


class TutorialLoop(_PeerLoop):
    """MONAI's BraTS segmentation tutorial loop (transforms re-run from the files every epoch)."""

    def __init__(self, cases: list, *, roi, batch_size: int, init_filters: int, device, epochs: int,
                 precision: str, workers: int = 4, samples_per_case: int = 1, seed: int = 0) -> None:
        import torch
        from monai.data import DataLoader, Dataset
        from monai.losses import DiceLoss
        from monai.transforms import Compose

        t0 = time.perf_counter()
        self.device = device
        self._amp(precision, device)
        transform = Compose(_deterministic(cases, roi) + _random(roi))
        transform.set_random_state(seed)
        ds = Dataset(data=_datalist(cases), transform=transform)
        if samples_per_case > 1:
            ds = torch.utils.data.Subset(ds, [i for _ in range(samples_per_case) for i in range(len(cases))])
        self.loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                 generator=torch.Generator().manual_seed(seed))
        self.model = self._model(init_filters, device)
        self.loss_fn = DiceLoss(smooth_nr=0, smooth_dr=1e-5, squared_pred=True, to_onehot_y=False, sigmoid=True)
        self.opt = torch.optim.Adam(self.model.parameters(), 1e-4, weight_decay=1e-5)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=epochs + 1)
        self.setup_s = time.perf_counter() - t0
        self.loss = math.nan
        prec = {"amp": "AMP fp16 + GradScaler", "fp32": "fp32 (as written on a CPU)", "bf16": "bf16 autocast"}[precision]
        self.name = f"MONAI BraTS tutorial loop, {prec}"
        self.settings = {
            "source": _SRC + "3d_segmentation/brats_segmentation_3d.ipynb",
            "precision": prec, "dataset": "monai.data.Dataset (no cache: every transform every epoch)",
            "loader": f"monai.data.DataLoader(batch_size={batch_size}, shuffle=True, num_workers={workers})",
            "transforms": "LoadImaged, EnsureChannelFirstd, EnsureTyped, ConvertToMultiChannelBasedOnBratsClassesd, "
                          "Orientationd(RAS), Spacingd(own pixdim), SpatialPadd(crop), RandSpatialCropd, RandFlipd x3, "
                          "NormalizeIntensityd(nonzero, channel_wise), RandScaleIntensityd(0.1, p=1), "
                          "RandShiftIntensityd(0.1, p=1)",
            "model": f"SegResNet(blocks_down=[1,2,2,4], blocks_up=[1,1,1], init_filters={init_filters}), dropout 0 "
                     "(tutorial: 0.2; the engine's model has none)",
            "loss": "DiceLoss(smooth_nr=0, smooth_dr=1e-5, squared_pred=True, sigmoid=True)",
            "optimizer": "Adam(lr=1e-4, weight_decay=1e-5), CosineAnnealingLR per epoch",
            "cudnn_benchmark": device.type == "cuda", "track_meta": True, "samples_per_case": samples_per_case,
        }


class FastRecipeLoop(_PeerLoop):
    """MONAI's fast-training recipe on BraTS: deterministic transforms cached on the device, thread loader."""

    track_meta = False

    def __init__(self, cases: list, *, roi, batch_size: int, init_filters: int, device, epochs: int,
                 precision: str, workers: int = 4, samples_per_case: int = 1, seed: int = 0) -> None:
        import torch
        from monai.data import CacheDataset, ThreadDataLoader, set_track_meta
        from monai.losses import DiceFocalLoss
        from monai.optimizers import Novograd
        from monai.transforms import Compose, EnsureTyped

        t0 = time.perf_counter()
        self.device = device
        self._amp(precision, device)
        set_track_meta(True)
        to_device = EnsureTyped(keys=["image", "label"], device=device, track_meta=False)
        transform = Compose(_deterministic(cases, roi) + [to_device] + _random(roi))
        transform.set_random_state(seed)
        ds = CacheDataset(data=_datalist(cases), transform=transform, cache_rate=1.0, num_workers=workers)
        set_track_meta(False)
        if samples_per_case > 1:
            ds = torch.utils.data.Subset(ds, [i for _ in range(samples_per_case) for i in range(len(cases))])
        self.loader = ThreadDataLoader(ds, num_workers=0, batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))
        self.model = self._model(init_filters, device)
        self.loss_fn = DiceFocalLoss(smooth_nr=1e-5, smooth_dr=1e-5, squared_pred=True, to_onehot_y=False,
                                     sigmoid=True, batch=True)
        self.opt = Novograd(self.model.parameters(), lr=1e-4)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=epochs + 1)
        self.setup_s = time.perf_counter() - t0
        self.loss = math.nan
        prec = {"amp": "AMP fp16 + GradScaler", "fp32": "fp32 (AMP is CUDA-only)", "bf16": "bf16 autocast"}[precision]
        self.name = f"MONAI fast-training recipe, {prec}"
        self.settings = {
            "source": [_SRC + "acceleration/fast_training_tutorial.ipynb",
                       _SRC + "acceleration/distributed_training/brats_training_ddp.py"],
            "precision": prec,
            "dataset": f"monai.data.CacheDataset(cache_rate=1.0, num_workers={workers}): LoadImaged..SpatialPadd + "
                       f"EnsureTyped(device={device}, track_meta=False) cached once (setup_s)",
            "loader": f"monai.data.ThreadDataLoader(num_workers=0, batch_size={batch_size}, shuffle=True)",
            "set_track_meta": False, "random_transforms": "RandSpatialCropd, RandFlipd x3, NormalizeIntensityd, "
            "RandScale/ShiftIntensityd(p=1; brats_training_ddp.py: 0.5) on the cached tensors",
            "model": f"SegResNet(blocks_down=[1,2,2,4], blocks_up=[1,1,1], init_filters={init_filters}, dropout 0)",
            "loss": "DiceFocalLoss(smooth_nr=1e-5, smooth_dr=1e-5, squared_pred=True, sigmoid=True, batch=True)",
            "optimizer": "monai.optimizers.Novograd(lr=1e-4), CosineAnnealingLR per epoch",
            "cudnn_benchmark": device.type == "cuda", "samples_per_case": samples_per_case,
        }
