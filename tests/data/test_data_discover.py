"""Reading BraTS 2021, BraTS 2023 and MSD Task01 data sets written by the tests."""

import json

import nibabel as nib
import numpy as np
import pytest
from data_helpers import AFFINE, OFFSET, SHAPE, label_map, save, write_brats_case

from fedimg.data import Case, discover, load_case
from fedimg.errors import InputError


def _check_arrays(arrays, layout):
    assert arrays.image.dtype == np.float32 and arrays.image.shape == (4, *SHAPE)
    # channel order t1, t1ce, t2, flair whatever the layout's file order
    means = arrays.image.reshape(4, -1).mean(1)
    assert np.all(np.abs(means - np.array([OFFSET[m] for m in ("t1", "t1ce", "t2", "flair")])) < 1.0)
    assert arrays.regions.dtype == np.uint8 and arrays.regions.shape == (3, *SHAPE)
    lab = label_map(layout)
    np.testing.assert_array_equal(arrays.label, lab)
    tc, wt, et = arrays.regions.astype(bool)
    assert wt.sum() == (lab > 0).sum() and et.sum() == 2 and tc.sum() == 3 * 3 * 4
    assert (tc <= wt).all() and (et <= tc).all()
    np.testing.assert_allclose(arrays.affine, AFFINE)


@pytest.mark.parametrize("fixture", ["brats2021", "brats2023", "msd"])
def test_discover_and_load_each_layout(fixture, request, hashed):
    root = request.getfixturevalue(fixture)
    check = hashed(root)
    cases = discover(root)
    assert [c.layout for c in cases] == [fixture] * len(cases)
    assert [c.case_id for c in cases] == sorted(c.case_id for c in cases)
    assert all(c.label is not None and c.label.is_file() for c in cases)
    arrays = load_case(cases[0])
    _check_arrays(arrays, fixture)
    assert arrays.reference == cases[0].images[0]
    check.assert_unchanged()


def test_brats2021_names_and_order(brats2021):
    case = discover(brats2021)[0]
    assert case.case_id == "BraTS2021_00000"
    assert [p.name for p in case.images] == [
        f"BraTS2021_00000_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")
    ]
    assert case.label.name == "BraTS2021_00000_seg.nii.gz"


def test_msd_channels_are_reordered(msd):
    cases = discover(msd)
    assert [c.case_id for c in cases] == ["BRATS_001", "BRATS_002"]
    assert len(cases[0].images) == 1
    img = load_case(cases[0]).image
    assert np.all(np.abs(img[:, 0, 0, 0] - [OFFSET["t1"], OFFSET["t1ce"], OFFSET["t2"], OFFSET["flair"]]) < 1)


def test_msd_test_images_without_labels(msd):
    cases = discover(msd, require_labels=False)
    assert len(cases) == 3 and cases[-1].label is None
    arrays = load_case(cases[-1])
    assert arrays.regions is None and arrays.label is None and arrays.image.shape == (4, *SHAPE)


def test_single_case_folder_and_unlabelled(tmp_path):
    folder = write_brats_case(tmp_path, "c1", "brats2023", seg=False, ext=".nii")
    with pytest.raises(InputError, match="c1-seg.nii: missing segmentation"):
        discover(folder)
    (case,) = discover(folder, require_labels=False)
    assert case.case_id == "c1" and case.label is None and case.layout == "brats2023"
    arrays = load_case(case)
    assert arrays.regions is None and arrays.image.shape == (4, *SHAPE)


def test_other_files_are_ignored(brats2021):
    (brats2021 / "README.md").write_text("notes")
    (brats2021 / "site.json").write_text("{}")
    (brats2021 / "notes").mkdir()
    (brats2021 / "notes" / "todo.txt").write_text("a folder of other files is not a case folder")
    (brats2021 / "BraTS2021_00000" / "pred.nii.gz").write_bytes(b"")
    assert len(discover(brats2021)) == 3


def test_folder_of_sites_gets_a_hint(tmp_path):
    write_brats_case(tmp_path / "site-1", "a")
    with pytest.raises(InputError, match=r"contains no cases.*folder of sites.*site-1"):
        discover(tmp_path)


