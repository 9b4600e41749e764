"""Sliding-window inference and per-region Dice (TC / WT / ET) with MONAI's DiceMetric.

Dice follows the BraTS convention: a region absent from both prediction and ground truth
scores 1, predicted but absent scores 0 (``DiceMetric(ignore_empty=False)``).

``evaluate(model, site_data, cfg)`` scores a site's cached validation cases,
``evaluate(model, discover("data/site-2"), cfg)`` every case of another site; the result holds
``dice_tc``, ``dice_wt``, ``dice_et``, ``dice_mean`` and ``per_case``.

>>> import torch
>>> truth = torch.zeros(3, 4, 4, 4, dtype=torch.bool); truth[:2, :2] = True  # ET absent
>>> pred = truth.clone(); pred[1, 2] = True  # WT over-segmented: 32 true voxels predicted as 48
>>> [round(d, 3) for d in dice_per_region(pred, truth)]  # an absent region predicted absent scores 1
[1.0, 0.8, 1.0]
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

__all__ = ["REGIONS", "infer_regions", "dice_per_region", "evaluate", "predict_case"]

log = logging.getLogger(__name__)

REGIONS = ("tc", "wt", "et")


def infer_regions(model: Any, image: Any, config: Any, device: Any = None, *, stitch_device: Any = None) -> Any:
    """Binary TC/WT/ET (bool, (3, x, y, z)) for one preprocessed image (4, x, y, z).

    Windows of ``config.roi`` run on ``device``, ``config.sw_batch_size`` at a time; the
    output is stitched on ``stitch_device`` (default ``device``; the CPU keeps a full-size
    volume's logits out of GPU memory) and the result stays there. Memory beyond the input:
    the stitched logits and their weight map (4 bytes × 3 and × 1 per voxel) and one batch
    of windows through the model.
    """
    import torch
    from monai.inferers import sliding_window_inference

    from fedimg.engine.loop import use_bf16

    device = device if device is not None else next(model.parameters()).device
    bf16 = use_bf16(config, device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            x = image.to(device).unsqueeze(0)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            logits = sliding_window_inference(x, config.roi, config.sw_batch_size, model, overlap=config.sw_overlap,
                                              mode="gaussian", sw_device=device,
                                              device=stitch_device if stitch_device is not None else device)
            return logits[0] > 0  # no float copy of the full-size logits
    finally:
        model.train(was_training)


def dice_per_region(pred: Any, truth: Any) -> list[float]:
    """Dice of each region channel of bool/uint8 ``pred`` vs ``truth`` (3, x, y, z).

    One channel at a time, so the float copies DiceMetric works on are one region's, not three.
    """
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    out = []
    for c in range(pred.shape[0]):
        d = metric(pred[c][None, None].float(), truth[c].to(pred.device)[None, None].float())
        out.append(float(d[0, 0].cpu()))
    return out


def _summarise(rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"num_cases": len(rows)}
    for r in REGIONS:
        vals = [row[f"dice_{r}"] for row in rows if not math.isnan(row[f"dice_{r}"])]
        out[f"dice_{r}"] = float(np.mean(vals)) if vals else float("nan")
    means = [out[f"dice_{r}"] for r in REGIONS if not math.isnan(out[f"dice_{r}"])]
    out["dice_mean"] = float(np.mean(means)) if means else float("nan")
    out["per_case"] = rows
    return out


def evaluate(model: Any, cases_or_data: Any, config: Any, *, device: Any = None) -> dict[str, Any]:
    """Per-case and mean Dice per region.

    ``cases_or_data`` is a :class:`~fedimg.engine.cache.SiteData` (its cached validation
    cases) or a list of :class:`fedimg.data.Case` (each loaded, preprocessed, evaluated).
    Returns ``dice_tc``, ``dice_wt``, ``dice_et``, ``dice_mean``, ``num_cases`` and
    ``per_case`` (list of dicts with ``case_id`` and the three Dice values).
    """
    from fedimg.engine.cache import SiteData, load_and_preprocess
    from fedimg.errors import ConfigError

    device = device if device is not None else next(model.parameters()).device
    norm = str(getattr(config, "intensity_norm", "zscore"))
    rows = []
    if isinstance(cases_or_data, SiteData):
        if cases_or_data.intensity_norm != norm:
            raise ConfigError(f"{cases_or_data.source or 'site data'}: cached with {cases_or_data.intensity_norm} "
                              f"intensities but the config asks for {norm}; load the site again with this config")
        items = zip(cases_or_data.val_ids, cases_or_data.val)
    else:
        items = ((c.case_id, load_and_preprocess(c, norm)[0]) for c in cases_or_data)
    for case_id, pre in items:
        if pre.regions is None:
            continue
        pred = infer_regions(model, pre.image, config, device)
        tc, wt, et = dice_per_region(pred, pre.regions)
        rows.append({"case_id": case_id, "dice_tc": tc, "dice_wt": wt, "dice_et": et})
    return _summarise(rows)


def predict_case(model: Any, case: Any, config: Any, *, device: Any = None) -> tuple[np.ndarray, Any]:
    """BraTS label map (uint8, the input's full shape) for one case; returns ``(labels, reference image path)``.

    Memory on a full-resolution case: the label file is not read, the loaded volumes are dropped
    once preprocessed (only the cropped, normalised copy goes through the windows) and the
    output is stitched on the CPU.
    """
    import dataclasses

    import torch

    from fedimg.data import regions_to_brats_labels
    from fedimg.engine.cache import load_and_preprocess

    if getattr(case, "label", None) is not None:
        case = dataclasses.replace(case, label=None)  # predicting: the truth is not needed
    pre, arrays = load_and_preprocess(case, str(getattr(config, "intensity_norm", "zscore")))
    reference = arrays.reference
    del arrays  # the full-size float32 volumes
    pred = infer_regions(model, pre.image, config, device, stitch_device=torch.device("cpu")).numpy()
    shape, bbox = pre.shape, pre.bbox
    del pre
    full = np.zeros((3, *shape), bool)
    full[(slice(None), *(slice(a, b) for a, b in bbox))] = pred
    del pred
    layout = getattr(case, "layout", "brats2021")
    out_layout = layout if layout in ("brats2021", "brats2023") else "brats2021"
    return np.asarray(regions_to_brats_labels(full, layout=out_layout), dtype=np.uint8), reference
