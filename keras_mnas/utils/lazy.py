"""Module attributes imported on first use (PEP 562), so a light command does not load TensorFlow.

Example:

```python
# In a package's __init__.py:
__getattr__, __dir__ = lazy_attributes(__name__, {"MnasTuner": "keras_mnas.search.tuner"})
```
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    module_name: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's `__getattr__` and `__dir__` that import each name from its defining module when first used.

    Args:
        module_name: The module that gets the attributes (its `__name__`).
        exports: `{attribute name: the module that defines it}`.

    Returns:
        `(__getattr__, __dir__)`, to assign in the module. A name once imported is stored in the module, so
        later look-ups no longer reach `__getattr__`.
    """
    exports = dict(exports)

    def get_attribute(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[module_name], name, value)
        return value

    def list_attributes() -> list[str]:
        return sorted(set(vars(sys.modules[module_name])) | set(exports))

    return get_attribute, list_attributes
