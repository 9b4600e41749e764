"""NVFlare's simulator with its worker-name race closed (what ``fedimg simulate`` runs).

NVFlare 2.9's simulator starts one worker process per client thread. Each thread
(``SimulatorClientRunner.do_one_task``) writes its client's name into one build context
shared by all threads (``build_ctx["client_name"] = ...``), deep-copies the deploy arguments,
then sends the context to its worker, which becomes the client named there. When a second
thread writes its name in between (two threads start their workers together; a loaded machine
deschedules one), both workers become the same site: one site's data is trained twice, the
other's never, and the server still files the results under both names. The server's check of
each update's stated site (:func:`fedimg.fl.server.validation.site_problem`) makes that loud;
this module takes the race away.

:class:`FedimgSimEnv` is NVFlare's ``SimEnv`` whose simulator process is started as
``python -m fedimg.fl.nvflare.simrun JOB -w WS ...`` (the arguments of NVFlare's own
``nvflare.private.fed.app.simulator.simulator``); :func:`main` makes the runner's build context
keep the name per thread (:class:`PerThreadBuildCtx`) and runs NVFlare's simulator unchanged.

>>> import pickle, threading
>>> ctx = PerThreadBuildCtx({"client_name": "", "kind": "simulator"})
>>> sent = {}
>>> def worker(name):
...     ctx["client_name"] = name
...     sent[name] = pickle.loads(pickle.dumps(ctx))["client_name"]
>>> threads = [threading.Thread(target=worker, args=(n,)) for n in ("site-1", "site-2")]
>>> for t in threads: t.start()
>>> for t in threads: t.join()
>>> sent
{'site-1': 'site-1', 'site-2': 'site-2'}
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from typing import Any

from nvflare.fuel.utils.job_secret_scanner import warn_on_potential_secrets_in_job_dir
from nvflare.recipe import SimEnv

__all__ = ["PerThreadBuildCtx", "FedimgSimEnv", "patch_client_runner", "main"]

log = logging.getLogger(__name__)

_NAME = "client_name"


class PerThreadBuildCtx(dict):
    """A build context whose ``client_name`` is each thread's own; it pickles as a plain dict
    holding the name the pickling thread set (what NVFlare sends a worker)."""

    def __init__(self, base: dict[str, Any]) -> None:
        super().__init__(base)
        self._local = threading.local()

    def __setitem__(self, key: str, value: Any) -> None:
        if key == _NAME:
            self._local.name = value
        else:
            super().__setitem__(key, value)

    def __getitem__(self, key: str) -> Any:
        if key == _NAME and hasattr(self._local, "name"):
            return self._local.name
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self or (key == _NAME and hasattr(self._local, "name")) else default

    def view(self) -> dict[str, Any]:
        """This thread's context as a plain dict."""
        out = dict(self.items())
        if hasattr(self._local, "name"):
            out[_NAME] = self._local.name
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (self.view(),)

    def __deepcopy__(self, memo: dict) -> dict[str, Any]:
        import copy

        return copy.deepcopy(self.view(), memo)


def patch_client_runner() -> bool:
    """Give NVFlare's ``SimulatorClientRunner`` a per-thread build context (in this process and the
    simulator processes it forks). ``False`` (logged) when NVFlare's runner is not the 2.9 one this
    fixes: the run then goes on unpatched and the server's stated-site check still guards it."""
    from nvflare.private.fed.app.simulator import simulator_runner as sr

    cls = getattr(sr, "SimulatorClientRunner", None)
    if cls is None or not hasattr(cls, "do_one_task"):
        log.warning("NVFlare's simulator has no SimulatorClientRunner.do_one_task; its worker-name race is not patched")
        return False
    if getattr(cls, "_fedimg_per_thread_ctx", False):
        return True
    original = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if isinstance(getattr(self, "build_ctx", None), dict):
            self.build_ctx = PerThreadBuildCtx(self.build_ctx)
        else:
            log.warning("NVFlare's SimulatorClientRunner has no dict build_ctx; its worker-name race is not patched")

    cls.__init__ = __init__
    cls._fedimg_per_thread_ctx = True
    return True


class FedimgSimEnv(SimEnv):
    """``SimEnv`` that starts the simulator process through :func:`main` (same arguments)."""

    def deploy(self, job: Any) -> Any:
        config = job.job  # the job's FedJobConfig, whose simulator_run starts the process
        config.simulator_run = lambda workspace, **kw: _simulator_run(config, workspace, **kw)
        try:
            return super().deploy(job)
        finally:
            del config.simulator_run


def _simulator_run(config: Any, workspace: str, clients: str | None = None, n_clients: int | None = None,
                   threads: int | None = None, gpu: str | None = None, log_config: str | None = None) -> int:
    """NVFlare's ``FedJobConfig.simulator_run`` with ``-m fedimg.fl.nvflare.simrun`` as the module."""
    with tempfile.TemporaryDirectory() as job_root:
        config.generate_job_config(job_root)
        warn_on_potential_secrets_in_job_dir(job_root, job_name=config.job_name)  # as NVFlare's own launch does
        cmd = [sys.executable, "-m", __name__, os.path.join(job_root, config.job_name), "-w", workspace]
        for flag, value in (("-c", clients), ("-n", n_clients), ("-t", threads), ("-gpu", gpu), ("-l", log_config)):
            if value:
                cmd += [flag, str(value)]
        process = subprocess.Popen(cmd, start_new_session=True)  # inherits this environment, as NVFlare's does
        try:
            return process.wait()
        except KeyboardInterrupt:
            from nvflare.private.fed.app.utils import kill_child_processes

            kill_child_processes(process.pid)
            return -9


def main(argv: list[str] | None = None) -> int:
    """NVFlare's simulator entry (``nvflare.private.fed.app.simulator.simulator``) after :func:`patch_client_runner`."""
    import argparse

    from nvflare.private.fed.app.simulator.simulator import define_simulator_parser, run_simulator
    from nvflare.private.fed.app.utils import version_check

    patch_client_runner()
    version_check()
    parser = argparse.ArgumentParser()
    define_simulator_parser(parser)
    return int(run_simulator(parser.parse_args(argv)) or 0)


if __name__ == "__mp_main__":  # a spawned (not forked: macOS) simulator child builds the runner: patch it there too
    patch_client_runner()
if __name__ == "__main__":
    sys.exit(main())
