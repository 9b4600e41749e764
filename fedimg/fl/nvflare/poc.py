"""A real multi-process federation on this machine: NVFlare POC (gRPC with mutual TLS).

:class:`PocSystem` prepares an NVFlare POC workspace (``nvflare poc prepare``: a
provisioned project with certificates for the server, each site and the admin), lets
fedimg's components run (``class_allow_list``), starts the server and one process per
site (``nvflare poc start``), submits fedimg's job through the admin startup kit (the
same path as a real deployment, ``ProdEnv``) and stops everything (``nvflare poc stop``,
then the process groups it started). Everything listens on and connects to
``localhost`` only.

Usage (``fedimg poc`` does this; it starts real processes)::

    with PocSystem(Path("runs/poc/nvflare"), ["site-1", "site-2"]) as poc:
        job_id = poc.submit(recipe); poc.wait(job_id)
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fedimg.errors import FedimgError

__all__ = ["PocSystem", "run_poc"]

log = logging.getLogger(__name__)

ADMIN = "admin@nvidia.com"
_DONE = ("FINISHED", "ABORTED", "FAILED")


class PocSystem:
    """One NVFlare POC system (server + sites) in ``workspace``; a context manager that always stops it."""

    def __init__(self, workspace: str | Path, sites: list[str], *, start_timeout: float = 180.0,
                 heartbeat_timeout: float = 60.0, he: bool = False) -> None:
        self.workspace = Path(workspace).resolve()
        self.he = he  # provision TenSEAL contexts (server: public, sites: secret key) for --he
        self.sites = list(sites)
        self.start_timeout = start_timeout
        self.heartbeat_timeout = heartbeat_timeout

    # -- lifecycle ------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        from fedimg.config import child_process_env

        return child_process_env({"NVFLARE_POC_WORKSPACE": str(self.workspace)}, path_first=os.path.dirname(sys.executable))

    def _nvflare(self, *args: str, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess:
        exe = Path(sys.executable).with_name("nvflare")
        cmd = [str(exe) if exe.exists() else "nvflare", *args]
        res = subprocess.run(cmd, env=self._env(), capture_output=True, text=True, timeout=timeout, input="y\n")
        if check and res.returncode != 0:
            raise FedimgError(f"{' '.join(cmd)} failed ({res.returncode}): {(res.stderr or res.stdout)[-800:]}")
        return res

    @property
    def prod_dir(self) -> Path:
        found = sorted(self.workspace.glob("*/prod_*"))
        if not found:
            raise FedimgError(f"{self.workspace}: no provisioned POC project; call prepare() first")
        return found[-1]

    def participant_dir(self, name: str) -> Path:
        return self.prod_dir / name

    @property
    def admin_kit(self) -> Path:
        return self.participant_dir(ADMIN)

    def prepare(self) -> None:
        """Provision the POC project (certificates for every participant) and allow fedimg components."""
        from fedimg.fl.nvflare.simulate import allow_fedimg_components

        self._nvflare("poc", "prepare", "-c", *self.sites, "--force", *(["-he"] if self.he else []))
        for name in ("server", *self.sites):
            allow_fedimg_components(self.participant_dir(name) / "local")
        # A site that stops sending heartbeats (sites send one every 10 s) is dropped after this many
        # seconds (NVFlare's default is 600), so a round waiting on a crashed site can go on.
        import json

        local = self.participant_dir("server") / "local"
        for name in ("resources.json", "resources.json.default"):
            path = local / name
            if path.is_file():
                res = json.loads(path.read_text())
                for srv in res.get("servers", []):
                    srv["heart_beat_timeout"] = float(self.heartbeat_timeout)
                path.write_text(json.dumps(res, indent=4))
        log.info("POC workspace prepared in %s (sites %s)", self.workspace, ", ".join(self.sites))

    def start(self, *participants: str) -> None:
        """Start the server and sites (or only ``participants``) and wait until they are up."""
        self._prod = None  # a restarted server needs a new admin session
        args = ["poc", "start", "--no-wait"]
        for p in participants:
            args += ["-p", p]
        t0 = time.perf_counter()
        self._nvflare(*args, timeout=self.start_timeout + 60)
        self._wait_ready()
        log.info("POC %s started in %.0fs", ", ".join(participants) or "system", time.perf_counter() - t0)

    def _wait_ready(self) -> None:
        """Wait until the admin can log in and every site is registered.

        ``nvflare poc start``'s own wait gives each admin login 1 s, which a loaded machine does
        not meet (the start then times out with the system up); here each login may take 15 s.
        """
        from nvflare.tool.api_utils import wait_for_system_start

        try:
            wait_for_system_start(len(self.sites), str(self.prod_dir), username=ADMIN, secure_mode=True,
                                  second_to_wait=0, timeout_in_sec=int(self.start_timeout), poll_interval=1.0,
                                  conn_timeout=15.0, expected_clients=list(self.sites))
        except Exception as exc:  # SystemStartTimeout and connection errors
            raise FedimgError(f"{self.workspace}: the POC system did not become ready within "
                              f"{self.start_timeout:.0f}s ({exc}); logs in {self.prod_dir}/server/log.txt") from None

    def stop(self, *participants: str, graceful: bool = False) -> None:
        """Stop the system (or some participants).

        Stopping all: SIGTERM to every process of this system, SIGKILL to any still alive
        after a few seconds (``nvflare poc stop``'s admin shutdown took 14-40 s here and is
        only used with ``graceful=True``). Some participants: ``nvflare poc stop -p``.
        """
        if participants or graceful:
            args = ["poc", "stop"]
            for p in participants:
                args += ["-p", p]
            try:
                self._nvflare(*args, timeout=120, check=False)
            except subprocess.TimeoutExpired:
                log.warning("nvflare poc stop timed out")
        if not participants:
            self._kill_groups()

    def kill(self, participant: str) -> int:
        """SIGKILL all of one participant's processes, its restart loop included (a machine crashing).

        Returns how many processes were killed.
        """
        marker = str(self.participant_dir(participant))
        killed = 0
        for pid, cmd in _processes():
            if pid not in _ancestors() and (marker + " " in cmd + " " or marker + "/" in cmd):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
        return killed

    def memory(self) -> dict[str, int]:
        """Resident memory (bytes) of each participant's processes now (parent, job processes and
        their children together), from ``/proc``: ``{"server": ..., "site-1": ..., ...}``."""
        out = {}
        for name in ("server", *self.sites):
            marker = str(self.participant_dir(name))
            pids = {pid for pid, cmd in _processes() if marker + " " in cmd + " " or marker + "/" in cmd}
            pids -= _ancestors()
            out[name] = sum(_rss(pid) for pid in pids)
        return out

    def __enter__(self) -> PocSystem:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _kill_groups(self) -> None:
        """SIGTERM, then SIGKILL, every process of this POC system still alive (never this process).

        Only processes whose command line names this workspace now (from ``/proc``, so no stale pid);
        repeated until none is left, so a child respawned by a dying start loop goes too.
        """
        marker = str(self.workspace) + "/"
        mine = _ancestors()
        for _ in range(3):
            pids = {pid for pid, cmd in _processes() if marker in cmd and _alive(pid)} - mine
            if not pids:
                break
            for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 1.0)):
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
                t_end = time.time() + grace
                while time.time() < t_end and any(_alive(pid) for pid in pids):
                    time.sleep(0.2)
                pids = {pid for pid in pids if _alive(pid)}

    # -- jobs -----------------------------------------------------------------------------
    def submit(self, recipe: Any) -> str:
        """Submit ``recipe`` through the admin startup kit (mutual TLS to the server); returns the job id."""

        run = recipe.execute(self._prod_env())
        return run.get_job_id()

    def _prod_env(self) -> Any:
        from nvflare.recipe import ProdEnv

        if getattr(self, "_prod", None) is None:
            self._prod = ProdEnv(startup_kit_location=str(self.admin_kit), login_timeout=30.0)
        return self._prod

    def status(self, job_id: str) -> str | None:
        return self._prod_env().get_job_status(job_id)

    def wait(self, job_id: str, timeout: float = 900.0, poll: float = 3.0, until: Any = None) -> str:
        """Poll the job until it finishes (or ``until()`` is true); returns its last status."""
        t_end = time.time() + timeout
        status = None
        while time.time() < t_end:
            try:
                status = self.status(job_id)
            except Exception as exc:  # server restarting: reconnect and keep polling
                log.debug("status poll failed: %s", exc)
                self._prod = None
                status = None
            if status and any(status.upper().startswith(d) for d in _DONE):
                return status
            if until is not None and until():
                return status or "RUNNING"
            time.sleep(poll)
        raise FedimgError(f"job {job_id} did not finish within {timeout:.0f}s (last status {status})")


def _ancestors() -> set[int]:
    """This process and its parents (never to be killed)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _processes() -> list[tuple[int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            out.append((int(d.name), cmd))
    return out


def run_poc(data_dir: str | Path, out: str | Path, config: Any, *, resume: bool = False, keep_running: bool = False,
            timeout: float = 3600.0, progress: bool = True, preflight: bool = True) -> dict[str, Any]:
    """``fedimg poc``: prepare and start a POC system for every site, run the job to the end, stop.

    Like ``simulate``: every site's data are checked first (``preflight``), the terminal shows
    rounds, sites and metrics while NVFlare's output goes to ``OUT/nvflare.log``, and a site
    that fails is reported by name with its error line.
    """
    from fedimg.fl.nvflare.job import build_recipe
    from fedimg.fl.nvflare.simulate import check_before_start
    from fedimg.fl.server import state as run_state
    from fedimg.fl.server.federation import discover_sites, start_point
    from fedimg.io import write_json

    out = Path(out)
    sites = discover_sites(data_dir)
    start_round, checkpoint = start_point(out, config, resume)
    if preflight:
        check_before_start(sites, config)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run_config.json", {"federation": config.to_dict(), "sites": {k: str(v) for k, v in sites.items()},
                                         "mode": "poc"})
    poc = PocSystem(out / "nvflare", list(sites), he=config.he)
    t0, started = time.perf_counter(), time.time()
    job_id, status = "", None
    try:
        if config.he:
            from fedimg.fl.nvflare.he import build_he_recipe

            if start_round:
                raise FedimgError(f"{out}: an --he run cannot be resumed (the server keeps no plain model); start a new --out")
            recipe = build_he_recipe(config, sites, run_dir=out, local_model_dir=out / "local_models")
        else:
            recipe = build_recipe(config, sites, run_dir=out, start_round=start_round, checkpoint=checkpoint,
                                  local_model_dir=out / "local_models")
        job_id, status = _run_job(poc, recipe, out, config.rounds, start_round, list(sites), timeout, progress)
    finally:
        if not keep_running:
            poc.stop()
    metrics = run_state.read_metrics(out)
    done = max((m["round"] for m in metrics), default=0)
    summary = {"job_id": job_id, "status": status, "rounds": done, "sites": list(sites), "seconds": time.perf_counter() - t0,
               "workspace": str(poc.workspace)}
    if config.he:
        from fedimg.fl.nvflare.he import he_report

        summary["he"] = he_report()
    write_json(out / "summary.json", summary)
    from fedimg.fl.nvflare.checks import site_failure, wrong_site_failure

    wrong_site = wrong_site_failure(out, metrics)  # a site's process ran as another site: the run stopped
    if wrong_site is not None:
        raise wrong_site
    if done < config.rounds:
        raise site_failure(poc.workspace, list(sites), f"POC job {job_id}", since=started) or FedimgError(
            f"{out}: POC job {job_id} ended ({status}) after {done} of {config.rounds} rounds; "
            f"logs in {poc.prod_dir}/server/ and each site's folder")
    return summary


