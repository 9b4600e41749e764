"""CUDA path: same removal as on the CPU (skipped without a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedimg.cli import main
from fedimg.deface.core import DefaceConfig, face_removal

HEAD = Path(__file__).resolve().parent.parent / "assets" / "mri" / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz"


@pytest.mark.gpu
def test_cuda_removal_matches_cpu(head_2mm):
    from fedimg.device import resolve_device

    img = nib.load(str(head_2mm))
    data = np.asarray(img.dataobj).astype(np.float32)
    cfg = DefaceConfig(preset="fast")
    cpu = face_removal(data, img.affine, config=cfg)
    gpu = face_removal(data, img.affine, config=cfg, device=resolve_device("cuda"))
    dice = 2 * (cpu.remove & gpu.remove).sum() / (cpu.remove.sum() + gpu.remove.sum())
    assert dice >= 0.9, dice
    assert gpu.metrics["brain_in_head"] > 0.85


@pytest.mark.gpu
def test_cli_real_head_on_cuda(tmp_path):
    out = tmp_path / "head_defaced.nii.gz"
    assert main(["deface", str(HEAD), "-o", str(out), "--device", "cuda"]) == 0
    qc = json.loads((tmp_path / "head_defaced.qc.json").read_text())
    assert qc["passed"] and qc["protected_changed_ml"] == 0.0 and 400 < qc["removed_ml"] < 2000
