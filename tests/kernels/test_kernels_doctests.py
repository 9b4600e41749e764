"""Run the docstring examples of every fedimg.kernels module (they show shapes and dtypes)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import fedimg.kernels as K

MODULES = sorted(m.name for m in pkgutil.iter_modules(K.__path__, K.__name__ + "."))


@pytest.mark.parametrize("name", [K.__name__] + MODULES)
def test_doctests(name):
    if name.endswith(("._cupy", "._cuda", "cudasim_cases")):
        pytest.skip("device modules are exercised by the gpu / simulator tests")
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0
