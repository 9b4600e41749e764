"""Pre-flight before NVFlare starts, a site's error on the user's terminal, and ``fedimg poc``'s terminal.

The fast tests never start NVFlare. Two real runs, both slow: one SimEnv job whose site-2
raises an InputError in its first round (~40 s), and one ``fedimg poc`` run (server + 3 site
processes, mutual TLS, ~70-90 s) as a user starts it, from a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fedimg.errors import FedimgError, InputError

ROOT = Path(__file__).resolve().parents[3]

FAILING_CLIENT = """
import sys
from fedimg.errors import InputError
from fedimg.fl.nvflare.client import main

def hook(params):
    raise InputError("/hospital/site-2/case-7/t1.nii.gz", "is corrupt or truncated; re-copy or re-export the file")

sys.exit(main(update_hook=hook))
"""


def _toy_sites(root: Path, n: int = 2) -> dict[str, Path]:
    from fedimg.tasks.toy import make_sites

    return {p.name: p for p in map(Path, make_sites(root, n_sites=n, n=48, seed=3))}


def test_preflight_refuses_before_nvflare_starts(tmp_path):
    from fedimg.fl.nvflare.simulate import run_simulation
    from fedimg.fl.server.federation import FederationConfig

    sites = _toy_sites(tmp_path / "data", 3)
    np.savez(sites["site-2"] / "toy.npz", x=np.zeros((10, 5), np.float32), y=np.zeros(10, np.float32))
    (sites["site-3"] / "toy.npz").unlink()
    cfg = FederationConfig(task="toy", rounds=1, local_epochs=1, train={"features": 8})
    with pytest.raises(InputError) as err:
        run_simulation(tmp_path / "data", tmp_path / "run", cfg, progress=False)
    lines = str(err.value).splitlines()
    assert "found 2 problem(s)" in lines[0] and "nothing was started" in lines[0]
    assert lines[1].strip().startswith(f"site-2: {sites['site-2'] / 'toy.npz'}: expected x (N, 8)")
    assert lines[2].strip().startswith(f"site-3: {sites['site-3'] / 'toy.npz'}: is missing")
    assert not (tmp_path / "run" / "nvflare").exists()


def test_export_job_checks_local_site_data(tmp_path, capsys):
    from fedimg.cli import main

    sites = _toy_sites(tmp_path / "data", 2)
    (sites["site-2"] / "toy.npz").unlink()
    base = ["export-job", "--task", "toy", "--rounds", "1", "--sites", "site-1", "site-2", "--site-data"]
    rc = main([*base, f"site-1={sites['site-1']}", f"site-2={sites['site-2']}", "--out", str(tmp_path / "job")])
    err = capsys.readouterr().err
    assert rc == 2 and "site-2: " in err and "toy.npz: is missing" in err and not (tmp_path / "job").exists()
    # a data folder that is not on this machine is checked by the site itself when the job starts
    rc = main([*base, f"site-1={sites['site-1']}", "site-2=/on/the/site/machine", "--out", str(tmp_path / "job")])
    assert rc == 0 and (tmp_path / "job").is_dir()


def test_site_errors_from_logs(tmp_path):
    from fedimg.fl.nvflare.checks import site_errors, site_failure

    for site, text in {
        "site-1": "x - INFO - RuntimeError: request to abort the job for reason 'train' is aborted\n",
        "site-2": "x - ERROR - Traceback (most recent call last):\n"
                  "x - ERROR -   File \"client.py\", line 3\n"
                  "x - ERROR - fedimg.errors.InputError: /d/site-2/a.nii.gz: is constant; replace it\n"
                  "x - INFO - RuntimeError: later noise\n",
        "site-3": "all good\n",
    }.items():
        (tmp_path / "job" / site).mkdir(parents=True)
        (tmp_path / "job" / site / "log.txt").write_text(text)
    assert site_errors(tmp_path, ["site-1", "site-2", "site-3"]) == {
        "site-1": "RuntimeError: request to abort the job for reason 'train' is aborted",
        "site-2": "/d/site-2/a.nii.gz: is constant; replace it",
    }
    err = site_failure(tmp_path, ["site-1", "site-2", "site-3"], "simulation")
    assert str(err).splitlines()[:3] == ["simulation failed in 1 site(s):",
                                          "  site-2: /d/site-2/a.nii.gz: is constant; replace it",
                                          "  (site-1 stopped because the job was aborted)"]
    assert site_failure(tmp_path, ["site-3"], "simulation") is None
    assert site_errors(tmp_path, ["site-2"], since=time.time() + 60) == {}  # an earlier run's logs are not this run's


@pytest.mark.slow
@pytest.mark.nvflare
def test_site_error_during_simulation_reaches_the_terminal(tmp_path):
    from fedimg.fl.nvflare.simulate import run_simulation
    from fedimg.fl.server.federation import FederationConfig

    _toy_sites(tmp_path / "data", 2)
    script = tmp_path / "failing_client.py"
    script.write_text(textwrap.dedent(FAILING_CLIENT))
    cfg = FederationConfig(task="toy", rounds=2, local_epochs=1, train={"features": 8})
    with pytest.raises(FedimgError) as err:
        run_simulation(tmp_path / "data", tmp_path / "run", cfg, progress=False, tracking=False,
                       site_scripts={"site-2": str(script)})
    assert err.value.exit_code != 0
    lines = str(err.value).splitlines()
    assert lines[0] == "simulation failed in 1 site(s):"
    assert lines[1] == "  site-2: /hospital/site-2/case-7/t1.nii.gz: is corrupt or truncated; re-copy or re-export the file"


@pytest.mark.slow
@pytest.mark.nvflare
def test_poc_terminal_matches_simulate_and_runs_crossval(tmp_path):
    _toy_sites(tmp_path / "data", 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "fedimg", "poc", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
           "--task", "toy", "--rounds", "2", "--local-epochs", "1", "--no-progress", "--threads", "1"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "round 1/2: sites 3/3" in out and "round 2/2: sites 3/3" in out and "accuracy=" in out, out[-3000:]
    assert "Connecting to FLARE" not in out and "cross-site validation" in out, out[-3000:]
    assert len(out.splitlines()) < 20, out  # rounds and results, not NVFlare's chatter
    assert (tmp_path / "run" / "nvflare.log").stat().st_size > 0
    csv = (tmp_path / "run" / "crossval" / "crossval.csv").read_text().splitlines()
    assert csv[0] == "model,site-1,site-2,site-3,mean" and [r.split(",")[0] for r in csv[1:]] == [
        "global", "local site-1", "local site-2", "local site-3"]
    assert (tmp_path / "run" / "crossval" / "heatmap.png").stat().st_size > 1000
    ws = str((tmp_path / "run" / "nvflare").resolve()) + "/"
    left = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and ws in _cmdline(p)]
    assert not left, f"POC processes still running after fedimg poc: {left}"


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
