"""keras-mnas: MnasNet platform-aware neural architecture search for Keras 3 and KerasTuner.

The names are imported on first use, so that `keras-mnas --help` and the subpackages a command needs start
without importing more than they use.
"""

from __future__ import annotations

from keras_mnas.utils.lazy import lazy_attributes

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


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
