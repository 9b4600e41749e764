"""The package keeps DESIGN.md's layout: every import edge points down the table.

Every module under ``fedimg/`` (``fedimg/kernels`` and ``fedimg/transforms`` are followed
as the symlinked ``fedimg.kernels`` / ``fedimg.transforms``) is parsed with :mod:`ast`,
nothing is imported. Every import counts, lazy ones inside functions and
``importlib.import_module("<constant>")`` included. The test fails on:

- an edge from one room (``data``, ``engine``, ``fl/server``, ...) to a room it may not
  import (the "may import" column of DESIGN.md's table, transitively closed);
- a module outside every room of the table;
- ``nvflare`` imported outside ``fedimg/fl/nvflare/``; ``flwr`` or ``SimpleITK`` anywhere;
- a private ``_name`` of another package, imported (``from X import _y``, a private module
  ``X._y``) or used as an attribute (``X._y``);
- ``os.environ`` / ``os.getenv`` outside ``fedimg/cli/`` and ``fedimg/config.py``.

Each failure is one line ``module -> imported (rule)``.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fedimg"

#: Modules anyone may import (``fedimg`` itself for ``__version__``); they import only each other.
CORE = frozenset({"fedimg", "fedimg.errors", "fedimg.io", "fedimg.device", "fedimg.telemetry", "fedimg.config"})

#: DESIGN.md "Inside fedimg/": room -> rooms it may import directly (closed transitively below).
MAY_IMPORT: dict[str, set[str]] = {
    "kernels": set(),
    "imageio": {"kernels"},
    "data": {"imageio"},
    "deface": {"imageio", "kernels"},
    "transforms": {"deface"},
    "engine": {"data", "kernels"},
    "pathology": {"imageio", "transforms"},
    "tasks": {"engine", "data", "pathology"},
    "privacy": {"kernels"},
    "fl/server": {"kernels", "privacy"},
    "fl/nvflare": {"fl/server", "tasks", "privacy"},
    "fl": {"fl/server", "fl/nvflare"},  # the fl/ package's own __init__: "fl" in a row means both
    "study": {"tasks", "fl"},
    "bench": set(),  # everything above: filled in below
    "cli": set(),  # everything: filled in below
}
MAY_IMPORT["bench"] = set(MAY_IMPORT) - {"bench", "cli"}
MAY_IMPORT["cli"] = set(MAY_IMPORT) - {"cli"}

#: Third-party packages and the rooms allowed to import them (None: nowhere in fedimg/).
RESTRICTED_PACKAGES: dict[str, str | None] = {"nvflare": "fl/nvflare", "flwr": None, "SimpleITK": None}

#: Who may read the environment: the CLI and the config loader.
ENV_READERS_ROOMS = frozenset({"cli"})
ENV_READERS_MODULES = frozenset({"fedimg.config"})


def _closure(table: dict[str, set[str]]) -> dict[str, frozenset[str]]:
    closed: dict[str, frozenset[str]] = {}
    for room in table:
        seen: set[str] = set()
        todo = list(table[room])
        while todo:
            r = todo.pop()
            if r not in seen:
                seen.add(r)
                todo.extend(table.get(r, ()))
        closed[room] = frozenset(seen | {room})
    return closed


ALLOWED = _closure(MAY_IMPORT)


@dataclass(frozen=True, kw_only=True)
class Module:
    """One parsed module: dotted name, whether it is a package ``__init__``, its source."""

    name: str
    is_package: bool
    source: str


def discover_modules(package_dir: Path = PACKAGE) -> dict[str, Module]:
    """Every ``.py`` file under ``package_dir``, symlinked folders followed, by dotted name."""
    modules: dict[str, Module] = {}
    for folder, dirs, files in os.walk(package_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        rel = Path(folder).relative_to(package_dir.parent)
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            parts = list(rel.parts)
            is_pkg = f == "__init__.py"
            if not is_pkg:
                parts.append(f[:-3])
            name = ".".join(parts)
            modules[name] = Module(name=name, is_package=is_pkg, source=(Path(folder) / f).read_text())
    return modules


def room_of(name: str) -> str | None:
    """The DESIGN table row of a fedimg module (``"core"`` for the shared core), or None."""
    if name in CORE:
        return "core"
    parts = name.split(".")
    if parts[0] != "fedimg" or len(parts) < 2:
        return None
    if name == "fedimg.__main__":
        return "cli"
    if parts[1] == "fl":
        if len(parts) == 2:
            return "fl"
        return f"fl/{parts[2]}" if f"fl/{parts[2]}" in MAY_IMPORT else None
    return parts[1] if parts[1] in MAY_IMPORT else None


def _package_of(module: Module) -> str:
    return module.name if module.is_package else module.name.rpartition(".")[0]


def _resolve_relative(module: Module, level: int, target: str | None) -> str:
    base = _package_of(module).split(".")
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _owner_package(name: str, modules: dict[str, Module]) -> str:
    """The package that owns ``name``: a package owns itself, a module or a name its package."""
    parts = name.split(".")
    while len(parts) > 1 and ".".join(parts) not in modules:
        parts.pop()  # a name inside a module: walk up to the module
    mod = modules.get(".".join(parts))
    if mod is not None and mod.is_package:
        return mod.name
    return ".".join(parts[:-1])


#: Underscore names that are public API (namedtuple methods).
PUBLIC_UNDERSCORE = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})


def _is_private(part: str) -> bool:
    return (part.startswith("_") and not (part.startswith("__") and part.endswith("__"))
            and part not in PUBLIC_UNDERSCORE)


def _imports(module: Module, modules: dict[str, Module]):
    """Yield ``(target, lineno, name, bound)`` for every import in ``module``.

    ``target`` is the module imported (``from pkg import sub`` imports ``pkg.sub`` when that is
    a module, else ``pkg``), ``name`` the name taken from it (``from X import name``) or None,
    ``bound`` ``(local name, dotted thing)`` for the name the import binds, or None.
    """
    for node in ast.walk(ast.parse(module.source, filename=module.name)):
        if isinstance(node, ast.Import):
            for a in node.names:
                bound = (a.asname, a.name) if a.asname else (a.name.split(".")[0], a.name.split(".")[0])
                yield a.name, node.lineno, None, bound
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, node.level, node.module) if node.level else (node.module or "")
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in modules:
                    yield full, node.lineno, None, (a.asname or a.name, full)
                else:
                    yield base, node.lineno, a.name, None if a.name == "*" else (a.asname or a.name, full)
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.args[0].value, node.lineno, None, None


def _dotted(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return None


ENV_NAMES = frozenset({"environ", "environb", "getenv", "getenvb"})
ENV_RULE = "only fedimg/cli/ and fedimg/config.py read the environment"


def _env_ok(name: str, room: str | None) -> bool:
    return room in ENV_READERS_ROOMS or name in ENV_READERS_MODULES


def _private_step(dotted: str, my_pkg: str, modules: dict[str, Module]) -> str | None:
    """The first private part of ``dotted`` owned by a package other than ``my_pkg``, as a prefix."""
    parts = dotted.split(".")
    for i in range(1, len(parts)):
        if _is_private(parts[i]):
            prefix = ".".join(parts[: i + 1])
            return None if _owner_package(prefix, modules) == my_pkg or ".".join(parts[:i]) == my_pkg else prefix
    return None


def check_module(module: Module, modules: dict[str, Module]) -> list[str]:
    """The forbidden edges of one module, as ``module:line -> imported (rule)`` lines."""
    me, my_room, my_pkg = module.name, room_of(module.name), _package_of(module)
    if my_room is None:
        return [f"{me} -> (none) (module outside every room of DESIGN.md's table)"]
    bad: list[str] = []
    aliases: dict[str, str] = {}  # local name -> the dotted thing it is bound to
    for target, line, name, bound in _imports(module, modules):
        where = f"{me}:{line}"
        if bound is not None:
            aliases[bound[0]] = bound[1]
        top = target.split(".")[0]
        if target == "os" and name in ENV_NAMES and not _env_ok(me, my_room):
            bad.append(f"{where} -> os.{name} ({ENV_RULE})")
        if top in RESTRICTED_PACKAGES and RESTRICTED_PACKAGES[top] != my_room:
            allowed = RESTRICTED_PACKAGES[top]
            rule = f"only fedimg/{allowed}/ imports {top}" if allowed else f"{top} is peer code: benchmarks/ only"
            bad.append(f"{where} -> {target} ({rule})")
        if top != "fedimg":
            continue
        room = room_of(target)
        if room is None:
            bad.append(f"{where} -> {target} (imports a module outside every room of DESIGN.md's table)")
        elif room != "core" and (my_room == "core" or room not in ALLOWED[my_room]):
            bad.append(f"{where} -> {target} ({my_room} may not import {room})")
        if (private := _private_step(target, my_pkg, modules)) is not None:
            bad.append(f"{where} -> {private} (private module of another package)")
        elif name is not None and (private := _private_step(f"{target}.{name}", my_pkg, modules)) is not None:
            bad.append(f"{where} -> {private} (private name of another package)")
    bad.extend(_attribute_uses(module, modules, aliases, my_room, my_pkg))
    return bad


def _attribute_uses(module: Module, modules: dict[str, Module], aliases: dict[str, str],
                    my_room: str, my_pkg: str) -> list[str]:
    """``os.environ`` / ``os.getenv`` reads and ``X._private`` uses of another package's names."""
    os_names = {local for local, thing in aliases.items() if thing == "os"}
    bad: list[str] = []
    for node in ast.walk(ast.parse(module.source)):
        chain = _dotted(node) if isinstance(node, ast.Attribute) else None
        if not chain:
            continue
        where = f"{module.name}:{node.lineno}"
        if chain[0] in os_names and chain[1] in ENV_NAMES and not _env_ok(module.name, my_room):
            bad.append(f"{where} -> os.{chain[1]} ({ENV_RULE})")
        head = aliases.get(chain[0])
        if head is not None and head.split(".")[0] == "fedimg":
            dotted = ".".join([head] + chain[1:])
            if (private := _private_step(dotted, my_pkg, modules)) is not None:
                bad.append(f"{where} -> {private} (private attribute of another package)")
    return bad


