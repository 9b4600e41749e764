"""Test DICOM series written from the real ds000031 head, with FAKE identifiers in every header.

No patient data: the pixels are the CC0 OpenNeuro head (tests/assets), the identifiers are
invented (``FAKE`` plus a per-tag code) and fill every text / date / UID tag of the Annex E
table, a private block and nested sequences, so a test can prove none survives. Cases:
axial, oblique (rotated plane), multi-frame enhanced MR (frames stored in reverse order),
gantry tilt (sheared stack or the ``GantryDetectorTilt`` tag; :func:`tilted_acquisition` samples the
head as a tilted scanner would), rescaled pixels.
"""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from fedimg.imageio.dicom_write import write_series
from fedimg.imageio.deid import profile_actions

HEAD = Path(__file__).resolve().parent / "assets" / "mri" / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz"
UID_ROOT = "1.2.826.0.1.3680043.10.999"  # test-only UIDs, listed in FAKE_UIDS by the factory
FAKE_DATE, FAKE_TIME = "19610412", "101112.5"
TEXT_VRS = {"PN": 30, "LO": 60, "SH": 16, "LT": 60, "ST": 60, "UT": 60, "UC": 60, "AE": 16, "CS": 16}


def head(factor: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The real head block-averaged by ``factor`` (int16) and its RAS affine (4: 48x64x64, 3.75 mm)."""
    img = nib.load(str(HEAD))
    d = np.asarray(img.dataobj).astype(np.float32)
    s = [n - n % factor for n in d.shape]
    d = d[: s[0], : s[1], : s[2]].reshape(s[0] // factor, factor, s[1] // factor, factor, s[2] // factor, factor)
    shift = np.eye(4)
    shift[:3, 3] = (factor - 1) / 2.0
    aff = img.affine @ shift @ np.diag([factor, factor, factor, 1.0])
    return np.rint(d.mean((1, 3, 5))).astype(np.int16), aff


def rotate_x(affine: np.ndarray, degrees: float) -> np.ndarray:
    """The affine of the same voxels with the world rotated about x (an oblique acquisition)."""
    a = np.radians(degrees)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return rot @ affine


def tilt(affine: np.ndarray, degrees: float) -> np.ndarray:
    """Shear the slice step towards the image's column direction (a gantry-tilted stack)."""
    out = affine.copy()
    col = out[:3, 1] / np.linalg.norm(out[:3, 1])
    out[:3, 2] = out[:3, 2] + np.tan(np.radians(degrees)) * np.linalg.norm(out[:3, 2]) * col
    return out


def tilted_acquisition(data: np.ndarray, affine: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """What a scanner tilted by ``degrees`` records of the head ``data``: its voxels sampled (cubic) at
    the sheared slice positions of :func:`tilt`, and that sheared affine. The field of view is widened
    along the columns (whole rows) so every slice still holds the whole head; outside it: the minimum."""
    from scipy import ndimage

    sheared = tilt(affine, degrees)
    t1 = float((np.linalg.inv(affine) @ sheared)[1, 2])  # rows moved per slice
    extra = int(np.ceil(abs((data.shape[2] - 1) * t1) - 1e-9))
    shift = np.eye(4)
    shift[1, 3] = -extra if t1 > 0 else 0
    sheared = sheared @ shift
    shape = (data.shape[0], data.shape[1] + extra, data.shape[2])
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    src = (np.linalg.inv(affine) @ sheared)[:3] @ np.vstack([grid, np.ones(grid.shape[1])])
    out = ndimage.map_coordinates(data.astype(np.float32), src, order=3, mode="constant", cval=float(data.min()))
    return np.rint(out.reshape(shape)).astype(data.dtype), sheared


def fake_header(patient: str = "A", *, full: bool = False) -> tuple[Dataset, list[str]]:
    """A header with fake identifiers; ``full`` fills every text/date/UID tag of the Annex E table. Returns (header, fakes)."""
    ds = Dataset()
    fakes = []

    def put(keyword, value):
        setattr(ds, keyword, value)
        fakes.append(value)

    put("PatientName", f"FAKE^PATIENT^{patient}ZQXJ")
    put("PatientID", f"FAKEID-{patient}-7731")
    put("OtherPatientIDs", f"FAKEOTHER-{patient}-4410")
    put("InstitutionName", "Fake General Hospital ZQXJ")
    put("ReferringPhysicianName", "FAKE^DOCTOR^WHO")
    put("AccessionNumber", f"FAKEACC{patient}991")
    put("StudyDescription", "FAKE study ZQXJ")
    put("StudyInstanceUID", f"{UID_ROOT}.1.{ord(patient)}")
    put("FrameOfReferenceUID", f"{UID_ROOT}.2.{ord(patient)}")
    ds.PatientBirthDate = FAKE_DATE
    ds.StudyDate, ds.SeriesDate, ds.AcquisitionDate, ds.ContentDate = "20230115", "20230115", "20230115", "20230116"
    ds.StudyTime = FAKE_TIME
    ds.PatientSex, ds.PatientAge = "F", "062Y"
    ds.BurnedInAnnotation = "NO"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ref.ReferencedSOPInstanceUID = f"{UID_ROOT}.3.{ord(patient)}"
    ds.ReferencedImageSequence = Sequence([ref])
    fakes.append(ref.ReferencedSOPInstanceUID)
    req = Dataset()
    req.RequestedProcedureID = "FAKEREQ8842"
    req.ScheduledProcedureStepID = "FAKESPS8843"
    ds.RequestAttributesSequence = Sequence([req])
    fakes += [req.RequestedProcedureID, req.ScheduledProcedureStepID]
    block = ds.private_block(0x0029, "FAKE CORP PRIVATE", create=True)
    block.add_new(0x10, "LO", "FAKE-PRIVATE-SECRET-9921")
    fakes.append("FAKE-PRIVATE-SECRET-9921")
    if full:
        fakes += _fill_table(ds)
    return ds, fakes


def _fill_table(ds: Dataset) -> list[str]:
    from pydicom.datadict import dictionary_VR, keyword_for_tag

    fakes = []
    for tag in profile_actions():
        if len(tag) != 2 or tag[0] in (0x0000, 0x0002, 0x7FE0) or tag in ds:
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if not keyword_for_tag(tag) or keyword_for_tag(tag).startswith("Retired"):
            continue
        code = f"FK{tag[0]:04X}{tag[1]:04X}"
        if vr in TEXT_VRS:
            value = code if vr in ("SH", "AE", "CS") else f"FAKE {code}"
        elif vr == "UI":
            value = f"{UID_ROOT}.9.{tag[0]}.{tag[1]}"
        elif vr == "DA":
            ds.add_new(tag, vr, FAKE_DATE)
            continue
        else:
            continue
        ds.add_new(tag, vr, value)
        fakes.append(value)
    return fakes


def write_case(out: Path, *, patient: str = "A", description: str = "T1 MPRAGE", number: int = 1,
               factor: int = 4, oblique_deg: float = 0.0, tilt_deg: float = 0.0, gantry_tag: float = 0.0,
               multiframe: bool = False, full: bool = False, scale: float = 1.0, data=None, affine=None,
               shuffle: bool = True) -> tuple[list[Path], list[str], np.ndarray, np.ndarray]:
    """Write one series; returns (files, fake identifiers, voxels as written, RAS affine as written)."""
    if data is None:
        data, affine = head(factor)
    affine = rotate_x(affine, oblique_deg) if oblique_deg else affine
    affine = tilt(affine, tilt_deg) if tilt_deg else affine
    data = (data.astype(np.float32) * scale) if scale != 1.0 else data
    header, fakes = fake_header(patient, full=full)
    if gantry_tag:
        header.GantryDetectorTilt = gantry_tag
    files = write_series(data, affine, out, header=header, series_description=description, series_number=number)
    if multiframe:
        files = [_to_multiframe(files, out)]
    elif shuffle:
        rnd = random.Random(number)
        names = [f"{rnd.getrandbits(40):010x}" for _ in files]
        files = [f.rename(f.with_name(n)) for f, n in zip(files, names)]
    return files, fakes, data, affine


def _to_multiframe(files: list[Path], out: Path) -> Path:
    """Fold single-frame files into one enhanced-MR-style multi-frame file (frames in reverse order)."""
    dss = [pydicom.dcmread(f) for f in files][::-1]
    top = dss[0].copy()
    frames = np.stack([d.pixel_array for d in dss])
    shared = Dataset()
    orient, meas, trans = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = top.ImageOrientationPatient
    meas.PixelSpacing, meas.SliceThickness = top.PixelSpacing, top.SliceThickness
    trans.RescaleSlope, trans.RescaleIntercept, trans.RescaleType = top.RescaleSlope, top.RescaleIntercept, "US"
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([meas])
    shared.PixelValueTransformationSequence = Sequence([trans])
    per = []
    for d in dss:
        fg, pos, content = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = d.ImagePositionPatient
        content.FrameAcquisitionDateTime = "20230115101112"
        fg.PlanePositionSequence = Sequence([pos])
        fg.FrameContentSequence = Sequence([content])
        per.append(fg)
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept"):
        delattr(top, kw)
    top.SharedFunctionalGroupsSequence = Sequence([shared])
    top.PerFrameFunctionalGroupsSequence = Sequence(per)
    top.SOPClassUID = top.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    top.set_pixel_data(frames, photometric_interpretation="MONOCHROME2", bits_stored=16, generate_instance_uid=False)
    for f in files:
        f.unlink()
    target = out / "enhanced.dcm"
    top.save_as(target, enforce_file_format=True)
    return target


BRATS_SERIES = (("T1 MPRAGE", 1.0), ("T1 POST GD", 1.2), ("T2 TSE", 0.8), ("FLAIR", 0.6))
SERIES_MAP = "t1: '*MPRAGE*'\nt1ce: '*GD*'\nt2: 'T2*'\nflair: '*FLAIR*'\n"


def write_exam(root: Path, *, patient: str = "A", series=BRATS_SERIES, full_first: bool = True,
               localizer: bool = True) -> list[str]:
    """One patient's exam under ``root/<fake name>/``: the given series (same grid) plus a localiser; returns the fakes."""
    data, affine = head(4)
    exam = root / f"DOE_{patient}ZQXJ"
    fakes: list[str] = []
    for i, (desc, scale) in enumerate(series):
        _, f, _, _ = write_case(exam / f"s{i + 1}", patient=patient, description=desc, number=i + 1, scale=scale,
                                data=data, affine=affine, full=full_first and i == 0)
        fakes += f
    if localizer:
        write_case(exam / "loc", patient=patient, description="localizer", number=99, data=data[:, :, 30:33],
                   affine=affine)
    (exam / "README.txt").write_text("exported by a fake PACS; not DICOM\n")
    return sorted(set(fakes))


TUMOUR_SEGMENTS = (("Necrotic core", 1), ("Peritumoral edema", 2), ("Enhancing tumor", 4))


def tumour(shape, centre=None, radius: float = 6.0) -> np.ndarray:
    """A synthetic BraTS 2021 tumour label (uint8): oedema shell, enhancing rim, necrotic core."""
    centre = np.array(shape) // 2 if centre is None else np.asarray(centre)
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(np.indices(shape), centre)))
    lab = np.zeros(shape, np.uint8)
    lab[r <= radius] = 2
    lab[r <= radius * 0.66] = 4
    lab[r <= radius * 0.33] = 1
    return lab


