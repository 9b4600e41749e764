"""``benchmarks/deface_corpus.py``: a small subset of the robustness corpus, built and defaced end to end.

Two varied heads from the real ds000031 T1 (tests/assets): tilted on every axis by angles that
are no start rotation, cropped, warped, resampled to coarse / anisotropic voxels, with a
T2-like or PD-like contrast and a tumour label; each must be defaced, pass QC and be correct
against its known reference (no brain or tumour voxel removed, the face removed, removal
Dice >= 0.9) and QC must pass it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

HEAD = Path(__file__).resolve().parents[1] / "assets" / "mri" / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz"
# ds000031 -> template by the SimpleITK peer (benchmarks/deface.py sitk_register, rotation search), checked by eye
BASE = np.array([[0.981, 0.0413, 0.0618, -3.8733], [-0.0583, 0.9111, 0.1422, 15.5988],
                 [-0.0649, -0.1377, 0.9063, -5.4563], [0.0, 0.0, 0.0, 1.0]])
CASES = {
    "t2_chin_tumour": {"angles": (33.0, -21.0, 14.0), "scale": 1.04, "shift": [4.0, -6.0, 3.0], "warp_mm": 2.5,
                       "spacing": [3.0, 3.0, 3.0], "crop": "chin", "chin_mm": 30.0, "face_mm": 0.0, "contrast": "t2",
                       "tumour": True, "bias": 0.1, "noise": 0.01},
    "pd_face_slab": {"angles": (-38.0, 17.0, -29.0), "scale": 0.95, "shift": [-5.0, 8.0, -4.0], "warp_mm": 3.0,
                     "spacing": [2.0, 2.0, 4.0], "crop": "face", "chin_mm": 0.0, "face_mm": 12.0, "contrast": "pd",
                     "tumour": False, "bias": 0.15, "noise": 0.02},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_varied_real_head_is_defaced_correctly(name, benchmark_script, tmp_path):
    import nibabel as nib

    from fedimg.deface.core import DefaceConfig

    corpus = benchmark_script("deface_corpus")
    rng = np.random.default_rng(7)
    case = corpus.make_case(HEAD, BASE, CASES[name], rng)
    assert case["reference"].sum() > 100 and case["brain"].sum() > 1000
    image = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(case["image"], case["affine"]), str(image))
    if case["tumour"].any():
        nib.save(nib.Nifti1Image(case["tumour"].astype(np.uint8), case["affine"]), str(tmp_path / f"{name}_tumour.nii.gz"))
    np.savez_compressed(tmp_path / f"{name}_truth.npz", reference=case["reference"], brain=case["brain"],
                        tumour=case["tumour"])
    res = corpus.run_case(image, tmp_path / "out", DefaceConfig())
    assert res["brain_removed"] == 0 and res["tumour_removed"] == 0
    assert res["recall"] >= 0.9 and res["dice"] >= 0.9, res
    # QC refused both at 11B's f8c58c2 (mid-plane false alarms); since h11r's placed template
    # mid-plane it must pass them (benchmarks/RESULTS.md)
    assert res["passed"], res["failures"]