def test_case_is_frozen_and_validated(tmp_path):
    c = Case("x", tuple(tmp_path / f"{m}.nii.gz" for m in "abcd"), None, "brats2021")
    with pytest.raises(AttributeError):
        c.case_id = "y"
    with pytest.raises(ValueError):
        Case("x", (tmp_path / "a.nii.gz",), None, "brats2021")
    with pytest.raises(ValueError):
        Case("x", (tmp_path / "a.nii.gz",), None, "brats2019")


def _record(img):
    """A defacing record for ``img`` as ``fedimg deface`` writes it (content hash of the image as read)."""
    from fedimg.imageio.provenance import voxel_sha256, write_deface_record
    from fedimg.imageio.volume import load_volume

    write_deface_record(img, source=img, reference=img.name, version="t", mode="zero", qc={"passed": True},
                        qc_report="x.qc.json", voxel_hash=voxel_sha256(load_volume(img, require_signal=False)))


def test_identifiable_gate(brats2021):
    with pytest.raises(InputError) as err:
        discover(brats2021, allow_identifiable=False)
    msg = str(err.value)
    assert "--allow-identifiable" in msg and "fedimg deface" in msg and "_t1.nii.gz" in msg
    cases = discover(brats2021)
    for case in cases:
        for img in case.images:
            _record(img)
    assert len(discover(brats2021, allow_identifiable=False)) == 3
    first = cases[0].images[0]
    side = first.with_name(first.name.replace(".nii.gz", ".deface.json"))
    good = side.read_text()
    # a header tag alone is not enough
    side.unlink()
    nii = nib.load(str(first))
    nii.header["descrip"] = b"fedimg-defaced 0.1.0"
    nib.save(nib.Nifti1Image(np.asarray(nii.dataobj), nii.affine, nii.header), str(first))
    with pytest.raises(InputError, match=r"_t1.nii.gz: has only a header tag .* re-run `fedimg deface`"):
        discover(brats2021, allow_identifiable=False)
    # a record without a content hash (older fedimg, or hand-written) is not enough
    side.write_text(json.dumps({"defaced": True}))
    with pytest.raises(InputError, match="has no content hash"):
        discover(brats2021, allow_identifiable=False)
    # the header change above kept the voxels: the original record still matches
    side.write_text(good)
    assert len(discover(brats2021, allow_identifiable=False)) == 3


def test_identifiable_gate_checks_contents(brats2021):
    cases = discover(brats2021)
    for case in cases:
        for img in case.images:
            _record(img)
    a, b = cases[0].images[1], cases[1].images[1]
    side_a = a.with_name(a.name.replace(".nii.gz", ".deface.json"))
    side_b = b.with_name(b.name.replace(".nii.gz", ".deface.json"))
    # a sidecar copied from another case does not match this image
    kept = side_b.read_text()
    side_b.write_text(side_a.read_text())
    with pytest.raises(InputError) as err:
        discover(brats2021, allow_identifiable=False)
    assert str(err.value).startswith(str(b)) and "does not match its defacing record" in str(err.value)
    side_b.write_text(kept)
    # one voxel edited after defacing
    nii = nib.load(str(a))
    data = np.asarray(nii.dataobj).copy()
    data[0, 0, 0] += 1
    nib.save(nib.Nifti1Image(data, nii.affine, nii.header), str(a))
    with pytest.raises(InputError, match="changed after defacing"):
        discover(brats2021, allow_identifiable=False)
    # the voxels restored (a rewritten file, not a byte copy) match again
    data[0, 0, 0] -= 1
    nib.save(nib.Nifti1Image(data, nii.affine, nii.header), str(a))
    assert len(discover(brats2021, allow_identifiable=False)) == 3


def test_float_labels_with_integer_values_are_accepted(tmp_path):
    folder = write_brats_case(tmp_path, "c", "brats2021")
    save(label_map("brats2021").astype(np.float32), folder / "c_seg.nii.gz")
    arrays = load_case(discover(folder)[0])
    assert arrays.label.dtype == np.uint8 and set(np.unique(arrays.label)) == {0, 1, 2, 4}
