"""Small BraTS-2021-layout sites for the engine tests: a head-like ellipsoid with a bright tumour.

Each case is 48×48×40 voxels at 2 mm: a noisy ellipsoidal "head" (four contrasts with
different tissue brightness) holding one tumour of random size and position: necrotic
core (label 1, dark on T1ce), enhancing rim (label 4, bright on T1ce), oedema (label 2,
bright on FLAIR/T2). The tumour is clearly visible, so a few epochs of training learn it.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHAPE = (48, 48, 40)
AFFINE = np.array([[-2.0, 0, 0, 47.0], [0, -2.0, 0, 60.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])
MODS = ("t1", "t1ce", "t2", "flair")
# tissue brightness per contrast: background, brain, oedema, enhancing, necrosis
BRIGHT = {
    "t1": (0.0, 100.0, 70.0, 90.0, 40.0),
    "t1ce": (0.0, 100.0, 80.0, 260.0, 40.0),
    "t2": (0.0, 100.0, 220.0, 150.0, 240.0),
    "flair": (0.0, 100.0, 260.0, 160.0, 120.0),
}


def make_case(root: Path, case_id: str, seed: int, shape=SHAPE, affine=AFFINE) -> Path:
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    c = np.array(shape, np.float32) / 2
    head = (((g - c[:, None, None, None]) / (c[:, None, None, None] - 3)) ** 2).sum(0) <= 1.0
    centre = c + rng.uniform(-0.3, 0.3, 3) * c
    r = rng.uniform(4.0, 7.0)
    d = np.sqrt(((g - centre[:, None, None, None]) ** 2).sum(0))
    label = np.zeros(shape, np.uint8)
    label[(d <= r * 1.7) & head] = 2
    label[(d <= r) & head] = 4
    label[(d <= r * 0.55) & head] = 1
    tissue = np.where(head, 1, 0)
    tissue = np.where(label == 2, 2, tissue)
    tissue = np.where(label == 4, 3, tissue)
    tissue = np.where(label == 1, 4, tissue)
    folder = root / case_id
    folder.mkdir(parents=True, exist_ok=True)
    scale = rng.uniform(0.8, 1.25)
    for m in MODS:
        img = np.asarray(BRIGHT[m], np.float32)[tissue] * scale
        img = img + rng.normal(0, 8.0, shape).astype(np.float32) * head
        nib.save(nib.Nifti1Image(img.astype(np.float32), affine), str(folder / f"{case_id}_{m}.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(folder / f"{case_id}_seg.nii.gz"))
    return folder


def make_site(root: Path, n: int, seed: int = 0, prefix: str = "Fx") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        make_case(root, f"{prefix}_{i:03d}", seed * 1000 + i)
    return root


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """A site of 8 fixture cases (6 train / 2 val with the default val_fraction)."""
    return make_site(tmp_path_factory.mktemp("site-a"), 8, seed=1)


@pytest.fixture(scope="session")
def other_site(tmp_path_factory) -> Path:
    """A second site of 3 fixture cases (for evaluate / predict)."""
    return make_site(tmp_path_factory.mktemp("site-b"), 3, seed=2, prefix="Fy")


@pytest.fixture(autouse=True)
def _one_thread(_threads_and_seed):
    """One torch thread: on a shared 2-core machine OpenMP barriers make 2 threads far slower."""
    import torch

    torch.set_num_threads(1)
    yield
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def synth_site(tmp_path_factory) -> Path:
    """8 cases of ``fedimg synth`` data at 4 mm (44×64×56 voxels) for the learning test."""
    from fedimg.data import synthesize

    return synthesize(tmp_path_factory.mktemp("synth4") / "d", sites=1, cases_per_site=8, seed=0, spacing=4.0)[0]


@pytest.fixture(scope="session")
def case_maker():
    """``make_case(root, case_id, seed, shape=..., affine=...)`` for tests that need special cases."""
    return make_case
