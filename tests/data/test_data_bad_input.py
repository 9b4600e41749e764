"""Every bad input gives one clear InputError naming the file, and no input is modified."""

import gzip
import json

import numpy as np
import pytest
from data_helpers import AFFINE, SHAPE, label_map, save, write_brats_case, write_msd

from fedimg.data import discover, load_case
from fedimg.errors import InputError


def _load_all(root, **kw):
    return [load_case(c) for c in discover(root, **kw)]


def _case(tmp_path, layout="brats2021"):
    return write_brats_case(tmp_path / "data", "c1", layout)


def _expect(root, file_name, *patterns, **kw):
    with pytest.raises(InputError) as err:
        _load_all(root, **kw)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert file_name in msg, msg
    for p in patterns:
        assert p in msg, msg
    return msg


# Each entry: (id, mutate(folder) -> name of the file the message must name, words it must contain)
def _missing_modality(f):
    (f / "c1_t1ce.nii.gz").unlink()
    return "c1_t1ce.nii.gz", ["missing t1ce modality"]


def _missing_label(f):
    (f / "c1_seg.nii.gz").unlink()
    return "c1_seg.nii.gz", ["missing segmentation"]


def _shape_mismatch(f):
    save(np.zeros((8, 9, 11), np.float32), f / "c1_t2.nii.gz")
    return "c1_t2.nii.gz", ["shape (8, 9, 11)", "c1_t1.nii.gz"]


def _affine_mismatch(f):
    aff = AFFINE.copy()
    aff[0, 3] += 1.0
    save(np.zeros(SHAPE, np.float32), f / "c1_flair.nii.gz", affine=aff)
    return "c1_flair.nii.gz", ["different affine"]


def _label_shape_mismatch(f):
    save(np.zeros((8, 9, 9), np.uint8), f / "c1_seg.nii.gz")
    return "c1_seg.nii.gz", ["shape"]


def _nan(f):
    a = np.ones(SHAPE, np.float32)
    a[1, 2, 3] = np.nan
    save(a, f / "c1_t1ce.nii.gz")
    return "c1_t1ce.nii.gz", ["1 NaN/Inf"]


def _inf(f):
    a = np.ones(SHAPE, np.float32)
    a[0, 0, :2] = np.inf
    save(a, f / "c1_flair.nii.gz")
    return "c1_flair.nii.gz", ["2 NaN/Inf"]


def _corrupt(f):
    (f / "c1_t2.nii.gz").write_bytes(b"this is not a NIfTI file at all" * 20)
    return "c1_t2.nii.gz", ["not a readable NIfTI"]


def _corrupt_gzip_header(f):
    (f / "c1_t2.nii.gz").write_bytes(gzip.compress(b"\0" * 400))
    return "c1_t2.nii.gz", ["not a readable NIfTI"]


def _truncated(f):
    p = f / "c1_t1.nii.gz"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    return "c1_t1.nii.gz", ["truncated"]


def _truncated_voxels(f):
    # a larger, incompressible file whose header survives the cut but whose voxels do not
    for mod in ("t1", "t1ce", "t2", "flair", "seg"):
        save(np.random.default_rng(1).integers(0, 3, (40, 40, 40)), f / f"c1_{mod}.nii.gz", dtype=np.uint8)
    p = f / "c1_t2.nii.gz"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return "c1_t2.nii.gz", ["corrupt or truncated (reading its voxels failed"]


def _two_d(f):
    save(np.zeros((8, 9), np.float32), f / "c1_t1.nii.gz")
    return "c1_t1.nii.gz", ["2-D", "3-D volume"]


def _single_slice(f):
    save(np.zeros((8, 9, 1), np.float32), f / "c1_t1.nii.gz")
    return "c1_t1.nii.gz", ["2-D"]


def _five_d(f):
    save(np.zeros((*SHAPE, 1, 2), np.float32), f / "c1_flair.nii.gz")
    return "c1_flair.nii.gz", ["5-D", "3-D volume"]


def _four_d(f):
    save(np.zeros((*SHAPE, 3), np.float32), f / "c1_t2.nii.gz")
    return "c1_t2.nii.gz", ["4-D"]


