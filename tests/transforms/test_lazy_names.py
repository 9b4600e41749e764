"""``fedimg.transforms`` loads its families lazily, and introspection of the package imports nothing.

``doctest``'s finder calls ``inspect.unwrap`` on every value of the ``fedimg`` package, which asks
``fedimg.transforms`` for ``__wrapped__``; the lazy ``__getattr__`` used to import every family (and
``fedimg.pathology`` with them) in the middle of that walk, so ``test_doctests[fedimg]`` failed with
"dictionary changed size during iteration" when ``fedimg.transforms`` was imported and
``fedimg.pathology`` was not.
"""

from __future__ import annotations

from _fresh_python import run_python


def test_dunder_lookups_import_nothing_and_names_still_load() -> None:
    code = ("import sys, inspect, fedimg, fedimg.transforms as t\n"
            "assert not hasattr(t, '__wrapped__') and inspect.unwrap(t) is t\n"
            "assert not any(m in sys.modules for m in ('fedimg.pathology', 'fedimg.transforms.stain',"
            " 'fedimg.transforms.deface')), sorted(m for m in sys.modules if m.startswith('fedimg'))\n"
            "import doctest; doctest.DocTestFinder(exclude_empty=False).find(fedimg)\n"
            "assert t.Deface.__module__ == 'fedimg.transforms.deface'\n"
            "print('ok')\n")
    res = run_python(code)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
