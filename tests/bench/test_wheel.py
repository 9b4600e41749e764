"""What ships: the wheel holds no peer code (Flower, SimpleITK, NVFlare in ``fedimg/bench``)
and nothing of ``benchmarks/``; ``fedimg/bench`` imports no peer and no private name of
another package."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PEERS = ("flwr", "SimpleITK", "nvflare")


def _imports(source: str) -> list[str]:
    """Every module name an ``import`` / ``from ... import`` statement names, with the imported names."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out += [base] + [f"{base}:{a.name}" for a in node.names]
    return out


def _peer_imports(source: str) -> list[str]:
    return [m for m in _imports(source) if m.split(":")[0].split(".")[0] in PEERS]


def test_fedimg_bench_imports_no_peer_and_no_private_name():
    for path in sorted((REPO / "fedimg" / "bench").glob("*.py")):
        names = _imports(path.read_text())
        assert not _peer_imports(path.read_text()), path
        private = [m for m in names if m.startswith("fedimg.")
                   and any(part.startswith("_") for part in m.replace(":", ".").split(".")[1:])]
        assert not private, f"{path.name} imports private names {private}"


def test_kernels_hold_no_benchmark_probes():
    import fedimg.kernels._cpu as cpu

    assert not hasattr(cpu, "read_sum") and not hasattr(cpu, "triad")


@pytest.mark.slow
def test_wheel_has_no_peer_code_and_no_benchmarks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in ("pyproject.toml", "README.md", "fedimg", "kernels", "transforms", "benchmarks"):
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, symlinks=True, ignore=ignore)
        elif p.exists():
            shutil.copy2(p, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist")], cwd=src, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("fedimg-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "fedimg/bench/aggregate.py" in names and "fedimg/bench/probes.py" in names
        assert "fedimg/kernels/aggregate.py" in names
        assert not [n for n in names if n.startswith("benchmarks/") or "/benchmarks/" in n]
        for n in names:
            if not n.endswith(".py"):
                continue
            peers = _peer_imports(zf.read(n).decode())
            if n.startswith("fedimg/bench/"):
                assert not peers, n  # no Flower, SimpleITK or NVFlare in fedimg bench
            assert not [m for m in peers if not m.startswith("nvflare")], n  # Flower / SimpleITK nowhere
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [line for line in zf.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    core = [line for line in requires if "extra ==" not in line]
    assert not [line for line in core if "flwr" in line or "SimpleITK" in line.replace("simpleitk", "SimpleITK")]
