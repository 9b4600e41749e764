"""fedimg synth: layout, reproducibility, realism (tumour in brain, contrasts, site differences), bad options."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from data_helpers import rel_hashes

from fedimg.cli import main
from fedimg.data import discover, load_case
from fedimg.data.anatomy import load_anatomy
from fedimg.data.synth import site_profile, synth_case


def _synth(out: Path, *extra: str, sites=2, cases=2, seed=3, spacing="4") -> int:
    return main(["-q", "synth", "--out", str(out), "--sites", str(sites), "--cases-per-site", str(cases),
                 "--seed", str(seed), "--spacing", spacing, *extra])


@pytest.fixture(scope="module")
def synth2mm(tmp_path_factory) -> Path:
    """3 sites x 2 cases at the default 2 mm spacing (about 10 s on 2 cores)."""
    out = tmp_path_factory.mktemp("synth") / "data"
    assert main(["-q", "synth", "--out", str(out), "--sites", "3", "--cases-per-site", "2", "--seed", "0"]) == 0
    return out


def test_layout_and_reading_back(synth2mm):
    assert sorted(p.name for p in synth2mm.iterdir()) == ["README.md", "site-1", "site-2", "site-3", "synth.json"]
    readme = (synth2mm / "README.md").read_text()
    assert "synthetic" in readme.lower() and "MIT" in readme and "faces" in readme.lower()
    for site in ("site-1", "site-2", "site-3"):
        assert (synth2mm / site / "site.json").is_file()
        cases = discover(synth2mm / site)
        assert len(cases) == 2 and {c.layout for c in cases} == {"brats2021"}
        for case in cases:
            assert case.case_id.startswith(site.replace("-", ""))
            nii = nib.load(str(case.images[0]))
            assert nii.get_data_dtype() == np.int16 and nib.aff2axcodes(nii.affine) == ("R", "A", "S")
            assert np.allclose(nii.header.get_zooms(), 2.0, atol=0.06)  # template voxels are 1 x 0.977 x 0.977 mm
            arrays = load_case(case)  # full validation of every file
            assert set(np.unique(arrays.label).tolist()) <= {0, 1, 2, 4}
            assert arrays.regions[1].sum() > 50, "every case has a tumour"
            assert arrays.image.shape[1:] == arrays.label.shape and min(arrays.label.shape) >= 80


def test_tumour_inside_brain_and_contrasts():
    anat = load_anatomy(2.0)
    site = site_profile(0, 1)
    for i in range(2):
        case = synth_case(anat, site, np.random.default_rng(100 + i))
        label, brain, img = case["label"], case["brain"], case["images"].astype(np.float32)
        assert label.any() and (brain[label > 0] >= 0.5).all(), "tumour outside the brain"
        normal = (brain > 0.9) & (label == 0)
        t1, t1ce, t2, flair = img
        oedema = label == 2
        assert flair[oedema].mean() > 1.2 * flair[normal].mean()
        assert t2[oedema].mean() > 1.2 * t2[normal].mean()
        core = np.isin(label, (1, 4))
        assert t1[core].mean() < t1[normal].mean()
        if (label == 4).sum() > 20:
            assert t1ce[label == 4].mean() > 1.2 * t1ce[normal].mean()
            if (label == 1).sum() > 5:
                assert t1ce[label == 4].mean() > t1ce[label == 1].mean()


def test_sites_differ(synth2mm):
    means = []
    for site in ("site-1", "site-2", "site-3"):
        case = discover(synth2mm / site)[0]
        img = load_case(case).image
        head = img[0] > np.percentile(img[0], 60)
        means.append([float(img[k][head].mean()) for k in range(4)])
    means = np.array(means)
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(np.log(means[a] / means[b])).max() > np.log(1.15), means


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_site_profiles_are_non_iid(seed):
    p = [site_profile(seed, i) for i in range(1, 5)]
    for a, b in zip(p, p[1:]):
        assert min(sb / sa for sa, sb in zip(a.scale, b.scale)) > 1.15
    assert len({q.median_radius_mm for q in p}) == 4 and len({q.p_left for q in p}) == 4
    assert site_profile(seed, 2) == p[1]


def test_reproducible_bytes(tmp_path):
    assert _synth(tmp_path / "a") == 0
    assert _synth(tmp_path / "b", "--workers", "1") == 0
    a, b = rel_hashes(tmp_path / "a"), rel_hashes(tmp_path / "b")
    assert a == b and len(a) == 2 * (2 * 5 + 1) + 2
    assert _synth(tmp_path / "c", seed=4) == 0
    c = rel_hashes(tmp_path / "c")
    assert all(c[k] != a[k] for k in a if k.endswith(".nii.gz"))
    # an earlier synth output is replaced, with the same result
    assert _synth(tmp_path / "a", sites=1) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["README.md", "site-1", "synth.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


@pytest.mark.parametrize(
    "args,words",
    [
        (["--sites", "0"], "--sites"),
        (["--cases-per-site", "0"], "--cases-per-site"),
        (["--seed", "-1"], "--seed"),
        (["--spacing", "0.5"], "--spacing"),
        (["--spacing", "nan"], "--spacing"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_bad_options(tmp_path, capsys, args, words):
    argv = ["synth", "--out", str(tmp_path / "d"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("fedimg: error:") and words in err
    assert not (tmp_path / "d").exists()


def test_refuses_foreign_or_file_output(tmp_path, capsys, hashed):
    foreign = tmp_path / "mydata"
    foreign.mkdir()
    (foreign / "scan.nii.gz").write_bytes(b"precious")
    check = hashed(foreign)
    assert _synth(foreign) == 2
    err = capsys.readouterr().err
    assert "mydata" in err and "not written by fedimg synth" in err
    check.assert_unchanged()
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    assert _synth(afile) == 2
    assert "is a file" in capsys.readouterr().err and afile.read_text() == "x"
