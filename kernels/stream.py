"""Streaming stores and chunk tables for the numba CPU fold (:func:`fedimg.kernels._cpu.wsum_sumsq`).

The server's checked fold writes ``src + w*update`` into a second buffer (so that a refused
update leaves the sum untouched). An ordinary store to a line that is not in cache first
reads it (read-for-ownership): four memory streams per value for three that are needed. A
non-temporal ("streaming") store writes whole lines without reading them, so the fold moves
what it must: the update and the sum in, the new sum out. Same values, bit for bit; only the
store instruction differs.

* :func:`nt_store`: ``a[i] = v`` as a non-temporal store. It declares ``ALIGN`` values of
  alignment so that LLVM may vectorise it (x86 streaming vector stores need aligned
  addresses): use it only in a loop over a slice that starts at a multiple of ``ALIGN``
  values of a buffer from :func:`aligned_zeros`.
* :func:`store_fence`: orders the streaming stores before the stores that follow (end of a
  chunk; streaming stores are weakly ordered).
* :func:`chunk_table`: chunks of at most ``CH`` values over consecutive parts (never across
  parts), aligned in the output: a part that starts off the ``ALIGN`` grid gets a short head
  chunk (ordinary stores), every other chunk starts on it.
* :func:`prep` / :func:`runs`: how the kernels see their inputs (float16 as bits + table).

numba's disk cache of the kernels in :mod:`._cpu` and :mod:`fedimg.bench.probes` notices edits
to their own files only: after changing an intrinsic here, touch those files (or clear
``__pycache__``) so the kernels are compiled again.

>>> cpart, clo, clen, starts = chunk_table((20, 5, 40), 0, ch=16)
>>> [(int(p), int(lo), int(n)) for p, lo, n in zip(cpart, clo, clen)]
[(0, 0, 16), (0, 16, 4), (1, 0, 5), (2, 0, 7), (2, 7, 16), (2, 23, 16), (2, 39, 1)]
>>> int(aligned_zeros(5, np.float32).ctypes.data % (ALIGN * 4))
0
"""

from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["ALIGN", "MAX_TUPLE", "MAX_PARTS", "nt_store", "store_fence", "aligned_zeros", "aligned_empty", "is_aligned", "chunk_table", "segments", "prep", "runs",
           "F16_LUT", "BF16_LUT"]

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
ALIGN = 16  # values: 64 bytes of float32 (an AVX-512 store; a cache line), 128 of float64
MAX_TUPLE = 64  # numba unpacks a tuple passed to a parallel region: at most 100 (NUMBA_PARFOR_MAX_TUPLE_SIZE)
MAX_PARTS = 64  # the parts of one update per launch: a 96-array tuple compiled twice as long (44 vs 21 s, cold)
F16_LUT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
BF16_LUT = (np.arange(65536, dtype=np.uint32) << 16).view(np.float32)


