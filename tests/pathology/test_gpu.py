"""GPU paths (skipped without CUDA): the same results on the device as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu


def test_macenko_and_reinhard_on_cuda_match_cpu(target_image):
    from fedimg.transforms.stain import MacenkoNormalize, RandStainAugment, ReinhardNormalize

    chw = torch.from_numpy(target_image[:512, :512]).permute(2, 0, 1).contiguous()
    tiles = chw.unfold(1, 128, 128).unfold(2, 128, 128).permute(1, 2, 0, 3, 4).reshape(-1, 3, 128, 128).contiguous()
    for norm in (MacenkoNormalize(chw), ReinhardNormalize(chw)):
        cpu = norm(tiles)
        gpu = norm(tiles.cuda())
        assert gpu.is_cuda and gpu.dtype == torch.uint8
        assert (gpu.cpu().int() - cpu.int()).abs().float().mean() < 0.5
    aug = RandStainAugment(sigma1=0.2, sigma2=0.1).set_random_state(0)
    assert aug(tiles.cuda()).is_cuda


def test_tissue_mask_on_cuda_matches_cpu(slide_path):
    from fedimg.pathology.slide import open_slide
    from fedimg.pathology.tissue import slide_tissue_mask

    with open_slide(slide_path) as s:
        cpu, _, _ = slide_tissue_mask(s)
        gpu, _, _ = slide_tissue_mask(s, device=torch.device("cuda"))
    assert (cpu != gpu).mean() < 0.002


def test_tile_training_on_cuda_bf16_channels_last(synth_sites):
    from fedimg.pathology.train import TileTrainConfig, build_tile_model, evaluate, prepare_tile_data, train_one_round

    cfg = TileTrainConfig(model="densenet121", epochs=2, batch_size=32, warmup_epochs=0, seed=0)
    data = prepare_tile_data(synth_sites[0], cfg, torch.device("cuda"))
    assert data.x_train.is_cuda
    model = build_tile_model(cfg)
    metrics, n = train_one_round(model, data, cfg)
    trainer = data.state["trainer"]
    assert trainer.bf16 and trainer.channels_last and np.isfinite(metrics["loss"])
    assert next(model.parameters()).is_cuda
    res = evaluate(model, data, cfg)
    assert 0.0 <= res["accuracy"] <= 1.0
