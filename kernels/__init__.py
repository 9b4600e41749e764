"""fedimg's compute kernels: FedAvg, FedOpt and robust statistics on CPU and GPU.

One call per operation; the backend follows where the data live (numpy → numba CPU or
numpy, CuPy → CuPy, torch CUDA → CuPy via DLPack / numba CUDA / torch), see
:mod:`fedimg.kernels._backend`. Every op takes ``backend=`` to force one. Inputs are
never modified.

>>> import numpy as np
>>> from fedimg.kernels import fedavg, pack, unpack
>>> flat, layout = pack({"w": np.arange(4, dtype=np.float32)})
>>> fedavg([flat, flat * 3], [1, 1])
array([0., 2., 4., 6.], dtype=float32)
"""

from ._backend import BACKENDS
from .aggregate import MODES, WeightedAccumulator, fedavg
from .fedopt import METHODS, fedopt_step
from .layout import Layout, pack, unpack
from .robust import all_finite, clip_by_norm, coordinate_median, l2_norms, trimmed_mean

__all__ = [
    "BACKENDS",
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
    "clip_by_norm",
    "all_finite",
]
