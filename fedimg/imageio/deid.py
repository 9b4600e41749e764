"""DICOM header de-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile.

The actions per tag (X remove, Z empty, D dummy, U new UID, and their combinations) are
dicom-anonymizer's Annex E tables (:data:`PROFILE_TABLE`); they are applied to the dataset
and to every dataset nested in its sequences (the package itself only visits the top
level). On top, pydicom sets what the tables do not:

- ``PatientIdentityRemoved`` (0012,0062) = ``YES``, ``DeidentificationMethod`` (0012,0063)
  and ``DeidentificationMethodCodeSequence`` (0012,0064) with CID 7050 codes:
  113100 (basic profile), 113107 (dates modified, with ``date_shift_key``), 113102
  (recognisable visual features cleaned, when the caller defaced the pixels);
- ``LongitudinalTemporalInformationModified`` (0028,0303) ``MODIFIED`` or ``REMOVED``;
- ``PatientID`` / ``PatientName``: a keyed pseudonym (HMAC-SHA256 of the original ID), the same
  for every file of a patient, so cases stay apart without naming anyone.

Private tags are removed by default. With ``date_shift_key`` every date (DA, DT) in the
tables is moved back by a keyed per-patient number of days (1 to ``max_shift_days``), so
intervals within a patient are kept. ``BurnedInAnnotation`` = YES is flagged (pixels may
show text; the profile cannot clean it). The :class:`DeidReport` lists which tags were
removed, emptied or replaced, by keyword or tag number: never a value.

>>> date_offset_days(b"site secret", "PAT-1", 3650) == date_offset_days(b"site secret", "PAT-1", 3650)
True
>>> shift_date("DA", "20240301", 1)
'20240229'
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import hmac
import logging
import secrets
from typing import Any

from fedimg import __version__

__all__ = ["DeidConfig", "DeidReport", "deidentify", "date_offset_days", "pseudonym", "shift_date",
           "profile_actions", "PROFILE_TABLE", "CODES"]

log = logging.getLogger(__name__)

#: dicom-anonymizer's newest Annex E table shipped with 2.1.
PROFILE_TABLE = "dicomfields_2026c"
#: CID 7050 De-identification Method codes (coding scheme DCM).
CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "features": ("113102", "Clean Recognizable Visual Features Option"),
    "dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
}
_BIRTH_DATE = (0x0010, 0x0030)
#: Source / Sending / Receiving Application Entity Title in the file meta (not in the Annex E table).
_META_AE = (0x00020016, 0x00020017, 0x00020018)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeidConfig:
    """How to de-identify. ``pseudonym_key``: keep it to get the same pseudonyms on a later run (random by default)."""

    remove_private: bool = True
    date_shift_key: bytes | None = None
    max_shift_days: int = 3650
    pseudonym_key: bytes = dataclasses.field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    pixels_defaced: bool = False

    def __post_init__(self) -> None:
        from fedimg.errors import ConfigError

        if self.max_shift_days < 1:
            raise ConfigError("max_shift_days must be >= 1")
        if self.date_shift_key is not None and len(self.date_shift_key) < 16:
            raise ConfigError("the date-shift key must hold at least 16 bytes; make one with "
                              "`python -c \"import secrets; print(secrets.token_hex(32))\" > date.key`")
        if len(self.pseudonym_key) < 16:
            raise ConfigError("pseudonym_key must hold at least 16 bytes")


@dataclasses.dataclass(kw_only=True)
class DeidReport:
    """What was done to one dataset: tag names only, never values."""

    removed: list[str]
    emptied: list[str]
    replaced: list[str]
    private_removed: int
    burned_in_annotation: bool
    date_shift_days: int | None
    pseudonym: str
    codes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def pseudonym(key: bytes, patient_id: str) -> str:
    """A stable, keyed pseudonym for a patient: ``anon-`` and 12 hex digits."""
    return "anon-" + _hmac(key, "pseudonym:" + patient_id).hex()[:12]


def date_offset_days(key: bytes, patient_id: str, max_days: int) -> int:
    """Days (1 .. ``max_days``) to move this patient's dates back; keyed, so not guessable without the key."""
    return 1 + int.from_bytes(_hmac(key, "date-shift:" + patient_id)[:8], "big") % max_days


def shift_date(vr: str, value: str, days: int) -> str:
    """``value`` (DA ``YYYYMMDD`` or DT ``YYYYMMDD...``) moved back ``days``; DT keeps only its date; '' if unparsable."""
    text = str(value).strip()
    try:
        day = _dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (day - _dt.timedelta(days=days)).strftime("%Y%m%d")


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    from dicomanonymizer.simpledicomanonymizer import initialize_actions

    return initialize_actions(PROFILE_TABLE)


