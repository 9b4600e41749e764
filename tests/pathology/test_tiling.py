"""Tiling the real slide: tissue-only tiles, coordinates that map back, manifest, thumbnail, labels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fedimg.errors import ConfigError, InputError
from fedimg.pathology.labels import load_annotations
from fedimg.pathology.slide import open_slide
from fedimg.pathology.store import load_tile_set
from fedimg.pathology.tiling import TileConfig, extract_tiles


@pytest.fixture(scope="module")
def tiled(tmp_path_factory, slide_path):
    out = tmp_path_factory.mktemp("tiles")
    summary = extract_tiles(slide_path, out, TileConfig(tile_size=224, mpp=0.5), progress=False)
    return out, summary


def test_outputs_and_manifest(tiled):
    out, summary = tiled
    for name in ("tiles.h5", "manifest.csv", "thumbnail.png", "tiles.json"):
        assert (out / name).is_file()
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert {"x", "y", "level", "mpp", "tissue_fraction", "label"} <= set(rows[0])
    assert len(rows) == summary["tiles"] > 20
    assert all(float(r["tissue_fraction"]) >= 0.5 and r["label"] == "" for r in rows)
    from PIL import Image

    with Image.open(out / "thumbnail.png") as im:
        assert min(im.size) >= 256


def test_tile_coordinates_map_back_to_slide(tiled, slide_path):
    out, _ = tiled
    ts = load_tile_set(out)
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert ts.x.shape[1:] == (224, 224, 3)
    with open_slide(slide_path) as s:
        for i in (0, len(ts) // 2, len(ts) - 1):
            x, y = int(rows[i]["x"]), int(rows[i]["y"])
            assert (x, y) == tuple(ts.coords[i])
            np.testing.assert_array_equal(ts.x[i], s.read_region((x, y), 0, (224, 224)))
    # tiles are tissue, not glass
    assert ts.x.reshape(len(ts), -1).mean(1).max() < 225


def test_resampled_tiles_at_coarser_mpp(tmp_path, slide_path, hashed):
    check = hashed(slide_path)
    s = extract_tiles(slide_path, tmp_path, TileConfig(tile_size=64, mpp=2.0, min_tissue=0.8), progress=False)
    ts = load_tile_set(tmp_path)
    assert ts.x.shape[1:] == (64, 64, 3) and s["level"] == 0
    with open_slide(slide_path) as sl:
        x, y = ts.coords[0]
        region = sl.read_region((int(x), int(y)), 0, (256, 256)).astype(float)
    # a 4x-downsampled tile matches the block mean of the slide region
    block = region.reshape(64, 4, 64, 4, 3).mean((1, 3))
    assert np.abs(block - ts.x[0]).mean() < 6
    check.assert_unchanged()


def test_geojson_and_csv_labels(tmp_path, slide_path):
    geo = tmp_path / "ann.geojson"
    top = [[0, 0], [2220, 0], [2220, 1500], [0, 1500], [0, 0]]
    feats = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [top]},
              "properties": {"classification": {"name": "tumour"}}}]
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    out = tmp_path / "t"
    s = extract_tiles(slide_path, out, TileConfig(tile_size=224, mpp=0.5), labels_path=geo, default_label="normal",
                      progress=False)
    ts = load_tile_set(out)
    assert s["classes"] == ["normal", "tumour"]
    centre_y = ts.coords[:, 1] + 112
    np.testing.assert_array_equal(ts.y, np.where(centre_y < 1500, 1, 0))
    assert 0 < ts.y.mean() < 1
    pts = tmp_path / "pts.csv"
    x0, y0 = ts.coords[0]
    pts.write_text(f"x,y,label\n{x0 + 5},{y0 + 5},1\n")
    ann = load_annotations(pts)
    from fedimg.pathology.labels import label_tiles

    lab, classes = label_tiles(ann, ts.coords[:, 0], ts.coords[:, 1], 224)
    assert lab[0] == 1 and (lab[1:] == -1).all() and classes == ["0", "1"]


def test_bad_labels_and_options(tmp_path, slide_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="GeoJSON"):
        load_annotations(bad)
    with pytest.raises(ConfigError):
        TileConfig(tile_size=224, overlap=224)
    with pytest.raises(InputError, match="is also an input"):
        extract_tiles(slide_path, slide_path, TileConfig(), progress=False)


def test_parallel_cached_tiling_equals_serial_uncached(slide_path):
    """Tiles cut from the level decoded for the mask, read by 2 threads, equal serial region reads."""
    from fedimg.pathology.tiling import iter_tiles, plan_tiles

    out = {}
    for threads, cache in ((1, 0), (2, 512 * 2**20)):
        with open_slide(slide_path) as s:
            s.threads, s.cache_bytes = threads, cache
            plan = plan_tiles(s, TileConfig(tile_size=128, mpp=0.5))
            assert bool(s._cache) == bool(cache)
            x = np.zeros((len(plan), 128, 128, 3), np.uint8)
            for idx, tiles in iter_tiles(s, plan, 128):
                x[idx] = tiles
            out[threads] = (plan.x, plan.y, x)
    for a, b in zip(out[1], out[2]):
        np.testing.assert_array_equal(a, b)
    assert len(out[1][0]) > 20
