"""`fedimg study` from the command line: bad input gives one line and a non-zero exit."""

from __future__ import annotations

from fedimg.cli import main


def test_study_needs_data_or_merge(tmp_path, capsys):
    assert main(["study", "--out", str(tmp_path / "o")]) != 0
    assert "needs --data" in capsys.readouterr().err


def test_merge_names_the_missing_results(tmp_path, capsys):
    (tmp_path / "s0").mkdir()
    assert main(["study", "--merge", str(tmp_path / "s0"), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert "results.json" in err and "fedimg: error:" in err and not (tmp_path / "o").exists()


def test_bad_protocol_options(tmp_path, capsys):
    from fedimg.tasks.toy import make_sites

    make_sites(tmp_path / "d", n_sites=2, n=16)
    assert main(["study", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--seeds", "0"]) != 0
    assert "seeds" in capsys.readouterr().err
    assert main(["study", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--task", "toy"]) != 0
    assert "brats" in capsys.readouterr().err
    assert main(["study", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--seed", "3"]) != 0
    assert "--base-seed" in capsys.readouterr().err


def test_refuses_to_overwrite_a_study(tmp_path, capsys):
    from fedimg.tasks.toy import make_sites

    make_sites(tmp_path / "d", n_sites=2, n=16)
    (tmp_path / "o" / "seed-0").mkdir(parents=True)
    assert main(["study", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]) != 0
    assert "already holds a study" in capsys.readouterr().err


def test_contrast_aug_reaches_every_arms_training_config():
    """`--contrast-aug on` (the default) puts the augmentation into the config every arm and site trains with."""
    import argparse

    from fedimg.cli.study import CONTRAST_AUG, register, with_contrast_aug
    from fedimg.cli._federation import federation_config_from_args
    from fedimg.engine.contrast import contrast_enabled
    from fedimg.tasks import get_task

    ap = argparse.ArgumentParser()
    register(ap.add_subparsers())
    args = ap.parse_args(["study", "--data", "d", "--out", "o", "--lr", "0.001"])
    assert args.contrast_aug == "on"
    task = get_task("brats")
    on = with_contrast_aug(federation_config_from_args(args), True)
    off = with_contrast_aug(federation_config_from_args(args), False)
    assert contrast_enabled(task.config_from_dict(on.train_config()))
    assert not contrast_enabled(task.config_from_dict(off.train_config()))
    assert on.train["lr"] == 0.001 and all(on.train[k] == v for k, v in CONTRAST_AUG.items())
    # a field set in --config (here: in the train dict already) wins over the study's default
    mine = with_contrast_aug(dataclasses_replace_train(off, contrast_gamma=0.2), True)
    assert mine.train["contrast_gamma"] == 0.2


def dataclasses_replace_train(config, **fields):
    import dataclasses

    return dataclasses.replace(config, train={**config.train, **fields})
