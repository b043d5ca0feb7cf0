"""MnasNet models in the `keras.applications` style."""

from keras_mnas.applications.mnasnet import (
    MnasNet,
    MnasNetA1,
    MnasNetB1,
    MnasNetD1,
    MnasNetD1_320,
    MnasNetSmall,
    decode_predictions,
    normalize_input,
    preprocess_input,
)

__all__ = [
    "MnasNet",
    "MnasNetA1",
    "MnasNetB1",
    "MnasNetD1",
    "MnasNetD1_320",
    "MnasNetSmall",
    "decode_predictions",
    "normalize_input",
    "preprocess_input",
]
