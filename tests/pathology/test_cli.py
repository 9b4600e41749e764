"""The pathology commands end to end: tiles, stain-normalize, train-tiles, synthetic sites;
bad input gives one clear line and a non-zero exit; inputs are never modified."""

from __future__ import annotations

import csv
import json

import pytest

from fedimg.cli import main


def test_tiles_then_stain_normalize(tmp_path, slide_path, target_path, hashed, capsys):
    check = hashed(slide_path, target_path)
    tiles = tmp_path / "tiles"
    rc = main(["-q", "tiles", "--slide", str(slide_path), "--out", str(tiles), "--tile-size", "128", "--mpp", "1.0",
               "--max-tiles", "12", "--no-progress"])
    assert rc == 0
    rows = list(csv.DictReader(open(tiles / "manifest.csv")))
    assert len(rows) == 12 and rows[0]["mpp"] == "1.0" and (tiles / "thumbnail.png").is_file()
    norm = tmp_path / "tiles_norm"
    before = hashed(tiles)
    rc = main(["-q", "stain-normalize", "--input", str(tiles), "--target", str(target_path), "--out", str(norm),
               "--no-progress"])
    assert rc == 0
    from fedimg.pathology.store import load_tile_set

    a, b = load_tile_set(tiles), load_tile_set(norm)
    assert a.x.shape == b.x.shape and (a.coords == b.coords).all() and (a.x != b.x).any()
    assert json.loads((norm / "stain_normalize.json").read_text())["tiles"] == 12
    before.assert_unchanged()
    check.assert_unchanged()


@pytest.mark.parametrize("content", [b"not a slide at all" * 50, b""])
def test_corrupt_slide_is_one_clear_line(tmp_path, content, capsys):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(content)
    rc = main(["tiles", "--slide", str(bad), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(bad) in err[0] and "Traceback" not in err[0]
    assert bad.read_bytes() == content and not (tmp_path / "o" / "tiles.h5").exists()


def test_unsupported_slide_and_missing_target(tmp_path, slide_path, capsys):
    odd = tmp_path / "slide.docx"
    odd.write_bytes(b"PK\x03\x04")
    assert main(["tiles", "--slide", str(odd), "--out", str(tmp_path / "o")]) == 2
    assert "unsupported slide format" in capsys.readouterr().err
    assert main(["tiles", "--out", str(tmp_path / "o")]) == 2
    assert "--slide" in capsys.readouterr().err


def test_synthetic_sites_then_train_tiles(tmp_path, hashed):
    sites = tmp_path / "pathology_sites"
    rc = main(["-q", "tiles", "--synthetic-sites", "1", "--out", str(sites), "--tiles-per-site", "16", "--tile-size", "32",
               "--mpp", "2.0"])
    assert rc == 0 and (sites / "site-1" / "tiles.h5").is_file() and (sites / "README.md").is_file()
    check = hashed(sites)
    run = tmp_path / "runs" / "tiles-site1"
    rc = main(["-q", "train-tiles", "--data", str(sites / "site-1"), "--out", str(run), "--model", "resnet10",
               "--width", "0.25", "--epochs", "1", "--batch-size", "8", "--threads", "2", "--no-progress"])
    assert rc == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"][0]["epoch"] == 1 and "auc" in metrics["epochs"][0]
    assert (run / "model.safetensors").is_file() and (run / "tb").is_dir()
    check.assert_unchanged()
    assert main(["train-tiles", "--data", str(sites / "site-1"), "--out", str(sites / "site-1" / "run")]) == 2