def check(modules: dict[str, Module]) -> list[str]:
    """Every forbidden edge in ``modules`` (sorted, one line each)."""
    bad: set[str] = set()
    for module in modules.values():
        bad.update(check_module(module, modules))
    return sorted(bad, key=_line_order)


def _line_order(line: str) -> tuple[str, int, str]:
    where, _, rest = line.partition(" -> ")
    name, _, lineno = where.partition(":")
    return name, int(lineno or 0), rest


# --------------------------------------------------------------------------- the tests

def test_package_is_found():
    modules = discover_modules()
    assert "fedimg.kernels" in modules and "fedimg.transforms" in modules, "symlinked folders not followed"
    assert "fedimg.cli" in modules and "fedimg.errors" in modules
    assert len(modules) > 50


def test_no_forbidden_edges():
    bad = check(discover_modules())
    assert not bad, "forbidden imports (module:line -> imported (rule)):\n" + "\n".join(bad)


def test_table_is_one_way():
    """The closed "may import" table has no cycles between different rooms."""
    for a, reach in ALLOWED.items():
        for b in reach - {a}:
            assert a not in ALLOWED.get(b, frozenset()), f"{a} and {b} may import each other"


def _fake(sources: dict[str, str], packages: tuple[str, ...] = ()) -> dict[str, Module]:
    mods = {n: Module(name=n, is_package=n in packages, source=s) for n, s in sources.items()}
    for pkg in packages:
        mods.setdefault(pkg, Module(name=pkg, is_package=True, source=""))
    return mods


