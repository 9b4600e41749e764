"""Run a job on a provisioned deployment from the admin's startup kit and follow it (``fedimg submit``).

A real deployment (``fedimg provision``) has the server and every site on their own
machines; the admin only holds an admin startup kit (mutual TLS). :func:`run_kit_job`
submits a job folder from ``fedimg export-job`` through that kit (NVFlare's FLARE API
session) and follows it as ``simulate`` and ``poc`` do: rounds, sites and metrics on the
terminal (the server's ``<job>/fedimg/metrics.json``, read with the admin ``cat`` command
and mirrored to ``OUT/metrics.json``), NVFlare's own output in ``OUT/nvflare.log``, and a
site that fails named on one line with its error (the site's job log, read with the admin
``grep``/``cat`` commands, copied under ``OUT/site-logs/``). At the end the server's run
folder (checkpoints, cross-site table and heatmap) is downloaded into ``OUT/server/``.

>>> import json, pathlib, tempfile
>>> job = pathlib.Path(tempfile.mkdtemp())
>>> _ = (job / "meta.json").write_text(json.dumps({"deploy_map": {"app_server": ["server"],
...     "app_site-1": ["site-1"], "app_site-2": ["site-2"]}}))
>>> (job / "app_server" / "config").mkdir(parents=True)
>>> _ = (job / "app_server" / "config" / "config_fed_server.json").write_text(json.dumps(
...     {"workflows": [{"id": "controller", "args": {"num_rounds": 3}}]}))
>>> job_plan(job)
(3, ['site-1', 'site-2'])
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from fedimg.errors import FedimgError, InputError
from fedimg.fl.nvflare.poc import _DONE  # the job states that end a wait, as for POC jobs
from fedimg.io import write_bytes, write_json

__all__ = ["job_plan", "run_kit_job", "KitSession"]

log = logging.getLogger(__name__)

#: Consecutive failed status polls (a wrong job id, a server down for good) before giving up.
_MAX_FAILED_POLLS = 40
#: Lines of a site's job log worth reading back (the error parser in :mod:`.checks` picks the line); the
#: admin ``grep`` takes one plain pattern and no options. While waiting: only a site's own errors.
_OWN_ERRORS = ("fedimg.errors", "SystemExit")
_ANY_ERRORS = ("Error", "Exception", "SystemExit")


def job_plan(job: str | Path) -> tuple[int, list[str]]:
    """``(rounds, sites)`` of an exported job folder (``meta.json`` deploy map, the server's workflow)."""
    job = Path(job)
    meta, server = job / "meta.json", job / "app_server" / "config" / "config_fed_server.json"
    if not meta.is_file() or not server.is_file():
        raise InputError(job, "is not an NVFlare job folder (no meta.json or app_server/config); "
                              "write one with `fedimg export-job --out JOB ...`")
    try:
        deploy = json.loads(meta.read_text())["deploy_map"]
        flows = json.loads(server.read_text()).get("workflows", [])
    except (ValueError, KeyError) as exc:
        raise InputError(meta, f"cannot be read as a job ({exc}); export the job again") from None
    sites = sorted({s for app, who in deploy.items() if app != "app_server" for s in who if s != "server"})
    rounds = max((int(w.get("args", {}).get("num_rounds", 0)) for w in flows), default=0)
    return rounds, sites


class KitSession:
    """The admin's FLARE API session (mutual TLS with the admin kit's certificate); reconnects on failure."""

    def __init__(self, admin_kit: str | Path, *, login_timeout: float = 30.0) -> None:
        self.kit = Path(admin_kit).resolve()
        if not (self.kit / "startup" / "fed_admin.json").is_file():
            raise InputError(self.kit, "is not an admin startup kit (no startup/fed_admin.json); pass the admin's "
                                       "folder from `fedimg provision`, e.g. kits/<project>/prod_00/admin@org")
        self.user = self.kit.name
        self.login_timeout = login_timeout
        self._session: Any = None

    def session(self) -> Any:
        if self._session is None:
            from nvflare.fuel.flare_api.flare_api import new_secure_session

            self._session = new_secure_session(self.user, str(self.kit), timeout=self.login_timeout)
        return self._session

    def call(self, name: str, *args: Any, **kw: Any) -> Any:
        try:
            return getattr(self.session(), name)(*args, **kw)
        except Exception:
            self.close()  # the server may be restarting: a new session next time
            raise

    def close(self) -> None:
        if self._session is not None:
            try:
                self._session.close()
            except Exception:  # noqa: BLE001 - closing a broken session
                pass
            self._session = None


def _mirror_metrics(kit: KitSession, job_id: str, out: Path, last: str) -> str:
    """Copy the server's ``metrics.json`` of the job to ``OUT/metrics.json`` when it changed."""
    text = kit.call("cat_target", "server", file=f"{job_id}/fedimg/metrics.json")
    if text != last and text.lstrip().startswith("["):
        try:
            write_json(out / "metrics.json", json.loads(text))
        except ValueError:
            return last  # caught mid-write: next poll
        return text
    return last


def _site_error_lines(kit: KitSession, job_id: str, sites: list[str], patterns: tuple[str, ...]) -> dict[str, str]:
    """Each site's job-log lines matching ``patterns`` (admin ``grep`` on the site), ``{}`` if none."""
    found = {}
    for site in sites:
        lines = []
        for pattern in patterns:
            try:
                text = kit.call("grep_target", site, pattern=pattern, file=f"{job_id}/log.txt")
            except Exception as exc:  # noqa: BLE001 - a site that is down or has no log yet
                log.debug("grep on %s failed: %s", site, exc)
                continue
            if text and "No such file" not in text:
                lines.append(text)
        if lines:
            found[site] = "\n".join(lines)
    return found


def _save_site_logs(out: Path, lines: dict[str, str]) -> Path:
    logs = out / "site-logs"
    for site, text in lines.items():
        write_bytes(logs / site / "log.txt", text.encode())
    return logs


def run_kit_job(admin_kit: str | Path, job: str | Path | None, out: str | Path, *, job_id: str | None = None,
                timeout: float = 3600.0, poll: float = 3.0, progress: bool = True,
                download: bool = True) -> dict[str, Any]:
    """Submit ``job`` (or follow the running ``job_id``) through ``admin_kit``; wait, showing rounds.

    Returns a summary (also ``OUT/summary.json``). Raises one error with a line per failed site
    when the job does not complete all its rounds.

    Long because it wires the worker thread, the display and the failure report together.
    """
    from fedimg.fl.nvflare.checks import site_errors
    from fedimg.fl.nvflare.simulate import follow_rounds, nvflare_output_to

    out = Path(out)
    if job is None and job_id is None:
        raise InputError(out, "nothing to run: pass a job folder (--job) or a submitted job's id (--job-id)")
    rounds, sites = job_plan(job) if job is not None else (0, [])
    kit = KitSession(admin_kit)
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"job_id": job_id}
    t0 = time.perf_counter()

    def _follow() -> None:
        try:
            if state["job_id"] is None:
                state["job_id"] = kit.call("submit_job", str(Path(job).resolve()))
                log.info("job %s submitted to the server over mutual TLS", state["job_id"])
            jid, last, t_end, n, failures = state["job_id"], "", time.time() + timeout, 0, 0
            while time.time() < t_end:
                try:
                    status = kit.call("get_job_meta", jid).get("status", "")
                    last = _mirror_metrics(kit, jid, out, last)
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - server restarting: keep polling, for a while
                    log.debug("poll failed: %s", exc)
                    status, failures = "", failures + 1
                    if failures >= _MAX_FAILED_POLLS:
                        raise FedimgError(f"job {jid}: its status could not be read {failures} times in a row "
                                          f"({exc}); check the job id and that the server is up") from None
                state["status"] = status or state.get("status")
                if status and status.upper().startswith(_DONE):
                    return
                n += 1
                if sites and n % 3 == 0:  # a site stopped by its own error ends the wait
                    lines = _site_error_lines(kit, jid, sites, _OWN_ERRORS)
                    if site_errors(_save_site_logs(out, lines), sites, own_only=True):
                        state["site_failed"] = True
                        return
                time.sleep(poll)
            state["timeout"] = True
        except BaseException as exc:  # re-raised in the calling thread
            state["error"] = exc

    worker = threading.Thread(target=_follow, name="nvflare-kit", daemon=True)
    try:
        with nvflare_output_to(out / "nvflare.log") as console:  # the session's chatter too
            worker.start()
            follow_rounds(out, worker, rounds, 0, sites, progress, console)
            worker.join()
            result = _finish(kit, state, out, rounds, sites, t0, download)
    finally:
        kit.close()
    if isinstance(result, BaseException):
        raise result
    return result


