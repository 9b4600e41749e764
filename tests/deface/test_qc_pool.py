"""``check_removal`` with the pipeline's QC threads (``pool``): the image's removal numbers computed beside the
head-outline comparison give the same record, field for field, floats exact (real head at 2 mm)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import nibabel as nib
import numpy as np

from fedimg.deface.core import face_removal
from fedimg.deface.pipeline import _qc_estimate, _qc_shape, _settle
from fedimg.deface.qc import QCThresholds, check_removal
from fedimg.imageio.volume import to_canonical


def test_check_removal_beside_gives_the_same_record(head_2mm):
    img = nib.load(str(head_2mm))
    data, affine = np.asarray(img.dataobj).astype(np.float32), img.affine
    removal = face_removal(data, affine)
    thresholds = QCThresholds()
    alone = check_removal(data, affine, removal, thresholds)  # QC's own estimate and placement, no threads
    can = to_canonical(data, affine)
    coarse, canonical = Future(), Future()
    _settle(coarse, (removal.modality, removal.head_shape))
    _settle(canonical, can)
    est, shape = _qc_estimate(*can, coarse), _qc_shape(canonical, coarse)  # what the pipeline's threads hand over
    given = check_removal(data, affine, removal, thresholds, estimate=est, estimate_checked=True, face_shape=shape)
    with ThreadPoolExecutor(2, thread_name_prefix="fedimg-qc") as pool:
        beside = check_removal(data, affine, removal, thresholds, estimate=est, estimate_checked=True,
                               face_shape=shape, pool=pool)
    assert list(beside) == list(given) == list(alone)  # same fields in the same order
    assert beside == given == alone
    assert beside["face_shape_dice"] is not None and beside["removed_ml"] > 0
