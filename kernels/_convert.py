"""Zero-copy views between array libraries, and the backend's "native" array types.

* ``numpy`` / ``numba`` backends work on host numpy arrays (bfloat16 as ``uint16`` bits);
* ``cupy`` on CuPy arrays (torch CUDA tensors enter through DLPack, no copy);
* ``numba_cuda`` on numba device arrays (torch / CuPy through ``__cuda_array_interface__``);
* ``torch`` on torch tensors.

``to_native`` never copies when the data already live where the backend runs (host data
sent to a device backend, or device data to a host backend, are copied; the parity tests
do that on purpose). ``from_native`` turns a backend result into the caller's kind.

>>> import numpy as np
>>> a = to_native(np.ones(3, np.float16), "numpy")
>>> a.dtype
dtype('float16')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._backend import kind_of

__all__ = ["to_native", "from_native", "float_kind", "is_bf16"]

_FLOAT_NP = (np.float16, np.float32, np.float64)


def is_bf16(x: Any) -> bool:
    """True for torch bfloat16 tensors."""
    return kind_of(x).startswith("torch") and str(x.dtype) == "torch.bfloat16"


def float_kind(x: Any) -> str:
    """``"float16" | "bfloat16" | "float32" | "float64"``; raises TypeError for other dtypes."""
    if kind_of(x).startswith("torch"):
        name = str(x.dtype).replace("torch.", "")
    else:
        name = np.dtype(x.dtype).name
    if name not in ("float16", "bfloat16", "float32", "float64"):
        raise TypeError(f"fedimg.kernels: expected a floating array, got dtype {name}")
    return name


def _torch_host(x: Any) -> np.ndarray:
    import torch

    t = x.detach()
    if t.dtype == torch.bfloat16:
        return t.cpu().view(torch.int16).numpy().view(np.uint16)
    return t.cpu().numpy()


def to_native(x: Any, backend: str) -> Any:
    """View/copy ``x`` as the array type ``backend`` computes on (1-D, contiguous)."""
    kind = kind_of(x)
    if backend in ("numpy", "numba"):
        if kind == "numpy":
            arr = np.asarray(x)
        elif kind.startswith("torch"):
            arr = _torch_host(x)
        elif kind == "cupy":
            arr = x.get()
        else:  # numba device array
            arr = x.copy_to_host()
        return np.ascontiguousarray(arr.reshape(-1))
    if backend == "cupy":
        import cupy

        if kind == "cupy":
            return cupy.ascontiguousarray(x.reshape(-1))
        if kind == "torch_cuda":
            import torch

            t = x.detach().reshape(-1).contiguous()
            if t.dtype == torch.bfloat16:
                return cupy.from_dlpack(t.view(torch.int16)).view(cupy.uint16)
            return cupy.from_dlpack(t)
        if kind == "numba_cuda":
            return cupy.asarray(x).reshape(-1)
        return cupy.asarray(to_native(x, "numpy"))
    if backend == "numba_cuda":
        from numba import cuda

        if kind == "numba_cuda":
            return x.reshape(x.size) if x.ndim != 1 else x
        if kind == "torch_cuda":
            import torch

            t = x.detach().reshape(-1).contiguous()
            if t.dtype == torch.bfloat16:  # numba has no bfloat16: widen on the device
                t = t.float()
            return cuda.as_cuda_array(t)
        if kind == "cupy":
            return cuda.as_cuda_array(x.reshape(-1))
        return cuda.to_device(to_native(x, "numpy"))
    if backend == "torch":
        import torch

        if kind.startswith("torch"):
            return x.detach().reshape(-1)
        if kind == "cupy":
            return torch.from_dlpack(x.reshape(-1))
        if kind == "numba_cuda":
            return torch.as_tensor(x, device="cuda").reshape(-1)
        arr = to_native(x, "numpy")
        if arr.dtype == np.uint16:
            return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(arr)
    raise ValueError(f"unknown backend {backend!r}")


def from_native(y: Any, like: Any) -> Any:
    """Turn a backend result ``y`` (float32/float64, never bf16) into ``like``'s kind/device."""
    kind = kind_of(like)
    ykind = kind_of(y)
    if kind == ykind:
        return y
    if kind == "numpy":
        if ykind == "cupy":
            return y.get()
        if ykind == "numba_cuda":
            return y.copy_to_host()
        if ykind.startswith("torch"):
            return y.cpu().numpy()
        return np.asarray(y)
    if kind.startswith("torch"):
        import torch

        if ykind == "cupy":
            t = torch.from_dlpack(y)
        elif ykind == "numba_cuda":
            t = torch.as_tensor(y, device=like.device)
        elif ykind.startswith("torch"):
            t = y
        else:
            t = torch.from_numpy(np.asarray(y))
        return t.to(like.device)
    if kind == "cupy":
        import cupy

        return cupy.asarray(y) if ykind != "numpy" else cupy.asarray(np.asarray(y))
    if kind == "numba_cuda":
        from numba import cuda

        return cuda.as_cuda_array(y) if ykind != "numpy" else cuda.to_device(y)
    raise ValueError(f"cannot convert to {kind}")
