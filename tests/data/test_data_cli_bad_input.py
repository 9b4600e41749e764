"""Bad input through the command line: ``fedimg train`` on a broken data folder.

Each bad file of ``test_data_bad_input`` must give exit code 2, one line on stderr naming
the file (no traceback) and leave every input byte-identical. ``fedimg train`` fails while
loading the data, before any training.
"""

import importlib.util

import pytest
from data_helpers import write_brats_case
from test_data_bad_input import CASES

from fedimg.cli import main

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("fedimg.cli.train") is None, reason="fedimg train is not built yet"
)


@pytest.mark.parametrize("mutate", CASES, ids=[f.__name__.strip("_") for f in CASES])
def test_train_cli_rejects_bad_case(tmp_path, hashed, capsys, mutate):
    data = tmp_path / "data"
    write_brats_case(data, "c0")  # a good case next to the bad one
    name, words = mutate(write_brats_case(data, "c1"))
    check = hashed(data)
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
               "--allow-identifiable", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("fedimg: error:") and err.count("\n") == 0, err
    assert "Traceback" not in err and name in err and all(w in err for w in words), err
    check.assert_unchanged()


def test_train_cli_rejects_empty_folder_and_identifiable(tmp_path, hashed, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")]) == 2
    assert "contains no cases" in capsys.readouterr().err
    data = tmp_path / "data"
    write_brats_case(data, "c0")
    check = hashed(data)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run2"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--allow-identifiable" in err and "fedimg deface" in err and "c0_t1.nii.gz" in err
    check.assert_unchanged()
