"""NVFlare's simulator worker-name race, closed: each client thread sends its worker its own name."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest

pytest.importorskip("nvflare")

from fedimg.fl.nvflare.simrun import PerThreadBuildCtx, patch_client_runner  # noqa: E402


def _race(ctx: dict) -> dict[str, str]:
    """NVFlare 2.9's ``do_one_task`` order, with both threads inside the window at once: each sets
    the shared context's name, then (after the other has set its own) deep-copies and pickles it."""
    both_set = threading.Barrier(2)
    sent: dict[str, str] = {}

    def thread(name: str) -> None:
        ctx["client_name"] = name
        both_set.wait()
        copy.deepcopy({"args": 1})
        sent[name] = pickle.loads(pickle.dumps({"build_ctx": ctx}))["build_ctx"]["client_name"]

    threads = [threading.Thread(target=thread, args=(n,)) for n in ("site-1", "site-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent


def test_a_shared_dict_sends_both_workers_one_name():
    """The race as NVFlare has it (a plain shared dict): both workers get the name set last."""
    sent = _race({"client_name": "", "simulator": True})
    assert len(set(sent.values())) == 1


def test_the_per_thread_context_sends_each_worker_its_own_name():
    ctx = PerThreadBuildCtx({"client_name": "", "simulator": True})
    assert _race(ctx) == {"site-1": "site-1", "site-2": "site-2"}
    back = pickle.loads(pickle.dumps(ctx))
    assert type(back) is dict and back == {"client_name": "", "simulator": True}  # this thread never set one
    ctx["client_name"] = "site-3"
    assert ctx["client_name"] == ctx.get("client_name") == copy.deepcopy(ctx)["client_name"] == "site-3"
    ctx["other"] = 1
    assert ctx["other"] == 1 and ctx.get("missing", 5) == 5


def test_the_runner_gets_the_per_thread_context():
    from nvflare.private.fed.app.simulator.simulator_runner import SimulatorClientRunner

    assert patch_client_runner() and patch_client_runner()  # idempotent
    runner = SimulatorClientRunner.__new__(SimulatorClientRunner)
    try:
        SimulatorClientRunner.__init__(runner, "/nowhere", _Args(), [], {}, None, {"client_name": "x"})
    except Exception as exc:  # pragma: no cover - NVFlare's own __init__ changed
        pytest.skip(f"NVFlare's SimulatorClientRunner.__init__ changed: {exc}")
    assert isinstance(runner.build_ctx, PerThreadBuildCtx)


class _Args:
    workspace = "/nowhere"
    set: list = []
    threads = 2
    end_run_for_all = False
