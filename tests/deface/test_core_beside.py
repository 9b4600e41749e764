"""``face_removal``'s QC numbers computed beside the face-map warp (``pool``): the same numbers, each call once.

:func:`fedimg.deface.core._collect` runs a queued call here when no helper thread has started it
(cancelled there first), waits for the started ones, and keeps the calls' order; on the real head
at 2 mm ``face_removal`` with a pool gives the same masks and metrics as without one.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import nibabel as nib
import numpy as np
import pytest

import fedimg.deface.core as core
from fedimg.deface.core import _collect, _queue, face_removal


def _recorder():
    seen: list[tuple[str, int]] = []

    def call(x: int) -> int:
        seen.append((threading.current_thread().name, x))
        return x * x

    return call, seen


def test_collect_without_a_pool_runs_every_call_here_in_order():
    call, seen = _recorder()
    assert _collect(_queue(None, (call, 2), (call, 3))) == [4, 9]
    assert seen == [(threading.main_thread().name, 2), (threading.main_thread().name, 3)]


def test_collect_runs_calls_no_thread_started_here_exactly_once():
    call, seen = _recorder()
    gate = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="busy") as pool:
        pool.submit(gate.wait)  # the only helper thread is busy: both calls stay queued
        queued = _queue(pool, (call, 2), (call, 3))
        assert _collect(queued) == [4, 9]
        gate.set()
    assert seen == [(threading.main_thread().name, 2), (threading.main_thread().name, 3)]  # cancelled there, once each
    assert all(f.cancelled() for _, f in queued)


def test_collect_waits_for_calls_a_helper_thread_started():
    call, seen = _recorder()
    started, gate = threading.Event(), threading.Event()

    def slow(x: int) -> int:
        started.set()
        gate.wait()
        return call(x)

    with ThreadPoolExecutor(1, thread_name_prefix="helper") as pool:
        queued = _queue(pool, (slow, 2), (call, 3))
        assert started.wait(10)
        threading.Timer(0.2, gate.set).start()
        assert _collect(queued) == [4, 9]  # the second call ran here while the first was still running there
    assert sorted(seen, key=lambda s: s[1]) == [("helper_0", 2), (threading.main_thread().name, 3)]


def test_collect_raises_a_helper_threads_error():
    def bad(_):
        raise ValueError("broken")

    with ThreadPoolExecutor(1) as pool:
        queued = _queue(pool, (bad, 1))
        queued[0][1].exception()  # let it run there
        with pytest.raises(ValueError, match="broken"):
            _collect(queued)


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
