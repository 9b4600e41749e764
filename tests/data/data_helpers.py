"""Helpers for the data tests: tiny BraTS 2021 / 2023 and MSD Task01 data sets, file hashes."""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (8, 9, 10)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = (-8.0, -9.0, -10.0)

SUFFIX = {
    "brats2021": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
    "brats2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
}
# fedimg modality index → a constant offset, so channel order can be checked after loading
OFFSET = {"t1": 100.0, "t1ce": 200.0, "t2": 300.0, "flair": 400.0}


def save(arr, path: Path, affine=AFFINE, dtype=None) -> Path:
    arr = np.asarray(arr)
    img = nib.Nifti1Image(arr if dtype is None else arr.astype(dtype), affine)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def label_map(layout: str, shape=SHAPE) -> np.ndarray:
    """Nested blobs: oedema shell, necrotic core, enhancing voxels, in ``layout``'s codes."""
    codes = {"brats2021": (2, 1, 4), "brats2023": (2, 1, 3), "msd": (1, 2, 3)}[layout]
    lab = np.zeros(shape, np.uint8)
    lab[2:7, 2:7, 2:8] = codes[0]
    lab[3:6, 3:6, 3:7] = codes[1]
    lab[4, 4, 4:6] = codes[2]
    return lab


def write_brats_case(root: Path, case_id: str, layout: str = "brats2021", *, seg: bool = True, ext=".nii.gz") -> Path:
    folder = root / case_id
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    for mod, suffix in SUFFIX[layout].items():
        if mod == "seg":
            if seg:
                save(label_map(layout), folder / f"{case_id}{suffix}{ext}", dtype=np.uint8)
            continue
        img = OFFSET[mod] + rng.random(SHAPE).astype(np.float32)
        if mod == "t1":  # stored as int16: keep it non-constant after rounding
            img = np.floor(img) + rng.integers(0, 2, SHAPE)
        save(img, folder / f"{case_id}{suffix}{ext}", dtype=np.int16 if mod == "t1" else np.float32)
    return folder


def write_msd(root: Path, n: int = 2, *, n_test: int = 1) -> Path:
    """MSD Task01 layout; the 4-D images hold channels FLAIR, T1w, t1gd, T2w."""
    msd_order = ("flair", "t1", "t1ce", "t2")
    training, test = [], []
    rng = np.random.default_rng(0)
    for i in range(n + n_test):
        name = f"BRATS_{i + 1:03d}.nii.gz"
        img = np.stack([OFFSET[m] + 0.5 * rng.random(SHAPE, np.float32) for m in msd_order], axis=-1)
        sub = "imagesTr" if i < n else "imagesTs"
        save(img, root / sub / name)
        if i < n:
            save(label_map("msd"), root / "labelsTr" / name, dtype=np.uint8)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
    meta = {
        "name": "BRATS",
        "tensorImageSize": "4D",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": n,
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def rel_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, keyed by path relative to it."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
