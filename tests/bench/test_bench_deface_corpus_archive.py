"""``benchmarks/deface_corpus.py build --archive``: what hospital archives vary, drawn into the corpus.

The real ds000031 T1 (tests/assets) at 4 mm, resampled through one fixed pose with and
without each archive variation (coil shading, Rician noise, thick slices with a slice profile,
more air around the head), the other draws the same; each variation must do what it says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

HEAD = Path(__file__).resolve().parents[1] / "assets" / "mri" / "ds000031_sub-01_ses-006_run-001_T1w.nii.gz"
BASE = np.array([[0.981, 0.0413, 0.0618, -3.8733], [-0.0583, 0.9111, 0.1422, 15.5988],
                 [-0.0649, -0.1377, 0.9063, -5.4563], [0.0, 0.0, 0.0, 1.0]])
PLAIN = {"angles": (13.0, -7.0, 5.0), "scale": 1.0, "shift": [0.0, 0.0, 0.0], "warp_mm": 0.0,
         "spacing": [4.0, 4.0, 4.0], "crop": "none", "chin_mm": 0.0, "face_mm": 0.0, "contrast": "t1",
         "tumour": False, "bias": 0.0, "noise": 0.0}


@pytest.fixture(scope="module")
def head_4mm(tmp_path_factory) -> Path:
    import nibabel as nib

    img = nib.load(str(HEAD))
    d = np.asarray(img.dataobj).astype(np.float32)
    s = [n - n % 4 for n in d.shape]
    d = d[: s[0], : s[1], : s[2]].reshape(s[0] // 4, 4, s[1] // 4, 4, s[2] // 4, 4).mean((1, 3, 5))
    shift = np.eye(4)
    shift[:3, 3] = 1.5
    p = tmp_path_factory.mktemp("head4") / "head_4mm.nii.gz"
    nib.save(nib.Nifti1Image(d, img.affine @ shift @ np.diag([4.0, 4.0, 4.0, 1.0])), str(p))
    return p


def _case(corpus, head, **changes):
    return corpus.make_case(head, BASE, dict(PLAIN, **changes), np.random.default_rng(3))


def test_archive_params_draw_within_their_documented_ranges(benchmark_script):
    corpus = benchmark_script("deface_corpus")
    thick = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        plain = corpus._params(rng)
        p = corpus._archive_params(rng, plain)
        assert set(plain) <= set(p) and p["rician"] and p["slice_profile"]
        assert 0.85 <= p["scale"] <= 1.15 and 0.2 <= p["coil"] <= 0.8 and 0.02 <= p["noise"] <= 0.07
        assert 6 <= p["margin_mm"] <= 40
        thick += max(p["spacing"]) >= 4.5 and tuple(p["spacing"]) in corpus.THICK_SLICES
    assert 8 <= thick <= 32  # about half are thick-slice 2-D protocols


def test_coil_shading_brightens_the_surface_not_the_centre(benchmark_script, head_4mm):
    corpus = benchmark_script("deface_corpus")
    plain, coil = _case(corpus, head_4mm)["image"], _case(corpus, head_4mm, coil=0.6)["image"]
    assert plain.shape == coil.shape
    head = plain > 0.1 * np.percentile(plain, 99)
    from scipy import ndimage as ndi

    depth = ndi.distance_transform_edt(head, sampling=4.0)
    ratio = coil[head] / plain[head]
    surface, deep = ratio[depth[head] <= 8], ratio[depth[head] >= 0.8 * depth.max()]
    # gain 1 + 0.6 (r / R)^2: about 1.1 in the deep core (not the head's centre), 1.4-1.6 at the skin
    assert np.median(deep) < 1.25 and np.median(surface) > 1.2 * np.median(deep), (np.median(deep), np.median(surface))


def test_rician_noise_is_rayleigh_in_the_air(benchmark_script, head_4mm):
    corpus = benchmark_script("deface_corpus")
    sigma = 0.05
    gauss = _case(corpus, head_4mm, noise=sigma, margin_mm=30.0)["image"] / 1000
    rice = _case(corpus, head_4mm, noise=sigma, margin_mm=30.0, rician=True)["image"] / 1000
    air = (gauss < 3 * sigma) & (rice < 4 * sigma)
    air[3:-3, 3:-3, 3:-3] = False  # the border of the grid: 24-30 mm from the head, air only
    # |N(0, s)| has mean s sqrt(2/pi) = 0.80 s; the magnitude of complex noise (Rayleigh) s sqrt(pi/2) = 1.25 s
    assert abs(gauss[air].mean() / sigma - 0.80) < 0.08 and abs(rice[air].mean() / sigma - 1.25) < 0.1


def test_thick_slices_average_over_their_thickness_and_margin_adds_air(benchmark_script, head_4mm):
    corpus = benchmark_script("deface_corpus")
    thick = {"spacing": [4.0, 4.0, 6.0]}
    point, profile = _case(corpus, head_4mm, **thick)["image"], _case(corpus, head_4mm, slice_profile=True, **thick)["image"]
    head = point > 0.1 * np.percentile(point, 99)
    assert not np.allclose(point, profile)
    # averaged over 6 mm, neighbouring slices share tissue: they differ less from one to the next
    assert np.abs(np.diff(profile, axis=2))[head[:, :, 1:]].mean() < 0.95 * np.abs(np.diff(point, axis=2))[head[:, :, 1:]].mean()
    wide = _case(corpus, head_4mm, margin_mm=30.0)
    assert all(w - n in (11, 12, 13) for w, n in zip(wide["image"].shape, _case(corpus, head_4mm)["image"].shape))
    assert wide["reference"].sum() > 100 and wide["brain"].sum() > 100
