"""Pure calls queued on a helper pool (the pipeline's QC threads), run by the caller when no thread has started them.

The deface pipeline's main thread has serial work (QC numbers, encoding the output) that an idle
QC thread can do beside it. :func:`queue_calls` queues it; :func:`collect` takes the results in
order, running any call no thread has started itself (cancelled in the pool first, so each call
runs exactly once and the caller never waits behind the pool's other work). The calls are pure:
the results are the same wherever they ran.

>>> from concurrent.futures import ThreadPoolExecutor
>>> with ThreadPoolExecutor(1) as pool:
...     collect(queue_calls(pool, (pow, 2, 3), (abs, -4)))
[8, 4]
>>> collect(queue_calls(None, (pow, 2, 3)))  # no pool: run here
[8]
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from typing import Any, Callable

__all__ = ["queue_calls", "collect"]

Queued = list[tuple[tuple, "Future | None"]]


def queue_calls(pool: Executor | None, *calls: tuple[Callable[..., Any], ...]) -> Queued:
    """``(call, future)`` per ``(fn, *args)`` in ``calls``, queued on ``pool`` (None: no pool, no future)."""
    return [(call, None if pool is None else pool.submit(*call)) for call in calls]


def collect(queued: Queued) -> list:
    """The results of :func:`queue_calls`'s calls, in order.

    A call no helper thread has started is cancelled there and run here first, then the started
    ones are waited for; a call's exception is raised here.
    """
    here = {i: call[0](*call[1:]) for i, (call, future) in enumerate(queued) if future is None or future.cancel()}
    return [here[i] if i in here else future.result() for i, (_, future) in enumerate(queued)]
