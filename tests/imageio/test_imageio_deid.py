"""Header de-identification against the PS3.15 Annex E table: every identifying tag, private tags, 0012 tags, dates."""

from __future__ import annotations

import datetime
import io
import json
import logging

import numpy as np
import pydicom
import pytest

import _dicom_factory as F
from fedimg.errors import ConfigError
from fedimg.imageio.deid import DeidConfig, date_offset_days, deidentify, profile_actions, shift_date

KEY = b"0123456789abcdef-site-secret"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Two small series of two fake patients; the first fills every text/date/UID tag of the table."""
    root = tmp_path_factory.mktemp("deid")
    data = np.arange(16 * 12 * 4, dtype=np.int16).reshape(16, 12, 4)
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    a, fakes_a, _, _ = F.write_case(root / "a", patient="A", data=data, affine=affine, full=True)
    b, fakes_b, _, _ = F.write_case(root / "b", patient="B", data=data, affine=affine, multiframe=True)
    return a, b, fakes_a, fakes_b


def _bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _empty(elem) -> bool:
    return elem.value in (None, "", b"", "00010101", "000000.00", "00010101010101.000000+0000", 0, "0") or (
        isinstance(elem.value, pydicom.Sequence) and all(len(list(i)) == 0 or all(_empty(e) for e in i)
                                                         for i in elem.value))


def test_every_table_tag_removed_emptied_or_replaced(series):
    from dicomanonymizer.simpledicomanonymizer import delete, empty

    files, _, fakes, _ = series
    src = pydicom.dcmread(files[0])
    out = pydicom.dcmread(files[0])
    report = deidentify(out, DeidConfig(pseudonym_key=KEY))
    checked = 0
    for tag, action in profile_actions().items():
        if len(tag) != 2 or tag not in src or src[tag].value in (None, ""):
            continue
        checked += 1
        name = src[tag].keyword
        if action is delete:  # X: gone (dicom-anonymizer leaves DA as the dummy 00010101)
            assert tag not in out or out[tag].value == "00010101", name
            assert name in report.removed or name in report.emptied, name
        elif action is empty:  # Z: zero length (or the package's dummy date/time)
            assert _empty(out[tag]) or out[tag].value == report.pseudonym, name  # Z allows a dummy value
        else:  # D, U and the X/Z/D combinations: never the original value
            assert tag not in out or out[tag].value != src[tag].value, name
    assert checked > 300  # the factory filled the table
    blob = _bytes(out)
    left = [f for f in fakes if f.encode() in blob]
    assert not left, f"fake identifiers survived: {left[:5]}"
    for date in (F.FAKE_DATE, "20230115", "20230116"):
        assert date.encode() not in blob


def test_private_tags_and_0012_tags(series):
    files, _, _, _ = series
    ds = pydicom.dcmread(files[0])
    ds.file_meta.SourceApplicationEntityTitle = "FAKEAE-MRI1"  # the sending station, in the file meta
    assert any(e.tag.is_private for e in ds)
    report = deidentify(ds, DeidConfig(pseudonym_key=KEY, pixels_defaced=True))
    assert not any(e.tag.is_private for e in ds) and report.private_removed == 2
    assert ds.PatientIdentityRemoved == "YES"
    assert "Annex E" in ds.DeidentificationMethod[0]
    codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in ds.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113102", "DCM")]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert ds.PatientID == ds.PatientName == report.pseudonym and report.pseudonym.startswith("anon-")
    assert b"FAKEAE-MRI1" not in _bytes(ds)
    kept = pydicom.dcmread(files[0])
    deidentify(kept, DeidConfig(pseudonym_key=KEY, remove_private=False))
    assert b"FAKE-PRIVATE-SECRET-9921" in _bytes(kept) and "private tags kept" in kept.DeidentificationMethod


def test_report_names_tags_never_values(series):
    files, _, fakes, _ = series
    report = deidentify(pydicom.dcmread(files[0]), DeidConfig(pseudonym_key=KEY))
    text = json.dumps(report.to_dict())
    assert "PatientName" in report.replaced and "InstitutionName" in report.removed + report.replaced
    assert "RequestAttributesSequence" in report.removed and "OtherPatientIDs" in report.removed
    assert not [f for f in fakes if f in text]
    assert F.FAKE_DATE not in text and "20230115" not in text


def test_date_shift_keyed_per_patient_keeps_intervals(series):
    a_files, b_files, _, _ = series
    cfg = DeidConfig(pseudonym_key=KEY, date_shift_key=KEY)
    a1, a2, b = pydicom.dcmread(a_files[0]), pydicom.dcmread(a_files[1]), pydicom.dcmread(b_files[0])
    ra1, ra2, rb = deidentify(a1, cfg), deidentify(a2, cfg), deidentify(b, cfg)
    assert ra1.date_shift_days == ra2.date_shift_days == date_offset_days(KEY, "FAKEID-A-7731", 3650)
    assert rb.date_shift_days != ra1.date_shift_days  # another patient, another offset (fixed key: deterministic)
    assert a1.StudyDate == shift_date("DA", "20230115", ra1.date_shift_days) != "20230115"
    assert a1.StudyDate == a2.StudyDate
    day = lambda text: datetime.datetime.strptime(text, "%Y%m%d").date()  # noqa: E731
    assert (day(a1.ContentDate) - day(a1.StudyDate)).days == 1  # the interval survives the shift
    assert a1.ContentDate == shift_date("DA", "20230116", ra1.date_shift_days)
    assert a1.PatientBirthDate in ("", "00010101")  # birth dates are not shifted: they are removed
    assert a1.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [i.CodeValue for i in a1.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    # nested: the multi-frame's per-frame acquisition date-time moves with the patient too
    frame = b.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0].FrameAcquisitionDateTime
    assert frame == shift_date("DT", "20230115101112", rb.date_shift_days)
    assert b"20230115" not in _bytes(b)
    # another key, other offsets: the shift cannot be undone without the site's key
    other = date_offset_days(b"another-site-secret-key", "FAKEID-A-7731", 3650)
    assert other != ra1.date_shift_days


def test_pseudonyms_stable_with_a_key_and_distinct_per_patient(series):
    a_files, b_files, _, _ = series
    ids = [deidentify(pydicom.dcmread(f), DeidConfig(pseudonym_key=KEY)).pseudonym for f in (*a_files[:2], b_files[0])]
    assert ids[0] == ids[1] != ids[2]
    assert deidentify(pydicom.dcmread(a_files[0]), DeidConfig()).pseudonym != ids[0]  # random key per run


def test_burned_in_annotation_flagged(series, caplog):
    ds = pydicom.dcmread(series[0][0])
    ds.BurnedInAnnotation = "YES"
    with caplog.at_level(logging.WARNING, logger="fedimg"):
        report = deidentify(ds, DeidConfig(pseudonym_key=KEY))
    assert report.burned_in_annotation and "BurnedInAnnotation" in caplog.text


def test_config_refuses_short_keys():
    with pytest.raises(ConfigError, match="16 bytes"):
        DeidConfig(date_shift_key=b"short")
    with pytest.raises(ConfigError):
        DeidConfig(max_shift_days=0)
