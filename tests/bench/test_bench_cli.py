"""``fedimg bench`` and the ``benchmarks/`` scripts parse their arguments and print their help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("name", ["train_throughput", "train_profile", "aggregate", "deface", "deface_cli", "federation", "tiles"])
def test_benchmark_script_help(name):
    r = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--quick" in r.stdout and "--json" in r.stdout


@pytest.mark.parametrize("name", [None, "train", "aggregate", "deface", "federation", "tiles", "all"])
def test_fedimg_bench_help(name, capsys):
    from fedimg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", *([name] if name else []), "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and (name is None or "--quick" in out)
    assert "flower" not in out.lower() and "simpleitk" not in out.lower()