def _run_job(poc: PocSystem, recipe: Any, out: Path, rounds: int, start: int, sites: list[str], timeout: float,
             progress: bool) -> tuple[str, str | None]:
    """Start the system, submit, wait; the terminal shows rounds (as ``simulate``), NVFlare writes to OUT/nvflare.log."""
    import threading

    from fedimg.fl.nvflare.checks import site_errors
    from fedimg.fl.nvflare.simulate import follow_rounds, nvflare_output_to

    result: dict[str, Any] = {}
    started = time.time()

    def _job() -> None:
        try:
            poc.prepare()
            poc.start()
            result["job_id"] = poc.submit(recipe)
            log.info("job %s submitted to the POC server over mutual TLS", result["job_id"])
            # a site that stopped on its own error ends the wait (the job cannot finish without it)
            failed = lambda: bool(site_errors(poc.workspace, sites, since=started, own_only=True))  # noqa: E731
            result["status"] = poc.wait(result["job_id"], timeout=timeout, until=failed)
        except BaseException as exc:  # re-raised in the calling thread
            result["error"] = exc

    worker = threading.Thread(target=_job, name="nvflare-poc", daemon=True)
    with nvflare_output_to(out / "nvflare.log") as console:
        worker.start()
        follow_rounds(out, worker, rounds, start, sites, progress, console)
        worker.join()
    if "error" in result:
        raise result["error"]
    return result.get("job_id", ""), result.get("status")
