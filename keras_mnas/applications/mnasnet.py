"""MnasNet models on the `keras.applications` contract.

Every constructor takes the same arguments as `keras.applications.MobileNetV3Small` and friends
(`include_top`, `weights`, `input_tensor`, `input_shape`, `pooling`, `classes`, `classifier_activation`),
plus `depth_multiplier` (the width multiplier), `dropout_rate` and `include_preprocessing`.

No pretrained weights are downloaded: `weights` is `None` (random initialisation) or a path to a Keras
weights file (`.weights.h5`, `.keras`) or to a PyTorch checkpoint of the same architecture from timm or
torchvision (`.safetensors`, `.pth`, `.pt`, `.bin`), converted on the fly. A model loaded from a PyTorch
checkpoint is built with PyTorch's conventions (symmetric padding, BN epsilon 1e-5) so that it reproduces the
PyTorch model's outputs. A Keras file is loaded into a model built with the padding and BatchNorm settings
it was saved with (recorded by `keras_mnas.weights.convert_torch_checkpoint`, or in a `.keras` file's
layers); a file that does not say them, though it needs PyTorch's, is refused.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_mnas.architecture import ArchSpec, get_architecture
from keras_mnas.builder import build_model

KERAS_WEIGHT_SUFFIXES = (".weights.h5", ".keras", ".h5")
TORCH_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
MIN_INPUT_SIZE = 32
DEFAULT_INPUT_SHAPE = (224, 224, 3)


def _input_tensor_shape(input_tensor) -> tuple | None:
    """The `(height, width, channels)` of an `input_tensor`, or None without one."""
    if input_tensor is None:
        return None
    shape = getattr(input_tensor, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(
            "input_tensor must be a 4D tensor (batch, height, width, channels), such as keras.Input((224, "
            f"224, 3)); received a {type(input_tensor).__name__} of shape {shape}."
        )
    return tuple(None if d is None else int(d) for d in shape[1:])


def _validate_input_shape(input_shape, input_tensor) -> tuple:
    tensor_shape = _input_tensor_shape(input_tensor)
    if input_shape is None:
        if tensor_shape is None:
            # A concrete default keeps the model measurable: TFLite needs a defined input size.
            return DEFAULT_INPUT_SHAPE
        subject, received = "input_tensor", f"an input_tensor of shape {tensor_shape!r}"
        input_shape = tensor_shape
    else:
        subject = "input_shape"
        received = f"input_shape={tuple(input_shape)!r}" if isinstance(input_shape, (tuple, list)) else ""
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be a tuple (height, width, channels); received input_shape={input_shape!r}."
        )
    height, width, channels = input_shape
    for name, value in (("height", height), ("width", width)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < MIN_INPUT_SIZE
        ):
            raise ValueError(
                f"{subject} {name} must be None or an integer >= {MIN_INPUT_SIZE}; "
                f"received {received}."
            )
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"{subject} channels must be a positive integer; received {received}.")
    # As in keras.applications: the model is built on input_tensor, so an input_shape saying otherwise
    # is a mistake, not a request. A None in input_shape accepts any size.
    if tensor_shape is not None and any(
        wanted is not None and wanted != given
        for wanted, given in zip(input_shape, tensor_shape, strict=True)
    ):
        raise ValueError(
            f"input_shape must match the shape of input_tensor, which the model is built on; received "
            f"input_shape={tuple(input_shape)!r} and an input_tensor of shape (height, width, channels) "
            f"{tensor_shape!r}. Pass only input_tensor, or an input_shape equal to its shape."
        )
    return tuple(input_shape)


def _weights_kind(weights) -> str | None:
    if weights is None:
        return None
    if weights == "imagenet":
        raise ValueError(
            "keras-mnas does not download pretrained weights. Pass weights=None, or the path of a Keras "
            f"weights file ({', '.join(KERAS_WEIGHT_SUFFIXES)}) or of a timm/torchvision checkpoint "
            f"({', '.join(TORCH_WEIGHT_SUFFIXES)}); received weights='imagenet'."
        )
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"weights must be None or a path to a weights file; received {type(weights).__name__}."
        )
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise ValueError(
            f"weights must be None or the path to an existing weights file; {path!r} does not exist."
        )
    lower = path.lower()
    if lower.endswith(KERAS_WEIGHT_SUFFIXES):
        return "keras"
    if lower.endswith(TORCH_WEIGHT_SUFFIXES):
        return "torch"
    raise ValueError(
        f"Unrecognised weights file {path!r}: expected a Keras file ({', '.join(KERAS_WEIGHT_SUFFIXES)}) "
        f"or a PyTorch checkpoint ({', '.join(TORCH_WEIGHT_SUFFIXES)})."
    )


def _saved_conventions(
    weights, arch: ArchSpec, depth_multiplier: float, include_top: bool, classes: int
) -> dict[str, Any]:
    """The padding and BatchNorm settings a Keras weights file was saved with, to build the model with.

    The same weights in a model with another padding or BatchNorm epsilon load without an error and
    compute something else, so a file that does not say enough is refused.
    """
    from keras_mnas.weights.saved import CONVENTION_KEYS, saved_build_settings

    path = os.fspath(weights)
    settings = saved_build_settings(path)
    if settings is None:
        return {}
    if settings.get("bn_epsilon") is None:
        raise ValueError(
            f"The weights file {path!r} was saved from a model with PyTorch's symmetric padding but does "
            "not record its BatchNorm epsilon, so the model that computes what it computed cannot be "
            "rebuilt from it. Save the model as a .keras file, or write the file with "
            "keras_mnas.weights.convert_torch_checkpoint (which records its build settings), or build the "
            "model with keras_mnas.build_model(..., padding='symmetric', bn_epsilon=<its epsilon>) and call "
            "model.load_weights."
        )
    if "arch" in settings:
        saved_arch = get_architecture(settings["arch"])
        saved_multiplier = float(settings.get("depth_multiplier", 1.0))
        same_arch = (saved_arch.block_strings, saved_arch.stem_filters, saved_arch.head_filters) == (
            arch.block_strings,
            arch.stem_filters,
            arch.head_filters,
        )
        if not same_arch or saved_multiplier != depth_multiplier:
            raise ValueError(
                f"The weights file {path!r} holds a {saved_arch.name!r} model at "
                f"depth_multiplier={saved_multiplier} (blocks {', '.join(saved_arch.block_strings)}); "
                f"received a request for {arch.name!r} at depth_multiplier={depth_multiplier}"
                + ("" if same_arch else f" (blocks {', '.join(arch.block_strings)})")
                + ". Build the architecture and depth_multiplier the file was saved with."
            )
    if settings.get("include_top") and include_top and settings.get("classes") not in (None, classes):
        raise ValueError(
            f"The weights file {path!r} holds a classifier of {settings['classes']} classes; received "
            f"classes={classes}. Pass classes={settings['classes']}, or include_top=False for the features."
        )
    return {key: settings[key] for key in CONVENTION_KEYS if settings.get(key) is not None}


def MnasNet(
    arch: ArchSpec | str | Sequence[str] | dict = "a1",
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor: Any = None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    depth_multiplier: float = 1.0,
    dropout_rate: float | None = None,
    include_preprocessing: bool | None = None,
    name: str | None = None,
):
    """Instantiates a MnasNet-style model of any architecture, a searched one included.

    Args:
        arch: The architecture: an `ArchSpec`, a reference name (`"a1"`, `"b1"`, `"small"`, `"d1"`,
            `"d1_320"`), block strings, or the dict of `ArchSpec.to_dict()` (what a search reports).
        include_top: Whether to include the classifier (global pooling, dropout, dense) at the top.
        weights: `None` (random initialisation) or a path to a Keras weights file or a timm/torchvision
            PyTorch checkpoint of this architecture. The model takes the padding and BatchNorm settings
            the file was saved with (see `keras_mnas.weights.saved_build_settings`).
        input_tensor: Optional Keras tensor (output of `keras.Input()`) to use as the model input.
        input_shape: Optional `(height, width, channels)`; defaults to `(224, 224, 3)`. Height and width
            may be `None` for a fully convolutional model, but such a model cannot be timed as TFLite.
        pooling: With `include_top=False`: `None` (4D feature map), `"avg"` or `"max"`. Ignored with
            `include_top=True`, as in `keras.applications`.
        classes: Number of classes; only with `include_top=True`.
        classifier_activation: Activation of the top layer: a string, a callable, or `None` for logits.
        depth_multiplier: Width multiplier of the stem and blocks (the reference's name; `alpha` in
            MobileNet). The head stays at 1280 filters.
        dropout_rate: Dropout before the classifier; `None` uses the architecture's default.
        include_preprocessing: Whether the model takes [0, 255] RGB inputs and normalises them itself
            (ImageNet mean and standard deviation). With `False` it takes normalised inputs. `None` (the
            default) means `True` for 3-channel inputs and `False` for any other number of channels,
            which ImageNet's per-channel statistics do not fit (normalise such inputs yourself).
        name: Model name; defaults to the architecture's name.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for a bad argument; an `input_shape` other than `input_tensor`'s shape; a weights file
            of another architecture or `depth_multiplier`, or one saved with PyTorch's padding that does
            not record its BatchNorm epsilon; a PyTorch checkpoint whose layers differ from the model's
            (only the classifier is left out, with `include_top=False`).

    Example:

    ```python
    arch = ["r1_k3_s11_e1_i32_o16_noskip", "r2_k3_s22_e6_i16_o24_se0.25"]
    model = keras_mnas.applications.MnasNet(arch, input_shape=(96, 96, 3), classes=10)
    ```
    """
    arch = get_architecture(arch)
    weights_kind = _weights_kind(weights)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be one of None, 'avg' or 'max'; received pooling={pooling!r}.")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive integer; received classes={classes!r}.")
    if (
        isinstance(depth_multiplier, bool)
        or not isinstance(depth_multiplier, (int, float))
        or not (depth_multiplier > 0)
    ):
        raise ValueError(
            f"depth_multiplier must be a positive number; received depth_multiplier={depth_multiplier!r}."
        )
    input_shape = _validate_input_shape(input_shape, input_tensor)
    if include_preprocessing is None:
        # ImageNet's statistics are per RGB channel: normalise by default only where they apply.
        include_preprocessing = input_shape[-1] == 3
    conventions = {}
    if weights_kind == "torch":
        from keras_mnas.weights import TORCH_CONVENTIONS

        conventions = dict(TORCH_CONVENTIONS)
    elif weights_kind == "keras":
        conventions = _saved_conventions(weights, arch, float(depth_multiplier), include_top, classes)
    model = build_model(
        arch,
        input_shape=input_shape,
        input_tensor=input_tensor,
        include_top=include_top,
        pooling=None if include_top else pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        depth_multiplier=float(depth_multiplier),
        dropout_rate=dropout_rate,
        include_preprocessing=include_preprocessing,
        name=name,
        **conventions,
    )
    if weights_kind == "keras":
        model.load_weights(os.fspath(weights))
    elif weights_kind == "torch":
        from keras_mnas.weights import load_torch_weights

        # Without the top only the checkpoint's classifier is left out: every other layer must match.
        load_torch_weights(model, weights, skip_classifier=not include_top)
    return model


def _reference_constructor(arch_name: str, title: str, published: str):
    def constructor(
        include_top: bool = True,
        weights: str | os.PathLike | None = None,
        input_tensor: Any = None,
        input_shape: tuple | None = None,
        pooling: str | None = None,
        classes: int = 1000,
        classifier_activation: str | None = "softmax",
        depth_multiplier: float = 1.0,
        dropout_rate: float | None = None,
        include_preprocessing: bool | None = None,
        name: str | None = None,
    ):
        return MnasNet(
            arch_name,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            depth_multiplier=depth_multiplier,
            dropout_rate=dropout_rate,
            include_preprocessing=include_preprocessing,
            name=name,
        )

    constructor.__name__ = constructor.__qualname__ = title
    constructor.__doc__ = f"""Instantiates the {title} architecture ({published}).

    Block strings: `{", ".join(get_architecture(arch_name).block_strings)}`.

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
        depth_multiplier, dropout_rate, include_preprocessing, name: as in `keras_mnas.applications.MnasNet`.

    Returns:
        A `keras.Model`.

    Example:

    ```python
    model = keras_mnas.applications.{title}(input_shape=(224, 224, 3))
    ```
    """
    return constructor


MnasNetA1 = _reference_constructor("a1", "MnasNetA1", "3,887,038 trainable parameters, 311.6M mult-adds")
MnasNetB1 = _reference_constructor("b1", "MnasNetB1", "4,383,312 trainable parameters, 314.4M mult-adds")
MnasNetSmall = _reference_constructor(
    "small", "MnasNetSmall", "2,030,264 trainable parameters, 68.3M mult-adds"
)
MnasNetD1 = _reference_constructor("d1", "MnasNetD1", "3,638,404 trainable parameters")
MnasNetD1_320 = _reference_constructor("d1_320", "MnasNetD1_320", "6,932,240 trainable parameters")


def preprocess_input(x, data_format=None):
    """A placeholder kept for compatibility with the `keras.applications` API: returns `x` unchanged.

    keras-mnas models of RGB inputs normalise them themselves (`include_preprocessing`, on by default for
    3 channels), so they take float RGB images in [0, 255]. For a model built with
    `include_preprocessing=False`, use `normalize_input`.

    Args:
        x: A floating point `numpy.array` or tensor.
        data_format: Unused; kept for API compatibility.

    Returns:
        `x`, unchanged.
    """
    return x


def normalize_input(x):
    """Scales [0, 255] RGB images to the ImageNet-normalised inputs of `include_preprocessing=False`.

    Example:

    ```python
    x = normalize_input(np.full((1, 224, 224, 3), 255.0))  # about (2.25, 2.43, 2.64) per channel
    ```
    """
    from keras_mnas.builder import IMAGENET_MEAN, IMAGENET_STD

    x = np.asarray(x, dtype="float32")
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(
            f"normalize_input expects RGB images with 3 channels last; received shape {x.shape}."
        )
    return (x / 255.0 - np.asarray(IMAGENET_MEAN, "float32")) / np.asarray(IMAGENET_STD, "float32")


@functools.lru_cache(maxsize=1)
def _imagenet_class_index() -> dict[str, list[str]]:
    # Shipped with the package (wnids and names as published by torchvision/timm): no download needed.
    path = os.path.join(os.path.dirname(__file__), "imagenet_class_index.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def decode_predictions(preds, top: int = 5):
    """Decodes the predictions of an ImageNet model, as `keras.applications` does, without a download.

    Args:
        preds: Array of shape `(samples, 1000)`.
        top: How many top-guesses to return.

    Returns:
        One list of `(class_name, class_description, score)` tuples per sample.

    Example:

    ```python
    decode_predictions(model.predict(images), top=3)
    ```
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "decode_predictions expects a batch of ImageNet predictions, a 2D array of shape "
            f"(samples, 1000); received an array of shape {preds.shape}."
        )
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 1000:
        raise ValueError(f"top must be an integer in [1, 1000]; received top={top!r}.")
    index = _imagenet_class_index()
    results = []
    for pred in preds:
        best = np.argsort(pred)[::-1][:top]
        results.append([(*index[str(i)], float(pred[i])) for i in best])
    return results
