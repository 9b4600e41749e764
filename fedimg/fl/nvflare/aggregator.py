"""fedimg's NVFlare server aggregator: validate each update, stream it into the kernels.

:class:`FedimgAggregator` is a ``ModelAggregator``: NVFlare's FedAvg controller calls
``accept_model`` once per arriving site result; each update (a difference
``local - global``) is screened (names, shapes, dtypes: :mod:`fedimg.fl.server.validation`), then
its tensors go, without a packed copy, into the run's :class:`fedimg.fl.server.strategies.Strategy`
(for the averaging strategies the streaming ``WeightedAccumulator`` from :mod:`fedimg.kernels`,
on the GPU when the server has one): one pass over the update folds it into a scratch sum
and measures its norm; the validator judges the norm (NaN/Inf, outliers) and only an accepted update's
scratch becomes the sum, so a rejected one never touches the aggregate. The screened updates are
folded when the round ends, in the order of the sites' names, so the float32 sums do not depend
on which site finishes first.
``aggregate_model`` folds them, finalises the strategy's step, checkpoints the new global model
(:mod:`fedimg.fl.server.state`) and appends the round to ``metrics.json``.

Constructor arguments are plain values so that NVFlare can write them into the job's
``config_fed_server.json``: the strategy and the update checks are one JSON object each
(:meth:`fedimg.fl.server.strategies.StrategyConfig.to_dict`,
:meth:`fedimg.fl.server.validation.ValidationConfig.to_dict`; a JSON *string* would not
do: NVFlare reads ``"{...}"`` strings in job configs as variable references).

>>> agg = FedimgAggregator(strategy=StrategyConfig(name="fedadam", server_lr=0.1).to_dict())
>>> agg.strategy["name"], agg.strategy["server_lr"], agg.validation == ValidationConfig().to_dict()
('fedadam', 0.1, True)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.aggregators.model_aggregator import ModelAggregator
from nvflare.app_common.app_constant import AlgorithmConstants, AppConstants
from nvflare.app_common.app_event_type import AppEventType

from fedimg.device import server_fold_threads, set_launch_threads
from fedimg.fl.server import state as run_state
from fedimg.fl.server.strategies import Strategy, StrategyConfig, make_strategy
from fedimg.fl.server.validation import SAMPLES_KEY, SITE_MISMATCH, UpdateValidator, ValidationConfig, Verdict

__all__ = ["FedimgAggregator", "SAMPLES_KEY"]

log = logging.getLogger(__name__)

SCAFFOLD_CTRL_DIFF = AlgorithmConstants.SCAFFOLD_CTRL_DIFF  # a site's control difference, in its update's meta
SCAFFOLD_CTRL_GLOBAL = AlgorithmConstants.SCAFFOLD_CTRL_GLOBAL  # the global control, in the next model's meta


class FedimgAggregator(ModelAggregator):
    """Validating, streaming aggregator with fedimg's strategies.

    ``strategy``: a :class:`StrategyConfig`, its ``to_dict()`` or its JSON text (default
    FedAvg); ``validation``: the same for :class:`ValidationConfig` (default thresholds).
    ``run_dir``: where checkpoints and ``metrics.json`` go (empty: ``<server run
    dir>/fedimg``). ``device``: ``"auto"`` (GPU if the server has one), ``"cpu"`` or
    ``"cuda[:n]"``. ``audit_payloads``: also record in ``payloads.jsonl`` the names and
    types of everything each site sent (used by the payload test). ``client_dp``: client-level
    DP (a :class:`fedimg.privacy.ClientDPConfig` dict): the strategy is wrapped in
    :class:`fedimg.fl.server.dp_strategy.ClientDP` and each round's ε goes to ``metrics.json``.
    ``local_keys``: model entries that stay at the sites (FedBN's norm layers): updates must not
    carry them and the global model's stay as they are. Strategy ``scaffold``: each update's
    ``meta["scaffold_c_diff"]`` (NVFlare's key) is checked and, when the update is accepted, folded
    into the global control, which goes out with the next round's model (``meta["scaffold_c_global"]``).
    ``server_threads``: numba threads for the CPU fold (0: auto, :func:`fedimg.device.server_fold_threads`),
    set in every thread that launches the fold's kernels (numba's count is thread-local and NVFlare
    calls ``accept_model`` from its own threads); each round's ``fold_threads`` in ``metrics.json`` is
    the count the folding thread had.
    """

    def __init__(
        self,
        strategy: dict | str | StrategyConfig | None = None,
        validation: dict | str | ValidationConfig | None = None,
        run_dir: str = "",
        device: str = "auto",
        key_metric: str = "dice_mean",
        audit_payloads: bool = True,
        client_dp: dict | None = None,
        local_keys: list[str] | None = None,
        server_threads: int = 0,
    ) -> None:
        super().__init__()
        self._strategy = _parsed(strategy, StrategyConfig)
        self._validation = _parsed(validation, ValidationConfig)
        # NVFlare writes the job's component arguments from these attributes: plain JSON objects.
        self.strategy = self._strategy.to_dict()
        self.validation = self._validation.to_dict()
        self.run_dir = run_dir
        self.device = device
        self.key_metric = key_metric
        self.audit_payloads = audit_payloads
        self.client_dp = dict(client_dp or {})  # DP-FedAvg (ClientDPConfig fields); empty: off
        self.local_keys = sorted(local_keys or [])  # FedBN: entries that never leave the sites
        self.server_threads = int(server_threads)  # 0: auto (fedimg.device.server_fold_threads)
        self._fold_threads = 0  # resolved in the server process at START_RUN
        self._seen_threads: int | None = None  # numba's count in the thread that last folded
        self._controls: dict[str, Any] = {}  # SCAFFOLD: this round's control differences by site
        self._validator = UpdateValidator(self._validation)
        self._agg: Strategy | None = None
        self._global: dict[str, np.ndarray] | None = None
        self._run_path: Path | None = None
        self._restored_state: dict[str, np.ndarray] = {}
        self._round_seconds = 0.0
        self._sites: dict[str, dict[str, Any]] = {}
        self._rejected: list[dict[str, str]] = []
        self._round_started = 0.0
        self._held: list[tuple[str, list, int, dict]] = []  # a round without a previous median: judged together

    # -- NVFlare events ---------------------------------------------------------------
    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        super().handle_event(event_type, fl_ctx)
        if event_type == EventType.START_RUN:
            self._start_run(fl_ctx)
        elif event_type == AppEventType.ROUND_STARTED:
            learnable = fl_ctx.get_prop(AppConstants.GLOBAL_MODEL)
            weights = learnable.get("weights") if learnable is not None else None
            self._global = {k: np.asarray(v) for k, v in weights.items()} if weights else None
            self._validator.begin_round(self._shared(self._global))
            self._round_started = time.perf_counter()

    def _start_run(self, fl_ctx: FLContext) -> None:
        if self.run_dir:
            self._run_path = Path(self.run_dir)
        else:
            engine = fl_ctx.get_engine()
            self._run_path = Path(engine.get_workspace().get_run_dir(fl_ctx.get_job_id())) / "fedimg"
        self._run_path.mkdir(parents=True, exist_ok=True)
        self._restored_state = run_state.load_server_state(self._run_path)
        self._fold_threads = server_fold_threads(self.server_threads)
        self.info(f"server fold: {self._fold_threads} numba thread(s) (--server-threads {self.server_threads or 'auto'})")
        self.reset_stats()

    # -- ModelAggregator API ------------------------------------------------------------
    def reset_stats(self) -> None:
        self._sites = {}
        self._rejected = []
        self._held = []
        self._controls = {}
        self._round_seconds = 0.0
        if self._agg is not None:
            self._agg.begin_round()

    def accept_model(self, model: FLModel) -> None:
        t0 = time.perf_counter()
        self._launch_threads()
        meta = dict(model.meta or {})
        site = str(meta.get("client_name") or f"site?{len(self._sites) + len(self._rejected) + len(self._held)}")
        metrics = {k: float(v) for k, v in (model.metrics or {}).items() if _is_number(v)}
        if self.audit_payloads:
            self._audit(site, model)
        params = dict(model.params or {})
        shared = self._shared(self._global)
        if model.params_type == ParamsType.FULL and shared is not None and params.keys() == shared.keys():
            params = {k: np.asarray(v) - shared[k] for k, v in params.items()}
        hold = self._validator.previous_median is None  # no reference yet: judge this round's updates together
        samples = 0
        controls = meta.pop(SCAFFOLD_CTRL_DIFF, None) if self._strategy.scaffold else None
        if self._strategy.scaffold and isinstance(meta.get("props"), dict):  # the server's own copy of what it sent
            meta["props"] = {k: v for k, v in meta["props"].items() if k != SCAFFOLD_CTRL_GLOBAL}
        verdict = self._validator.audit(site, meta, model.metrics or {})
        if verdict.ok and self._strategy.scaffold:
            verdict = self._screen_controls(site, controls)
        if verdict.ok:
            verdict, samples = self._validator.check_samples(site, meta.get(SAMPLES_KEY), others=[] if hold else None)
        if verdict.ok:
            verdict = self._validator.screen(site, params)
        record = {"samples": samples, "metrics": metrics}
        if verdict.ok:  # folded in site order when the round ends (:meth:`_release_held`)
            self._held.append((site, verdict.parts, samples, record))
        else:
            self._settle(site, verdict, samples, record)
        self._round_seconds += time.perf_counter() - t0

    def _settle(self, site: str, verdict: Verdict, samples: int, record: dict) -> None:
        if verdict.ok:
            if site in self._controls:
                self._agg.add_controls(self._controls[site], samples)
            record["update_norm"] = verdict.norm
            self._sites[site] = record
            self._validator.register(site, samples)
        else:
            wrong_site = (verdict.reason or "").startswith(SITE_MISMATCH)  # the run stops after this round
            (self.error if wrong_site else self.warning)(f"rejected update from {site}: {verdict.reason}")
            self._rejected.append({"site": site, "reason": verdict.reason or "", "samples": samples})

    def _release_held(self) -> None:
        """Fold the round's screened updates in the order of the sites' names, not of their arrival:
        float32 sums follow the order of the additions, so folded as they arrived two runs of one seed
        differed when the sites finished in another order. Holding them costs what the first round
        always held (one update per site). With a reference (the previous round's median norm) each
        norm is judged against it; without one (round 1) the norms against each other, the counts too.
        """
        held, self._held = sorted(self._held, key=lambda h: h[0]), []
        if self._validator.previous_median is not None:
            for site, parts, samples, record in held:
                self._settle(site, self._fold(site, parts, samples), samples, record)
            return
        outliers = self._validator.judge_round({site: self._validator.norm_of(parts) for site, parts, _, _ in held})
        counts = {site: n for site, _, n, _ in held}
        for site, parts, samples, record in held:
            if site in outliers:
                self._settle(site, Verdict(site=site, ok=False, reason=outliers[site]), samples, record)
                continue
            verdict, _ = self._validator.check_samples(site, samples, others=[c for s, c in counts.items() if s != site])
            self._settle(site, self._fold(site, parts, samples) if verdict.ok else verdict, samples, record)

    def aggregate_model(self) -> FLModel:
        t0 = time.perf_counter()
        self._launch_threads()
        rnd = int(self.fl_ctx.get_prop(AppConstants.CURRENT_ROUND, 0) or 0) + 1 if self.fl_ctx else 0
        self._release_held()
        layout = self._validator.layout
        n_ok = len(self._sites)
        val = _weighted_val(self._sites)  # the sites' validation of this round's start model
        skipped = not self._validator.enough(n_ok) or self._agg is None or layout is None
        if skipped:
            self.error(
                f"round {rnd}: only {n_ok} valid update(s), fewer than min_sites={self._validation.min_sites}; "
                "the global model is left unchanged this round"
            )
            ref = self._global or {}
            delta = {k: np.zeros_like(v) for k, v in ref.items()}
        else:
            from fedimg.kernels import unpack

            if hasattr(self._agg, "observe"):  # FedAvgM's lr on plateau: the sites' validation of this round's start
                self._agg.observe(val)
            step = self._agg.finish()
            delta = unpack(step, layout, as_torch=False, copy=False)  # step is ours: views, no copy
        self._validator.end_round()
        self._round_seconds += time.perf_counter() - t0
        entry = {
            "round": rnd,
            "strategy": self._strategy.name,
            "sites": self._sites,
            "accepted": sorted(self._sites),
            "rejected": self._rejected,
            "skipped": skipped,
            "validation": {"model_round": rnd - 1, **val},
            "aggregation_seconds": self._round_seconds,
            "fold_threads": self._seen_threads,
            "round_seconds": time.perf_counter() - self._round_started if self._round_started else None,
        }
        if getattr(self._agg, "plateau", None) is not None:
            p = self._agg.plateau
            entry["plateau"] = {"server_lr_scale": p.scale, "restores": p.restores, "best_val": p.best if p.best > -1e308 else None}
        if hasattr(self._agg, "report"):
            entry["client_dp"] = self._agg.report()
        meta: dict[str, Any] = {"fedimg_round": rnd}
        if self._strategy.scaffold and self._agg is not None:
            meta[SCAFFOLD_CTRL_GLOBAL] = self._agg.controls()  # NVFlare's FedAvg sends it with the next model
            entry["scaffold"] = {"control_norm": self._agg.control_norm(),
                                 "sites": sorted(set(self._controls) & set(self._sites))}
        self._checkpoint(rnd, delta, entry)
        metrics = {k: v for k, v in val.items() if _is_number(v)}
        self.info(
            f"round {rnd}: aggregated {n_ok} update(s) with {self._strategy.name} in {self._round_seconds:.3f}s"
            + (f", rejected {len(self._rejected)}" if self._rejected else "")
        )
        out = FLModel(params=delta, params_type=ParamsType.DIFF, metrics=metrics or None, meta=meta)
        wrong = [r for r in self._rejected if r["reason"].startswith(SITE_MISMATCH)]
        self.reset_stats()
        if wrong and self.fl_ctx is not None:  # a process trained another site's data: stop, do not go on without it
            self.system_panic(f"round {rnd}: update from {wrong[0]['site']}: {wrong[0]['reason']}", self.fl_ctx)
        return out

    # -- helpers ------------------------------------------------------------------------
    def _fold(self, site: str, parts: list[np.ndarray], samples: float) -> Verdict:
        """Fold a screened update and measure its norm in one pass; the validator's judgement
        of the norm decides whether the fold counts."""
        if self._agg is None:
            lay = self._validator.layout
            self._agg = make_strategy(self._strategy, lay.size, float_size=lay.float_size, device=self._device())
            if self.client_dp:
                from fedimg.fl.server.dp_strategy import ClientDP
                from fedimg.privacy import ClientDPConfig

                self._agg = ClientDP(self._agg, ClientDPConfig.from_dict(self.client_dp))
            self._agg.load_state(self._restored_state)
        verdicts: list[Verdict] = []
        self._seen_threads = numba.get_num_threads()  # this thread's count, as the kernels see it

        def check(norm: float) -> bool:
            verdicts.append(self._validator.judge(site, norm))
            return verdicts[-1].ok

        self._agg.add_checked(parts, samples, check)
        return verdicts[0]

    def _checkpoint(self, rnd: int, delta: dict[str, np.ndarray], entry: dict[str, Any]) -> None:
        if self._run_path is None:
            return
        server_state = self._agg.state() if self._agg is not None else None
        if self._global is not None:
            # the round file, server state and metrics first; state.json (the round is complete) last
            new_global = {k: (np.asarray(v) + delta[k]).astype(np.asarray(v).dtype) if k in delta else np.asarray(v)
                          for k, v in self._global.items()}  # FedBN's site-local entries: not in delta
            run_state.save_round(self._run_path, rnd, new_global, {"strategy": self._strategy.name, "sites": entry["accepted"]},
                                 server_state=server_state, metrics=entry)
            return
        if server_state is not None:
            run_state.save_server_state(self._run_path, server_state, rnd)
        run_state.append_metrics(self._run_path, entry)

    def _shared(self, params: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        """``params`` without the site-local entries (FedBN's norm layers)."""
        if params is None or not self.local_keys:
            return params
        local = set(self.local_keys)
        return {k: v for k, v in params.items() if k not in local}

    def _screen_controls(self, site: str, controls: Any) -> Verdict:
        """SCAFFOLD: a site's control difference must name the model's float tensors, finite."""
        from fedimg.fl.server.scaffold import check_controls

        ref = self._shared(self._global) or {}
        problem = check_controls(controls, {k: np.shape(v) for k, v in ref.items() if np.asarray(v).dtype.kind == "f"})
        if problem:
            return Verdict(site=site, ok=False, reason=problem)
        self._controls[site] = controls
        return Verdict(site=site, ok=True)

    def _launch_threads(self) -> None:
        """Set numba's (thread-local) count in the calling thread, which launches the fold's kernels."""
        if not self._fold_threads:  # no START_RUN seen (used outside NVFlare): resolve here
            self._fold_threads = server_fold_threads(self.server_threads)
        set_launch_threads(self._fold_threads)

    def _device(self) -> str | None:
        if self.device == "cpu":
            return None
        if self.device == "auto":
            try:
                import torch

                return "cuda" if torch.cuda.is_available() else None
            except ImportError:  # pragma: no cover - torch is a dependency
                return None
        return self.device

    def _audit(self, site: str, model: FLModel) -> None:
        import json

        params = model.params or {}
        record = {
            "site": site,
            "params_type": str(model.params_type),
            "params": {k: [type(v).__name__, str(getattr(v, "dtype", "")), list(np.shape(v))] for k, v in params.items()},
            "metrics": {k: [type(v).__name__, v if _is_number(v) else repr(v)] for k, v in (model.metrics or {}).items()},
            "meta": {k: [type(v).__name__, _meta_repr(k, v)] for k, v in (model.meta or {}).items()},
        }
        if self._run_path is not None:
            with open(self._run_path / "payloads.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")


def _meta_repr(key: str, value: Any) -> Any:
    """How the payload audit records a meta entry: SCAFFOLD's controls by name, the rest by repr."""
    if key == SCAFFOLD_CTRL_DIFF and isinstance(value, dict):
        return sorted(map(str, value))
    if key == "props" and isinstance(value, dict) and SCAFFOLD_CTRL_GLOBAL in value:  # the server's own copy
        value = {**value, SCAFFOLD_CTRL_GLOBAL: sorted(map(str, value[SCAFFOLD_CTRL_GLOBAL] or {}))}
    return repr(value)


def _parsed(value: Any, cls: type) -> Any:
    """``value`` as a ``cls`` config: given as one, as its dict or JSON text, or empty for the defaults."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls.from_dict(value)
    return cls.from_json(value) if value else cls()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _weighted_val(sites: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sample-weighted mean of the sites' ``val_*`` metrics (their evaluation of the incoming global model)."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    per_site: dict[str, dict[str, float]] = {}
    for site, rec in sites.items():
        for k, v in rec["metrics"].items():
            if k.startswith("val_"):
                key = k[4:]
                sums[key] = sums.get(key, 0.0) + rec["samples"] * v
                weights[key] = weights.get(key, 0.0) + rec["samples"]
                per_site.setdefault(site, {})[key] = v
    out: dict[str, Any] = {k: sums[k] / weights[k] for k in sums if weights[k] > 0}
    out["per_site"] = per_site
    return out
