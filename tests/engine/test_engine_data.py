"""Preprocessing cache, train/val split and on-device augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedimg.data import discover
from fedimg.engine.augment import random_flip, sample_batch
from fedimg.engine.cache import foreground_mask, prepare_site_data, preprocess, split_cases
from fedimg.engine.config import TrainConfig
from fedimg.engine.loop import lr_factor
from fedimg.errors import InputError


def test_preprocess_crops_to_head_and_zscores():
    rng = np.random.default_rng(0)
    img = rng.normal(5, 1, (4, 40, 36, 30)).astype(np.float32)  # noisy, offset background
    img[:, 8:30, 6:28, 5:25] += 200 + 50 * np.arange(4)[:, None, None, None]
    regions = np.zeros((3, 40, 36, 30), np.uint8)
    regions[:, 15:20, 10:15, 10:15] = 1
    p = preprocess(img, regions)
    assert p.bbox == ((6, 32), (4, 30), (3, 27))  # head box ± 2 voxel margin
    assert p.shape == (40, 36, 30)
    assert tuple(p.image.shape) == (4, 26, 26, 24)
    assert int(p.regions.sum()) == int(regions.sum())  # no label voxel cropped away
    mask = torch.from_numpy(foreground_mask(img)[6:32, 4:30, 3:27])
    for c in range(4):
        vals = p.image[c][mask]
        assert abs(float(vals.mean())) < 1e-4 and abs(float(vals.std()) - 1) < 1e-2
        assert float(p.image[c][~mask].abs().max()) == 0.0


def test_foreground_mask_defaced_noisy_background():
    """Noisy offset background with a zeroed (defaced) slab: the slab must not flip the rule."""
    rng = np.random.default_rng(1)
    img = np.abs(rng.normal(20, 8, (4, 40, 40, 40))).astype(np.float32)
    img[:, 10:30, 10:30, 10:30] = 300 + rng.normal(0, 10, (4, 20, 20, 20))
    img[:, :, :, :8] = 0.0  # 20 % of the volume removed by defacing
    m = foreground_mask(img)
    assert m.sum() == 20**3 and m[10:30, 10:30, 10:30].all()


def test_foreground_mask_zero_background():
    img = np.zeros((4, 20, 20, 20), np.float32)
    img[:, 5:15, 5:15, 5:15] = 1.0
    m = foreground_mask(img)
    assert m.sum() == 1000 and m[5:15, 5:15, 5:15].all()
    # skull-stripped brain with a dark tissue class: all of it is foreground
    img[:, 5:15, 5:8, 5:15] = 0.3
    assert foreground_mask(img).sum() == 1000


def test_split_is_deterministic_and_disjoint(site):
    cases = discover(site)
    tr1, va1 = split_cases(cases, 0.25, seed=3)
    tr2, va2 = split_cases(list(reversed(cases)), 0.25, seed=3)
    assert [c.case_id for c in va1] == [c.case_id for c in va2] and len(va1) == 2
    assert not {c.case_id for c in tr1} & {c.case_id for c in va1}
    assert len(tr1) + len(va1) == len(cases)
    _, va3 = split_cases(cases, 0.25, seed=4)
    assert len(va3) == 2
    assert split_cases(cases[:1], 0.5, 0)[1] == []  # a single case always trains


def test_prepare_site_data_caches_split(site):
    cfg = TrainConfig(roi=(64, 64, 64), val_fraction=0.25)
    data = prepare_site_data(discover(site), cfg, torch.device("cpu"))
    assert data.num_train == 6 and data.num_val == 2
    assert all(min(t.shape[1:]) >= 64 for t in data.train_images)  # padded to the crop
    assert all(len(fg) > 0 for fg in data.train_fg)
    assert len(data.fingerprint) == 64
    with pytest.raises(InputError, match="no cases"):
        prepare_site_data([], cfg, torch.device("cpu"))


def test_sample_batch_seeded_and_aligned():
    img = torch.zeros(4, 40, 40, 40)
    reg = torch.zeros(3, 40, 40, 40, dtype=torch.uint8)
    img[:, 10:14, 20:30, 5:9] = 1.0
    reg[:, 10:14, 20:30, 5:9] = 1
    fg = torch.nonzero(reg[1].reshape(-1)).reshape(-1)
    cfg = TrainConfig(roi=(16, 16, 16), pos_fraction=1.0, intensity_scale=0.0, intensity_shift=0.0)
    x1, y1 = sample_batch([img], [reg], [fg], [0, 0, 0], cfg, torch.Generator().manual_seed(7))
    x2, y2 = sample_batch([img], [reg], [fg], [0, 0, 0], cfg, torch.Generator().manual_seed(7))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert (y1[:, 1].flatten(1).sum(1) > 0).all()  # pos_fraction=1 → every crop holds tumour
    assert torch.equal((x1[:, 0] > 0.5).float(), y1[:, 1])  # flips keep image and label aligned


def test_intensity_augmentation_changes_image_only():
    img = torch.ones(4, 20, 20, 20)
    reg = torch.ones(3, 20, 20, 20, dtype=torch.uint8)
    cfg = TrainConfig(roi=(16, 16, 16), intensity_scale=0.1, intensity_shift=0.1)
    x, y = sample_batch([img], [reg], [torch.arange(8000)], [0], cfg, torch.Generator().manual_seed(0))
    assert not torch.allclose(x, torch.ones_like(x)) and (y == 1).all()
    assert ((x - 1).abs() <= 0.1 * 1 + 0.1 + 1e-6).all()
    a, b = random_flip(img, reg, 0.0, torch.Generator())
    assert a is img and b is reg  # prob 0: identity


def test_lr_schedule_warmup_then_cosine():
    f = [lr_factor(s, warmup_steps=4, total_steps=20, min_ratio=0.1) for s in range(25)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(f[4:], f[5:]))
    assert f[20] == pytest.approx(0.1) and f[24] == pytest.approx(0.1)
