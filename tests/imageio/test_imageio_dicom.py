"""DICOM series reading and writing: geometry against the headers, multi-frame, rescale, bad input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import _dicom_factory as F
from fedimg.errors import InputError
from fedimg.imageio.dicom import LPS_TO_RAS, find_series, read_series
from fedimg.imageio.dicom_write import write_like, write_series
from fedimg.imageio.volume import to_canonical
from fedimg.imageio.write import write_nifti_gz


@pytest.fixture(scope="module")
def head4():
    """The real head at ~3.7 mm, cropped to 40 slices (48x64x40)."""
    data, affine = F.head(4)
    shift = np.eye(4)
    shift[2, 3] = 12
    return np.ascontiguousarray(data[:, :, 12:52]), affine @ shift


def _headers_match_affine(files: list[Path], affine: np.ndarray) -> None:
    """Every slice's ImagePositionPatient / ImageOrientationPatient / PixelSpacing against the NIfTI affine."""
    lps = np.linalg.inv(LPS_TO_RAS) @ affine
    for f in files:
        ds = pydicom.dcmread(f)
        groups = ds.get("PerFrameFunctionalGroupsSequence")
        if groups is None:
            frames = [(np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float),
                       np.array(ds.PixelSpacing, float))]
        else:
            shared = ds.SharedFunctionalGroupsSequence[0]
            iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
            ps = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, float)
            frames = [(np.array(g.PlanePositionSequence[0].ImagePositionPatient, float), iop, ps) for g in groups]
        for ipp, iop, ps in frames:
            # the slice index of this position, from the affine: IPP = lps @ (0, 0, k, 1)
            k = float(np.linalg.lstsq(lps[:3, 2:3], ipp - lps[:3, 3], rcond=None)[0][0])
            assert abs(k - round(k)) < 1e-3
            np.testing.assert_allclose(lps[:3, :3] @ [0, 0, round(k)] + lps[:3, 3], ipp, atol=1e-3)
            np.testing.assert_allclose(lps[:3, 0], iop[:3] * ps[1], atol=1e-4)  # along a row: column spacing
            np.testing.assert_allclose(lps[:3, 1], iop[3:] * ps[0], atol=1e-4)


@pytest.mark.parametrize("case", ["axial", "oblique", "multiframe"])
def test_round_trip_geometry_and_pixels(tmp_path, head4, case):
    data, affine = head4
    kw = {"oblique": {"oblique_deg": 23.0}, "multiframe": {"multiframe": True}}.get(case, {})
    files, _, written, aff = F.write_case(tmp_path / "dcm", data=data, affine=affine, **kw)
    (series,) = find_series(tmp_path / "dcm")
    assert len(series.files) == (1 if case == "multiframe" else data.shape[2])
    vol = read_series(series)
    _headers_match_affine(files, vol.affine)
    # NIfTI written from the series: same world geometry and the same voxels as the source head
    nii = write_nifti_gz(tmp_path / "x.nii.gz", vol.scaled(), vol.affine, descrip=b"t")
    img = nib.load(str(nii))
    got, got_aff = to_canonical(np.asarray(img.dataobj), img.affine)
    want, want_aff = to_canonical(written, aff)
    np.testing.assert_allclose(got_aff, want_aff, atol=1e-4)
    np.testing.assert_array_equal(got, want)
    assert img.header["qform_code"] == 1 and img.header["sform_code"] == 1
    if case == "oblique":
        assert abs(vol.affine[1, 2]) > 0.5  # really oblique: the slice axis has a y component


def test_slices_are_ordered_by_position_not_file_name(tmp_path, head4):
    data, affine = head4
    files, _, _, _ = F.write_case(tmp_path / "d", data=data, affine=affine, shuffle=True)
    assert [f.name for f in sorted(files)] != [f.name for f in files]  # names do not follow the slices
    vol = read_series(find_series(tmp_path / "d")[0])
    got, _ = to_canonical(vol.scaled(), vol.affine)
    want, _ = to_canonical(data, affine)
    np.testing.assert_array_equal(got, want)


def test_rescale_slope_intercept_applied(tmp_path, head4):
    data, affine = head4
    _, _, written, _ = F.write_case(tmp_path / "d", data=data, affine=affine, scale=0.37)
    vol = read_series(find_series(tmp_path / "d")[0])
    assert np.all(vol.slope != 1.0) and vol.scaled().dtype == np.float32
    got, _ = to_canonical(vol.scaled(), vol.affine)
    want, _ = to_canonical(written, affine)
    assert np.abs(got - want).max() <= vol.slope[0] / 2 + 1e-4  # within half a stored step
    assert vol.stored.dtype == np.int16


