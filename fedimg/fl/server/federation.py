"""A federated run's configuration, its sites and where a run (re)starts (no NVFlare here).

:class:`FederationConfig` is what ``fedimg simulate / poc / export-job / study`` build
from the command line and what ``RUN/run_config.json`` records; :func:`discover_sites`
finds the ``DATA/site-*/`` folders; :func:`start_point` decides, from the run folder,
whether a run starts fresh or resumes after its last complete round. Used by
:mod:`fedimg.fl.nvflare` (which turns them into an NVFlare job) and :mod:`fedimg.study`.

>>> cfg = FederationConfig(task="toy", rounds=2, local_epochs=1)
>>> cfg.total_epochs, cfg.name, cfg.validation.min_sites
(2, 'fedimg-toy-fedavg', 1)
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedimg.errors import ConfigError, InputError
from fedimg.fl.server import state as run_state
from fedimg.fl.server.strategy_config import StrategyConfig
from fedimg.fl.server.validation import ValidationConfig
from fedimg.io import read_json

__all__ = ["FederationConfig", "discover_sites", "start_point", "SITE_PATTERN"]

log = logging.getLogger(__name__)

SITE_PATTERN = re.compile(r"^site-[A-Za-z0-9_-]+$")


@dataclass(frozen=True, kw_only=True)
class FederationConfig:
    """A federated run: task, rounds, local epochs, strategy and update checks.

    ``train``: the task's config dict (``config_from_dict``); its ``epochs`` is set to the
    federation's total epoch budget ``rounds * local_epochs`` so that learning-rate
    schedules span the whole run. ``min_sites`` / ``max_rel_norm`` / ``max_norm_ratio``:
    the server's update checks (:attr:`validation`). ``dp``: patient-level DP-SGD at every
    site (a :class:`fedimg.privacy.DPConfig` dict; empty: off), its budget spanning the
    whole run's local steps. ``client_dp``: client-level DP-FedAvg (``noise_multiplier``,
    ``clip``, ``delta``, ``seed`` of :class:`fedimg.privacy.ClientDPConfig`; the job adds the
    number of sites; empty: off). ``he``: secure aggregation with NVFlare's homomorphic
    encryption (POC or provisioned systems only; FedAvg of differences, no client-level DP).
    ``server_threads``: numba threads for the server's CPU fold, set in the thread that folds
    (0: auto, :func:`fedimg.device.server_fold_threads`: 1 on a server with <= 4 CPUs).
    """

    task: str = "brats"
    rounds: int = 20
    local_epochs: int = 2
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    min_sites: int = 1
    max_rel_norm: float = 10.0
    max_norm_ratio: float = 20.0
    max_samples: float = 1e7
    max_samples_ratio: float = 10.0
    train: dict[str, Any] = field(default_factory=dict)
    server_device: str = "auto"
    server_threads: int = 0
    send: str = "diff"
    threads_per_site: int = 0
    dp: dict[str, Any] = field(default_factory=dict)
    client_dp: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    he: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.local_epochs < 1:
            raise ConfigError("rounds and local_epochs must be >= 1")
        if self.min_sites < 1:
            raise ConfigError("min_sites must be >= 1")
        if isinstance(self.server_threads, bool) or not isinstance(self.server_threads, int) or self.server_threads < 0:
            raise ConfigError(f"--server-threads {self.server_threads!r}: give a whole number >= 0 (0: auto, one "
                              "thread on a server with <= 4 CPUs)")
        if self.send not in ("diff", "full"):
            raise ConfigError("send must be 'diff' or 'full'")
        if isinstance(self.strategy, dict):
            object.__setattr__(self, "strategy", StrategyConfig.from_dict(self.strategy))
        if self.dp:
            from fedimg.privacy import DPConfig

            DPConfig.from_dict(self.dp)  # validated here, built at each site
            if self.task not in ("brats", "tiles"):
                raise ConfigError(f"DP-SGD (--dp-*) runs in the brats and tiles tasks' training loop, not {self.task!r}")
            if self.strategy.prox_mu:
                raise ConfigError("FedProx (--prox-mu) cannot be combined with DP-SGD: its term is not per-sample")
            if self.task == "tiles" and self.train.get("stream") == "on":
                raise ConfigError("DP-SGD (--dp-*) draws tiles by index from memory and cannot train on a streamed "
                                  "tile store: drop --stream on (or --dp-*)")
        if self.client_dp:
            from fedimg.privacy import ClientDPConfig

            ClientDPConfig.from_dict({**self.client_dp, "sites": 1})
            if self.send != "diff" or self.strategy.buffered:
                raise ConfigError("--client-dp needs --send diff and a mean-based strategy (fedavg, fedprox, fedadam, "
                                  "fedyogi)")
        if (self.strategy.scaffold or self.strategy.local_norm) and (self.dp or self.client_dp):
            raise ConfigError(f"strategy {self.strategy.name} cannot run with DP (--dp-* / --client-dp): its "
                              "control variates / site-local layers are not privatised; drop one of them")
        if self.strategy.lr_plateau and self.client_dp:
            raise ConfigError("--server-lr-plateau cannot run with --client-dp (the server's noisy step is not "
                              "restored): drop one of them")
        if self.he and (self.client_dp or self.strategy.name != "fedavg" or self.send != "diff"):
            raise ConfigError("--he runs FedAvg of differences only, without --client-dp (the server can only add "
                              "ciphertexts): drop --client-dp / use --strategy fedavg --send diff")
        if not self.name:
            object.__setattr__(self, "name", f"fedimg-{self.task}-{self.strategy.name.replace('_', '-')}")

    @property
    def total_epochs(self) -> int:
        return self.rounds * self.local_epochs

    @property
    def validation(self) -> ValidationConfig:
        """The server's update checks as one :class:`ValidationConfig`."""
        return ValidationConfig(max_rel_norm=self.max_rel_norm, max_norm_ratio=self.max_norm_ratio,
                                min_sites=self.min_sites, max_samples=self.max_samples,
                                max_samples_ratio=self.max_samples_ratio, task=self.task)

    def train_config(self) -> dict[str, Any]:
        return {**self.train, "epochs": self.total_epochs}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FederationConfig:
        return cls(**d)


