"""`fedimg study --federated-lr-scale`: only the federated arms' sites train at the scaled lr."""

from __future__ import annotations

import pytest

from fedimg.errors import ConfigError
from fedimg.fl.server.federation import FederationConfig
from fedimg.study.runner import federated_lr


def test_federated_lr_scales_only_the_lr() -> None:
    fed = FederationConfig(task="toy", train={"lr": 0.002, "batch_size": 2})
    out = federated_lr(fed, 0.002, 2.0)
    assert out.train == {"lr": 0.004, "batch_size": 2} and fed.train["lr"] == 0.002  # the input is not changed
    assert federated_lr(fed, 0.002, 1.0) is fed  # identity: scale 1 gives the config back


def test_federated_lr_refuses_a_non_positive_scale() -> None:
    with pytest.raises(ConfigError, match="federated-lr-scale"):
        federated_lr(FederationConfig(task="toy"), 0.002, 0.0)


def test_cli_passes_the_scale_to_the_study(tmp_path, study_calls) -> None:
    from fedimg.cli import main

    assert main(["study", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--lr", "0.002",
                 "--federated-lr-scale", "2"]) == 0
    assert study_calls["federated_lr_scale"] == 2.0 and study_calls["train"]["lr"] == 0.002  # the other arms' lr
    assert main(["study", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    assert study_calls["federated_lr_scale"] == 1.0


def test_run_seed_scales_only_the_federated_arms(tmp_path, seed_arms) -> None:
    """On a real (tiny) split: the federated arm's sites get scale x lr; centralised and site-alone keep lr."""
    from fedimg.data.synth import synthesize
    from fedimg.study.protocol import ProtocolConfig
    from fedimg.study.runner import run_seed

    synthesize(tmp_path / "data", sites=2, cases_per_site=3, seed=0, spacing=4.0)
    fed = FederationConfig(task="brats", local_epochs=1, train={"lr": 0.002, "roi": [16, 16, 16], "allow_identifiable": True})
    run_seed(tmp_path / "data", tmp_path / "out", fed, ProtocolConfig(max_epochs=1, check_every=1), 0,
             privacy=object(), federated_lr_scale=2.0)
    assert seed_arms["fed"]["lr"] == pytest.approx(0.004)
    assert seed_arms["dp"]["lr"] == pytest.approx(0.004)  # the DP arms are federated arms: the same scaled lr
    assert [c.lr for c in seed_arms["local"]] == [pytest.approx(0.002)] * 3  # centralised, then each site alone
