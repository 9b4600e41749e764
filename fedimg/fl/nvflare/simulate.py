"""Run a whole federation on this machine with NVFlare's ``SimEnv`` (``fedimg simulate``).

Every ``DATA/site-*/`` folder is a site. The server (FedAvg controller + fedimg's
aggregator) and one process per site run under NVFlare's simulator; the run folder gets
``global_model.safetensors``, ``rounds/round-NNN.safetensors``, ``metrics.json``,
``local_models/<site>.safetensors`` and the NVFlare workspace under ``nvflare/``.
``resume=True`` continues from the last completed round.

Usage (``fedimg simulate`` does this; it starts NVFlare's simulator)::

    summary = run_simulation("data/", "runs/fl", FederationConfig(rounds=3, local_epochs=1))
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from fedimg.data.preflight import problems_error
from fedimg.device import available_cpus
from fedimg.errors import ConfigError, FedimgError
from fedimg.fl.nvflare.checks import preflight_sites, site_failure, wrong_site_failure
from fedimg.fl.nvflare.job import ALLOW_LIST, build_recipe
from fedimg.fl.server import state as run_state
from fedimg.fl.server.federation import FederationConfig, discover_sites, start_point
from fedimg.io import ensure_not_input, write_json

__all__ = ["run_simulation", "allow_fedimg_components", "check_before_start", "nvflare_output_to", "follow_rounds"]

log = logging.getLogger(__name__)


def allow_fedimg_components(local_dir: str | Path) -> Path:
    """Add fedimg's component prefix to a site's ``class_allow_list`` (NVFlare's component policy)."""
    from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST

    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    res, default = local_dir / "resources.json", local_dir / "resources.json.default"
    target = res if res.exists() else default
    resources = json.loads(target.read_text()) if target.exists() else {"format_version": 2}
    allow = list(resources.get("class_allow_list") or DEFAULT_CLASS_ALLOW_LIST)
    for prefix in ALLOW_LIST:
        if prefix not in allow:
            allow.append(prefix)
    resources["class_allow_list"] = allow
    target.write_text(json.dumps(resources, indent=4))
    return target


def run_simulation(data_dir: str | Path, out: str | Path, config: FederationConfig, *, resume: bool = False,
                   progress: bool = True, site_scripts: dict[str, str] | None = None,
                   sites: dict[str, Path] | None = None, tracking: bool = True, preflight: bool = True,
                   site_nproc: dict[str, int] | None = None) -> dict[str, Any]:  # site_nproc: .job.site_launch
    """Run (or resume) a simulated federation; returns a summary dict (also in ``OUT/summary.json``).

    ``preflight``: check every site's data here first (:func:`.checks.preflight_sites`) and
    refuse to start on any problem. A site that fails during the run is reported by name
    with the line of its error (:func:`.checks.site_failure`).
    """
    from fedimg.fl.nvflare.simrun import FedimgSimEnv  # NVFlare's SimEnv with its worker-name race closed

    if config.he:
        from fedimg.fl.nvflare.he import HE_SIM_ERROR  # lazy: he.py imports NVFlare's HE stack and TenSEAL
        raise ConfigError(HE_SIM_ERROR)
    out = Path(out)
    sites = sites if sites is not None else discover_sites(data_dir)
    for path in sites.values():
        ensure_not_input(out, path)
    start_round, checkpoint = start_point(out, config, resume)
    if preflight:
        check_before_start(sites, config)
    if not config.threads_per_site:  # all sites share this machine's CPUs: split them instead of oversubscribing
        cpus = available_cpus()
        config = dataclasses.replace(config, threads_per_site=max(1, cpus // max(1, len(sites))))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run_config.json", {"federation": config.to_dict(), "sites": {k: str(v) for k, v in sites.items()}})
    recipe = build_recipe(config, sites, run_dir=out, start_round=start_round, checkpoint=checkpoint,
                          local_model_dir=out / "local_models", site_scripts=site_scripts, tracking=tracking, site_nproc=site_nproc)
    ws_root = (out / "nvflare").resolve()
    allow_fedimg_components(ws_root / recipe.name / "local")
    env = FedimgSimEnv(clients=list(sites), num_threads=len(sites), workspace_root=str(ws_root))
    log.info("simulating %d site(s) x %d round(s) (%s), from round %d; workspace %s",
             len(sites), config.rounds, config.strategy.name, start_round + 1, ws_root)
    t0, started, error = time.perf_counter(), time.time(), []  # error: the simulator thread's exception

    def _run() -> None:
        try:
            recipe.execute(env)
        except BaseException as exc:  # reported in the calling thread
            error.append(exc)

    worker = threading.Thread(target=_run, name="nvflare-simulator", daemon=True)
    with nvflare_output_to(out / "nvflare.log") as console:
        worker.start()
        follow_rounds(out, worker, config.rounds, start_round, list(sites), progress, console)
        worker.join()
    seconds = time.perf_counter() - t0
    metrics = run_state.read_metrics(out)
    done = max((m["round"] for m in metrics), default=0)
    wrong_site = wrong_site_failure(out, metrics)  # a worker ran as another site: the aggregator stopped the run
    if wrong_site or error or done < config.rounds:
        why = f"{error[0]}" if error else f"only {done} of {config.rounds} rounds completed"
        raise wrong_site or site_failure(ws_root, list(sites), "simulation", since=started) or FedimgError(
            f"{out}: simulation failed: {why}; logs under {ws_root / recipe.name} (server/log.txt, <site>/log.txt)")
    summary = {
        "rounds": done,
        "sites": list(sites),
        "strategy": config.strategy.name,
        "seconds": seconds,
        "final_validation": metrics[-1].get("validation") if metrics else None,
        "rejected": [dict(r, round=m["round"]) for m in metrics for r in m.get("rejected", [])],
        "global_model": str(out / "global_model.safetensors"),
    }
    write_json(out / "summary.json", summary)
    return summary


def check_before_start(sites: dict[str, Path | None], config: FederationConfig) -> None:
    """Pre-flight: raise one error listing every problem of every site's data (nothing started yet)."""
    problems = preflight_sites(sites, config.task, config.train_config())
    if problems:
        raise problems_error(problems)


@contextlib.contextmanager
def nvflare_output_to(path: Path):
    """Send this process's stdout/stderr (inherited by NVFlare's simulator processes) to ``path``.

    Yields a text stream on the original stdout for the progress display.
    """
    import io
    import sys

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd_out, fd_err = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # no real fds (e.g. captured): leave as is
        yield sys.stdout
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(fd_out), os.dup(fd_err)
    console = os.fdopen(os.dup(saved_out), "w", buffering=1)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), fd_out)
        os.dup2(f.fileno(), fd_err)
    try:
        yield console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, fd_out)
        os.dup2(saved_err, fd_err)
        os.close(saved_out)
        os.close(saved_err)
        console.close()
        log.info("NVFlare output: %s", path)