FAKE_PACKAGES = ("fedimg", "fedimg.kernels", "fedimg.data", "fedimg.engine", "fedimg.fl", "fedimg.fl.server",
                 "fedimg.fl.nvflare", "fedimg.cli", "fedimg.tasks")


@pytest.mark.parametrize(("source", "expected"), [
    ("from fedimg.data.load import load_case", "fedimg.kernels.bad:1 -> fedimg.data.load (kernels may not import data)"),
    ("def f():\n    import fedimg.engine.loop\n", "fedimg.kernels.bad:2 -> fedimg.engine.loop (kernels may not import engine)"),
    ("import importlib\nimportlib.import_module('fedimg.cli.train')",
     "fedimg.kernels.bad:2 -> fedimg.cli.train (kernels may not import cli)"),
    ("import nvflare.client as flare", "fedimg.kernels.bad:1 -> nvflare.client (only fedimg/fl/nvflare/ imports nvflare)"),
    ("import flwr", "fedimg.kernels.bad:1 -> flwr (flwr is peer code: benchmarks/ only)"),
    ("import os\nx = os.environ.get('A')", "fedimg.kernels.bad:2 -> os.environ (only fedimg/cli/ and fedimg/config.py read the environment)"),
    ("import os as o\nx = o.getenv('A')", "fedimg.kernels.bad:2 -> os.getenv (only fedimg/cli/ and fedimg/config.py read the environment)"),
    ("from os import environ", "fedimg.kernels.bad:1 -> os.environ (only fedimg/cli/ and fedimg/config.py read the environment)"),
    ("from fedimg.tasks import _registry", "fedimg.kernels.bad:1 -> fedimg.tasks._registry (private name of another package)"),
    ("from fedimg.io import _finite", "fedimg.kernels.bad:1 -> fedimg.io._finite (private name of another package)"),
    ("import fedimg.io as fio\nfio._finite(1)", "fedimg.kernels.bad:2 -> fedimg.io._finite (private attribute of another package)"),
])
def test_checker_catches(source, expected):
    """The checker can fail: each synthetic module breaks one rule and is reported so."""
    mods = _fake({"fedimg.kernels.bad": source, "fedimg.data.load": "", "fedimg.engine.loop": "",
                  "fedimg.cli.train": "", "fedimg.io": "def _finite(x): return x"}, FAKE_PACKAGES)
    bad = check(mods)
    assert expected in bad, bad