@intrinsic
def nt_store(typingctx, arr, idx, val):
    """``arr[idx] = val`` (cast to ``arr``'s dtype) as a non-temporal store (see the module)."""
    sig = types.void(arr, idx, val)

    def codegen(context, builder, signature, args):
        arrty, idxty, valty = signature.args
        ary = context.make_array(arrty)(context, builder, args[0])
        i = context.cast(builder, args[1], idxty, types.intp)
        ptr = cgutils.get_item_pointer(context, builder, arrty, ary, [i], wraparound=False, boundscheck=False)
        st = builder.store(context.cast(builder, args[2], valty, arrty.dtype), ptr, align=ALIGN * 4)
        st.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def store_fence(typingctx):
    """A full memory fence: the streaming stores before it are visible before any store after it."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _X86:  # LLVM may lower a seq_cst fence to a locked add, which x86 does not promise orders them
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
            builder.call(fn, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen


def aligned_zeros(n: int, dt, like=None) -> np.ndarray:
    """``np.zeros(n, dt)`` whose first value sits on a 64-byte boundary (:func:`nt_store`'s grid)."""
    dt = np.dtype(dt)
    step = ALIGN * 4
    raw = np.zeros(n * dt.itemsize + step, np.uint8)
    off = (-raw.ctypes.data) % step
    return raw[off : off + n * dt.itemsize].view(dt)


def aligned_empty(n: int, dt) -> np.ndarray:
    """:func:`aligned_zeros` without the zeros, for a buffer written in full before it is read
    (the fold's result): malloc may hand back last round's freed memory, where a zeroed one
    takes fresh pages (measured: scaling 4.7 M values into it 1.2 ms, into fresh zeros 2.1 ms)."""
    dt = np.dtype(dt)
    step = ALIGN * 4
    raw = np.empty(n * dt.itemsize + step, np.uint8)
    off = (-raw.ctypes.data) % step
    return raw[off : off + n * dt.itemsize].view(dt)


def is_aligned(a: np.ndarray) -> bool:
    """Whether value 0 of ``a`` sits on the 64-byte grid and ``a`` is contiguous."""
    return a.flags.c_contiguous and a.ctypes.data % (ALIGN * 4) == 0


_TABLES: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def chunk_table(sizes: tuple[int, ...], off: int, ch: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(cpart, clo, clen, starts)``: chunk c is values ``clo[c] .. clo[c] + clen[c]`` of part
    ``cpart[c]``, written at ``starts[cpart[c]] + clo[c]`` of the output; ``starts`` begin at
    ``off``. Cached per ``(sizes, off % ALIGN)`` (a model's updates share one layout)."""
    key = (sizes, off % ALIGN, ch)
    if key not in _TABLES:
        cpart, clo, clen = [], [], []
        start = off % ALIGN
        for p, n in enumerate(sizes):
            lo = min(n, (-start) % ALIGN)
            if lo:
                cpart.append(p), clo.append(0), clen.append(lo)
            for s in range(lo, n, ch):
                cpart.append(p), clo.append(s), clen.append(min(ch, n - s))
            start += n
        sz = np.array(sizes, np.int64)
        if len(_TABLES) > 64:
            _TABLES.clear()
        _TABLES[key] = (np.array(cpart, np.int64), np.array(clo, np.int64), np.array(clen, np.int64),
                        np.cumsum(sz) - sz + (off % ALIGN))
    cpart, clo, clen, starts = _TABLES[key]
    return cpart, clo, clen, starts + (off - off % ALIGN)


_SEGS: dict[tuple, np.ndarray] = {}


def segments(sizes: tuple[int, ...], off: int, ch: int, nseg: int) -> np.ndarray:
    """``nseg + 1`` chunk indices: segment g is chunks ``seg[g] .. seg[g+1]`` of
    :func:`chunk_table` ``(sizes, off, ch)``, every segment about the same number of values
    (a parallel loop over segments splits the work by bytes, not by chunks or tensors)."""
    key = (sizes, off % ALIGN, ch, nseg)
    if key not in _SEGS:
        clen = chunk_table(sizes, off, ch)[2]
        cum = np.cumsum(clen)
        total = int(cum[-1]) if cum.size else 0
        cuts = np.searchsorted(cum, [total * g / nseg for g in range(1, nseg)], side="left") + 1
        if len(_SEGS) > 64:
            _SEGS.clear()
        _SEGS[key] = np.concatenate([[0], np.minimum(cuts, clen.size), [clen.size]]).astype(np.int64)
    return _SEGS[key]


def prep(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(read-only view numba can read, table) — float16 as uint16 bits with the float16 table.

    Every input is seen read-only, so writeable and read-only arrays (e.g. NVFlare's
    deserialised updates) share one numba type and can travel in one tuple.
    """
    a, lut = (u.view(np.uint16), F16_LUT) if u.dtype == np.float16 else (u.view(), BF16_LUT)
    a.flags.writeable = False
    return a, lut


def runs(prepped, limit: int = MAX_TUPLE) -> list[tuple[int, int]]:
    """``[start, end)`` runs of consecutive prepped arrays one tuple can hold (one type, <= ``limit``)."""
    out, start = [], 0
    while start < len(prepped):
        dt, lut = prepped[start][0].dtype, prepped[start][1]
        end = start
        while end < len(prepped) and end - start < limit and prepped[end][0].dtype == dt and prepped[end][1] is lut:
            end += 1
        out.append((start, end))
        start = end
    return out
