"""FedOpt server step: FedAdam, FedYogi, FedAdagrad (Reddi et al., ICLR 2021) and FedAvgM
(Hsu et al., 2019) in one fused elementwise pass.

``pseudo_grad`` is the step direction ``fedavg(client_models) - params`` (the negative of
the paper's gradient, as in Flower's strategies). With ``m, v`` the server moments:

* ``m' = beta1*m + (1-beta1)*g``; ``avgm``: ``m' = beta1*m + g``
* ``adam``: ``v' = beta2*v + (1-beta2)*g^2``; ``yogi``: ``v' = v - (1-beta2)*g^2*sign(v-g^2)``;
  ``adagrad``: ``v' = v + g^2``; ``avgm``: ``v' = v``
* ``params' = params + lr*m'/(sqrt(v')+tau)``; ``avgm``: ``params' = params + lr*m'``

No bias correction (as in the paper). Pure: returns new ``(params, m, v)`` arrays of the
inputs' kind/device, float32 (float64 if an input is float64); the inputs are untouched.
``m``/``v`` may be ``None`` on the first round (zeros; Reddi et al. start ``v`` at
``tau**2``, pass that explicitly if wanted). ``eps`` is accepted as another name of ``tau``.

>>> import numpy as np
>>> p = np.zeros(3, np.float32); g = np.ones(3, np.float32)
>>> p2, m2, v2 = fedopt_step(p, g, None, None, method="avgm", lr=0.5, beta1=0.9)
>>> p2, m2
(array([0.5, 0.5, 0.5], dtype=float32), array([1., 1., 1.], dtype=float32))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._backend import choose_backend, kind_of
from ._convert import float_kind, from_native, to_native
from ._ops import ops_for
from ._ref import METHODS

__all__ = ["fedopt_step", "METHODS"]


def fedopt_step(
    params: Any,
    pseudo_grad: Any,
    m: Any = None,
    v: Any = None,
    *,
    method: str = "adam",
    lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    eps: float | None = None,
    tau: float | None = None,
    backend: str | None = None,
) -> tuple[Any, Any, Any]:
    """One server optimiser step; returns ``(params', m', v')`` (see the module doc)."""
    if method not in METHODS:
        raise ValueError(f"fedopt_step: method must be one of {sorted(METHODS)}, not {method!r}")
    if eps is not None and tau is not None and eps != tau:
        raise ValueError("fedopt_step: give eps or tau (the same constant), not two different values")
    t = 1e-3 if eps is None and tau is None else float(tau if tau is not None else eps)
    for name, val in (("lr", lr), ("beta1", beta1), ("beta2", beta2), ("tau", t)):
        if not math.isfinite(val):
            raise ValueError(f"fedopt_step: {name} must be finite")
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError("fedopt_step: need 0 <= beta1 < 1 and 0 <= beta2 < 1")
    if method != "avgm" and not t > 0:
        raise ValueError("fedopt_step: tau (eps) must be > 0 for adam, yogi and adagrad")
    n = int(np.prod(params.shape))
    kind = kind_of(params)
    for name, a in (("pseudo_grad", pseudo_grad), ("m", m), ("v", v)):
        if a is None:
            continue
        float_kind(a)
        if int(np.prod(a.shape)) != n:
            raise ValueError(f"fedopt_step: {name} has {int(np.prod(a.shape))} values, params has {n}")
        if kind_of(a) != kind:
            raise TypeError(f"fedopt_step: {name} is a {kind_of(a)} array but params is {kind}")
    kinds = [float_kind(a) for a in (params, pseudo_grad, m, v) if a is not None]
    dt = np.dtype(np.float64) if "float64" in kinds else np.dtype(np.float32)
    be = choose_backend(kind, n, backend)
    ops = ops_for(be)
    p_n = to_native(params, be)
    g_n = to_native(pseudo_grad, be)
    m_n = to_native(m, be) if m is not None else ops.zeros(n, dt, p_n)
    v_n = to_native(v, be) if v is not None else ops.zeros(n, dt, p_n)
    p2, m2, v2 = ops.fedopt(p_n, g_n, m_n, v_n, METHODS[method], float(lr), float(beta1), float(beta2), t)
    return from_native(p2, params), from_native(m2, params), from_native(v2, params)
