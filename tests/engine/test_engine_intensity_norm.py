"""``TrainConfig.intensity_norm``: landmark standardisation through preprocessing, the data cache,
contrast augmentation, evaluation and the CLI options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.data import discover
from fedimg.engine.cache import data_fingerprint, foreground_mask, prepare_site_data, preprocess
from fedimg.engine.config import TrainConfig
from fedimg.engine.contrast import random_contrast
from fedimg.errors import ConfigError


def _scan(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 4-channel 'head' of three tissues and a tumour in an offset, noisy background."""
    rng = np.random.default_rng(seed)
    img = rng.normal(5, 1, (4, 40, 36, 30)).astype(np.float32)
    tissue = rng.integers(0, 3, (28, 28, 22))
    for c in range(4):
        img[c, 6:34, 4:32, 4:26] = 200 + 100 * tissue * (1 + 0.3 * c) + rng.normal(0, 15, tissue.shape)
    img[:, 15:20, 10:15, 10:15] += 300
    regions = np.zeros((3, 40, 36, 30), np.uint8)
    regions[:, 15:20, 10:15, 10:15] = 1
    return img, regions


def test_config_validates_intensity_norm():
    assert TrainConfig().intensity_norm == "zscore"
    assert TrainConfig(intensity_norm="landmark").intensity_norm == "landmark"
    with pytest.raises(ConfigError, match="intensity_norm 'nyul'.*zscore, landmark"):
        TrainConfig(intensity_norm="nyul")
    assert TrainConfig.from_dict(TrainConfig(intensity_norm="landmark").to_dict()).intensity_norm == "landmark"


def test_landmark_preprocessing_survives_scale_offset_and_gamma():
    img, regions = _scan()
    head = foreground_mask(img)
    raw = np.where(head, img, 0.0).astype(np.float32)
    scanner = np.where(head, 1.45 ** 2 * (raw / raw.max()) ** 0.7 * 1000 + 40, 0.0).astype(np.float32)
    a, b = preprocess(raw, regions, intensity_norm="landmark"), preprocess(scanner, regions, intensity_norm="landmark")
    za, zb = preprocess(raw, regions), preprocess(scanner, regions)
    assert a.bbox == b.bbox == za.bbox
    m = a.image != 0
    land, z = float((a.image - b.image)[m].abs().mean()), float((za.image - zb.image)[m].abs().mean())
    assert land < 0.05 and z > 2 * land  # the z-score moves with the gamma; the landmark map much less
    assert float(a.image[~m].abs().max()) == 0.0  # background stays 0
    with pytest.raises(ValueError, match="intensity_norm 'x'"):
        preprocess(raw, regions, intensity_norm="x")


def test_the_data_cache_records_and_fingerprints_the_normalisation(site):
    cases = discover(site)
    assert data_fingerprint(cases) == data_fingerprint(cases, "zscore")  # the default's fingerprint is unchanged
    assert data_fingerprint(cases, "landmark") != data_fingerprint(cases)
    cfg = TrainConfig(roi=(32, 32, 32), intensity_norm="landmark")
    data = prepare_site_data(cases, cfg, torch.device("cpu"))
    assert data.intensity_norm == "landmark" and data.fingerprint == data_fingerprint(cases, "landmark")
    z = prepare_site_data(cases, cfg.replace(intensity_norm="zscore"), torch.device("cpu"))
    assert not torch.equal(data.val[0].image, z.val[0].image)


def test_evaluation_refuses_data_cached_with_another_normalisation(site):
    from fedimg.tasks import get_task

    task = get_task("brats")
    cfg = task.config_from_dict({"roi": [32, 32, 32], "intensity_norm": "landmark"})
    data = prepare_site_data(discover(site)[:3], cfg, torch.device("cpu"))
    model = task.build_model(cfg)
    assert "dice_mean" in task.evaluate(model, data, cfg)
    with pytest.raises(ConfigError, match="cached with landmark intensities but the config asks for zscore"):
        task.evaluate(model, data, cfg.replace(intensity_norm="zscore"))


def test_contrast_augmentation_renormalises_with_the_landmark_map():
    img, _ = _scan(1)
    pre = preprocess(img, None, intensity_norm="landmark").image
    cfg = TrainConfig(roi=(32, 32, 32), contrast_gamma=0.5, contrast_hist=10, contrast_prob=1.0,
                      intensity_norm="landmark")
    out = random_contrast(pre, cfg, torch.Generator().manual_seed(0))
    m = (pre != 0).any(0)
    for c in range(4):  # the median lands on the standard scale's 0, not on the z-score's mean 0
        assert abs(float(out[c][m].median())) < 0.02
    assert float(out[:, ~m].abs().max()) == 0.0
    zs = random_contrast(pre, cfg.replace(intensity_norm="zscore"), torch.Generator().manual_seed(0))
    assert abs(float(zs[0][m].mean())) < 1e-3 and not torch.allclose(zs, out)


def test_cli_options_reach_the_training_config():
    import argparse

    from fedimg.cli import build_parser
    from fedimg.cli._federation import add_federation_arguments, federation_config_from_args

    p = argparse.ArgumentParser()
    add_federation_arguments(p)
    cfg = federation_config_from_args(p.parse_args(["--task", "brats", "--intensity-norm", "landmark"]))
    assert cfg.train["intensity_norm"] == "landmark"
    assert "intensity_norm" not in federation_config_from_args(p.parse_args(["--task", "brats"])).train
    parser = build_parser()
    for cmd in (["study", "--data", "d", "--out", "o"], ["simulate", "--data", "d", "--out", "o"],
                ["train", "--data", "d", "--out", "o"]):
        assert parser.parse_args([*cmd, "--intensity-norm", "landmark"]).intensity_norm == "landmark"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data", "d", "--out", "o", "--intensity-norm", "minmax"])
