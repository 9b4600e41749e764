"""The docstring examples of fedimg.data run and are right."""

import doctest
import importlib

import pytest

MODULES = ["fedimg.data.labels", "fedimg.data.deform", "fedimg.data.tumour", "fedimg.data.discover",
           "fedimg.data.load", "fedimg.data.anatomy", "fedimg.data.synth"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
