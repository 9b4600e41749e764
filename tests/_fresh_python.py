"""Run a snippet in a fresh interpreter that sees this checkout and no inherited environment.

For tests of what a command imports (or leaves unimported) and of how a process ends: the child gets
``PYTHONPATH`` (this checkout), a plain ``PATH`` and only the variables a test names.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "run_python"]

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, *, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -c code`` from the repository root; stdout and stderr captured as text."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})})
