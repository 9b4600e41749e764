"""A site's side of SCAFFOLD and FedBN inside the client script (:mod:`fedimg.fl.nvflare.client`).

* SCAFFOLD (``ClientConfig.scaffold``): the site's control variate ``c_i`` lives in this object
  for the whole job (:class:`fedimg.fl.server.scaffold.SiteControl`); the global ``c`` arrives in
  the round's model meta (``scaffold_c_global``, NVFlare's key; absent in round 1: zeros), the
  local steps are corrected while :meth:`SiteStrategy.training` is open, and ``dc_i`` goes back in
  the update's meta (``scaffold_c_diff``), as NVFlare's ``ScaffoldRecipe`` clients do.
* FedBN (``ClientConfig.local_keys``): those entries (the model's norm layers) never leave the
  site: the update carries the other entries only, and the site's own values replace the global
  model's when a round starts (:meth:`SiteStrategy.start`). After each round they are kept in
  ``<local_model_dir>/norms/<site>/round-NNN.safetensors``, so that the study (and a resumed run)
  can rebuild the personalised model of any round: ``rounds/round-NNN`` + the site's norms.

>>> from fedimg.fl.nvflare.client import ClientConfig
>>> own = SiteStrategy(ClientConfig(task="toy", local_keys=["1.weight"]), "site-1")
>>> sorted(own.shared({"0.weight": 1, "1.weight": 2}))
['0.weight']
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nvflare.app_common.app_constant import AlgorithmConstants

__all__ = ["SiteStrategy", "norms_path"]

log = logging.getLogger(__name__)


def norms_path(local_model_dir: str | Path, site: str, rnd: int) -> Path:
    """Where a FedBN site keeps its norm entries after round ``rnd`` (1-based)."""
    return Path(local_model_dir) / "norms" / site / f"round-{int(rnd):03d}.safetensors"


class SiteStrategy:
    """What SCAFFOLD / FedBN change in one site's round loop (nothing for the other strategies)."""

    def __init__(self, cc: Any, site: str) -> None:
        from fedimg.fl.server.scaffold import SiteControl

        self.site = site
        self.control = SiteControl() if cc.scaffold else None
        self.local_keys = frozenset(cc.local_keys)
        self.local_model_dir = cc.local_model_dir
        self.norms: dict[str, Any] = {}

    def start(self, global_sd: dict[str, Any], rnd: int) -> dict[str, Any]:
        """The weights this site starts round ``rnd`` (0-based) from: the global model, with FedBN's
        entries replaced by the site's own (once it has trained; a resumed run reads them back)."""
        if not self.local_keys:
            return global_sd
        if not self.norms and rnd > 0 and self.local_model_dir:
            path = norms_path(self.local_model_dir, self.site, rnd)
            if path.is_file():
                import torch

                from fedimg.fl.server.state import load_params

                self.norms = {k: torch.as_tensor(v) for k, v in load_params(path)[0].items()}
        return {**global_sd, **self.norms}

    def shared(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` without FedBN's site-local entries (what may leave the site)."""
        return {k: v for k, v in state.items() if k not in self.local_keys}

    @contextlib.contextmanager
    def training(self, model: Any, meta: dict[str, Any] | None) -> Iterator[None]:
        """SCAFFOLD: correct every optimizer step of ``model`` by ``-lr (c - c_i)`` while open."""
        if self.control is None:
            yield
            return
        self.control.begin(model, (meta or {}).get(AlgorithmConstants.SCAFFOLD_CTRL_GLOBAL))
        with self.control.attached(model):
            yield

    def finish(self, model: Any, start_sd: dict[str, Any], meta: dict[str, Any], local_sd: dict[str, Any],
               rnd: int) -> None:
        """After training round ``rnd`` (0-based): SCAFFOLD's ``dc_i`` into ``meta``; FedBN's norms kept."""
        if self.control is not None:
            meta[AlgorithmConstants.SCAFFOLD_CTRL_DIFF] = self.control.finish(model, start_sd)
        if self.local_keys:
            self.norms = {k: local_sd[k].clone() for k in self.local_keys}
            if self.local_model_dir:
                from fedimg.fl.server.state import save_params

                save_params(norms_path(self.local_model_dir, self.site, rnd + 1), self.norms,
                            {"round": rnd + 1, "kind": "site norms (FedBN)"})
