"""Slide reading: OpenSlide on the real SVS, tifffile fallback, PIL images, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from fedimg.errors import InputError
from fedimg.pathology.slide import open_slide


def test_real_svs_metadata_and_region(slide_path):
    import openslide

    with open_slide(slide_path) as s:
        assert s.backend == "openslide"
        assert s.dimensions == (2220, 2967)
        assert s.mpp == pytest.approx(0.499)
        assert s.best_level_for_mpp(0.5) == 0
        region = s.read_region((600, 900), 0, (64, 48))
    assert region.shape == (48, 64, 3) and region.dtype == np.uint8
    ref = np.asarray(openslide.OpenSlide(str(slide_path)).read_region((600, 900), 0, (64, 48)))[..., :3]
    np.testing.assert_array_equal(region, ref)


def test_tifffile_fallback_reads_plain_tiff(tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, img, photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    with open_slide(path) as s:
        assert s.dimensions == (90, 120)
        assert s.mpp == pytest.approx(0.5)
        np.testing.assert_array_equal(s.read_region((10, 20), 0, (30, 40)), img[20:60, 10:40])
        # outside the image is white, like OpenSlide's transparent background
        edge = s.read_region((80, 110), 0, (20, 20))
        np.testing.assert_array_equal(edge[:10, :10], img[110:, 80:])
        assert (edge[10:, 10:] == 255).all()


@pytest.mark.parametrize("layout", [{"rowsperstrip": 16}, {"tile": (64, 64)}])
def test_tifffile_regions_decode_only_the_strips_or_tiles_they_touch(tmp_path, layout, monkeypatch):
    """A 36 MB TIFF read by the tifffile fallback (OpenSlide takes no stripped TIFF; for the tiled
    one it is made to refuse, as it does for TIFF compressions it lacks, e.g. LZMA): a region
    costs the strips or tiles it touches, never the level."""
    import tracemalloc

    import openslide
    import tifffile

    def refuse(path):
        raise openslide.OpenSlideUnsupportedFormatError(path)

    monkeypatch.setattr(openslide, "OpenSlide", refuse)

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (500, 375, 3), dtype=np.uint8).repeat(8, axis=0).repeat(8, axis=1)  # 4000 x 3000 px
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, img, photometric="rgb", compression="zlib", resolution=(2e4, 2e4), resolutionunit="CENTIMETER",
                     **layout)
    with open_slide(path) as s:
        assert s.backend == "tifffile"
        s.read_region((0, 0), 0, (8, 8))
        tracemalloc.start()
        region = s.read_region((2937, 1210), 0, (90, 70))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        np.testing.assert_array_equal(region[:, :63], img[1210:1280, 2937:3000])
        assert (region[:, 63:] == 255).all()  # beyond the right edge: white
        np.testing.assert_array_equal(s.read_level(0), img)
    assert peak < 2_000_000, peak  # strips of 144 KB or tiles of 12 KB, never the 36 MB level


def test_png_needs_mpp(tmp_path, target_path):
    with pytest.raises(InputError, match="--slide-mpp"):
        open_slide(target_path)
    with open_slide(target_path, mpp=0.5) as s:
        assert s.backend == "pil" and s.dimensions == (1000, 1000)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("broken.svs", b"\x00\x01 not a slide" * 100, "corrupt|not a readable"),
        ("broken.tif", b"II*\x00" + b"\xff" * 64, "corrupt|not a readable"),
        ("notes.xyz", b"hello", "unsupported slide format"),
        ("broken.png", b"\x89PNG\r\n\x1a\n garbage", "corrupt|not a readable"),
    ],
)
def test_corrupt_or_unsupported_files_give_clear_errors(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as err:
        open_slide(path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == content  # input untouched


def test_truncated_svs_errors_clearly(tmp_path, slide_path):
    path = tmp_path / "truncated.svs"
    path.write_bytes(slide_path.read_bytes()[:200_000])
    with pytest.raises(InputError) as err:
        with open_slide(path) as s:
            s.read_region((0, 0), 0, s.dimensions)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_slide(tmp_path / "nope.svs")


def test_parallel_strips_and_level_cache_match_plain_reads(slide_path):
    """A level read in parallel strips equals one OpenSlide read; cached regions equal fresh ones."""
    import openslide

    ref = np.asarray(openslide.OpenSlide(str(slide_path)).read_region((0, 0), 0, (2220, 2967)).convert("RGB"))
    with open_slide(slide_path) as s:
        s.threads = 2
        fresh = s.read_region((1500, 2900), 0, (300, 200))  # runs past the bottom/right edge
        level = s.read_level(0)
        assert 0 in s._cache  # 20 MB fits the default budget
        np.testing.assert_array_equal(level, ref)
        np.testing.assert_array_equal(s.read_region((1500, 2900), 0, (300, 200)), fresh)
        assert (fresh[67:] == 255).all()  # below the slide: white
    with open_slide(slide_path) as s:
        s.threads, s.cache_bytes = 1, 0
        np.testing.assert_array_equal(s.read_level(0), ref)
        assert not s._cache