def profile_actions(extra: dict | None = None) -> dict:
    """The Annex E table as dicom-anonymizer actions (tag -> function), with ``extra`` overrides."""
    actions = dict(_table())
    actions.update(extra or {})
    return actions


def _present(ds, actions: dict) -> dict:
    """The actions for the tags ``ds`` holds (and the repeating groups): the package then skips ~650 lookups."""
    present = {(e.tag.group, e.tag.element) for e in ds}
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        present |= {(e.tag.group, e.tag.element) for e in meta}
    return {t: a for t, a in actions.items() if len(t) != 2 or t in present}


def _date_rules(days: int) -> dict:
    from pydicom.datadict import dictionary_VR

    def shift(dataset, tag):
        elem = dataset.get(tag)
        if elem is not None and elem.value not in (None, ""):
            values = elem.value if isinstance(elem.value, (list, tuple)) or hasattr(elem.value, "append") else [elem.value]
            shifted = [shift_date(elem.VR, v, days) for v in values]
            elem.value = shifted[0] if len(shifted) == 1 else shifted

    rules = {}
    for tag in _table():
        if len(tag) != 2 or tag == _BIRTH_DATE:
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr in ("DA", "DT"):
            rules[tag] = shift
    return rules


def _nested(ds):
    for elem in ds:
        if elem.VR == "SQ" and elem.value is not None:
            for item in elem.value:
                yield item
                yield from _nested(item)


def _fingerprint(ds) -> dict[Any, tuple[str, str]]:
    """tag -> (name, digest of the value); digests stay in memory, only names are reported."""
    out = {}
    for elem in ds:
        if elem.tag == 0x7FE00010:
            continue
        name = elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
        out[elem.tag] = (name, hashlib.sha256(repr(elem.value).encode()).hexdigest())
    return out


def _is_empty(elem) -> bool:
    v = elem.value
    return v in (None, "", b"", "00010101", "000000.00", "00010101010101.000000+0000") or (
        hasattr(v, "__len__") and not isinstance(v, (str, bytes)) and len(v) == 0)


def deidentify(ds, config: DeidConfig) -> DeidReport:
    """De-identify one pydicom dataset in place; returns what was done (tag names only)."""
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    patient = str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")
    days = None if config.date_shift_key is None else date_offset_days(config.date_shift_key, patient, config.max_shift_days)
    extra = _date_rules(days) if days is not None else {}
    before = _fingerprint(ds)
    n_private = sum(1 for e in ds if e.tag.is_private)
    burned = str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES"
    actions = profile_actions(extra)
    for item in [*_nested(ds), ds]:
        rules = _present(item, actions)
        anonymize_dataset(item, None, config.remove_private, lambda rules=rules: rules)
    meta = getattr(ds, "file_meta", None)
    for tag in _META_AE if meta is not None else ():
        if tag in meta:  # station AE titles in the file meta name the sending site
            del meta[tag]
    alias = pseudonym(config.pseudonym_key, patient)
    ds.PatientID, ds.PatientName = alias, alias
    codes = ["basic"] + (["features"] if config.pixels_defaced else []) + (["dates"] if days is not None else [])
    ds.PatientIdentityRemoved = "YES"
    method = ["DICOM PS3.15 Annex E basic profile", f"fedimg {__version__}, dicom-anonymizer {PROFILE_TABLE}"]
    method += ["dates shifted per patient (keyed)"] if days is not None else []
    method += ["private tags kept"] if not config.remove_private else []
    ds.DeidentificationMethod = method
    seq = []
    for key in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = CODES[key][0], "DCM", CODES[key][1]
        seq.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(seq)
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if days is not None else "REMOVED"
    removed, emptied, replaced = [], [], []
    for tag, (name, digest) in before.items():
        if tag.is_private and tag not in ds:
            continue
        if tag not in ds:
            removed.append(name)
        elif _fingerprint_one(ds[tag]) != digest:
            (emptied if _is_empty(ds[tag]) else replaced).append(name)
    if burned:
        log.warning("BurnedInAnnotation is YES: the pixels may show names or dates that header de-identification "
                    "cannot remove; review the images")
    return DeidReport(removed=sorted(removed), emptied=sorted(emptied), replaced=sorted(replaced),
                      private_removed=n_private - sum(1 for e in ds if e.tag.is_private),
                      burned_in_annotation=burned, date_shift_days=days, pseudonym=alias,
                      codes=[CODES[k][0] for k in codes])


def _fingerprint_one(elem) -> str:
    return hashlib.sha256(repr(elem.value).encode()).hexdigest()
