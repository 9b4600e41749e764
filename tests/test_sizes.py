"""Small modules and short functions (DESIGN.md house rule 6, issue 10).

- A module has at most :data:`MAX_MODULE_LINES` lines (all lines of the file). Exceptions are
  listed in :data:`MODULE_EXCEPTIONS` with their reason; there are none.
- A function or method has at most :data:`MAX_FUNCTION_LINES` lines, counted from its ``def``
  line to its last line without its docstring, unless its docstring has a line starting
  ``Long because`` that says why it is not split.

Every module under ``fedimg/`` is checked, ``fedimg.kernels`` and ``fedimg.transforms``
(symlinked folders) included. Files are parsed, not imported.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fedimg"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
REASON_PREFIX = "Long because"

#: ``fedimg/...`` path -> why it may be longer than MAX_MODULE_LINES.
MODULE_EXCEPTIONS: dict[str, str] = {}


def module_files(package_dir: Path = PACKAGE) -> list[Path]:
    """Every ``.py`` file under ``package_dir`` (symlinked folders followed), as a path below it."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(package_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        found.extend(Path(folder) / f for f in sorted(files) if f.endswith(".py"))
    return found


def _rel(path: Path) -> str:
    return (Path("fedimg") / path.relative_to(PACKAGE)).as_posix()


def function_length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the function's last line, less the docstring's lines."""
    length = node.end_lineno - node.lineno + 1
    body0 = node.body[0]
    if isinstance(body0, ast.Expr) and isinstance(body0.value, ast.Constant) and isinstance(body0.value.value, str):
        length -= body0.end_lineno - body0.lineno + 1
    return length


def has_reason(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    doc = ast.get_docstring(node) or ""
    return any(line.strip().startswith(REASON_PREFIX) for line in doc.splitlines())


def long_functions(source: str, name: str = "<source>") -> list[str]:
    """``name:line qualname (N lines)`` for every function over the limit without a reason."""
    tree = ast.parse(source)
    bad: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qual = f"{prefix}{child.name}"
                n = function_length(child)
                if n > MAX_FUNCTION_LINES and not has_reason(child):
                    bad.append(f"{name}:{child.lineno} {qual} ({n} lines)")
                visit(child, qual + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return bad


def test_modules_are_found():
    names = {_rel(p) for p in module_files()}
    assert "fedimg/kernels/__init__.py" in names and "fedimg/transforms/__init__.py" in names


def test_module_sizes():
    bad = []
    for path in module_files():
        n = len(path.read_text().splitlines())
        if n > MAX_MODULE_LINES and _rel(path) not in MODULE_EXCEPTIONS:
            bad.append(f"{_rel(path)} ({n} lines)")
    assert not bad, f"modules over {MAX_MODULE_LINES} lines (split them):\n" + "\n".join(bad)


def test_module_exceptions_are_still_needed():
    for rel, reason in MODULE_EXCEPTIONS.items():
        path = ROOT / rel
        assert reason.strip(), f"{rel}: give the reason"
        assert path.exists() and len(path.read_text().splitlines()) > MAX_MODULE_LINES, \
            f"{rel} is gone or short now: remove it from MODULE_EXCEPTIONS"


def test_function_sizes():
    bad = []
    for path in module_files():
        bad.extend(long_functions(path.read_text(), _rel(path)))
    assert not bad, (f"functions over {MAX_FUNCTION_LINES} lines (split them, or start a docstring line with "
                     f"'{REASON_PREFIX}'):\n" + "\n".join(bad))


def _function(body_lines: int, doc: str = "") -> str:
    lines = ["class A:", "    def f(self):"]
    if doc:
        lines += ['        """One line.', "", f"        {doc}", '        """']
    lines += [f"        x{i} = {i}" for i in range(body_lines)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("body", "doc", "flagged"), [
    (MAX_FUNCTION_LINES - 1, "", False),  # the def line + body = the limit
    (MAX_FUNCTION_LINES, "", True),
    (MAX_FUNCTION_LINES - 1, "Docstrings do not count.", False),
    (MAX_FUNCTION_LINES + 20, "Long because one table of cases reads best in one place.", False),
    (MAX_FUNCTION_LINES + 20, "It is long.", True),
])
def test_function_check_can_fail(body, doc, flagged):
    bad = long_functions(_function(body, doc), "fake.py")
    assert bad == ([f"fake.py:2 A.f ({MAX_FUNCTION_LINES + 1 if body == MAX_FUNCTION_LINES else body + 1} lines)"]
                   if flagged else []), bad


def test_nested_functions_are_checked():
    inner = "\n".join(f"        y{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    src = f"def outer():\n    def inner():\n{inner}\n    return inner\n"
    assert long_functions(src, "m.py") == [f"m.py:1 outer ({MAX_FUNCTION_LINES + 3} lines)",
                                           f"m.py:2 outer.inner ({MAX_FUNCTION_LINES + 1} lines)"]
