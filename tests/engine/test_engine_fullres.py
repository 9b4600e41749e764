"""Full-resolution BraTS (1 mm, 240×240×155) in a stated memory bound: ``fedimg predict`` with 128³ sliding windows.

The case has the real full-resolution shape; the model is tiny (UNet, 2 filters) so one pass
of the 8 windows is fast. Memory is the process's own high-water mark (VmHWM). The bound
(README, "Full-resolution BraTS"): ``fedimg predict`` on such a case with 128³ windows,
``--sw-batch-size 1``, stays under 1.5 GiB of peak RSS on the CPU with fedimg's default
SegResNet (measured by ``benchmarks/fullres_memory.py``); everything that scales with the
volume (the case, its preprocessed copy, the stitched logits) is a small part of it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "fullres_memory.py"
BOUND_MIB = 1536  # the stated bound for `fedimg predict` on a 240x240x155 case, 128^3 windows, sw batch 1
#: What may come on top of a process that has imported torch, MONAI and fedimg's engine: the case (4 x int16
#: read as float32), its preprocessed copy, the stitched logits and weight map, the labels; in float32 volumes.
VOLUMES = 16  # 545 MiB


def _bench():
    spec = importlib.util.spec_from_file_location("fullres_memory", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_fullres_predict_stays_under_the_memory_bound(tmp_path):
    fr = _bench()
    case = fr.write_case(tmp_path / "site", "BraTS2021_00000", seed=0, gz=False)
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
