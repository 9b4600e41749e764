"""Calls queued on a helper pool: each runs exactly once, here when no thread started it, results in order."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from fedimg.deface.beside import collect, queue_calls


def _recorder():
    seen: list[tuple[str, int]] = []

    def call(x: int) -> int:
        seen.append((threading.current_thread().name, x))
        return x * x

    return call, seen


def test_collect_without_a_pool_runs_every_call_here_in_order():
    call, seen = _recorder()
    assert collect(queue_calls(None, (call, 2), (call, 3))) == [4, 9]
    assert seen == [(threading.main_thread().name, 2), (threading.main_thread().name, 3)]


def test_collect_runs_calls_no_thread_started_here_exactly_once():
    call, seen = _recorder()
    gate = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="busy") as pool:
        pool.submit(gate.wait)  # the only helper thread is busy: both calls stay queued
        queued = queue_calls(pool, (call, 2), (call, 3))
        assert collect(queued) == [4, 9]
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
        queued = queue_calls(pool, (slow, 2), (call, 3))
        assert started.wait(10)
        threading.Timer(0.2, gate.set).start()
        assert collect(queued) == [4, 9]  # the second call ran here while the first was still running there
    assert sorted(seen, key=lambda s: s[1]) == [("helper_0", 2), (threading.main_thread().name, 3)]


def test_collect_raises_a_helper_threads_error():
    def bad(_):
        raise ValueError("broken")

    with ThreadPoolExecutor(1) as pool:
        queued = queue_calls(pool, (bad, 1))
        queued[0][1].exception()  # let it run there
        with pytest.raises(ValueError, match="broken"):
            collect(queued)
