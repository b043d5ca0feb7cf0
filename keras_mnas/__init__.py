"""keras-mnas: MnasNet platform-aware neural architecture search for Keras 3 and KerasTuner.

The names are imported on first use, so that `keras-mnas --help` and the subpackages a command needs start
without importing more than they use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

# Public name -> the module that defines it.
_EXPORTS = {
    "ARCHITECTURES": "keras_mnas.architecture",
    "ArchSpec": "keras_mnas.architecture",
    "BlockSpec": "keras_mnas.architecture",
    "build_model": "keras_mnas.builder",
    "decode_block": "keras_mnas.architecture",
    "encode_block": "keras_mnas.architecture",
    "get_architecture": "keras_mnas.architecture",
    "round_filters": "keras_mnas.architecture",
}

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "BlockSpec",
    "build_model",
    "decode_block",
    "encode_block",
    "get_architecture",
    "round_filters",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
