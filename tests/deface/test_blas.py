"""Defacing runs numpy's BLAS at one thread whatever the caller set, and gives the caller's count back."""

from __future__ import annotations

import threading

import nibabel as nib
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from fedimg.deface import blas


def _blas_threads() -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.fixture
def two_blas_threads():
    if not _blas_threads():
        pytest.skip("numpy has no BLAS library that threadpoolctl can see")
    with threadpool_limits(limits=2, user_api="blas"):
        if _blas_threads() != {2}:
            pytest.skip("this BLAS build cannot run two threads")
        yield


def test_one_thread_inside_and_the_callers_count_after(two_blas_threads):
    with blas.one_blas_thread():
        assert _blas_threads() == {1}
        with blas.one_blas_thread():  # nested: still one, and the inner exit keeps it
            pass
        assert _blas_threads() == {1}
    assert _blas_threads() == {2}


def test_concurrent_entries_share_one_limit(two_blas_threads):
    """A helper thread that enters and leaves while this one is inside must not give BLAS its
    two threads back under it (QC's threads beside the registration)."""
    seen: list[set[int]] = []

    def helper():
        with blas.one_blas_thread():
            seen.append(_blas_threads())

    with blas.one_blas_thread():
        t = threading.Thread(target=helper)
        t.start()
        t.join(10)
        assert _blas_threads() == {1}
    assert seen == [{1}]
    assert _blas_threads() == {2}


def test_serial_blas_restores_after_an_error(two_blas_threads):
    @blas.serial_blas
    def fails():
        assert _blas_threads() == {1}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fails()
    assert _blas_threads() == {2}


class _Stop(Exception):
    pass


def test_face_removal_registers_with_one_blas_thread(two_blas_threads, head_2mm, monkeypatch):
    """A caller (a training script, the MONAI transform) that left BLAS at two threads still gets
    the registration the CLI runs: one BLAS thread."""
    import fedimg.deface.core as core

    seen: list[set[int]] = []

    def spy(*args, **kwargs):
        seen.append(_blas_threads())
        raise _Stop

    monkeypatch.setattr(core, "register", spy)
    img = nib.load(str(head_2mm))
    with pytest.raises(_Stop):
        core.face_removal(np.asarray(img.dataobj, dtype=np.float32), img.affine,
                          config=core.DefaceConfig(preset="fast"))
    assert seen == [{1}]
    assert _blas_threads() == {2}
