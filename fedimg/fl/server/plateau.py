"""Server learning rate on plateau, with restore (no NVFlare here).

ReduceLROnPlateau on the server, for :class:`fedimg.fl.server.strategies.FedAvgM`
(``StrategyConfig(lr_plateau=P)``): every round the sites evaluate the global model they
received and send the result with their update; the aggregator hands the sample-weighted mean
to the strategy (:meth:`LrPlateau.observe`) before it folds the round. When ``P`` rounds in a
row have not improved on the best validation seen, the round's server step is not the sites'
mean but the step back to the best global model (minus the sum of the steps applied since
it), the momentum buffer is cleared and the server lr is multiplied by ``factor`` (0.5).
The restored model is validated once more by the sites next round; that score is not
counted. With site-local norm layers (``--local-norms``) only the shared entries go back: each
site keeps its own norm layers. Everything is kept in :meth:`state` so that ``--resume`` continues it.

>>> p = LrPlateau(patience=1)
>>> applied = []
>>> for val in (0.5, 0.7, 0.6):                 # the model after steps 0, 1, 2 is validated
...     p.observe(val)
...     back = p.restore(1)
...     if back is None:                       # an ordinary round: the sites' step, here +1
...         back = np.array([1.0], np.float32); p.applied(back)
...     applied.append(float(back[0]))
>>> applied, p.scale                           # 0.7 was the model before the third round's step
([1.0, 1.0, -1.0], 0.5)
"""

from __future__ import annotations

import logging
import math

import numpy as np

__all__ = ["LrPlateau", "PLATEAU_STATE_PREFIX"]

log = logging.getLogger(__name__)

#: Prefix of the plateau's entries in the server state (next to FedAvgM's ``u``).
PLATEAU_STATE_PREFIX = "plateau."


class LrPlateau:
    """The server lr's scale and the way back to the best-validated global model.

    ``patience``: rounds without a new best before a restore; ``factor``: the scale's multiplier
    at each restore. ``best``: best validation seen; ``bad``: rounds since; ``scale``: multiplies
    the server lr; ``restores``: how many restores so far; ``drift``: the sum (float64) of the
    float steps applied since the best model (``None`` before the first validation).
    """

    def __init__(self, patience: int, factor: float = 0.5) -> None:
        if patience < 1 or not 0 < factor < 1:
            raise ValueError(f"patience must be >= 1 and factor in (0, 1), got {patience}, {factor}")
        self.patience = int(patience)
        self.factor = float(factor)
        self.best = -math.inf
        self.bad = 0
        self.scale = 1.0
        self.restores = 0
        self.drift: np.ndarray | None = None
        self._seen: float | None = None
        self._skip = False  # the next validation is of the model just restored

    def observe(self, value: float | None) -> None:
        """This round's validation of the global model the sites started from (``None``: none)."""
        self._seen = float(value) if value is not None and math.isfinite(float(value)) else None

    def restore(self, size: int) -> np.ndarray | None:
        """Judge the observed validation (once per round, before the step). Returns the float step
        back to the best model when the patience ran out (the scale is then lowered), else ``None``."""
        seen, self._seen = self._seen, None
        if seen is None:
            return None
        if self._skip:
            self._skip = False
            return None
        if seen > self.best:
            self.best, self.bad = seen, 0
            self.drift = np.zeros(size, np.float64)
            return None
        self.bad += 1
        if self.bad < self.patience or self.drift is None:
            return None
        back = (-self.drift).astype(np.float32)
        self.scale *= self.factor
        self.restores += 1
        self.bad, self._skip = 0, True
        self.drift = np.zeros(size, np.float64)
        log.info("server lr on plateau: %d round(s) without a new best (%.4g): back to that model, server lr x%.3g",
                 self.patience, self.best, self.scale)
        return back

    def applied(self, step: np.ndarray) -> None:
        """Record the float step the server applied this round (not the restore step itself)."""
        if self.drift is not None:
            self.drift += step

    def state(self) -> dict[str, np.ndarray]:
        """Everything :meth:`load_state` needs, as arrays (the server state's format)."""
        p = PLATEAU_STATE_PREFIX
        out = {p + "scalars": np.array([self.best, self.bad, self.scale, self.restores, float(self._skip)], np.float64)}
        if self.drift is not None:
            out[p + "drift"] = self.drift
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` saved (absent entries: a run saved before the option)."""
        p = PLATEAU_STATE_PREFIX
        if p + "scalars" in state:
            best, bad, scale, restores, skip = np.asarray(state[p + "scalars"], np.float64).reshape(-1)[:5]
            self.best, self.bad, self.scale, self.restores, self._skip = (
                float(best), int(bad), float(scale), int(restores), bool(skip))
        if p + "drift" in state:
            self.drift = np.asarray(state[p + "drift"], np.float64).copy()
