"""``fedimg submit`` without a server: a job folder's plan, and bad kits / job folders refused in one line.

The real run through an admin kit (mutual TLS, rounds on the terminal, a failed site named) is
``tests/fl/nvflare/test_poc.py::test_submit_through_admin_kit_shows_rounds_site_errors_and_memory_bound``.
"""

from __future__ import annotations

import pytest

from fedimg.cli import main


@pytest.mark.nvflare
def test_job_plan_of_an_exported_job(tmp_path):
    from fedimg.fl.nvflare.job import build_recipe, export_job
    from fedimg.fl.nvflare.remote import job_plan
    from fedimg.fl.server.federation import FederationConfig

    cfg = FederationConfig(task="toy", rounds=7, local_epochs=1, train={"features": 8})
    job = export_job(build_recipe(cfg, {"site-a": None, "site-b": None, "site-c": None}, run_dir=None), tmp_path / "job")
    assert job_plan(job) == (7, ["site-a", "site-b", "site-c"])


def test_bad_kit_and_job_are_one_line(tmp_path, capsys):
    (tmp_path / "job").mkdir()
    (tmp_path / "kit" / "startup").mkdir(parents=True)
    rc = main(["submit", "--kit", str(tmp_path / "kit"), "--job", str(tmp_path / "job"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is not an NVFlare job folder" in err[0] and "fedimg export-job" in err[0]
    (tmp_path / "job" / "meta.json").write_text('{"deploy_map": {"app_server": ["server"]}}')
    (tmp_path / "job" / "app_server" / "config").mkdir(parents=True)
    (tmp_path / "job" / "app_server" / "config" / "config_fed_server.json").write_text('{"workflows": []}')
    rc = main(["submit", "--kit", str(tmp_path / "kit"), "--job", str(tmp_path / "job"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is not an admin startup kit" in err[0] and "fedimg provision" in err[0]


def test_submit_names_a_site_that_stated_another_name(tmp_path):
    """A provisioned job the server stopped because an update's stated site was not its sender ends with
    that one line (as ``simulate`` and ``poc``), not with "job ended after N rounds"."""
    import time
    from types import SimpleNamespace

    from fedimg.errors import FedimgError
    from fedimg.fl.nvflare.remote import _finish
    from fedimg.fl.server.state import append_metrics

    calls: list = []
    kit = SimpleNamespace(kit=tmp_path / "kit", call=lambda *a, **k: calls.append(a))
    append_metrics(tmp_path, {"round": 1, "rejected": [
        {"site": "site-2", "reason": "stated site 'site-1' is not 'site-2', the site NVFlare delivered it from"}]})
    err = _finish(kit, {"job_id": "j1", "status": "FINISHED:ABORTED"}, tmp_path, 3, ["site-1", "site-2"],
                  time.perf_counter(), download=False)
    assert isinstance(err, FedimgError)
    assert "round 1: rejected the update from site-2: stated site 'site-1' is not 'site-2'" in str(err)
