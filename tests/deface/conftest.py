"""Fixtures for the defacing tests: real head at 2 mm, a tiny BIDS tree, a BraTS-style case."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

MRI = Path(__file__).resolve().parent.parent / "assets" / "mri"
HEAD = MRI / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz"


def block_average(img: nib.Nifti1Image, f: int) -> nib.Nifti1Image:
    """Real head downsampled by ``f`` per axis (block mean), int16, affine adjusted."""
    d = np.asarray(img.dataobj).astype(np.float32)
    s = [n - n % f for n in d.shape]
    d = d[: s[0], : s[1], : s[2]].reshape(s[0] // f, f, s[1] // f, f, s[2] // f, f).mean((1, 3, 5))
    shift = np.eye(4)
    shift[:3, 3] = (f - 1) / 2.0
    aff = img.affine @ shift @ np.diag([f, f, f, 1.0])
    out = nib.Nifti1Image(np.rint(d).astype(np.int16), aff)
    out.header.set_qform(aff, code=1)
    out.header.set_sform(aff, code=1)
    return out


@pytest.fixture(scope="session")
def head_2mm(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("head2") / "head_2mm.nii.gz"
    nib.save(block_average(nib.load(str(HEAD)), 2), str(p))
    return p


def frontal_blob(shape, affine, radius_mm: float = 12.0) -> np.ndarray:
    """A 'tumour' label: a ball in the left frontal lobe, just above the orbit, of the ds000031 head.

    The centre (-17.6, 46.7, -10.7) mm is template voxel (70, 180, 105) mapped into this
    head's world space with a registration of the head (it sits next to the face region).
    """
    centre = np.array([-17.6, 46.7, -10.7])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    return (np.linalg.norm(world - centre, axis=-1) <= radius_mm).astype(np.uint8)


@pytest.fixture(scope="session")
def brats_site(tmp_path_factory, head_2mm) -> Path:
    """A site folder with one BraTS-2021-named case built from the real head (2 mm)."""
    root = tmp_path_factory.mktemp("site")
    case = root / "case-000"
    case.mkdir()
    img = nib.load(str(head_2mm))
    d = np.asarray(img.dataobj)
    for suffix, scale in (("t1", 1.0), ("t1ce", 1.2), ("t2", 0.8), ("flair", 0.6)):
        nib.save(nib.Nifti1Image((d * scale).astype(np.int16), img.affine, img.header), str(case / f"case-000_{suffix}.nii.gz"))
    (root / "site.json").write_text(json.dumps({"site": "site-1", "synthetic": True}))
    seg = frontal_blob(d.shape, img.affine)
    nib.save(nib.Nifti1Image(seg, img.affine), str(case / "case-000_seg.nii.gz"))
    return root


@pytest.fixture(scope="session")
def bids_root(tmp_path_factory, head_2mm) -> Path:
    """A two-subject BIDS tree (2 mm heads; sub-02 stored with flipped axes) plus metadata."""
    root = tmp_path_factory.mktemp("bids")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.8.0"}))
    a = root / "sub-01" / "anat"
    a.mkdir(parents=True)
    (a / "sub-01_T1w.nii.gz").write_bytes(head_2mm.read_bytes())
    b = root / "sub-02" / "ses-1" / "anat"
    b.mkdir(parents=True)
    img = nib.load(str(head_2mm))
    d = np.asarray(img.dataobj)[::-1]
    flip = np.eye(4)
    flip[0, 0] = -1
    flip[0, 3] = d.shape[0] - 1
    nib.save(nib.Nifti1Image(np.ascontiguousarray(d), img.affine @ flip), str(b / "sub-02_ses-1_T1w.nii.gz"))
    (b / "sub-02_ses-1_T1w.json").write_text("{}")
    return root


@pytest.fixture(scope="session")
def make_blob():
    return frontal_blob
