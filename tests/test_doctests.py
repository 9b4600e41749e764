"""The docstring examples of every fedimg module run and are right (issue 10).

Every module under ``fedimg/`` (``fedimg.kernels`` and ``fedimg.transforms`` included) is
imported and its examples run with :mod:`doctest` from the repository root, so examples
may read ``tests/assets/...``. Only the CUDA device modules (:data:`DEVICE_ONLY`) are left
to the GPU / simulator tests.

An example that never runs is not an example. A module fails when

- an example is commented out, i.e. a ``>>> # data = load(...)`` line that looks like code
  but never runs (make it run or remove it), or
- it has examples but every one that does more than ``import`` is ``+SKIP``.

A ``+SKIP`` next to examples that do run (a GPU-only line, say) is fine.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import io
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fedimg"

#: Modules that need a CUDA device to import or run; covered by the gpu / cudasim tests.
DEVICE_ONLY = frozenset({"fedimg.kernels._cupy", "fedimg.kernels._cuda"})

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def module_names(package_dir: Path = PACKAGE) -> list[str]:
    """Dotted names of every module under ``package_dir`` (symlinked folders followed)."""
    names: list[str] = []
    for folder, dirs, files in os.walk(package_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        parts = list(Path(folder).relative_to(package_dir.parent).parts)
        for f in sorted(files):
            if f == "__init__.py":
                names.append(".".join(parts))
            elif f.endswith(".py"):
                names.append(".".join(parts + [f[:-3]]))
    return sorted(names)


_CODE_LIKE = re.compile(r"^\s*([A-Za-z_][\w.]*(\[[^\]]*\])?\s*(,\s*[A-Za-z_]\w*\s*)*=[^=]|[A-Za-z_][\w.]*\()")


_PROMPT_COMMENT = re.compile(r"^\s*(?:>>>|\.\.\.)\s*(#.*)$")


def is_commented_out(source: str) -> bool:
    """Whether an example's source is only comments that read as code (``# x = f(...)``)."""
    lines = [line.strip() for line in source.strip().splitlines()]
    if not lines or not all(line.startswith("#") for line in lines):
        return False
    text = "\n".join(line.lstrip("#").strip() for line in lines)
    if _CODE_LIKE.match(text):
        return True
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    return any(isinstance(n, (ast.Call, ast.Assign, ast.Compare, ast.Subscript, ast.Attribute)) for n in ast.walk(tree))


def _only_imports(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return bool(tree.body) and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body)


def _file_line(test: doctest.DocTest, line: str, guess: int) -> int:
    """The 1-based line of ``line`` in the test's file, searched from the docstring's object on."""
    try:
        lines = Path(test.filename).read_text().splitlines()
    except (OSError, TypeError):
        return guess
    for j in range(test.lineno or 0, len(lines)):
        if lines[j].strip() == line.strip():
            return j + 1
    return guess


def example_problems(tests: list[doctest.DocTest]) -> list[str]:
    """Why these docstrings' examples do not count as examples (empty: they are fine)."""
    problems: list[str] = []
    runs = skipped = 0
    for test in tests:
        # doctest drops comment-only examples, so read them from the docstring itself.
        for i, line in enumerate((test.docstring or "").splitlines()):
            m = _PROMPT_COMMENT.match(line)
            if m and is_commented_out(m.group(1)):
                where = f"{test.name}:{_file_line(test, line, (test.lineno or 0) + i + 1)}"
                problems.append(f"{where}: commented-out example `{line.strip()}`: make it run or remove it")
        for ex in test.examples:
            if ex.options.get(doctest.SKIP):
                skipped += 1
            elif not _only_imports(ex.source):
                runs += 1
    if skipped and not runs:
        problems.append(f"all {skipped} example(s) beyond imports are +SKIP: make them run or remove them")
    return problems


def find_tests(module) -> list[doctest.DocTest]:
    """Every docstring of ``module`` (empty ones too: their commented-out examples count)."""
    return [t for t in doctest.DocTestFinder(exclude_empty=False).find(module) if t.docstring]


@pytest.mark.parametrize("name", module_names())
def test_doctests(name, monkeypatch):
    if name in DEVICE_ONLY:
        pytest.skip("CUDA device module: exercised by the gpu / cudasim tests")
    module = importlib.import_module(name)
    tests = find_tests(module)
    problems = example_problems(tests)
    assert not problems, f"{name}: examples that never run:\n" + "\n".join(problems)
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in tests:
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed\n{out.getvalue()}"


# --------------------------------------------------------------------------- the checker can fail

def _tests_of(doc: str) -> list[doctest.DocTest]:
    return [doctest.DocTestParser().get_doctest(doc, {}, "fake", "fake.py", 0)]


@pytest.mark.parametrize(("doc", "ok"), [
    (">>> 1 + 1\n2\n", True),
    (">>> import os\n>>> os.sep  # doctest: +SKIP\n'/'\n>>> len('ab')\n2\n", True),
    (">>> import numpy as np\n>>> f()  # doctest: +SKIP\n3\n", False),
    (">>> f()  # doctest: +SKIP\n3\n>>> g()  # doctest: +SKIP\n", False),
    (">>> 1 + 1\n2\n>>> # data = task.load_site('x', cfg)\n", False),
    (">>> # task.evaluate(model, data, cfg)['dice_mean']\n", False),
    (">>> # summary['best'] == {'epoch': ...}; summary['epochs_run']\n", False),
    (">>> #                   epochs=cfg.epochs, device=torch.device('cpu'))\n", False),
    (">>> # checks the folder before any data load\n>>> 2 * 3\n6\n", True),
    ("No examples at all.\n", True),
])
def test_example_check_can_fail(doc, ok):
    assert (example_problems(_tests_of(doc)) == []) is ok