@pytest.mark.parametrize("multiframe", [False, True])
def test_write_like_keeps_geometry_new_uids(tmp_path, head4, multiframe):
    data, affine = head4
    F.write_case(tmp_path / "in", data=data, affine=affine, oblique_deg=10, multiframe=multiframe)
    vol = read_series(find_series(tmp_path / "in")[0])
    stored = vol.stored.copy()
    stored[:5] = 0
    out = write_like(vol, stored, tmp_path / "out")
    again = read_series(find_series(tmp_path / "out")[0])
    np.testing.assert_allclose(again.affine, vol.affine, atol=1e-6)
    np.testing.assert_array_equal(again.stored, stored)
    src = {str(pydicom.dcmread(f).SOPInstanceUID) for f in vol.series.files}
    new = {str(pydicom.dcmread(f).SOPInstanceUID) for f in out}
    assert not src & new and again.series.uid != vol.series.uid
    assert all(pydicom.dcmread(f).file_meta.MediaStorageSOPInstanceUID == pydicom.dcmread(f).SOPInstanceUID for f in out[:3])
    assert len(out) == (1 if multiframe else data.shape[2])


def test_write_series_single_file_per_slice(tmp_path):
    data = np.arange(8 * 9 * 10, dtype=np.int16).reshape(8, 9, 10)
    affine = np.diag([-1.0, 2.0, 3.0, 1.0])
    files = write_series(data, affine, tmp_path)
    vol = read_series(find_series(tmp_path)[0])
    # slices come back sorted along the slice normal (here the reverse of the written order)
    assert vol.affine[2, 2] == pytest.approx(-3.0)
    got, got_aff = to_canonical(vol.scaled(), vol.affine)
    want, want_aff = to_canonical(data, affine)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_aff, want_aff, atol=1e-6)
    assert len(files) == 10


def _one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


def test_gantry_tilt_refused(tmp_path, head4):
    data, affine = head4
    F.write_case(tmp_path / "sheared", data=data, affine=affine, tilt_deg=12.0)
    with pytest.raises(InputError) as exc:
        read_series(find_series(tmp_path / "sheared")[0])
    _one_line(exc, "sheared", "12.0 deg", "tilt")
    F.write_case(tmp_path / "tagged", data=data, affine=affine, gantry_tag=15.0)
    with pytest.raises(InputError) as exc:
        read_series(find_series(tmp_path / "tagged")[0])
    _one_line(exc, "tagged", "GantryDetectorTilt")


def test_missing_slice_refused(tmp_path, head4):
    data, affine = head4
    files, _, _, _ = F.write_case(tmp_path / "gap", data=data, affine=affine, shuffle=False)
    files[17].unlink()
    with pytest.raises(InputError) as exc:
        read_series(find_series(tmp_path / "gap")[0])
    _one_line(exc, "gap", "missing", "re-export")


def test_mixed_series_refused(tmp_path, head4):
    data, affine = head4
    a, _, _, _ = F.write_case(tmp_path / "mix" / "a", data=data, affine=affine, number=1)
    b, _, _, _ = F.write_case(tmp_path / "mix" / "b", data=data, affine=affine, number=2, oblique_deg=30)
    uid = pydicom.dcmread(a[0]).SeriesInstanceUID
    for f in b:  # a second acquisition exported under the first one's series UID
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = uid
        ds.save_as(f)
    (series,) = find_series(tmp_path / "mix")
    with pytest.raises(InputError) as exc:
        read_series(series)
    _one_line(exc, "mixed series", "orientations")


def test_repeated_positions_refused(tmp_path, head4):
    data, affine = head4
    a, _, _, _ = F.write_case(tmp_path / "rep", data=data, affine=affine, shuffle=False)
    ds = pydicom.dcmread(a[3])
    ds.ImagePositionPatient = pydicom.dcmread(a[4]).ImagePositionPatient
    ds.save_as(a[3])
    with pytest.raises(InputError) as exc:
        read_series(find_series(tmp_path / "rep")[0])
    _one_line(exc, "same position", "split")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError) as exc:
        find_series(tmp_path)
    _one_line(exc, "no DICOM image series")
    with pytest.raises(InputError):
        find_series(tmp_path / "absent")


def test_declared_size_refused_before_pixels(tmp_path, head4, monkeypatch):
    """A multi-frame header declaring far more frames than the limit allows is refused from its headers alone."""
    files, _, _, _ = F.write_case(tmp_path / "s", data=head4[0], affine=head4[1], multiframe=True)
    ds = pydicom.dcmread(files[0])
    ds.NumberOfFrames = 200_000  # 200k frames of the same rows x columns: tens of GiB declared, the file is small
    ds.save_as(files[0])
    before = files[0].read_bytes()
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(lambda self: pytest.fail("pixels read")))
    (series,) = find_series(tmp_path / "s")
    with pytest.raises(InputError, match="limit|voxels"):
        read_series(series)
    assert files[0].read_bytes() == before
