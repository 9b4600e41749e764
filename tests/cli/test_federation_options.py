"""CLI error paths of the federation commands (no NVFlare run needed)."""

from __future__ import annotations

import numpy as np

from fedimg.cli import main
from fedimg.fl.server import state


def test_simulate_needs_site_folders(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert main(["simulate", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--task", "toy"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "data") in err and "site-*/" in err


def test_simulate_refuses_to_overwrite_a_run(tmp_path, capsys, hashed):
    (tmp_path / "data" / "site-1").mkdir(parents=True)
    state.save_round(tmp_path / "run", 1, {"w": np.zeros(1, np.float32)}, {})
    check = hashed(tmp_path / "run")
    assert main(["simulate", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--task", "toy"]) == 2
    assert "--resume" in capsys.readouterr().err
    check.assert_unchanged()
    # resuming a run that is already complete is refused too
    assert main(["simulate", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--task", "toy",
                 "--rounds", "1", "--resume"]) == 2
    assert "already complete" in capsys.readouterr().err


def test_bad_options(tmp_path, capsys):
    assert main(["export-job", "--out", str(tmp_path / "j"), "--task", "toy", "--site-data", "site-9=/x"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert main(["export-job", "--out", str(tmp_path / "j"), "--task", "toy", "--strategy", "fedprox",
                 "--prox-mu", "0"]) == 2
    assert "prox_mu" in capsys.readouterr().err
    assert main(["provision", "--out", str(tmp_path / "k")]) == 2


def test_fedavgm_server_momentum_options_reach_the_strategy(capsys):
    import argparse

    from fedimg.cli._federation import add_federation_arguments, federation_config_from_args

    p = argparse.ArgumentParser()
    add_federation_arguments(p, rounds=12)
    s = federation_config_from_args(p.parse_args(["--strategy", "fedavgm", "--server-momentum", "0.8", "--nesterov",
                                                  "--server-lr-decay", "cosine"])).strategy
    assert (s.name, s.beta1, s.nesterov, s.lr_rounds) == ("fedavgm", 0.8, True, 12)
    s = federation_config_from_args(p.parse_args(["--strategy", "fedavgm"])).strategy
    assert (s.beta1, s.nesterov, s.lr_rounds) == (0.9, False, 0)
    assert main(["export-job", "--out", "/nonexistent/j", "--task", "toy", "--strategy", "fedavg", "--nesterov"]) == 2
    assert "nesterov" in capsys.readouterr().err
    s = federation_config_from_args(p.parse_args(["--strategy", "fedavgm", "--server-lr-plateau", "2",
                                                  "--local-norms"])).strategy
    assert (s.lr_plateau, s.plateau_metric, s.local_norm) == (2, "dice_mean", True)
    assert main(["export-job", "--out", "/nonexistent/j", "--task", "toy", "--strategy", "fedadam",
                 "--server-lr-plateau", "2"]) == 2
    assert "server-lr-plateau" in capsys.readouterr().err


def test_server_threads_option(tmp_path, capsys):
    import argparse

    from fedimg.cli._federation import add_federation_arguments, federation_config_from_args

    p = argparse.ArgumentParser()
    add_federation_arguments(p)
    assert federation_config_from_args(p.parse_args([])).server_threads == 0  # auto
    assert federation_config_from_args(p.parse_args(["--server-threads", "3"])).server_threads == 3
    assert main(["export-job", "--out", str(tmp_path / "j"), "--task", "toy", "--server-threads", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedimg: error: --server-threads -1") and ">= 0" in err[0]
    assert not (tmp_path / "j").exists()
    # an exported job (POC / provisioned servers) carries it to the server's aggregator
    assert main(["export-job", "--out", str(tmp_path / "j"), "--task", "toy", "--server-threads", "3"]) == 0
    text = (tmp_path / "j" / "app_server" / "config" / "config_fed_server.json").read_text()
    assert '"server_threads": 3' in text
