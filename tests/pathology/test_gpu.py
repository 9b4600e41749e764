"""GPU paths of the pathology side (skipped without CUDA): the same results on the device as on
the CPU. Tile training on CUDA is tested with the task, tests/tasks/test_tiles.py."""

from __future__ import annotations

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
