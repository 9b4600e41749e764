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
