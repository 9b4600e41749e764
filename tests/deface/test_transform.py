"""MONAI transforms: array ``Deface`` and dict ``Defaced`` (labels never touched)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from fedimg.deface import DefaceConfig
from fedimg.transforms.deface import Deface, Defaced, deface_volume

FAST = DefaceConfig(preset="fast")


def test_array_and_dict_transforms(head_2mm, make_blob):
    img = nib.load(str(head_2mm))
    data = np.asarray(img.dataobj).astype(np.float32)
    mt = MetaTensor(torch.as_tensor(data)[None], affine=torch.as_tensor(img.affine))
    out = Deface(config=FAST)(mt)
    assert isinstance(out, MetaTensor) and out.shape == mt.shape and out.dtype == mt.dtype
    assert np.allclose(out.affine.numpy(), img.affine)
    removed = (out[0].numpy() != data)
    assert removed.sum() > 1000 and np.all(out[0].numpy()[removed] == 0)

    seg = make_blob(data.shape, img.affine)
    label = MetaTensor(torch.as_tensor(seg)[None], affine=torch.as_tensor(img.affine))
    t2 = MetaTensor(torch.as_tensor(data * 0.5)[None], affine=torch.as_tensor(img.affine))
    d = {"t1": mt, "t2": t2, "seg": label}
    res = Defaced(keys=["t1", "t2"], label_keys="seg", config=FAST)(d)
    assert res["seg"] is label  # never touched
    c1 = res["t1"][0].numpy() != data
    c2 = res["t2"][0].numpy() != data * 0.5
    assert np.array_equal(c1, c2) and c1.sum() > 1000
    assert not (c1 & (seg > 0)).any()
    assert res["deface_qc"]["brain_in_head"] > 0.85


def test_pure_function_reuses_a_removal(head_2mm):
    img = nib.load(str(head_2mm))
    data = np.asarray(img.dataobj).astype(np.int16)
    out, removal = deface_volume(data, img.affine, config=FAST)
    assert out.dtype == np.int16 and out.shape == data.shape
    again, same = deface_volume(data + 1, img.affine, config=FAST, removal=removal)
    assert same is removal and removal.remove.sum() > 1000
    assert np.all(again[removal.remove] == 0) and np.all(out[removal.remove] == 0)
    assert np.array_equal(again[~removal.remove], data[~removal.remove] + 1)


def test_dict_transform_numpy_with_meta_dict(head_2mm):
    img = nib.load(str(head_2mm))
    data = np.asarray(img.dataobj).astype(np.float32)[None]
    seg = np.zeros_like(data, dtype=np.uint8)
    d = {"t1": data, "t1_meta_dict": {"affine": img.affine}, "seg": seg}
    res = Defaced(keys="t1", label_keys=["seg"], config=FAST)(d)
    assert isinstance(res["t1"], np.ndarray) and res["t1"].shape == data.shape
    assert res["seg"] is seg and (res["t1"] != data).sum() > 1000
    assert data.sum() == np.asarray(img.dataobj).astype(np.float32).sum()  # input array not modified
