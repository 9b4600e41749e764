"""The docstring examples of fedimg.imageio run and are right."""

import doctest
import importlib

import pytest

MODULES = ["fedimg.imageio", "fedimg.imageio.suffixes", "fedimg.imageio.nifti", "fedimg.imageio.volume",
           "fedimg.imageio.nrrd", "fedimg.imageio.write", "fedimg.imageio.provenance"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
