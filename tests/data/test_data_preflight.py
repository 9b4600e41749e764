"""Content checks, empty case folders and the pre-flight of whole sites: every problem, one line each."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import SHAPE, save, write_brats_case, write_msd

from fedimg.data import discover, load_case
from fedimg.data.discover import msd_image_case
from fedimg.data.load import check_content
from fedimg.data.preflight import check_site, check_sites, problems_error, screen_cases
from fedimg.errors import InputError


def test_check_content():
    rng = np.random.default_rng(0)
    check_content(rng.random((20, 20, 20)), "ok.nii.gz")
    with pytest.raises(InputError, match=r"z.nii.gz: image is constant \(every voxel is 0\)"):
        check_content(np.zeros((20, 20, 20), np.float32), "z.nii.gz")
    with pytest.raises(InputError, match=r"is constant \(every voxel is 7\)"):
        check_content(np.full((20, 20, 20), 7, np.int16), "c.nii.gz")
    speck = np.zeros((20, 20, 20), np.float32)
    speck[0, 0, :40 // 5] = 1.0  # 8 of 8000 voxels: 0.1 %
    with pytest.raises(InputError, match=r"only 8 non-zero voxels \(0.1 % of 8000\), too few for a head"):
        check_content(speck, "s.nii.gz")
    speck[:2] = 1.0  # 10 %: a head
    check_content(speck, "s.nii.gz")


@pytest.mark.parametrize("fill, words", [(0.0, "is constant (every voxel is 0)"), (5.0, "is constant (every voxel is 5)")])
def test_load_case_refuses_blank_image(tmp_path, fill, words):
    folder = write_brats_case(tmp_path / "site", "c1")
    save(np.full(SHAPE, fill, np.float32), folder / "c1_flair.nii.gz")
    with pytest.raises(InputError) as err:
        load_case(discover(tmp_path / "site")[0])
    assert "c1_flair.nii.gz" in str(err.value) and words in str(err.value)


def test_msd_blank_channel_names_the_channel(tmp_path):
    root = write_msd(tmp_path / "Task01", n=1, n_test=0)
    img = root / "imagesTr" / "BRATS_001.nii.gz"
    import nibabel as nib

    data = np.asarray(nib.load(str(img)).dataobj).copy()
    data[..., 2] = 0.0  # t1gd blank
    save(data, img)
    with pytest.raises(InputError, match=r"BRATS_001.nii.gz: channel t1gd \(t1ce\) is constant"):
        load_case(discover(root)[0])


def test_empty_case_folder_is_an_error_or_skipped_explicitly(tmp_path):
    site = tmp_path / "site"
    for i in range(2):
        write_brats_case(site, f"c{i}")
    (site / "c2").mkdir()
    with pytest.raises(InputError, match=r"c2: is an empty case folder"):
        discover(site)
    skipped: list = []
    assert [c.case_id for c in discover(site, skipped=skipped)] == ["c0", "c1"]
    assert [e.path for e in skipped] == [str(site / "c2")]
    only_empty = tmp_path / "only"
    (only_empty / "a").mkdir(parents=True)
    (only_empty / "b").mkdir()
    with pytest.raises(InputError, match=r"holds no usable case: all 2 case folder\(s\) are bad"):
        discover(only_empty, skipped=[])


def _bad_sites(tmp_path):
    """site-1 good; site-2: a blank image, a bad label, an empty case folder; site-3 missing."""
    good = tmp_path / "data" / "site-1"
    write_brats_case(good, "a0")
    bad = tmp_path / "data" / "site-2"
    write_brats_case(bad, "b0")
    f = write_brats_case(bad, "b1")
    save(np.zeros(SHAPE, np.float32), f / "b1_t2.nii.gz")
    g = write_brats_case(bad, "b2")
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:4, 2:4, 2:4] = 7
    save(lab, g / "b2_seg.nii.gz")
    (bad / "b3").mkdir()
    return {"site-1": good, "site-2": bad, "site-3": tmp_path / "data" / "site-3"}


def test_check_sites_lists_every_problem_one_line_each(tmp_path, hashed):
    sites = _bad_sites(tmp_path)
    check = hashed(tmp_path / "data")
    problems = check_sites(sites, allow_identifiable=True)
    check.assert_unchanged()
    lines = [p.line() for p in problems]
    assert len(lines) == 4, lines
    assert all("\n" not in ln for ln in lines)
    assert lines[0].startswith("site-2: ") and "b3: is an empty case folder" in lines[0]
    assert "b1_t2.nii.gz: image is constant" in lines[1]
    assert "b2_seg.nii.gz: has label value(s) 7" in lines[2]
    assert lines[3].startswith("site-3: ") and "does not exist" in lines[3]
    err = problems_error(problems)
    assert str(err).count("\n") == 4 and "nothing was started" in str(err)


def test_defacing_records_are_checked_for_every_image(tmp_path):
    site = tmp_path / "site-1"
    write_brats_case(site, "c0")
    write_brats_case(site, "c1")
    found = check_site(site, site="site-1", deep=False)
    assert len(found.problems) == 8 and all("no defacing record" in p.message for p in found.problems)
    assert check_site(site, site="site-1", allow_identifiable=True, deep=False).problems == []


def test_skip_bad_cases_keeps_the_good_ones(tmp_path):
    sites = _bad_sites(tmp_path)
    found = check_site(sites["site-2"], site="site-2", allow_identifiable=True, skip_bad_cases=True)
    assert [c.case_id for c in found.cases] == ["b0"] and not found.problems
    assert sorted(p.path.split("/")[-1] for p in found.skipped) == ["b1_t2.nii.gz", "b2_seg.nii.gz", "b3"]
    good, bad = screen_cases(discover(sites["site-1"]), site="site-1")
    assert len(good) == 1 and bad == []


def test_msd_image_case(tmp_path):
    root = write_msd(tmp_path / "Task01", n=1, n_test=1)
    case = msd_image_case(root / "imagesTs" / "BRATS_002.nii.gz")
    assert case.layout == "msd" and case.label is None and load_case(case).image.shape == (4, *SHAPE)
    with pytest.raises(InputError, match="expected a 4-D volume with 4 channels"):
        msd_image_case(root / "labelsTr" / "BRATS_001.nii.gz")
