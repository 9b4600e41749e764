"""The pipeline counts changed protected voxels in the removal's box only (h12s): the same count as over the
whole volume, zero and blur modes, with and without ``--protect`` labels, and nothing removed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fedimg.deface.core import DefaceConfig
from fedimg.deface.masks import apply_removal
from fedimg.deface.pipeline import _apply, _raw_value


def _apply_whole(outputs, removal, protect, config, spacing):
    """``pipeline._apply`` as at ``a039553``: every voxel compared."""
    new_raw, changed_protected = [], 0
    for vol, _ in outputs:
        out = apply_removal(vol.raw, removal.remove, mode=config.mode, zero_value=_raw_value(vol, removal.fill_value),
                            spacing=spacing, blur_mm=config.blur_mm)
        changed = out != vol.raw
        changed_protected += int((changed & removal.protected).sum())
        if protect is not None:
            changed_protected += int((changed & protect).sum())
        new_raw.append(out)
    return new_raw, changed_protected


@pytest.mark.parametrize("mode", ["zero", "blur"])
@pytest.mark.parametrize("with_protect", [False, True])
def test_changed_protected_counted_in_the_box(mode, with_protect):
    rng = np.random.default_rng(3)
    shape = (24, 30, 20)
    remove = np.zeros(shape, bool)
    remove[3:12, 18:27, 4:15] = rng.random((9, 9, 11)) > 0.3
    protected = np.zeros(shape, bool)
    protected[8:20, 10:22, 2:18] = True  # overlaps the removal: those voxels count
    protect = (rng.random(shape) > 0.7) if with_protect else None
    raw = rng.integers(1, 400, shape).astype(np.int16)
    raw[5, 20, 6] = 0  # a removed voxel already at the fill value: unchanged
    vol = SimpleNamespace(raw=raw, slope=1.0, inter=0.0)
    other = SimpleNamespace(raw=(raw.astype(np.float32) * 0.5), slope=1.0, inter=0.0)
    removal = SimpleNamespace(remove=remove, protected=protected, fill_value=0.0)
    config = DefaceConfig(mode=mode)
    outputs = [(vol, None), (other, None)]
    got_raw, got = _apply(outputs, removal, protect, config, (1.0, 1.0, 1.0))
    want_raw, want = _apply_whole(outputs, removal, protect, config, (1.0, 1.0, 1.0))
    assert got == want > 0
    assert all(np.array_equal(a, b) for a, b in zip(got_raw, want_raw))


def test_nothing_removed_changes_nothing():
    raw = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    removal = SimpleNamespace(remove=np.zeros(raw.shape, bool), protected=np.ones(raw.shape, bool), fill_value=0.0)
    got_raw, got = _apply([(SimpleNamespace(raw=raw, slope=1.0, inter=0.0), None)], removal, None, DefaceConfig(),
                          (1.0, 1.0, 1.0))
    assert got == 0 and np.array_equal(got_raw[0], raw)
