"""Memory-bandwidth probes: the physical limit ``fedimg bench aggregate`` holds FedAvg to.

Two numba CPU kernels over row chunks of ``CH`` float32 values, each thread owning a chunk
(the same shape of work as the FedAvg kernels in :mod:`fedimg.kernels`):

* :func:`read_sum`: a read-only chunked sum (vectorised, reassociated): read bandwidth;
* :func:`triad`: ``a = b + s*c`` (STREAM triad): two reads and one write per element, from
  which the write bandwidth follows;
* :func:`scale_copy`: ``a = s*b`` (STREAM scale): one read and one write per element;
* :func:`triad_nt` / :func:`scale_copy_nt`: the same with streaming (non-temporal) stores into
  a 64-byte aligned ``a`` (:func:`fedimg.kernels.stream.aligned_zeros`): no read of ``a``'s
  old lines, the best write rate the machine gives (fedimg's checked fold writes this way).

They measure the machine, not fedimg; the benchmark times them in the same round-robin as
the kernels so that a busy machine slows both alike.

>>> import numpy as np
>>> a, b, c = np.empty(5, np.float32), np.ones(5, np.float32), np.arange(5, dtype=np.float32)
>>> triad(a, b, c, np.float32(0.5))
>>> a
array([1. , 1.5, 2. , 2.5, 3. ], dtype=float32)
>>> float(read_sum(c))
10.0
>>> scale_copy(a, c, np.float32(2)); a
array([0., 2., 4., 6., 8.], dtype=float32)
>>> from fedimg.kernels.stream import aligned_zeros
>>> d = aligned_zeros(5, np.float32); triad_nt(d, b, c, np.float32(0.5)); d
array([1. , 1.5, 2. , 2.5, 3. ], dtype=float32)
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fedimg.kernels.stream import nt_store, store_fence

__all__ = ["CH", "read_sum", "triad", "scale_copy", "triad_nt", "scale_copy_nt"]

CH = 4096  # float32 values per chunk: 16 KiB, stays in L1 (as in the FedAvg kernels)


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def read_sum(a):  # pragma: no cover - numba
    """Read-only chunked sum (vectorised, reassociated): the benchmark's read-bandwidth probe."""
    n = a.size
    nch = (n + CH - 1) // CH
    parts = np.zeros(nch, np.float32)
    for c in prange(nch):
        parts[c] = a[c * CH : min(c * CH + CH, n)].sum()
    return parts.sum()


@njit(parallel=True, cache=True, nogil=True)
def triad(a, b, c, s):  # pragma: no cover - numba
    """``a = b + s*c`` (STREAM triad): the benchmark's read+write bandwidth probe."""
    n = a.size
    for k in prange((n + CH - 1) // CH):
        lo = k * CH
        hi = min(lo + CH, n)
        av, bv, cv = a[lo:hi], b[lo:hi], c[lo:hi]
        for i in range(hi - lo):
            av[i] = bv[i] + s * cv[i]


@njit(parallel=True, cache=True, nogil=True)
def scale_copy(a, b, s):  # pragma: no cover - numba
    """``a = s*b``: one read and one write per element (a fold's first update, a result's scaling)."""
    n = a.size
    for k in prange((n + CH - 1) // CH):
        lo = k * CH
        hi = min(lo + CH, n)
        av, bv = a[lo:hi], b[lo:hi]
        for i in range(hi - lo):
            av[i] = s * bv[i]


@njit(parallel=True, cache=True, nogil=True)
def triad_nt(a, b, c, s):  # pragma: no cover - numba
    """:func:`triad` with streaming stores; ``a`` 64-byte aligned (chunks of ``CH`` keep the grid)."""
    n = a.size
    for k in prange((n + CH - 1) // CH):
        lo = k * CH
        hi = min(lo + CH, n)
        av, bv, cv = a[lo:hi], b[lo:hi], c[lo:hi]
        for i in range(hi - lo):
            nt_store(av, i, bv[i] + s * cv[i])
        store_fence()


@njit(parallel=True, cache=True, nogil=True)
def scale_copy_nt(a, b, s):  # pragma: no cover - numba
    """:func:`scale_copy` with streaming stores; ``a`` 64-byte aligned."""
    n = a.size
    for k in prange((n + CH - 1) // CH):
        lo = k * CH
        hi = min(lo + CH, n)
        av, bv = a[lo:hi], b[lo:hi]
        for i in range(hi - lo):
            nt_store(av, i, s * bv[i])
        store_fence()