def write_seg(series_folder: Path, label: np.ndarray, out: Path, *, segments=TUMOUR_SEGMENTS,
              description: str = "TUMOR SEG") -> Path:
    """A DICOM SEG (highdicom, BINARY) of ``label`` (on the series' read grid, NIfTI order) over the series' images."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from fedimg.imageio.dicom import LPS_TO_RAS, find_series, read_series

    (series,) = find_series(series_folder)
    ras = read_series(series).affine
    lps = LPS_TO_RAS @ ras
    vol_affine = np.eye(4)  # highdicom volumes are (slice, row, column)
    vol_affine[:3, :3] = lps[:3, [2, 1, 0]]
    vol_affine[:3, 3] = lps[:3, 3]
    src = [pydicom.dcmread(f) for f in series.files]
    for ds in src:
        ds.StudyID = ds.get("StudyID", "1")
    masks = np.stack([np.transpose(label == code, (2, 1, 0)) for _, code in segments], axis=-1).astype(np.uint8)
    volume = hd.Volume(masks, vol_affine, "PATIENT", frame_of_reference_uid=src[0].FrameOfReferenceUID,
                       channels={"SegmentNumber": list(range(1, len(segments) + 1))})
    descs = [hd.seg.SegmentDescription(segment_number=i + 1, segment_label=name,
                                       segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                                       segmented_property_type=codes.SCT.Neoplasm, algorithm_type="MANUAL")
             for i, (name, _) in enumerate(segments)]
    seg = hd.seg.Segmentation(source_images=src, pixel_array=volume, segmentation_type="BINARY",
                              segment_descriptions=descs, series_instance_uid=hd.UID(), series_number=50,
                              sop_instance_uid=hd.UID(), instance_number=1, manufacturer="fedimg test",
                              manufacturer_model_name="synthetic", software_versions="0", device_serial_number="0",
                              series_description=description)
    out.mkdir(parents=True, exist_ok=True)
    seg.save_as(out / "seg.dcm")
    return out / "seg.dcm"
