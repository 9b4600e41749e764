"""Flat parameter buffers: pack a state dict into one contiguous float buffer and back.

``pack`` lays every tensor of a model state dict (torch tensors or numpy arrays) end to
end in one 1-D buffer and returns a :class:`Layout` (names, shapes, dtypes, offsets) that
``unpack`` uses to rebuild the dict **bit-exactly**.

Floating entries come first, in state-dict order, from offset 0 up to
``layout.float_size``. Integer and bool buffers (BatchNorm's ``num_batches_tracked``)
follow in the tail ``[layout.float_size, layout.size)``, stored as exact integers.

**Integer-buffer rule.** Integer buffers are *not* averaged. When the aggregation ops get
``layout=`` (``fedavg(..., layout=layout)``, ``WeightedAccumulator(..., layout=layout)``)
the tail takes the element-wise **maximum** over the updates (for a step counter such as
``num_batches_tracked`` that is the most-trained site's count; for bool buffers a logical
or). Without a layout the whole buffer is treated as floats. ``unpack`` rounds tail values
to the nearest integer before casting back, so a tail that was averaged by a caller still
unpacks to valid integers.

The flat buffer is float32 unless a float64 tensor is present (then float64, so the round
trip stays exact); pass ``dtype=`` to force one. float16/bfloat16 values are exact in
float32. Integers must fit the flat dtype's exact range (2**24 for float32).

>>> import numpy as np
>>> sd = {"w": np.ones((2, 3), np.float32), "n": np.array(7, np.int64)}
>>> flat, layout = pack(sd)
>>> flat.shape, layout.float_size
((7,), 6)
>>> out = unpack(flat, layout)
>>> out["w"].shape, int(out["n"])
((2, 3), 7)
>>> Layout.from_json(layout.to_json()) == layout
True
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Layout", "flat_parts", "layout_of", "pack", "slice_parts", "unpack"]

log = logging.getLogger(__name__)

_FLOATS = {"float16", "bfloat16", "float32", "float64"}
_INTS = {"bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}
_EXACT = {np.dtype(np.float32): 2**24, np.dtype(np.float64): 2**53}


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Where each tensor of a state dict lives in a flat buffer.

    ``dtypes`` are names (``"float32"``, ``"bfloat16"``, ``"int64"``...);
    ``source`` is ``"torch"`` or ``"numpy"`` (what ``unpack`` returns by default).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    offsets: tuple[int, ...]
    size: int
    float_size: int
    flat_dtype: str = "float32"
    source: str = "numpy"

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.shapes) == len(self.dtypes) == len(self.offsets) == n):
            raise ValueError("Layout: names, shapes, dtypes and offsets must have the same length")
        if len(set(self.names)) != n:
            raise ValueError("Layout: duplicate tensor names")
        bad = [d for d in self.dtypes if d not in _FLOATS | _INTS]
        if bad:
            raise ValueError(f"Layout: unsupported dtype(s) {bad}; use float or integer tensors")
        if self.flat_dtype not in ("float32", "float64"):
            raise ValueError("Layout: flat_dtype must be float32 or float64")
        if self.source not in ("numpy", "torch"):
            raise ValueError("Layout: source must be 'numpy' or 'torch'")
        end = 0
        for name, shape, dt, off in zip(self.names, self.shapes, self.dtypes, self.offsets):
            if off != end:
                raise ValueError(f"Layout: {name!r} starts at {off}, expected {end} (entries must be contiguous)")
            if dt in _INTS and off < self.float_size:
                raise ValueError(f"Layout: integer entry {name!r} lies in the float section")
            end = off + int(np.prod(shape, dtype=np.int64))
        if end != self.size or not 0 <= self.float_size <= self.size:
            raise ValueError("Layout: size / float_size do not match the entries")

    @property
    def num_tensors(self) -> int:
        return len(self.names)

    def slice(self, name: str) -> slice:
        """The ``slice`` of the flat buffer that holds ``name``."""
        i = self.names.index(name)
        n = int(np.prod(self.shapes[i], dtype=np.int64))
        return slice(self.offsets[i], self.offsets[i] + n)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "names": list(self.names),
                "shapes": [list(s) for s in self.shapes],
                "dtypes": list(self.dtypes),
                "offsets": list(self.offsets),
                "size": self.size,
                "float_size": self.float_size,
                "flat_dtype": self.flat_dtype,
                "source": self.source,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Layout:
        d = json.loads(text)
        if d.get("version") != 1:
            raise ValueError(f"Layout.from_json: unknown layout version {d.get('version')!r}")
        return cls(
            names=tuple(d["names"]),
            shapes=tuple(tuple(int(x) for x in s) for s in d["shapes"]),
            dtypes=tuple(d["dtypes"]),
            offsets=tuple(int(x) for x in d["offsets"]),
            size=int(d["size"]),
            float_size=int(d["float_size"]),
            flat_dtype=d.get("flat_dtype", "float32"),
            source=d.get("source", "numpy"),
        )


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _dtype_name(x: Any) -> str:
    if _is_torch(x):
        return str(x.dtype).replace("torch.", "")
    return np.asarray(x).dtype.name


def _host_values(x: Any) -> np.ndarray:
    """A host numpy array whose values equal ``x`` (bfloat16 widened to float32 exactly)."""
    if type(x) is np.ndarray:  # the common case, before the torch check (per tensor, per update)
        return x
    if _is_torch(x):
        import torch

        t = x.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.cpu().numpy()
    return np.asarray(x)


def layout_of(state_dict: Mapping[str, Any], *, dtype: Any = None) -> Layout:
    """The :class:`Layout` that :func:`pack` gives ``state_dict``, without copying any values."""
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError("pack: expected a non-empty mapping of name -> tensor/array")
    items = list(state_dict.items())
    names = [str(k) for k, _ in items]
    dts = [_dtype_name(v) for _, v in items]
    for n, d in zip(names, dts):
        if d not in _FLOATS | _INTS:
            raise ValueError(f"pack: {n!r} has unsupported dtype {d}; only real float/int/bool tensors can be packed")
    if dtype is None:
        flat_dt = np.dtype(np.float64) if "float64" in dts else np.dtype(np.float32)
    else:
        flat_dt = np.dtype(dtype)
        if flat_dt not in _EXACT:
            raise ValueError("pack: dtype must be float32 or float64")
        if flat_dt == np.float32 and "float64" in dts:
            log.warning("pack: float64 tensors stored in a float32 buffer; unpack will not be bit-exact")
    order = [i for i, d in enumerate(dts) if d in _FLOATS] + [i for i, d in enumerate(dts) if d in _INTS]
    shapes = [tuple(int(s) for s in items[i][1].shape) for i in order]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return Layout(
        names=tuple(names[i] for i in order),
        shapes=tuple(shapes),
        dtypes=tuple(dts[i] for i in order),
        offsets=tuple(int(o) for o in offsets[:-1]),
        size=int(offsets[-1]),
        float_size=int(sum(sz for i, sz in zip(order, sizes) if dts[i] in _FLOATS)),
        flat_dtype=flat_dt.name,
        source="torch" if any(_is_torch(v) for _, v in items) else "numpy",
    )


def flat_parts(state_dict: Mapping[str, Any], layout: Layout) -> list[np.ndarray]:
    """``state_dict``'s values in ``layout`` order as 1-D host arrays: concatenated they are
    :func:`pack`'s flat buffer, but nothing is packed.

    Float tensors come back as views (float16/float32/float64 as they are, bfloat16 widened to
    float32); integer and bool buffers (few values) are cast to the layout's flat dtype and
    refused beyond its exact range. The kernels take such a list as one update
    (:meth:`fedimg.kernels.WeightedAccumulator.add_checked`).
    """
    flat_dt = np.dtype(layout.flat_dtype)
    limit = _EXACT[flat_dt]
    out = []
    for name, dt in zip(layout.names, layout.dtypes):
        vals = _host_values(state_dict[name]).reshape(-1)
        if dt in _INTS:
            if dt != "bool" and vals.size:
                lo, hi = int(vals.min()), int(vals.max())
                if max(abs(lo), abs(hi)) > limit:
                    raise ValueError(
                        f"pack: integer buffer {name!r} holds {max(abs(lo), abs(hi))}, beyond the exact range of "
                        f"{flat_dt.name}; pass dtype=np.float64"
                    )
            vals = vals.astype(flat_dt)
        out.append(vals)
    return out


def slice_parts(parts: Sequence[Any], start: int, stop: int) -> list[Any]:
    """Views of ``parts`` (1-D arrays, one after the other) that hold values ``[start, stop)`` of
    their concatenation.

    >>> [p.tolist() for p in slice_parts([np.arange(3), np.arange(3, 5)], 2, 4)]
    [[2], [3]]
    """
    out, off = [], 0
    for p in parts:
        n = math.prod(p.shape)
        lo, hi = max(start - off, 0), min(stop - off, n)
        if lo < hi:
            out.append(p[lo:hi])
        off += n
    return out


def pack(state_dict: Mapping[str, Any], *, dtype: Any = None) -> tuple[np.ndarray, Layout]:
    """Pack ``state_dict`` into ``(flat, layout)``; floats first, integer buffers last.

    ``flat`` is a new host numpy array (float32, or float64 when a float64 tensor is
    present or ``dtype=np.float64``); the inputs are not modified.
    """
    layout = layout_of(state_dict, dtype=dtype)
    flat = np.empty(layout.size, dtype=np.dtype(layout.flat_dtype))
    for off, vals in zip(layout.offsets, flat_parts(state_dict, layout)):
        flat[off : off + vals.size] = vals
    return flat, layout


def unpack(flat: Any, layout: Layout, *, as_torch: bool | None = None, copy: bool = True) -> dict[str, Any]:
    """Rebuild the state dict from ``flat`` (numpy, CuPy or torch, on any device).

    Returns new arrays in the layout's original order of floats-then-integers, with the
    original dtypes. ``as_torch`` defaults to ``layout.source == "torch"``; bfloat16
    entries are always torch tensors (numpy has no bfloat16). ``copy=False``: entries whose
    dtype is the buffer's own are views of a host ``flat`` (for a caller that owns ``flat``
    and lets it go: no second model-sized copy).
    """
    if _is_torch(flat):
        flat = flat.detach().cpu().numpy()
    elif hasattr(flat, "get") and type(flat).__module__.startswith("cupy"):
        flat = flat.get()
    flat = np.asarray(flat).reshape(-1)
    if flat.size != layout.size:
        raise ValueError(f"unpack: buffer has {flat.size} values, layout expects {layout.size}")
    if as_torch is None:
        as_torch = layout.source == "torch"
    out: dict[str, Any] = {}
    for name, shape, dt, off in zip(layout.names, layout.shapes, layout.dtypes, layout.offsets):
        n = int(np.prod(shape, dtype=np.int64))
        seg = flat[off : off + n]
        if dt in _INTS:
            seg = np.rint(seg)
        if dt == "bfloat16" or as_torch:
            import torch

            if dt == "bfloat16":
                arr = torch.from_numpy(np.ascontiguousarray(seg, dtype=np.float32)).to(torch.bfloat16)
            else:
                arr = torch.from_numpy(seg.astype(dt, copy=copy))
            out[name] = arr.reshape(shape)
        else:
            out[name] = seg.astype(dt, copy=copy).reshape(shape)
    return out
