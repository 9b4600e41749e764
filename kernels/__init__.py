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

from .aggregate import MODES, WeightedAccumulator, fedavg
from .layout import Layout, pack, unpack

__all__ = ["fedavg", "WeightedAccumulator", "MODES", "Layout", "pack", "unpack"]