def _finish(kit: KitSession, state: dict[str, Any], out: Path, rounds: int, sites: list[str], t0: float,
            download: bool) -> dict[str, Any] | BaseException:
    """The summary of a followed job, or the error to raise (one line per failed site)."""
    from fedimg.fl.nvflare.checks import site_failure, wrong_site_failure
    from fedimg.fl.server import state as run_state

    if "error" in state:
        err = state["error"]
        return err if isinstance(err, FedimgError) else FedimgError(
            f"{kit.kit}: cannot reach the server with this admin kit: {err}")
    jid = state["job_id"]
    if state.get("site_failed") or state.get("timeout"):
        try:
            kit.call("abort_job", jid)
        except Exception:  # noqa: BLE001 - already ended
            pass
    metrics = run_state.read_metrics(out) if (out / "metrics.json").is_file() else []
    done = max((m["round"] for m in metrics), default=0)
    status = str(state.get("status") or "")
    summary = {"job_id": jid, "status": status, "rounds": done, "sites": sites,
               "seconds": time.perf_counter() - t0, "mode": "provisioned", "kit": str(kit.kit)}
    ok = done >= rounds and status.upper().endswith("COMPLETED")
    if download and ok:
        summary["server_run"] = _download(kit, jid, out)
    write_json(out / "summary.json", summary)
    if ok:
        return summary
    wrong_site = wrong_site_failure(out, metrics)  # a site's process ran as another site: the server stopped the job
    if wrong_site is not None:
        return wrong_site
    _save_site_logs(out, _site_error_lines(kit, jid, sites, _ANY_ERRORS))
    return site_failure(out / "site-logs", sites, f"job {jid}") or FedimgError(
        f"{out}: job {jid} ended ({status or 'timed out'}) after {done} of {rounds} rounds; "
        f"see the server's log (admin `tail server`) and {out / 'nvflare.log'}")


def _download(kit: KitSession, job_id: str, out: Path) -> str | None:
    """The finished job's server folder (``fedimg/``: checkpoints, metrics, cross-site table) into ``OUT/server``."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=out) as tmp:  # not into the admin kit's transfer folder
        try:
            where = kit.call("download_job_result", job_id, destination=tmp)
        except Exception as exc:  # noqa: BLE001 - result kept on the server
            log.warning("could not download job %s's result: %s", job_id, exc)
            return None
        found = sorted(p for p in Path(where).rglob("fedimg") if p.is_dir()) if where else []
        if not found:
            return None
        target = out / "server"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(found[0], target)
    log.info("server's run folder (checkpoints, cross-site table and heatmap): %s", target)
    return str(target)
