"""keras-mnas: MnasNet platform-aware neural architecture search for Keras 3 and KerasTuner."""

from keras_mnas.architecture import (
    ARCHITECTURES,
    ArchSpec,
    BlockSpec,
    decode_block,
    encode_block,
    get_architecture,
    round_filters,
)
from keras_mnas.builder import build_model

__version__ = "0.1.0.dev0"

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
