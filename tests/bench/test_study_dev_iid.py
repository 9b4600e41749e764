"""``benchmarks/study_dev.py``'s IID re-deal (``--iid-train``): the sites' training cases pooled and
dealt back at random, sizes, validation cases and the input objects kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from fedimg.engine.cache import SiteData

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "study_dev.py"


def _module():
    spec = importlib.util.spec_from_file_location("study_dev", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _site(name: str, n_train: int, n_val: int) -> SiteData:
    ids = [f"{name}-{i}" for i in range(n_train)]
    # each case's tensors carry its id's hash so a dealt case keeps its own image, label and foreground
    return SiteData(train_ids=ids, val_ids=[f"{name}-v{i}" for i in range(n_val)],
                    train_images=[torch.full((1,), float(hash(c) % 997)) for c in ids],
                    train_regions=[torch.full((2,), float(hash(c) % 991)) for c in ids],
                    train_fg=[torch.tensor([hash(c) % 983]) for c in ids], val=[object()] * n_val,
                    device=torch.device("cpu"), source=name, state={"trainer": "kept out"})


def test_iid_redeal_keeps_sizes_union_and_validation() -> None:
    mod = _module()
    datas = {"site-1": _site("a", 4, 1), "site-2": _site("b", 5, 2), "site-3": _site("c", 7, 2)}
    before = {s: list(d.train_ids) for s, d in datas.items()}
    out = mod.iid_redeal(datas, seed=0)
    assert {s: d.num_train for s, d in out.items()} == {"site-1": 4, "site-2": 5, "site-3": 7}
    assert sorted(c for d in out.values() for c in d.train_ids) == sorted(c for v in before.values() for c in v)
    assert any(set(out[s].train_ids) != set(before[s]) for s in datas)  # cases moved between sites
    for s, d in out.items():
        assert d.val is datas[s].val and d.val_ids == datas[s].val_ids and d.source == datas[s].source
        assert d.state == {}
        for c, img, reg, fg in zip(d.train_ids, d.train_images, d.train_regions, d.train_fg):
            assert (float(img[0]), float(reg[0]), int(fg[0])) == (hash(c) % 997, hash(c) % 991, hash(c) % 983)
    assert {s: d.train_ids for s, d in datas.items()} == before  # the input is untouched
    again = mod.iid_redeal(datas, seed=0)
    assert {s: d.train_ids for s, d in again.items()} == {s: d.train_ids for s, d in out.items()}
    other = mod.iid_redeal(datas, seed=1)
    assert {s: d.train_ids for s, d in other.items()} != {s: d.train_ids for s, d in out.items()}