def follow_rounds(out: Path, worker: threading.Thread, rounds: int, start: int, sites: list[str], progress: bool,
            console: Any = None) -> None:
    """Show rounds and sites as ``metrics.json`` grows, until the simulator thread ends."""
    seen = start
    bar = None
    if progress:
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            bar = Progress(TextColumn("[bold]federated rounds"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("{task.description}"), transient=False,
                           console=Console(file=console) if console is not None else None)
            task_id = bar.add_task("", total=rounds, completed=start)
            bar.start()
        except ImportError:  # pragma: no cover - rich is a dependency
            bar = None
    try:
        while worker.is_alive():
            worker.join(timeout=1.0)
            try:
                metrics = run_state.read_metrics(out)
            except FedimgError:
                continue  # being rewritten
            for m in metrics:
                if m["round"] > seen:
                    seen = m["round"]
                    val = m.get("validation") or {}
                    score = ", ".join(f"{k}={v:.3f}" for k, v in val.items() if isinstance(v, float))
                    desc = f"sites {len(m.get('accepted', []))}/{len(sites)}" + (f" | {score}" if score else "")
                    if m.get("rejected"):
                        desc += f" | rejected {len(m['rejected'])}"
                    if bar is not None:
                        bar.update(task_id, completed=seen, description=desc)
                    if bar is None and console is not None:
                        console.write(f"round {seen}/{rounds}: {desc}\n")
    finally:
        if bar is not None:
            bar.stop()
