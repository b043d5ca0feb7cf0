"""The `>>>` examples in the docstrings are run, so the documentation cannot drift from the code."""

import doctest
import importlib

import pytest

MODULES = [
    "keras_mnas.architecture",
    "keras_mnas.builder",
    "keras_mnas.counting",
    "keras_mnas.search.reward",
    "keras_mnas.search.results",
    "keras_mnas.search.surrogate",
    "keras_mnas.utils.checks",
    "keras_mnas.utils.text",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples to run"
    assert result.failed == 0
