"""Cross-site validation inside an NVFlare job (exported jobs, provisioned kits).

After the training rounds the job runs NVFlare's ``CrossSiteModelEval`` workflow: every
site submits its last local model (``submit_model``; skipped with ``local_models=False``),
then every site evaluates the final global model (:class:`FedimgModelLocator`, which reads
the run's ``global_model.safetensors``) and every other site's model on its own validation
cases (``validate``; the client script answers with metrics only, see
:mod:`fedimg.fl.nvflare.client`). :class:`FedimgCrossSiteReport` collects the metrics on the
server and, when the job ends, writes ``RUN/crossval/`` (``crossval.json``, ``crossval.csv``,
``heatmap.png``) with :func:`fedimg.fl.server.crossval_table.write_crossval`: the same table
and heatmap as ``fedimg simulate``. ``RUN`` is the aggregator's run folder (``run_dir``, or
``<server job workspace>/fedimg``).

Local models travel to the other sites for evaluation, so with client-level DP (whose noise
is added on the server) only the global model is evaluated.

>>> FedimgCrossSiteReport(key_metric="accuracy").model_label("SRV_global"), \\
...     FedimgCrossSiteReport().model_label("site-2")
('global', 'local site-2')
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model_locator import ModelLocator
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType
from nvflare.widgets.widget import Widget

__all__ = ["FedimgModelLocator", "FedimgCrossSiteReport", "add_cross_site_evaluation", "check_cross_site", "run_path"]

log = logging.getLogger(__name__)

GLOBAL = "global"


def run_path(run_dir: str, fl_ctx: FLContext) -> Path:
    """The run folder the aggregator writes to: ``run_dir``, or ``<server job workspace>/fedimg``."""
    if run_dir:
        return Path(run_dir)
    engine = fl_ctx.get_engine()
    return Path(engine.get_workspace().get_run_dir(fl_ctx.get_job_id())) / "fedimg"


class FedimgModelLocator(ModelLocator):
    """Offers the run's final global model (``RUN/global_model.safetensors``) for cross-site evaluation."""

    def __init__(self, run_dir: str = "") -> None:
        super().__init__()
        self.run_dir = run_dir

    def get_model_names(self, fl_ctx: FLContext) -> list[str]:
        found = (run_path(self.run_dir, fl_ctx) / "global_model.safetensors").is_file()
        if not found:
            self.log_warning(fl_ctx, "no global model in the run folder: cross-site validation has no server model")
        return [GLOBAL] if found else []

    def locate_model(self, model_name: str, fl_ctx: FLContext) -> DXO | None:
        from fedimg.fl.server.state import load_params

        if model_name != GLOBAL:
            return None
        params, _ = load_params(run_path(self.run_dir, fl_ctx) / "global_model.safetensors")
        return DXO(data_kind=DataKind.WEIGHTS, data={k: np.asarray(v) for k, v in params.items()})


class FedimgCrossSiteReport(Widget):
    """Collects every site's metrics of every model; writes ``RUN/crossval/`` when the job ends."""

    def __init__(self, run_dir: str = "", key_metric: str = "dice_mean") -> None:
        super().__init__()
        self.run_dir = run_dir
        self.key_metric = key_metric
        self._results: dict[str, dict[str, dict[str, float]]] = {}

    @staticmethod
    def model_label(owner: str) -> str:
        """``SRV_global`` -> ``global``; a site's name -> ``local <site>`` (the names ``simulate`` uses)."""
        return GLOBAL if owner == "SRV_" + GLOBAL else f"local {owner}"

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type == EventType.START_RUN:
            self._results = {}
        elif event_type == AppEventType.VALIDATION_RESULT_RECEIVED:
            owner = fl_ctx.get_prop(AppConstants.MODEL_OWNER, None)
            site = fl_ctx.get_prop(AppConstants.DATA_CLIENT, None)
            result = fl_ctx.get_prop(AppConstants.VALIDATION_RESULT, None)
            try:
                dxo = from_shareable(result) if result is not None else None
            except ValueError as exc:
                self.log_warning(fl_ctx, f"unreadable validation result from {site} on {owner}: {exc}")
                return
            if owner and site and dxo is not None and dxo.data_kind == DataKind.METRICS:
                metrics = {k: float(v) for k, v in (dxo.data or {}).items() if _is_number(v)}
                self._results.setdefault(self.model_label(owner), {})[site] = metrics
        elif event_type == EventType.END_RUN and self._results:
            self._write(fl_ctx)

    def _write(self, fl_ctx: FLContext) -> None:
        from fedimg.fl.server.crossval_table import write_crossval

        sites = sorted({s for per_site in self._results.values() for s in per_site})
        models = sorted(self._results, key=lambda m: (m != GLOBAL, m))
        out = run_path(self.run_dir, fl_ctx) / "crossval"
        try:
            write_crossval(out, {m: self._results[m] for m in models}, sites, self.key_metric)
        except Exception as exc:  # never fail the finished job over its report
            self.log_error(fl_ctx, f"could not write the cross-site validation table to {out}: {exc}")
            return
        self.log_info(fl_ctx, f"cross-site validation ({len(models)} models x {len(sites)} sites): {out}")


def check_cross_site(cross_site: str, *, client_dp: bool) -> None:
    """Refuse an unknown mode, and local models under client-level DP (they would travel un-noised)."""
    from fedimg.errors import ConfigError

    if cross_site not in ("", "global", "all"):
        raise ConfigError(f"cross_site must be 'all', 'global' or '', got {cross_site!r}")
    if cross_site == "all" and client_dp:
        raise ConfigError("cross-site validation of local models would send un-noised local models to the other "
                          "sites under client-level DP; use --crossval global")


def add_cross_site_evaluation(recipe: Any, *, key_metric: str, run_dir: str = "", local_models: bool = True,
                              timeout: float = 6000.0) -> None:
    """Add NVFlare's cross-site evaluation to ``recipe``, after training, with fedimg's locator and report."""
    from nvflare.app_common.workflows.cross_site_model_eval import CrossSiteModelEval

    job = recipe._job
    locator_id = job.to_server(FedimgModelLocator(run_dir=run_dir), id="fedimg_model_locator")
    job.to_server(FedimgCrossSiteReport(run_dir=run_dir, key_metric=key_metric), id="fedimg_crossval_report")
    job.to_server(CrossSiteModelEval(
        model_locator_id=locator_id,
        submit_model_task_name=AppConstants.TASK_SUBMIT_MODEL if local_models else "",
        submit_model_timeout=int(timeout), validation_timeout=int(timeout),
    ))
    recipe._cse_added = True


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and bool(np.isfinite(v))