def discover_sites(data_dir: str | Path) -> dict[str, Path]:
    """Every ``data_dir/site-*/`` folder, by name (sorted). Raises InputError if none."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(root, "is not a folder; pass the folder that holds site-*/ sub-folders")
    sites = {p.name: p.resolve() for p in sorted(root.iterdir()) if p.is_dir() and SITE_PATTERN.match(p.name)}
    if not sites:
        raise InputError(root, "holds no site-*/ folders; make one per site (e.g. `fedimg synth --out data/`)")
    return sites


def start_point(out: Path, config: FederationConfig, resume: bool) -> tuple[int, Path | None]:
    """``(rounds already done, checkpoint to start from)`` for a run in ``out``.

    Refuses to overwrite a run without ``resume``, and to resume with another task or
    strategy or a run that is already complete.
    """
    latest = run_state.load_latest(out) if out.exists() else None
    if not resume:
        if latest is not None or (out / "metrics.json").exists():
            raise InputError(out, "already holds a run; pass --resume to continue it or choose a new --out")
        return 0, None
    if latest is None:
        log.info("%s holds no completed round; starting fresh", out)
        return 0, None
    rnd = latest[0]
    if config.strategy.scaffold:
        raise ConfigError(f"{out}: a SCAFFOLD run cannot resume (the sites' control variates live in their "
                          "processes and would restart at zero); start a new run with another --out")
    saved = out / "run_config.json"
    if saved.is_file():
        prev = read_json(saved).get("federation", {})
        if isinstance(prev.get("strategy"), dict):  # a run saved before a field existed ran with its default
            prev = {**prev, "strategy": {**StrategyConfig().to_dict(), **prev["strategy"]}}
        for key in ("task", "strategy"):
            if key in prev and prev[key] != config.to_dict()[key]:
                raise ConfigError(f"{saved}: --resume with a different {key} ({prev[key]} -> {config.to_dict()[key]})")
    if rnd >= config.rounds:
        raise ConfigError(f"{out}: all {config.rounds} rounds are already complete; raise --rounds to train longer")
    log.info("resuming after round %d", rnd)
    return rnd, run_state.round_path(out, rnd)
