"""The NVFlare job for fedimg: a FedAvg recipe with fedimg's client script and aggregator.

:func:`build_recipe` returns an ``nvflare`` ``FedAvgRecipe`` (PyTorch) whose server
runs NVFlare's FedAvg controller with :class:`fedimg.fl.nvflare.aggregator.FedimgAggregator`
(its strategy and update checks passed as one JSON object argument each) and whose sites run
:mod:`fedimg.fl.nvflare.client`; each site's app ships that site's whole client
configuration as one JSON file (:class:`fedimg.fl.nvflare.client.ClientConfig`, data
folder included) in its ``custom/`` folder. The same recipe runs in ``SimEnv``
(``fedimg simulate``), on a POC system (``fedimg poc``) or exported as a job folder
(``fedimg export-job``). Every site and the server need ``fedimg`` installed; the job
ships only the client script and configuration.

Usage (``fedimg simulate`` does this)::

    recipe = build_recipe(FederationConfig(task="toy", rounds=2), discover_sites("data/"), run_dir="runs/fl")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from fedimg.errors import ConfigError
from fedimg.fl.nvflare.client import CONFIG_NAME, VAL_PREFIX, ClientConfig
from fedimg.fl.server.federation import FederationConfig

__all__ = ["build_recipe", "export_job", "client_configs", "site_launch", "site_local_keys", "ALLOW_LIST"]

log = logging.getLogger(__name__)

#: Component path prefix that sites must allow (``class_allow_list``) to run fedimg jobs.
ALLOW_LIST = ["fedimg.fl."]


class _Recipe:
    """Built lazily so that importing this module does not import NVFlare."""

    cls = None

    @classmethod
    def get(cls):
        if cls.cls is None:
            from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe

            class FedimgRecipe(FedAvgRecipe):
                """FedAvgRecipe with a start round (resume) and a client config file per site."""

                def __init__(self, *, start_round: int = 0, num_sites: int = 0,
                             site_files: dict[str, Path] | None = None, **kw):
                    self._fedimg_start_round = int(start_round)
                    self._fedimg_num_sites = int(num_sites) or int(kw["min_clients"])
                    self._fedimg_site_files = dict(site_files or {})
                    super().__init__(**kw)

                def _prepare_client_apps(self):
                    # each site's app carries its client config file in custom/
                    super()._prepare_client_apps()
                    for site, path in self._fedimg_site_files.items():
                        self._job.add_file_to(str(path), site)

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


def client_configs(config: FederationConfig, sites: dict[str, Path | None], task_config: dict[str, Any], *,
                   local_model_dir: str | Path | None = None,
                   local_keys: list[str] | None = None) -> dict[str, ClientConfig]:
    """Each site's :class:`ClientConfig` (data folder ``None``: the site's ``$FEDIMG_SITE_DATA``);
    ``task_config`` is the task's validated config as a dict; ``local_keys``: FedBN's site-local entries."""
    base = ClientConfig(task=config.task, task_config=task_config, local_epochs=config.local_epochs,
                        prox_mu=float(config.strategy.prox_mu), send=config.send, threads=config.threads_per_site,
                        local_model_dir=str(Path(local_model_dir).resolve()) if local_model_dir else "",
                        dp=dict(config.dp), client_clip=float(config.client_dp.get("clip", 0.0)),
                        scaffold=config.strategy.scaffold, local_keys=list(local_keys or []))
    return {name: dataclasses.replace(base, data=str(path) if path else "", site=name) for name, path in sites.items()}


def build_recipe(config: FederationConfig, sites: dict[str, Path | None], *, run_dir: str | Path | None,
                 start_round: int = 0, checkpoint: str | Path | None = None,
                 local_model_dir: str | Path | None = None, site_scripts: dict[str, str] | None = None,
                 tracking: bool = True, cross_site: str = "", site_nproc: dict[str, int] | None = None) -> Any:
    """An NVFlare FedAvg recipe for ``sites`` (name -> data folder, or None to use $FEDIMG_SITE_DATA).

    ``start_round`` (0-based) and ``checkpoint`` (a fedimg safetensors file) resume a run; ``run_dir`` is where the
    server writes checkpoints and metrics (None: inside the server's job workspace).
    ``site_scripts`` replaces the client script for some sites (tests play bad sites).
    ``cross_site``: after training, ``"all"`` evaluates the global model and every site's local model on every
    site, ``"global"`` the global model only, ``""`` nothing (:mod:`fedimg.fl.nvflare.crossval`).
    ``site_nproc`` (site -> N > 1): that site's client runs under torchrun on N processes
    (:func:`site_launch`; DDP in the client, rank 0 talks to NVFlare).
    """
    from nvflare.client.config import ExchangeFormat, TransferType

    from fedimg.fl.nvflare.aggregator import FedimgAggregator
    from fedimg.fl.nvflare.crossval import add_cross_site_evaluation, check_cross_site
    from fedimg.fl.nvflare.persistor import FedimgPersistor
    from fedimg.tasks import get_task

    task = get_task(config.task)
    tcfg = task.config_from_dict(config.train_config())
    persistor = FedimgPersistor(task=config.task, config=tcfg.to_dict(),
                                checkpoint=str(Path(checkpoint).resolve()) if checkpoint else "")
    remaining = config.rounds - start_round
    check_cross_site(cross_site, client_dp=bool(config.client_dp))
    if remaining < 1:
        raise ConfigError(f"nothing to do: {start_round} of {config.rounds} rounds are already complete")
    local_keys = site_local_keys(config, task, tcfg)  # FedBN: the norm layers stay at the sites
    agg = FedimgAggregator(
        strategy=config.strategy.to_dict(), validation=config.validation.to_dict(), server_threads=config.server_threads,
        run_dir=str(Path(run_dir).resolve()) if run_dir else "", device=config.server_device, local_keys=local_keys,
        key_metric=task.key_metric, client_dp={**config.client_dp, "sites": len(sites)} if config.client_dp else {})
    script = str(Path(__file__).with_name("client.py"))
    # The client configs live in a scratch folder until the recipe is exported or run (then dropped with it).
    staging = Path(tempfile.mkdtemp(prefix="fedimg-job-"))
    ccs = client_configs(config, sites, tcfg.to_dict(), local_model_dir=local_model_dir, local_keys=local_keys)
    site_files = {name: cc.write(staging / name / CONFIG_NAME) for name, cc in ccs.items()}
    per_site = {name: {"train_args": f"--config {CONFIG_NAME}",
                       **({"train_script": site_scripts[name]} if site_scripts and name in site_scripts else {})}
                for name in sites}
    for name, launch in site_launch(site_nproc or {}, sites, config, tcfg, staging=staging).items():
        per_site[name].update(launch)
    recipe = _Recipe.get()(
        name=config.name,
        model_persistor=persistor,
        min_clients=min(config.min_sites, len(sites)),
        num_sites=len(sites),
        num_rounds=remaining,
        start_round=start_round,
        site_files=site_files,
        train_script=script,
        aggregator=agg,
        server_expected_format=ExchangeFormat.NUMPY,
        params_transfer_type=TransferType.DIFF if config.send == "diff" else TransferType.FULL,
        key_metric=VAL_PREFIX + task.key_metric,  # NVFlare's model selector reads the sites' metrics as sent
    )
    weakref.finalize(recipe, shutil.rmtree, staging, ignore_errors=True)
    recipe.set_per_site_config(per_site)
    # fedimg is installed on every participant: ship only the script, not its imports.
    recipe._job.set_app_packages(["fedimg", "torch", "numpy", "monai", "safetensors"])
    if tracking:
        from nvflare.recipe.utils import add_experiment_tracking

        add_experiment_tracking(recipe, "tensorboard", client_side=True, server_side=True)
    if cross_site:
        add_cross_site_evaluation(recipe, key_metric=task.key_metric, run_dir=agg.run_dir,
                                  local_models=cross_site == "all")
    return recipe


def site_local_keys(config: FederationConfig, task: Any, tcfg: Any) -> list[str]:
    """FedBN (strategy ``fedbn``): the task model's normalisation entries, which stay at the sites;
    ``[]`` for every other strategy. Refuses a model without normalisation layers."""
    if not config.strategy.local_norm:
        return []
    from fedimg.fl.server.scaffold import norm_keys

    keys = norm_keys(task.build_model(tcfg))
    if not keys:
        raise ConfigError(f"strategy fedbn keeps normalisation layers at the sites, but the {config.task} model has "
                          "none; use fedavg (toy task: set \"norm\" in its config)")
    return keys


#: The client script torchrun starts (NVFlare copies it into the site's custom/ folder; fedimg is installed).
DDP_SCRIPT = "from fedimg.fl.nvflare.client import main\n\nraise SystemExit(main())\n"


def site_launch(site_nproc: dict[str, int], sites: dict[str, Path | None], config: FederationConfig,
                tcfg: Any, *, staging: Path) -> dict[str, dict[str, Any]]:
    """Per-site runner settings for sites trained on N > 1 processes: an external process started by
    torchrun (this interpreter) running a two-line script written under ``staging``. Refuses what DDP
    cannot do here with one line."""
    from fedimg.engine.distributed import per_rank_batch, torchrun_argv

    out = {}
    for name, n in site_nproc.items():
        if name not in sites:
            raise ConfigError(f"--site-nproc {name}={n}: no site {name!r} (sites: {', '.join(sites)})")
        if n < 1:
            raise ConfigError(f"--site-nproc {name}={n}: use 1 or more processes")
        if n == 1:
            continue
        if config.task != "brats":
            raise ConfigError(f"--site-nproc {name}={n}: only the brats task trains on several processes")
        if config.dp or config.he or config.strategy.scaffold or config.strategy.local_norm:
            raise ConfigError(f"--site-nproc {name}={n} cannot run with DP-SGD, HE, scaffold or fedbn; drop one of them")
        per_rank_batch(int(tcfg.batch_size), n)
        script = Path(staging) / f"ddp-{name}" / "fedimg_ddp_client.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(DDP_SCRIPT)
        out[name] = {"launch_external_process": True, "command": " ".join(torchrun_argv(n)), "train_script": str(script)}
    return out


def export_job(recipe: Any, out: str | Path) -> Path:
    """Write the recipe as an NVFlare job folder ``out`` (submit with ``nvflare job submit``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recipe.export(str(out.parent))
    produced = out.parent / recipe.name
    if produced.resolve() != out.resolve():
        if out.exists():
            shutil.rmtree(out)
        produced.rename(out)
    # The script is copied into each app's custom/ folder; refer to it there, not by this machine's path.
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
