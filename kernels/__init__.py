"""fedimg's compute kernels: FedAvg, FedOpt and robust statistics on CPU and GPU.

One call per operation; the backend follows where the data live (numpy / torch CPU →
numba CPU, or numpy below 32 k elements; CuPy → CuPy; torch CUDA → CuPy via DLPack, else
numba CUDA, else torch ops; numba device arrays → numba CUDA), see
:mod:`fedimg.kernels._backend`. Every op takes ``backend=`` (``numpy``, ``numba``,
``numba_cuda``, ``cupy``, ``torch``) to force one; missing optional packages fall back and
log one line. Inputs are never modified; results come back as the inputs' kind/device.

=========================================  ============================================
``fedavg(updates, weights)``               weighted mean; ``mode=fused|blocked|streaming``,
                                           ``layout=`` for the integer-buffer rule
``WeightedAccumulator(size, dtype, device)``  streaming ``.add(u, w)`` / ``.result()`` /
                                           ``.total_weight`` / ``.count`` / ``.reset()``;
                                           ``.add_checked(u, w, check)``: fold + L2 norm in
                                           one pass, kept only if ``check(norm)``
``pack(state_dict)`` / ``unpack(flat, layout)``  flat float buffer + :class:`Layout`
                                           (bit-exact; integer buffers take the max)
``fedopt_step(params, g, m, v, method=..)``  FedAdam / FedYogi / FedAdagrad / FedAvgM
``coordinate_median`` / ``trimmed_mean``   robust aggregates over K updates
``l2_norms`` / ``clip_by_norm`` / ``all_finite``  per-update norms, clipping, NaN/Inf check
``parts_norm(parts)``                      norm of one update given as its tensors (one pass)
``kind_of(x)`` / ``choose_backend(kind, n)``  which backend an op would pick for ``x``
=========================================  ============================================

Half precision (float16, bfloat16) is accumulated in float32; float64 stays float64.

>>> import numpy as np
>>> from fedimg.kernels import fedavg, pack, unpack
>>> flat, layout = pack({"w": np.arange(4, dtype=np.float32)})
>>> fedavg([flat, flat * 3], [1, 1])
array([0., 2., 4., 6.], dtype=float32)
"""

from ._backend import BACKENDS, choose_backend, kind_of
from .aggregate import MODES, WeightedAccumulator, fedavg
from .fedopt import METHODS, fedopt_step
from .layout import Layout, pack, unpack
from .robust import all_finite, clip_by_norm, coordinate_median, l2_norms, parts_norm, trimmed_mean

__all__ = [
    "BACKENDS",
    "choose_backend",
    "kind_of",
    "fedavg",
    "WeightedAccumulator",
    "MODES",
    "Layout",
    "pack",
    "unpack",
    "fedopt_step",
    "METHODS",
    "coordinate_median",
    "trimmed_mean",
    "l2_norms",
    "parts_norm",
    "clip_by_norm",
    "all_finite",
]