def _bad_label_value(f):
    lab = label_map("brats2021")
    lab[0, 0, 0] = 3  # a BraTS 2023 code in a 2021 folder
    save(lab, f / "c1_seg.nii.gz", dtype=np.uint8)
    return "c1_seg.nii.gz", ["label value(s) 3", "[0, 1, 2, 4]"]


def _fractional_label(f):
    lab = label_map("brats2021").astype(np.float32)
    lab[0, 0, 0] = 0.5
    save(lab, f / "c1_seg.nii.gz")
    return "c1_seg.nii.gz", ["non-integer"]


def _duplicate_modality(f):
    save(np.zeros(SHAPE, np.float32), f / "other_t1.nii.gz")
    return "_t1.nii.gz", ["keep only one"]


CASES = [
    _missing_modality, _missing_label, _shape_mismatch, _affine_mismatch, _label_shape_mismatch,
    _nan, _inf, _corrupt, _corrupt_gzip_header, _truncated, _truncated_voxels, _two_d, _single_slice, _five_d, _four_d,
    _bad_label_value, _fractional_label, _duplicate_modality,
]


@pytest.mark.parametrize("mutate", CASES, ids=[f.__name__.strip("_") for f in CASES])
def test_bad_brats_case(tmp_path, hashed, mutate):
    folder = _case(tmp_path)
    name, words = mutate(folder)
    check = hashed(tmp_path / "data")
    _expect(tmp_path / "data", name, *words)
    check.assert_unchanged()


def test_bad_label_value_brats2023(tmp_path, hashed):
    folder = _case(tmp_path, "brats2023")
    lab = label_map("brats2023")
    lab[1, 1, 1] = 4  # a 2021 code in a 2023 folder
    save(lab, folder / "c1-seg.nii.gz", dtype=np.uint8)
    check = hashed(tmp_path / "data")
    _expect(tmp_path / "data", "c1-seg.nii.gz", "label value(s) 4", "brats2023")
    check.assert_unchanged()


def test_empty_folder(tmp_path, hashed):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    check = hashed(tmp_path / "empty")
    _expect(tmp_path / "empty", "empty", "contains no cases")
    check.assert_unchanged()


def test_missing_folder_and_file_root(tmp_path):
    _expect(tmp_path / "nope", "nope", "does not exist")
    (tmp_path / "f.nii.gz").write_bytes(b"")
    _expect(tmp_path / "f.nii.gz", "f.nii.gz", "is a file")


@pytest.mark.parametrize(
    "problem", ["label_value", "three_d", "missing_image", "bad_json", "wrong_modality", "no_training"]
)
def test_bad_msd(tmp_path, hashed, problem):
    root = write_msd(tmp_path / "Task01", n=1, n_test=0)
    meta_path = root / "dataset.json"
    if problem == "label_value":
        lab = label_map("msd")
        lab[0, 0, 0] = 4  # BraTS's enhancing code is not an MSD label
        save(lab, root / "labelsTr" / "BRATS_001.nii.gz", dtype=np.uint8)
        name, words = "labelsTr/BRATS_001.nii.gz", ["label value(s) 4", "msd"]
    elif problem == "three_d":
        save(np.zeros(SHAPE, np.float32), root / "imagesTr" / "BRATS_001.nii.gz")
        name, words = "imagesTr/BRATS_001.nii.gz", ["4 channels"]
    elif problem == "missing_image":
        (root / "imagesTr" / "BRATS_001.nii.gz").unlink()
        name, words = "imagesTr/BRATS_001.nii.gz", ["listed in dataset.json but missing"]
    elif problem == "bad_json":
        meta_path.write_text("{not json")
        name, words = "dataset.json", ["not valid JSON"]
    elif problem == "wrong_modality":
        meta = json.loads(meta_path.read_text())
        meta["modality"] = {"0": "T1w", "1": "t1gd", "2": "T2w", "3": "FLAIR"}
        meta_path.write_text(json.dumps(meta))
        name, words = "dataset.json", ["Task01_BrainTumour order"]
    else:
        meta = json.loads(meta_path.read_text())
        meta["training"] = []
        meta_path.write_text(json.dumps(meta))
        name, words = "Task01", ["contains no cases"]
    check = hashed(root)
    _expect(root, name, *words)
    check.assert_unchanged()