def test_checker_catches_sideways_private_and_upward_edges():
    mods = _fake({
        "fedimg.fl.server.state": "_hidden = 1\n",
        "fedimg.fl.server._math": "",
        "fedimg.fl.nvflare.client": "from fedimg.fl.server.state import _hidden\nfrom ..server import _math\n"
                                    "def f():\n    from fedimg.cli import main\n",
        "fedimg.engine.loop": "from fedimg.tasks import get_task\n",
        "fedimg.stray": "",
    }, FAKE_PACKAGES)
    assert check(mods) == [
        "fedimg.engine.loop:1 -> fedimg.tasks (engine may not import tasks)",
        "fedimg.fl.nvflare.client:1 -> fedimg.fl.server.state._hidden (private name of another package)",
        "fedimg.fl.nvflare.client:2 -> fedimg.fl.server._math (private module of another package)",
        "fedimg.fl.nvflare.client:4 -> fedimg.cli (fl/nvflare may not import cli)",
        "fedimg.stray -> (none) (module outside every room of DESIGN.md's table)",
    ]


def test_checker_allows_the_table():
    """Clean modules pass: downward edges, own privates, core, cli reading the environment."""
    mods = _fake({
        "fedimg.kernels._ops": "",
        "fedimg.kernels.aggregate": "from ._ops import wsum\nfrom . import _ops\nimport fedimg.errors\n",
        "fedimg.data.load": "from fedimg.imageio.volume import load\nfrom fedimg.kernels import fedavg\n",
        "fedimg.imageio.volume": "",
        "fedimg.fl.nvflare.client": "import nvflare.client as flare\nfrom fedimg.fl.server import strategies\n"
                                    "from fedimg.tasks import get_task\nfrom fedimg.data import load\n",
        "fedimg.fl.server.strategies": "",
        "fedimg.cli.train": "import os\nv = os.environ.get('FEDIMG_THREADS')\nfrom fedimg import __version__\n",
        "fedimg.config": "import os\nv = os.getenv('X')\n",
        "fedimg.io": "from fedimg.errors import InputError\n",
        "fedimg.errors": "",
    }, FAKE_PACKAGES)
    assert check(mods) == []


def test_core_imports_only_core():
    mods = _fake({"fedimg.io": "from fedimg.data import discover\n"}, FAKE_PACKAGES)
    assert check(mods) == ["fedimg.io:1 -> fedimg.data (core may not import data)"]


def test_every_listed_command_exists():
    """``fedimg/cli/__init__.py`` imports every ``COMMAND_MODULES`` entry unguarded: each must exist."""
    tree = ast.parse((PACKAGE / "cli" / "__init__.py").read_text())
    listed = next(ast.literal_eval(n.value) for n in tree.body
                  if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "COMMAND_MODULES" for t in n.targets))
    missing = [name for name in listed if not (PACKAGE / "cli" / f"{name}.py").is_file()]
    assert listed and not missing, f"COMMAND_MODULES lists commands without a module: {missing}"


#: Folders under tests/ that hold data, not tests of a package folder.
TEST_DATA_DIRS = frozenset({"assets"})


def test_tests_mirror_the_package():
    """Every test folder ``tests/a/b`` is the package folder ``fedimg/a/b`` (kernels, transforms included)."""
    tests = ROOT / "tests"
    stray = []
    for folder, dirs, _files in os.walk(tests):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")
                   and not (Path(folder) == tests and d in TEST_DATA_DIRS)]
        rel = Path(folder).relative_to(tests)
        if rel.parts and not (PACKAGE / rel / "__init__.py").is_file():
            stray.append(f"tests/{rel.as_posix()}")
    assert not stray, "test folders without a matching fedimg/ package folder:\n" + "\n".join(stray)
