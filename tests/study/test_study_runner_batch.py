"""`fedimg study --federated-batch-size B`: only the federated arms' sites train with batch B."""

from __future__ import annotations

import pytest

from fedimg.errors import ConfigError
from fedimg.fl.server.federation import FederationConfig
from fedimg.study.runner import federated_batch, federated_sites


def test_federated_batch_sets_only_the_batch() -> None:
    fed = FederationConfig(task="toy", train={"lr": 0.002, "batch_size": 2})
    out = federated_batch(fed, 1)
    assert out.train == {"lr": 0.002, "batch_size": 1} and fed.train["batch_size"] == 2  # the input is not changed
    assert federated_batch(fed, None) is fed  # identity: no batch given keeps every arm's
    both = federated_sites(fed, 0.002, 2.0, 1)
    assert both.train == {"lr": 0.004, "batch_size": 1}


@pytest.mark.parametrize("bad", [0, -2, True, 1.5])
def test_federated_batch_refuses_what_is_not_a_batch(bad) -> None:
    with pytest.raises(ConfigError, match="--federated-batch-size must be a whole number >= 1"):
        federated_batch(FederationConfig(task="toy"), bad)


def test_cli_passes_the_batch_to_the_study(tmp_path, study_calls) -> None:
    from fedimg.cli import main

    assert main(["study", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--batch-size", "2",
                 "--federated-batch-size", "3"]) == 0
    assert study_calls["federated_batch_size"] == 3 and study_calls["train"]["batch_size"] == 2  # the other arms'
    assert main(["study", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    assert study_calls["federated_batch_size"] == 1  # the study's default (STUDY_FEDERATED_BATCH), chosen on the dev split


def test_cli_refuses_batch_zero_before_any_arm_trains(tmp_path, capsys) -> None:
    from fedimg.cli import main
    from fedimg.data.synth import synthesize

    synthesize(tmp_path / "data", sites=2, cases_per_site=3, seed=0, spacing=4.0)
    rc = main(["study", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o"), "--allow-identifiable",
               "--federated-batch-size", "0"])
    assert rc == 2 and not (tmp_path / "o").exists()
    assert "--federated-batch-size must be a whole number >= 1" in capsys.readouterr().err


def test_run_seed_gives_the_batch_to_the_federated_arms_only(tmp_path, seed_arms) -> None:
    """On a real (tiny) split: the federated and DP arms' sites train with batch 1; centralised and
    site-alone keep the shared batch 2."""
    from fedimg.data.synth import synthesize
    from fedimg.study.protocol import ProtocolConfig
    from fedimg.study.runner import run_seed

    synthesize(tmp_path / "data", sites=2, cases_per_site=3, seed=0, spacing=4.0)
    fed = FederationConfig(task="brats", local_epochs=1, train={"lr": 0.002, "batch_size": 2, "roi": [16, 16, 16],
                                                                "allow_identifiable": True})
    run_seed(tmp_path / "data", tmp_path / "out", fed, ProtocolConfig(max_epochs=1, check_every=1), 0,
             privacy=object(), federated_batch_size=1)
    assert seed_arms["fed"]["batch_size"] == 1 and seed_arms["fed"]["lr"] == pytest.approx(0.002)
    assert seed_arms["dp"]["batch_size"] == 1  # the DP arms are federated arms: the same batch
    assert [c.batch_size for c in seed_arms["local"]] == [2, 2, 2]  # centralised, then each of the two sites alone
