"""Full-resolution BraTS (1 mm, 240×240×155) in a stated memory bound: ``fedimg predict`` with 128³ sliding windows,
and one ``fedimg train`` epoch with 128³ crops, batch 1.

The case has the real full-resolution shape; the model is tiny (UNet, 2 filters) so one pass
of the 8 windows is fast. Memory is the process's own high-water mark (VmHWM). The bound
(README, "Full-resolution BraTS"): ``fedimg predict`` on such a case with 128³ windows,
``--sw-batch-size 1``, stays under 1.5 GiB of peak RSS on the CPU with fedimg's default
SegResNet (measured by ``benchmarks/fullres_memory.py``); everything that scales with the
volume (the case, its preprocessed copy, the stitched logits) is a small part of it.

Training (README, same section): one epoch with 128³ crops, batch 1, bf16 autocast, fedimg's
default SegResNet, peaks under 1.25 GiB + 0.2 GiB per cached case (training and validation
cases of 240×240×155). The 128³ backward is the largest part (~780 MiB with that model), which
a tiny model leaves out: the test trains a tiny UNet on two such cases (one trains, one is
validated) and bounds what the cached cases and the data path add to the imports.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "fullres_memory.py"
BOUND_MIB = 1536  # the stated bound for `fedimg predict` on a 240x240x155 case, 128^3 windows, sw batch 1 (as the benchmark)
#: What may come on top of a process that has imported torch, MONAI and fedimg's engine: the case (4 x int16
#: read as float32), its preprocessed copy, the stitched logits and weight map, the labels; in float32 volumes.
VOLUMES = 16  # 545 MiB
#: training (the stated bound, default SegResNet with bf16, is the benchmark's TRAIN_BOUND_MIB + TRAIN_PER_CASE_MIB
#: per cached case): for a tiny model, the float32 volumes each cached case may hold (4 float32 channels and 3 uint8
#: regions of its head box: <= 4.75, plus allocator slack) and the volumes of a tiny model's 128^3 step and the
#: validation's sliding window (stitched logits, weight map, one region's Dice copies).
PER_CASE_VOLUMES, STEP_AND_VAL_VOLUMES = 6, 13


def _bench():
    spec = importlib.util.spec_from_file_location("fullres_memory", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Two full-resolution cases (uncompressed: faster to write and read); predict uses the first."""
    fr = _bench()
    root = tmp_path_factory.mktemp("fullres") / "site"
    return fr, [fr.write_case(root, f"BraTS2021_{i:05d}", seed=i, gz=False) for i in range(2)]


@pytest.mark.slow
def test_fullres_predict_stays_under_the_memory_bound(tmp_path, site):
    fr, cases = site
    case = cases[0]
    ckpt = fr.write_checkpoint(tmp_path / "model", model="unet", init_filters=2, roi=128, sw_batch_size=1)
    out = tmp_path / "pred.nii.gz"
    res = fr.peak_of(["-q", "predict", "--model", str(ckpt), "--case", str(case), "-o", str(out), "--device", "cpu",
                      "--roi", "128", "128", "128", "--sw-batch-size", "1", "--threads", "1"], threads=1)
    assert res["peak_mib"] <= BOUND_MIB, res
    volume_mib = np.prod(fr.SHAPE) * 4 / 2**20
    assert res["peak_mib"] - res["floor_mib"] <= VOLUMES * volume_mib, res
    ref, pred = nib.load(str(case / "BraTS2021_00000_t1.nii")), nib.load(str(out))
    assert pred.shape == ref.shape == fr.SHAPE and np.array_equal(pred.affine, ref.affine)
    labels = np.asarray(pred.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 4}  # BraTS 2021 codes, as the input


@pytest.mark.slow
def test_fullres_training_epoch_stays_under_the_memory_bound(tmp_path, site):
    import json

    fr, cases = site
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"model": "unet", "init_filters": 2, "sw_batch_size": 1}))
    res = fr.peak_of(["-q", "train", "--data", str(cases[0].parent), "--out", str(tmp_path / "run"), "--epochs", "1",
                      "--roi", "128", "128", "128", "--batch-size", "1", "--val-fraction", "0.5", "--config", str(cfg),
                      "--allow-identifiable", "--device", "cpu", "--no-progress", "--threads", "1"], threads=1)
    assert res["peak_mib"] <= fr.TRAIN_BOUND_MIB + len(cases) * fr.TRAIN_PER_CASE_MIB, res
    volume_mib = np.prod(fr.SHAPE) * 4 / 2**20
    assert res["peak_mib"] - res["floor_mib"] <= (len(cases) * PER_CASE_VOLUMES + STEP_AND_VAL_VOLUMES) * volume_mib, res
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_cases"] == metrics["val_cases"] == 1 and "dice_mean" in metrics["epochs"][0]  # trained, validated
