"""SCAFFOLD's control variates and FedBN's site-local norm layers, as pure maths (no NVFlare here).

SCAFFOLD (Karimireddy et al., 2020, "Stochastic Controlled Averaging for Federated Learning",
option II): the server keeps a global control variate ``c``, every site its own ``c_i`` (kept
across rounds). Each local step of a site is corrected by ``-lr * (c - c_i)``; after the round
the site sets ``c_i+ = c_i - c + (x - y_i) / sum(lr)`` (``x``: the round's global weights, ``y_i``:
the site's weights after training, ``sum(lr)``: the learning rates of its steps; ``K * lr`` for
a constant rate) and sends ``dc_i = c_i+ - c_i`` beside its model difference. The server folds
the model differences as FedAvg and sets ``c <- c + mean(dc_i)`` (sample-weighted, as NVFlare's
``Scaffold`` controller). The correction is added to the weights after each optimizer step (as
NVFlare's ``PTScaffoldHelper.model_update``), so it works with any optimizer (fedimg's AdamW);
controls cover trainable parameters only, buffers travel as usual. Unlike ``PTScaffoldHelper``,
the new ``c_i`` divides by the *sum* of the step learning rates, not ``steps x last lr``: under a
cosine schedule the last rate tends to 0.

* :class:`SiteControl` — a site's half: :meth:`~SiteControl.begin`, :meth:`~SiteControl.attached`
  around the local round (a torch optimizer post-step hook applies the correction to this
  model's parameters only), :meth:`~SiteControl.finish` for ``dc_i``.
* :class:`Scaffold` — the server's strategy (FedAvg of the differences + the global control).
* :class:`FedBN` / :func:`norm_keys` — FedBN (Li et al., 2021): the state-dict entries of
  normalisation layers stay at each site; the server averages the rest (FedAvg).

>>> import torch
>>> net = torch.nn.Linear(2, 1, bias=False)
>>> with torch.no_grad(): _ = net.weight.fill_(1.0)
>>> x = {k: v.clone() for k, v in net.state_dict().items()}
>>> site = SiteControl()
>>> site.begin(net, {"weight": np.array([[1.0, 0.0]], np.float32)})   # c from the server; c_i = 0
>>> opt = torch.optim.SGD(net.parameters(), lr=0.5)
>>> with site.attached(net):
...     opt.zero_grad(); net(torch.ones(1, 2)).sum().backward(); opt.step()
>>> net.weight.data    # w - lr * g - lr * (c - c_i) = 1 - 0.5 * 1 - 0.5 * [1, 0]
tensor([[0.0000, 0.5000]])
>>> site.finish(net, x)["weight"]   # c_i+ - c_i = -c + (x - y) / lr = [-1, 0] + [2, 1]
array([[1., 1.]], dtype=float32)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from fedimg.fl.server.strategies import FedAvg

__all__ = ["SiteControl", "Scaffold", "FedBN", "norm_keys", "check_controls", "CONTROL_STATE_PREFIX"]

log = logging.getLogger(__name__)

#: Prefix of the global control's entries in the server state (:meth:`Scaffold.state`).
CONTROL_STATE_PREFIX = "scaffold_c."


class SiteControl:
    """One site's control variate ``c_i`` (kept across rounds) and the correction of its steps."""

    def __init__(self) -> None:
        self.local: dict[str, Any] = {}  # c_i: name -> float32 CPU tensor
        self._corr: dict[str, Any] = {}
        self._lr_sum: dict[str, float] = {}
        self._c: dict[str, Any] = {}
        self._params: dict[str, Any] = {}
        self._ids: dict[int, str] = {}  # id(parameter) -> name, for after_step

    def begin(self, model: Any, c_global: Mapping[str, Any] | None) -> None:
        """Start a round: ``c_global`` is the server's ``c`` (``None``/empty: zeros, the first round)."""
        import torch

        self._params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        self._ids = {id(p): k for k, p in self._params.items()}
        c_global = c_global or {}
        self._c, self._corr, self._lr_sum = {}, {}, {}
        for k, p in self._params.items():
            zero = torch.zeros(p.shape, dtype=torch.float32)
            c = torch.as_tensor(np.asarray(c_global[k]), dtype=torch.float32) if k in c_global else zero
            if tuple(c.shape) != tuple(p.shape):
                raise ValueError(f"SCAFFOLD control for {k} has shape {tuple(c.shape)}, the model {tuple(p.shape)}")
            self._c[k] = c
            ci = self.local.setdefault(k, zero.clone())
            self._corr[k] = (c - ci).to(device=p.device, dtype=p.dtype)
            self._lr_sum[k] = 0.0

    def after_step(self, param_groups: list[dict[str, Any]]) -> None:
        """Correct the parameters an optimizer step just changed: ``p -= lr * (c - c_i)``."""
        import torch

        with torch.no_grad():
            for group in param_groups:
                lr = float(group["lr"])
                for p in group["params"]:
                    k = self._ids.get(id(p))
                    if k is not None:
                        p.add_(self._corr[k], alpha=-lr)
                        self._lr_sum[k] += lr

    @contextlib.contextmanager
    def attached(self, model: Any) -> Iterator[None]:
        """While inside, every optimizer step on ``model``'s parameters is corrected (:meth:`after_step`)."""
        from torch.optim.optimizer import register_optimizer_step_post_hook

        mine = {id(p) for p in model.parameters()}

        def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
            if any(id(p) in mine for g in optimizer.param_groups for p in g["params"]):
                self.after_step(optimizer.param_groups)

        handle = register_optimizer_step_post_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def finish(self, model: Any, start: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """End the round: update ``c_i`` from ``start`` (``x``) and the trained weights; return ``dc_i``."""
        import torch

        if not self._params:
            raise RuntimeError("SiteControl.finish() before begin()")
        if not any(s > 0 for s in self._lr_sum.values()):
            raise RuntimeError("SCAFFOLD: the local round took no optimizer step; nothing to correct")
        deltas = {}
        for k, p in self._params.items():
            if self._lr_sum[k] <= 0:  # not stepped this round: c_i stays
                deltas[k] = np.zeros(tuple(p.shape), np.float32)
                continue
            x = torch.as_tensor(np.asarray(start[k]), dtype=torch.float32)
            y = p.detach().to("cpu", torch.float32)
            new = self.local[k] - self._c[k] + (x - y) / self._lr_sum[k]
            deltas[k] = (new - self.local[k]).numpy()
            self.local[k] = new
        self._corr = {}
        return deltas


def check_controls(delta: Any, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why a site's control difference ``delta`` (name -> array) is unacceptable, or ``None``.

    Names must be among the model's floating-point entries (``shapes``), shapes must match,
    values must be finite."""
    if not isinstance(delta, Mapping) or not delta:
        return "SCAFFOLD control difference missing or empty"
    for k, v in delta.items():
        if k not in shapes:
            return f"SCAFFOLD control for unknown tensor {str(k)[:60]!r}"
        arr = np.asarray(v)
        if tuple(arr.shape) != tuple(shapes[k]):
            return f"SCAFFOLD control shape mismatch for {k}: {tuple(arr.shape)} != {tuple(shapes[k])}"
        if arr.dtype.kind != "f" or not np.isfinite(arr).all():
            return f"SCAFFOLD control for {k} is not finite floating point"
    return None


class Scaffold(FedAvg):
    """SCAFFOLD's server: FedAvg of the model differences (times ``server_lr``, the paper's
    global step size) and the global control ``c <- c + weighted mean of dc_i``."""

    name = "scaffold"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.c: dict[str, np.ndarray] = {}
        self._c_sum: dict[str, np.ndarray] = {}
        self._c_weight = 0.0

    def _reset(self) -> None:
        super()._reset()
        self._c_sum, self._c_weight = {}, 0.0

    def add_controls(self, delta: Mapping[str, Any], weight: float) -> None:
        """Fold one accepted site's ``dc_i`` (call it only for updates the round accepted)."""
        for k, v in delta.items():
            v = np.asarray(v, np.float64) * float(weight)
            self._c_sum[k] = v if k not in self._c_sum else self._c_sum[k] + v
        self._c_weight += float(weight)

    def finish(self) -> Any:
        step = super().finish()
        if self._c_weight > 0:
            for k, s in self._c_sum.items():
                mean = (s / self._c_weight).astype(np.float32)
                self.c[k] = mean if k not in self.c else self.c[k] + mean
        return step

    def controls(self) -> dict[str, np.ndarray]:
        """The global control ``c`` to send with the next round's model (empty before the first round)."""
        return {k: v.copy() for k, v in self.c.items()}

    def control_norm(self) -> float:
        """L2 norm of ``c`` (recorded per round in ``metrics.json``)."""
        return float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in self.c.values())))

    def state(self) -> dict[str, np.ndarray]:
        return {CONTROL_STATE_PREFIX + k: v for k, v in self.c.items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.c = {k[len(CONTROL_STATE_PREFIX):]: np.asarray(v, np.float32).copy()
                  for k, v in state.items() if k.startswith(CONTROL_STATE_PREFIX)}


class FedBN(FedAvg):
    """FedBN's server: FedAvg of the entries the sites send (every entry but the norm layers'),
    which stay at each site (:func:`norm_keys`)."""

    name = "fedbn"


def _norm_types() -> tuple[type, ...]:
    """Normalisation layers whose parameters and statistics FedBN keeps at each site."""
    import torch

    nn = torch.nn
    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
            nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)


def norm_keys(model: Any) -> list[str]:
    """The state-dict names of ``model``'s normalisation layers (BatchNorm, InstanceNorm with
    affine or statistics, GroupNorm, LayerNorm): weights, biases and running statistics.

    >>> import torch
    >>> norm_keys(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)))
    ['1.bias', '1.num_batches_tracked', '1.running_mean', '1.running_var', '1.weight']
    """
    types = _norm_types()
    keys = set()
    for mname, module in model.named_modules():
        if isinstance(module, types):
            prefix = f"{mname}." if mname else ""
            keys.update(prefix + k for k in module.state_dict())
    return sorted(keys)
