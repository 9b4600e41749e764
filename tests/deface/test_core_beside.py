"""``face_removal``'s QC numbers computed beside the face-map warp (``pool``): the same numbers, each call once.

On the real head at 2 mm ``face_removal`` with a pool gives the same masks and metrics as without one
(:mod:`fedimg.deface.beside` runs a call no helper thread started on the calling thread).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import nibabel as nib
import numpy as np

import fedimg.deface.core as core
from fedimg.deface.core import face_removal


def test_face_removal_with_a_pool_gives_the_same_masks_and_metrics(head_2mm, monkeypatch):
    img = nib.load(str(head_2mm))
    data, affine = np.asarray(img.dataobj).astype(np.float32), img.affine
    where: list[str] = []
    real = core.brain_in_head

    def spy(*args, **kwargs):
        where.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "brain_in_head", spy)
    reg = face_removal(data, affine).registration  # the MI search once; both calls below reuse it
    where.clear()
    alone = face_removal(data, affine, registration=reg)
    with ThreadPoolExecutor(2, thread_name_prefix="fedimg-qc") as pool:
        beside = face_removal(data, affine, registration=reg, pool=pool)
    assert where[0] == threading.main_thread().name and len(where) == 2  # once per call
    assert np.array_equal(alone.remove, beside.remove) and np.array_equal(alone.protected, beside.protected)
    same = {k: v for k, v in beside.metrics.items() if k != "registration_seconds"}
    assert same == {k: v for k, v in alone.metrics.items() if k != "registration_seconds"}
    assert 0.85 <= beside.metrics["brain_in_head"] <= 1.0 and 0.0 <= beside.metrics["start_agreement_dice"] <= 1.0
