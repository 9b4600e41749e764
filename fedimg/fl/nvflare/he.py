"""Secure aggregation with NVFlare's homomorphic encryption (TenSEAL CKKS): ``fedimg poc --he``.

Each site's update is encrypted at the site by NVFlare's ``HEModelEncryptor`` (after the site
screened its own plain update: :mod:`fedimg.privacy.selfcheck`) and the server adds
ciphertexts: NVFlare's ``ScatterAndGather`` with ``HEModelShareableGenerator`` and
:class:`FedimgHEAggregator`, a ``HEInTimeAccumulateWeightedAggregator`` that refuses any
contribution that is not entirely CKKS ciphertext, records what it received in
``RUN/he_audit.jsonl`` (value types, whether the ciphertexts' context holds a secret key,
bytes on the wire) and writes each round to ``RUN/metrics.json`` with the list of server-side
checks that are off. The global model stays encrypted on the server (no plain checkpoint
there); sites decrypt it with ``HEModelDecryptor``. Keys come from provisioning
(``nvflare poc prepare -he``: ``server_context.tenseal`` without, ``client_context.tenseal``
with the secret key, the same at every site). It protects updates from the server, not from
the other sites. NVFlare refuses HE in ``SimEnv``.

>>> screen_ciphertext({"w": np.zeros(3)}, "CKKS", {"w"})
'tensor w is not a CKKS ciphertext (ndarray): a plain update under --he is refused'
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from nvflare.apis.dxo import MetaKey, from_shareable
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import ReservedKey
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_opt.he.homomorphic_encrypt import load_tenseal_context_from_workspace
from nvflare.app_opt.he.intime_accumulate_model_aggregator import HEInTimeAccumulateWeightedAggregator
from nvflare.fuel.utils import fobs

from fedimg.errors import ConfigError
from fedimg.fl.server import state as run_state
from fedimg.fl.server.validation import SITE_KEY, site_problem
from fedimg.privacy.selfcheck import SERVER_CHECKS_OFF_UNDER_HE, SERVER_CHECKS_ON_UNDER_HE

__all__ = ["screen_ciphertext", "context_id", "build_he_recipe", "FedimgHEAggregator", "he_report", "HE_SIM_ERROR"]

log = logging.getLogger(__name__)

HE_SIM_ERROR = ("--he needs provisioned keys and separate processes; NVFlare's HE refuses the simulator: "
                "run `fedimg poc --he` (or a provisioned system) instead of `fedimg simulate`")


def context_id(context: Any) -> str:
    """SHA-256 of the public part of a TenSEAL context: its CKKS parameters, and its public key
    where it has one. NVFlare's ``HEBuilder`` makes *symmetric* contexts, which have no public
    key: then this identifies the parameters only, and a ciphertext made with the same parameters
    under another secret key cannot be told apart by the server (nobody but the sites can)."""
    import hashlib

    return hashlib.sha256(context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                                            save_relin_keys=False)).hexdigest()


def screen_ciphertext(data: dict[str, Any], algorithm: Any, expected: set[str] | None,
                      context: str | None = None) -> str | None:
    """Why the server refuses an HE contribution (``None``: accepted): every value must be a CKKS
    vector (``algorithm`` the DXO's processed algorithm) whose context matches the federation's
    (``context``: :func:`context_id` of the server's provisioned context; None: not compared),
    names those of the global model."""
    if algorithm != "CKKS":
        return f"update not encrypted with CKKS (processed algorithm {algorithm!r}): a plain update under --he is refused"
    import tenseal as ts

    for k, v in data.items():
        if not isinstance(v, ts.CKKSVector):
            return f"tensor {k} is not a CKKS ciphertext ({type(v).__name__}): a plain update under --he is refused"
        if context is not None and context_id(v.context()) != context:
            return (f"tensor {k} is encrypted with another HE context than the federation's: the site lacks the "
                    "provisioned client_context.tenseal; refused")
    if expected is not None and set(data) != set(expected):
        return f"tensor names differ from the global model's ({sorted(set(data) ^ set(expected))[:5]})"
    return None


def he_report() -> dict[str, Any]:
    """What the run's report says about HE: which server checks were off, which stayed on."""
    return {"encrypted": True, "scheme": "CKKS (TenSEAL, NVFlare HE)",
            "server_checks_off": list(SERVER_CHECKS_OFF_UNDER_HE),
            "server_checks_on": list(SERVER_CHECKS_ON_UNDER_HE),
            "site_checks": "each site screens its own plain update before encrypting it (finite, shapes, norm, "
                           "sample count)",
            "protects": "updates from the server; every site holds the same secret key"}


class FedimgHEAggregator(HEInTimeAccumulateWeightedAggregator):
    """Adds ciphertexts (NVFlare), refuses plain ones, audits what it received, writes metrics.json."""

    def __init__(self, run_dir: str = "", max_samples: float = 0.0, expected_data_kind: str = "WEIGHT_DIFF",
                 tenseal_context_file: str = "server_context.tenseal") -> None:
        super().__init__(expected_data_kind=expected_data_kind, weigh_by_local_iter=False)
        self.run_dir = run_dir
        self.max_samples = float(max_samples)
        self.tenseal_context_file = tenseal_context_file
        self._context_id: str | None = None
        self._path: Path | None = None
        self._reset()

    def handle_event(self, event_type: str, fl_ctx: Any) -> None:
        if event_type == EventType.START_RUN:  # the server's provisioned context: no secret key
            ctx = load_tenseal_context_from_workspace(self.tenseal_context_file, fl_ctx)
            if ctx.has_secret_key():
                self.system_panic(f"{self.tenseal_context_file} holds a secret key: the server must not", fl_ctx)
            self._context_id = context_id(ctx)
        super().handle_event(event_type, fl_ctx)

    def _reset(self) -> None:
        self._sites: dict[str, dict[str, Any]] = {}
        self._rejected: list[dict[str, Any]] = []
        self._started = None

    def _run_path(self, fl_ctx: Any) -> Path:
        if self._path is None:
            from fedimg.fl.nvflare.crossval import run_path

            self._path = run_path(self.run_dir, fl_ctx)
            self._path.mkdir(parents=True, exist_ok=True)
        return self._path

    def accept(self, shareable: Any, fl_ctx: Any) -> bool:
        self._started = self._started or time.perf_counter()
        site = shareable.get_peer_prop(key=ReservedKey.IDENTITY_NAME, default="?")
        rnd = int(fl_ctx.get_prop(AppConstants.CURRENT_ROUND, 0)) + 1
        try:
            dxo = from_shareable(shareable)
        except Exception as exc:  # noqa: BLE001 - anything unreadable is refused with its reason
            return self._refuse(fl_ctx, rnd, site, f"unreadable result ({exc})")
        glob = fl_ctx.get_prop(AppConstants.GLOBAL_MODEL)
        expected = set(glob["weights"]) if glob and "weights" in glob else None
        data = dxo.data or {}
        samples = dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND) or 0
        reason = screen_ciphertext(data, dxo.get_meta_prop(MetaKey.PROCESSED_ALGORITHM), expected, self._context_id)
        if not reason and self.max_samples and not 0 < samples <= self.max_samples:
            reason = f"declared sample count {samples} is not in 1..{self.max_samples:g}"
        reason = reason or site_problem(site, dxo.get_meta_prop(SITE_KEY))  # the site it states is the one it came from
        if reason:
            return self._refuse(fl_ctx, rnd, site, reason)
        types = sorted({type(v).__name__ for v in data.values()})
        secret = any(v.context().has_secret_key() for v in data.values())
        wire = len(fobs.dumps(dxo.to_shareable()))
        ok = super().accept(shareable, fl_ctx)
        metrics = dxo.get_meta_prop(MetaKey.INITIAL_METRICS) or {}
        if ok:
            self._sites[site] = {"samples": samples, "metrics": {k: v for k, v in metrics.items()
                                                                if isinstance(v, (int, float))}}
        else:
            self._rejected.append({"site": site, "reason": "NVFlare's HE aggregator refused it (see the server log)"})
        self._audit({"round": rnd, "site": site, "accepted": bool(ok), "data_kind": str(dxo.data_kind),
                     "algorithm": "CKKS", "value_types": types, "tensors": len(data),
                     "context_has_secret_key": secret, "bytes": wire,
                     "context_checked": self._context_id is not None}, fl_ctx)
        self.log_info(fl_ctx, f"round {rnd}: {site}'s update is {len(data)} CKKS ciphertext(s), {wire} bytes; "
                              f"secret key on the server: {secret}")
        return ok

    def _refuse(self, fl_ctx: Any, rnd: int, site: str, reason: str) -> bool:
        self._rejected.append({"site": site, "reason": reason})
        self.log_warning(fl_ctx, f"round {rnd}: refused {site}'s update: {reason}")
        self._audit({"round": rnd, "site": site, "accepted": False, "reason": reason}, fl_ctx)
        return False

    def _audit(self, rec: dict[str, Any], fl_ctx: Any) -> None:
        with open(self._run_path(fl_ctx) / "he_audit.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")

    def aggregate(self, fl_ctx: Any) -> Any:
        t0 = time.perf_counter()
        rnd = int(fl_ctx.get_prop(AppConstants.CURRENT_ROUND, 0)) + 1
        out = super().aggregate(fl_ctx)
        entry = {"round": rnd, "strategy": "fedavg", "sites": self._sites, "accepted": sorted(self._sites),
                 "rejected": self._rejected, "validation": {"model_round": rnd - 1, **_weighted(self._sites)},
                 "aggregation_seconds": time.perf_counter() - t0,
                 "round_seconds": time.perf_counter() - self._started if self._started else None,
                 "he": he_report()}
        run_state.append_metrics(self._run_path(fl_ctx), entry)
        self.log_info(fl_ctx, f"round {rnd}: added {len(self._sites)} encrypted update(s); the global model "
                              "stays encrypted on the server")
        self._reset()
        return out


def _weighted(sites: dict[str, dict[str, Any]]) -> dict[str, float]:
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for rec in sites.values():
        for k, v in rec["metrics"].items():
            if k.startswith("val_") and np.isfinite(v):
                sums[k[4:]] = sums.get(k[4:], 0.0) + rec["samples"] * v
                weights[k[4:]] = weights.get(k[4:], 0.0) + rec["samples"]
    return {k: sums[k] / weights[k] for k in sums if weights[k] > 0}


def build_he_recipe(config: Any, sites: dict[str, Path | None], *, run_dir: str | Path | None,
                    local_model_dir: str | Path | None = None) -> Any:
    """An NVFlare HE job: ``ScatterAndGather`` + HE shareable generator + :class:`FedimgHEAggregator`
    on the server, fedimg's client script between ``HEModelDecryptor`` and ``HEModelEncryptor`` at
    each site. Only FedAvg of differences, without client-level DP, can run on ciphertexts.
    ``run_dir=None`` (an exported job): the server writes to its job workspace, ``<run>/fedimg/``."""
    if config.client_dp:
        raise ConfigError("--he cannot be combined with --client-dp: the server cannot clip or add noise to ciphertexts")
    if config.strategy.name != "fedavg" or config.send != "diff":
        raise ConfigError(f"--he runs FedAvg of differences only (got --strategy {config.strategy.name} "
                          f"--send {config.send}): the server can only add ciphertexts")
    import dataclasses
    import shutil
    import tempfile
    import weakref

    from nvflare.app_opt.he.model_decryptor import HEModelDecryptor
    from nvflare.app_opt.he.model_encryptor import HEModelEncryptor
    from nvflare.app_opt.he.model_shareable_generator import HEModelShareableGenerator
    from nvflare.app_opt.pt.job_config.base_fed_job import BaseFedJob
    from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather
    from nvflare.client.config import ExchangeFormat, TransferType
    from nvflare.fuel.utils.constants import FrameworkType
    from nvflare.job_config.defs import FilterType
    from nvflare.job_config.script_runner import ScriptRunner
    from nvflare.recipe.spec import Recipe

    from fedimg.fl.nvflare.client import CONFIG_NAME
    from fedimg.fl.nvflare.job import client_configs
    from fedimg.fl.nvflare.persistor import FedimgPersistor
    from fedimg.tasks import get_task

    tcfg = get_task(config.task).config_from_dict(config.train_config())
    job = BaseFedJob(name=config.name + "-he", min_clients=min(config.min_sites, len(sites)))
    persistor_id = job.to_server(FedimgPersistor(task=config.task, config=tcfg.to_dict()), id="persistor")
    gen_id = job.to_server(HEModelShareableGenerator(), id="shareable_generator")
    agg_id = job.to_server(FedimgHEAggregator(run_dir=str(Path(run_dir).resolve()) if run_dir else "",
                                              max_samples=config.max_samples),
                           id="aggregator")
    job.to_server(ScatterAndGather(min_clients=len(sites), num_rounds=config.rounds, wait_time_after_min_received=0,
                                   aggregator_id=agg_id, persistor_id=persistor_id, shareable_generator_id=gen_id))
    staging = Path(tempfile.mkdtemp(prefix="fedimg-he-job-"))
    ccs = client_configs(config, sites, tcfg.to_dict(), local_model_dir=local_model_dir)
    script = str(Path(__file__).with_name("client.py"))
    for name, cc in ccs.items():
        path = dataclasses.replace(cc, he=True, max_rel_norm=config.max_rel_norm,
                                   max_samples=config.max_samples).write(staging / name / CONFIG_NAME)
        job.to(ScriptRunner(script=script, script_args=f"--config {CONFIG_NAME}", framework=FrameworkType.PYTORCH,
                            server_expected_format=ExchangeFormat.NUMPY, params_transfer_type=TransferType.DIFF), name)
        job.to(HEModelDecryptor(), name, tasks=["train", "validate"], filter_type=FilterType.TASK_DATA)
        job.to(HEModelEncryptor(weigh_by_local_iter=True), name, tasks=["train"], filter_type=FilterType.TASK_RESULT)
        job.add_file_to(str(path), name)
    job.set_app_packages(["fedimg", "torch", "numpy", "monai", "safetensors"])
    recipe = Recipe(job)
    recipe.name = job.name
    weakref.finalize(recipe, shutil.rmtree, staging, ignore_errors=True)
    return recipe
