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
