"""The one suffix list and file stems."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedimg.imageio import suffixes as sx
from fedimg.imageio.provenance import stem as provenance_stem
from fedimg.imageio.volume import NIFTI_SUFFIXES as VOLUME_NIFTI


def test_lists():
    assert sx.NIFTI_SUFFIXES == (".nii.gz", ".nii")  # compressed first: found first when both exist
    assert sx.VOLUME_SUFFIXES == (".nii.gz", ".nii", ".nrrd")
    assert set(sx.VOLUME_SUFFIXES) <= set(sx.IMAGE_SUFFIXES)
    assert sx.DEFAULT_SUFFIX in sx.NIFTI_SUFFIXES
    assert VOLUME_NIFTI is sx.NIFTI_SUFFIXES and provenance_stem is sx.stem


@pytest.mark.parametrize(
    "name, nifti, nrrd",
    [("a.nii.gz", True, False), ("a.nii", True, False), ("A.NII.GZ", True, False), ("a.nrrd", False, True),
     ("a.gz", False, False), ("a.nii.gz.bak", False, False), ("a.mha", False, False), ("nii", False, False)],
)
def test_predicates(name, nifti, nrrd):
    assert sx.is_nifti(name) is nifti and sx.is_nifti(Path("dir.nii") / name) is nifti
    assert sx.is_nrrd(name) is nrrd
    assert sx.is_volume(name) is (nifti or nrrd)


def test_has_suffix_case():
    assert sx.has_suffix("p.NII.GZ", sx.NIFTI_SUFFIXES)
    assert not sx.has_suffix("p.NII.GZ", sx.NIFTI_SUFFIXES, ignore_case=False)
    assert sx.has_suffix("p.nii", sx.NIFTI_SUFFIXES, ignore_case=False)


@pytest.mark.parametrize(
    "name, base, ext",
    [("c_t1.nii.gz", "c_t1", ".nii.gz"), ("c_t1.NII", "c_t1", ".nii"), ("c.nrrd", "c", ".nrrd"),
     ("c.mgz", "c", ".mgz"), ("c.txt", "c.txt", "")],
)
def test_split_suffix(name, base, ext):
    assert sx.split_suffix(name) == (base, ext)


def test_split_suffix_limited_list():
    assert sx.split_suffix("c.nrrd", sx.NIFTI_SUFFIXES) == ("c.nrrd", "")


@pytest.mark.parametrize(
    "path, expected",
    [("data/sub-01_T1w.nii.gz", "sub-01_T1w"), ("x.nii", "x"), ("x.nhdr", "x"), ("x.MHD", "x"),
     ("report.pdf", "report"), ("archive.tar.gz", "archive.tar")],
)
def test_stem(path, expected):
    assert sx.stem(path) == expected
