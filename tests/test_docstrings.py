"""The examples in the docstrings run and print what they show."""

import doctest
import importlib
import pkgutil

import pytest

import probsparse

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(probsparse.__path__, prefix="probsparse.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
