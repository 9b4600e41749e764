"""A site screens its own update before it encrypts it (secure aggregation leaves the server blind).

Under homomorphic encryption (``fedimg poc --he``) the server adds ciphertexts: it cannot see
an update's values, so its NaN/Inf, norm and shape checks
(:class:`fedimg.fl.server.validation.UpdateValidator`) cannot run. Each site therefore runs
:func:`check_own_update` on its plain update, before anything is encrypted or sent, with the
same thresholds the server would have used: every tensor finite, names and shapes those of
the global model, ``‖Δ‖ <= max_rel_norm · ‖global‖`` and the declared sample count within
``max_samples``. A failed check raises :class:`UpdateCheckError` (the site stops and says
why) instead of sending an update nobody could screen. :data:`SERVER_CHECKS_OFF_UNDER_HE`
lists what the server no longer checks, for the run's report.

>>> import numpy as np
>>> g = {"w": np.ones((2, 2), np.float32)}
>>> check_own_update({"w": np.full((2, 2), 0.1, np.float32)}, g, num_samples=8)
{'norm': 0.2, 'global_norm': 2.0, 'rel_norm': 0.1}
>>> check_own_update({"w": np.full((2, 3), 0.1, np.float32)}, g, num_samples=8)
Traceback (most recent call last):
...
fedimg.privacy.selfcheck.UpdateCheckError: own update: tensor 'w' has shape (2, 3), the global model's is (2, 2); not sent
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedimg.errors import FedimgError

__all__ = ["UpdateCheckError", "check_own_update", "SERVER_CHECKS_OFF_UNDER_HE", "SERVER_CHECKS_ON_UNDER_HE"]

#: Server-side checks that cannot run on ciphertexts (each site runs them itself instead).
SERVER_CHECKS_OFF_UNDER_HE = (
    "NaN/Inf in an update",
    "update norm vs the global model's (max_rel_norm)",
    "update norm vs the round's median (max_norm_ratio)",
    "tensor dtypes",
    "payload metric audit",
    "client-level DP clipping and noise",
)
#: What the server still checks under HE (it sees names, ciphertext counts and the plain sample count).
SERVER_CHECKS_ON_UNDER_HE = (
    "every tensor is a CKKS ciphertext made with the federation's HE context parameters (plain updates refused)",
    "tensor names are the global model's",
    "declared sample count within max_samples (counts travel in the clear)",
)


class UpdateCheckError(FedimgError):
    """A site's own update failed its pre-encryption screen; it is not sent."""


def _array(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def check_own_update(update: Mapping[str, Any], global_params: Mapping[str, Any], *, num_samples: int,
                     max_rel_norm: float = 10.0, max_samples: float = 1e7) -> dict[str, float]:
    """Screen a plain update (a difference ``local - global``) against the global model.

    ``max_rel_norm`` / ``max_samples``: the server's thresholds (0: rule off). Returns the
    update's norm, the global model's norm and their ratio (rounded to 6 digits); raises
    :class:`UpdateCheckError` naming the first failed rule.
    """
    if set(update) != set(global_params):
        extra, missing = sorted(set(update) - set(global_params)), sorted(set(global_params) - set(update))
        raise UpdateCheckError(f"own update: tensor names differ from the global model's (extra {extra}, "
                               f"missing {missing}); not sent")
    if not (isinstance(num_samples, (int, np.integer)) and 0 < num_samples and (not max_samples or num_samples <= max_samples)):
        raise UpdateCheckError(f"own update: sample count {num_samples!r} is not in 1..{max_samples:g}; not sent")
    sq = gsq = 0.0
    for name in sorted(update):
        u, g = _array(update[name]), _array(global_params[name])
        if u.shape != g.shape:
            raise UpdateCheckError(f"own update: tensor {name!r} has shape {u.shape}, the global model's is "
                                   f"{g.shape}; not sent")
        if not np.issubdtype(u.dtype, np.floating):
            continue
        u64 = u.astype(np.float64, copy=False)
        if not np.isfinite(u64).all():
            raise UpdateCheckError(f"own update: tensor {name!r} holds NaN or Inf; not sent")
        sq += float(np.dot(u64.ravel(), u64.ravel()))
        g64 = g.astype(np.float64, copy=False).ravel()
        gsq += float(np.dot(g64, g64))
    norm, gnorm = math.sqrt(sq), math.sqrt(gsq)
    rel = norm / gnorm if gnorm > 0 else 0.0
    if max_rel_norm and gnorm > 0 and rel > max_rel_norm:
        raise UpdateCheckError(f"own update: norm {norm:.4g} is {rel:.3g}x the global model's {gnorm:.4g} "
                               f"(limit {max_rel_norm:g}x); not sent")
    return {"norm": round(norm, 6), "global_norm": round(gnorm, 6), "rel_norm": round(rel, 6)}
