"""One BLAS thread while defacing, whatever the caller's environment says.

The registration's sample products and QC's small matrix products go through numpy's BLAS.
With more than one BLAS thread, OpenBLAS splits some of them differently, so the mutual
information moves in its last digits, and on a head near a QC threshold the verdict can
change (h12t, RESULTS: one dev case was a false alarm at two BLAS threads and passed at
one). Every defacing number in ``benchmarks/RESULTS.md`` was measured with one BLAS thread,
and the two-thread pool also busy-waits beside defacing's own QC threads.

``fedimg deface`` sets ``OPENBLAS_NUM_THREADS=1`` before numpy loads; the library's entry
points (:func:`fedimg.deface.core.face_removal`, :func:`fedimg.deface.qc.check_removal`,
:func:`fedimg.deface.pipeline.deface_job`, and through them the MONAI ``Deface`` /
``Defaced`` transforms) run inside :func:`one_blas_thread`, so a training script that imports
numpy first gets the same result as the CLI. threadpoolctl sets the limit for the whole
process (OpenBLAS has one thread count), so nested and concurrent entries share one limit:
the first sets it, the last one out restores the caller's. OpenBLAS ignores a request to
raise its count from a thread other than the one that set it, so call these from the thread
that owns the work (the CLI and the pipeline do; QC's helper threads only run inside).

>>> from threadpoolctl import threadpool_info
>>> with one_blas_thread():
...     {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} <= {1}
True
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["one_blas_thread", "serial_blas"]

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_depth = 0
_limiter: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with every BLAS library loaded in the process at one thread; restore after."""
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            import scipy.ndimage  # noqa: F401  (defacing's; it loads scipy's own OpenBLAS, which the limit then covers too)
            from threadpoolctl import threadpool_limits

            _limiter = threadpool_limits(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None


def serial_blas(fn: F) -> F:
    """Decorate ``fn`` to run inside :func:`one_blas_thread`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_blas_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
