"""The NVFlare job for fedimg: a FedAvg recipe with fedimg's client script and aggregator.

:func:`build_recipe` returns an ``nvflare`` ``FedAvgRecipe`` (PyTorch) whose server
runs NVFlare's FedAvg controller with :class:`fedimg.fl.nvflare.aggregator.FedimgAggregator`
and whose sites run :mod:`fedimg.fl.nvflare.client` on their own data folder
(``per_site_config``). The same recipe runs in ``SimEnv`` (``fedimg simulate``), on a
POC system (``fedimg poc``) or exported as a job folder (``fedimg export-job``).
Every site and the server need ``fedimg`` installed; the job ships only the client
script and configuration.

>>> cfg = FederationConfig(task="toy", rounds=2, local_epochs=1)
>>> cfg.total_epochs
2
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedimg.errors import ConfigError, InputError
from fedimg.fl.nvflare.client import encode_config
from fedimg.fl.server.strategies import StrategyConfig

__all__ = ["FederationConfig", "discover_sites", "build_recipe", "export_job", "SITE_PATTERN", "ALLOW_LIST"]

log = logging.getLogger(__name__)

SITE_PATTERN = re.compile(r"^site-[A-Za-z0-9_-]+$")
#: Component path prefix that sites must allow (``class_allow_list``) to run fedimg jobs.
ALLOW_LIST = ["fedimg.fl."]


@dataclass(frozen=True, kw_only=True)
class FederationConfig:
    """A federated run: task, rounds, local epochs, strategy and update checks.

    ``train``: the task's config dict (``config_from_dict``); its ``epochs`` is set to the
    federation's total epoch budget ``rounds * local_epochs`` so that learning-rate
    schedules span the whole run.
    """

    task: str = "brats"
    rounds: int = 20
    local_epochs: int = 2
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    min_sites: int = 1
    max_rel_norm: float = 10.0
    max_norm_ratio: float = 20.0
    train: dict[str, Any] = field(default_factory=dict)
    server_device: str = "auto"
    send: str = "diff"
    threads_per_site: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.local_epochs < 1:
            raise ConfigError("rounds and local_epochs must be >= 1")
        if self.min_sites < 1:
            raise ConfigError("min_sites must be >= 1")
        if self.send not in ("diff", "full"):
            raise ConfigError("send must be 'diff' or 'full'")
        if isinstance(self.strategy, dict):
            object.__setattr__(self, "strategy", StrategyConfig.from_dict(self.strategy))
        if not self.name:
            object.__setattr__(self, "name", f"fedimg-{self.task}-{self.strategy.name.replace('_', '-')}")

    @property
    def total_epochs(self) -> int:
        return self.rounds * self.local_epochs

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


class _Recipe:
    """Built lazily so that importing this module does not import NVFlare."""

    cls = None

    @classmethod
    def get(cls):
        if cls.cls is None:
            from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe

            class FedimgRecipe(FedAvgRecipe):
                """FedAvgRecipe with a start round (resume) for the FedAvg controller."""

                def __init__(self, *, start_round: int = 0, num_sites: int = 0, **kw):
                    self._fedimg_start_round = int(start_round)
                    self._fedimg_num_sites = int(num_sites) or int(kw["min_clients"])
                    super().__init__(**kw)

                def _get_controller_kwargs(self):
                    return {**super()._get_controller_kwargs(), "start_round": self._fedimg_start_round}

                def _create_controller(self, persistor_id, model_params, model_aggregator):
                    # The job needs min_clients sites to start and to go on (NVFlare aborts it below
                    # that); every round asks all sites that are alive.
                    ctl = super()._create_controller(persistor_id, model_params, model_aggregator)
                    ctl.num_clients = self._fedimg_num_sites
                    return ctl

            cls.cls = FedimgRecipe
        return cls.cls


def build_recipe(config: FederationConfig, sites: dict[str, Path | None], *, run_dir: str | Path | None,
                 start_round: int = 0, checkpoint: str | Path | None = None,
                 local_model_dir: str | Path | None = None, site_scripts: dict[str, str] | None = None,
                 tracking: bool = True) -> Any:
    """An NVFlare FedAvg recipe for ``sites`` (name -> data folder, or None to use $FEDIMG_SITE_DATA).

    ``start_round`` (0-based) and ``checkpoint`` (a fedimg safetensors file) resume a run; ``run_dir`` is where the
    server writes checkpoints and metrics (None: inside the server's job workspace).
    ``site_scripts`` replaces the client script for some sites (tests play bad sites).
    """
    from nvflare.client.config import ExchangeFormat, TransferType

    from fedimg.fl.nvflare.aggregator import FedimgAggregator
    from fedimg.fl.nvflare.persistor import FedimgPersistor
    from fedimg.tasks import get_task

    task = get_task(config.task)
    tcfg = task.config_from_dict(config.train_config())
    cfg_args = encode_config(tcfg.to_dict())
    persistor = FedimgPersistor(task=config.task, config=tcfg.to_dict(),
                                checkpoint=str(Path(checkpoint).resolve()) if checkpoint else "")
    remaining = config.rounds - start_round
    if remaining < 1:
        raise ConfigError(f"nothing to do: {start_round} of {config.rounds} rounds are already complete")
    agg = FedimgAggregator(
        strategy=config.strategy.name, server_lr=config.strategy.server_lr, beta1=config.strategy.beta1,
        beta2=config.strategy.beta2, tau=config.strategy.tau, trim_ratio=config.strategy.trim_ratio,
        max_rel_norm=config.max_rel_norm, max_norm_ratio=config.max_norm_ratio, min_sites=config.min_sites,
        run_dir=str(Path(run_dir).resolve()) if run_dir else "", device=config.server_device,
        key_metric=task.key_metric,
    )
    script = str(Path(__file__).with_name("client.py"))
    base_args = (
        f"--task {config.task} --local-epochs {config.local_epochs} --prox-mu {config.strategy.prox_mu} "
        f"--send {config.send} {cfg_args}"
        + (f" --threads {config.threads_per_site}" if config.threads_per_site else "")
        + (f" --local-model-dir {Path(local_model_dir).resolve()}" if local_model_dir else "")
    )
    per_site = {}
    for name, path in sites.items():
        site_cfg: dict[str, Any] = {"train_args": base_args + (f" --data {path}" if path else "")}
        if site_scripts and name in site_scripts:
            site_cfg["train_script"] = site_scripts[name]
        per_site[name] = site_cfg
    recipe = _Recipe.get()(
        name=config.name,
        model_persistor=persistor,
        min_clients=min(config.min_sites, len(sites)),
        num_sites=len(sites),
        num_rounds=remaining,
        start_round=start_round,
        train_script=script,
        aggregator=agg,
        server_expected_format=ExchangeFormat.NUMPY,
        params_transfer_type=TransferType.DIFF if config.send == "diff" else TransferType.FULL,
        key_metric=task.key_metric,
    )
    recipe.set_per_site_config(per_site)
    # fedimg is installed on every participant: ship only the script, not its imports.
    recipe._job.set_app_packages(["fedimg", "torch", "numpy", "monai", "safetensors"])
    if tracking:
        from nvflare.recipe.utils import add_experiment_tracking

        add_experiment_tracking(recipe, "tensorboard", client_side=True, server_side=True)
    return recipe


def export_job(recipe: Any, out: str | Path) -> Path:
    """Write the recipe as an NVFlare job folder ``out`` (submit with ``nvflare job submit``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recipe.export(str(out.parent))
    produced = out.parent / recipe.name
    if produced.resolve() != out.resolve():
        import shutil

        if out.exists():
            shutil.rmtree(out)
        produced.rename(out)
    # The script is copied into each app's custom/ folder; refer to it there, not by this machine's path.
    import json

    for cfg in out.glob("app_*/config/config_fed_client.json"):
        custom = cfg.parent.parent / "custom"
        for script in list(custom.rglob("*.py")):
            if script.parent != custom:  # NVFlare mirrors the source tree; keep the script flat
                script.rename(custom / script.name)
        for d in sorted((p for p in custom.rglob("*") if p.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
        doc = json.loads(cfg.read_text())
        for ex in doc.get("executors", []):
            args = ex.get("executor", {}).get("args", {})
            if "task_script_path" in args:
                args["task_script_path"] = Path(args["task_script_path"]).name
        cfg.write_text(json.dumps(doc, indent=4))
    return out
