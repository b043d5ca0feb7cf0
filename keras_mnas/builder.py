"""The one builder: an architecture spec becomes a Keras functional model.

Blocks are tensor-in/tensor-out functions with readable, stable layer names (`block3b_dwconv`,
`block3b_se_reduce`, ...) in the style of `keras.applications.EfficientNet`. The builder only uses layers
that exist in both Keras 3 and tf_keras (Keras 2), so the same function builds the tf_keras twin that
tensorflow-model-optimization needs (`framework="tf_keras"`).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from keras_mnas.architecture import (
    MAX_CLASSES,
    ArchSpec,
    BlockSpec,
    LayerPlan,
    get_architecture,
    plan_layers,
)
from keras_mnas.utils.checks import check_choice, check_int, check_number

# ImageNet statistics used by the reference implementation and by timm/torchvision, in [0, 1] units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PADDINGS = ("same", "symmetric")

# build_model records its arguments on the model under this attribute, as a JSON string (inert to Keras'
# and TensorFlow's attribute tracking), so that the same network can be rebuilt, e.g. as a tf_keras twin.
_BUILD_CONFIG_ATTRIBUTE = "_keras_mnas_build_config"
FRAMEWORKS = ("keras", "tf_keras")
POOLINGS = (None, "avg", "max")


def check_include_preprocessing(include_preprocessing: Any, channels: int | None) -> None:
    """Checks an `include_preprocessing` argument for inputs with `channels` channels.

    Only a bool is taken: a string such as `"False"` is truthy and would add preprocessing. With `True`, the
    inputs must be RGB (`check_preprocessing_channels`).

    Example:

    >>> check_include_preprocessing(False, 1)
    >>> check_include_preprocessing("False", 3)
    Traceback (most recent call last):
        ...
    ValueError: include_preprocessing must be True or False; received 'False' (str).
    """
    if not isinstance(include_preprocessing, (bool, np.bool_)):
        raise ValueError(
            "include_preprocessing must be True or False; received "
            f"{include_preprocessing!r} ({type(include_preprocessing).__name__})."
        )
    if include_preprocessing:
        check_preprocessing_channels(channels)


def check_preprocessing_channels(channels: int | None) -> None:
    """Refuses input preprocessing for inputs other than RGB (its statistics are per RGB channel).

    Example:

    >>> check_preprocessing_channels(3)
    >>> check_preprocessing_channels(1)
    Traceback (most recent call last):
        ...
    ValueError: include_preprocessing normalises RGB inputs ...
    """
    if channels is not None and channels != 3:
        raise ValueError(
            "include_preprocessing normalises RGB inputs with ImageNet's per-channel mean and standard "
            f"deviation, so it needs 3 input channels; received {channels}. Normalise other inputs yourself "
            "and pass include_preprocessing=False."
        )


def _free_name(name: str, taken: Collection[str]) -> str:
    """`name`, or the first of `name_1`, `name_2`, ... not in `taken` (Keras' own way of deduplicating)."""
    candidate, index = name, 0
    while candidate in taken:
        index += 1
        candidate = f"{name}_{index}"
    return candidate


def _upstream_layer_names(keras_module, tensor) -> set[str]:
    """The names of the layers that compute a Keras tensor from its source inputs."""
    sources = keras_module.utils.get_source_inputs(tensor)
    # A throwaway functional model lists them through public API, in Keras 3 and tf_keras alike.
    upstream = keras_module.Model(sources, tensor, name="keras_mnas_input_graph")
    return {layer.name for layer in upstream.layers}


def _framework(name: str):
    check_choice("framework", name, FRAMEWORKS)
    try:
        return importlib.import_module(name)
    except ImportError as error:  # tf_keras is an optional extra
        raise ImportError(
            f"Building with framework={name!r} needs the {name!r} package: pip install 'keras-mnas[quant]'."
        ) from error


class LayerRecipes:
    """One recipe per piece of the network, bound to one Keras namespace and one set of conventions.

    Each recipe takes a tensor and returns one, naming its layers as `keras.applications` does. The pieces
    are, in network order: `preprocessing`, `stem`, `layer` (one searched layer), `head`, then `classifier`
    or `pooling`. `build_model` calls them in that order, and the latency lookup table builds each of its
    entries with the same recipe, so an entry times exactly what a network contains.

    Args:
        keras_module: `keras` or `tf_keras`.
        padding: `"same"` or `"symmetric"` (k // 2 on every side of strided convolutions).
        bn_momentum: BatchNormalization momentum.
        bn_epsilon: BatchNormalization epsilon.

    Example:

    ```python
    recipes = LayerRecipes(keras, "same", 0.99, 1e-3)
    inputs = keras.Input((96, 96, 3))
    x = recipes.stem(inputs, 32)
    x = recipes.head(x, 1280)
    model = keras.Model(inputs, recipes.classifier(x, 10, "softmax", 0.2))
    ```
    """

    def __init__(self, keras_module, padding: str, bn_momentum: float, bn_epsilon: float):
        self.layers = keras_module.layers
        self.padding = padding
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon

    def batch_norm(self, x, name):
        return self.layers.BatchNormalization(momentum=self.bn_momentum, epsilon=self.bn_epsilon, name=name)(
            x
        )

    def _pad(self, x, kernel_size, strides, name):
        # Keras' "same" pads strided convs asymmetrically; PyTorch models pad k // 2 on every side.
        if self.padding == "symmetric" and strides != (1, 1) and kernel_size > 1:
            return self.layers.ZeroPadding2D(kernel_size // 2, name=name + "_pad")(x), "valid"
        return x, "same"

    def conv(self, x, filters, kernel_size, strides, name):
        x, padding = self._pad(x, kernel_size, strides, name)
        return self.layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding, use_bias=False, name=name
        )(x)

    def depthwise_conv(self, x, kernel_size, strides, name):
        x, padding = self._pad(x, kernel_size, strides, name)
        return self.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding=padding, use_bias=False, name=name
        )(x)

    def squeeze_excite(self, x, se_filters, name):
        layers = self.layers
        channels = x.shape[-1]
        s = layers.GlobalAveragePooling2D(keepdims=True, name=name + "_se_squeeze")(x)
        s = layers.Conv2D(se_filters, 1, activation="relu", name=name + "_se_reduce")(s)
        s = layers.Conv2D(channels, 1, activation="sigmoid", name=name + "_se_expand")(s)
        return layers.Multiply(name=name + "_se_excite")([x, s])

    def preprocessing(self, x, taken: Collection[str] = ()):
        """Rescales [0, 255] RGB inputs and normalises them with ImageNet's per-channel statistics.

        The layers are named `rescaling` and `normalization`, or `rescaling_1`, ... when a name is in
        `taken` (the layers already upstream of `x`, whose names a model may not repeat).
        """
        x = self.layers.Rescaling(1.0 / 255.0, name=_free_name("rescaling", taken))(x)
        return self.layers.Normalization(
            mean=list(IMAGENET_MEAN),
            variance=[s**2 for s in IMAGENET_STD],
            name=_free_name("normalization", taken),
        )(x)

    def stem(self, x, filters: int, kernel_size: int = 3, strides: tuple[int, int] = (2, 2)):
        """The stem: a strided convolution (3x3, stride 2 in every MnasNet), BN and ReLU."""
        x = self.conv(x, filters, kernel_size, strides, "stem_conv")
        x = self.batch_norm(x, "stem_bn")
        return self.layers.ReLU(name="stem_activation")(x)

    def head(self, x, filters: int):
        """The head: a 1x1 convolution to `filters` channels, BN and ReLU."""
        x = self.conv(x, filters, 1, (1, 1), "top_conv")
        x = self.batch_norm(x, "top_bn")
        return self.layers.ReLU(name="top_activation")(x)

    def classifier(self, x, classes: int, activation: str | None = "softmax", dropout_rate: float = 0.0):
        """Global average pooling, dropout (only when `dropout_rate > 0`) and the dense classifier."""
        x = self.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = self.layers.Dropout(dropout_rate, name="top_dropout")(x)
        return self.layers.Dense(classes, activation=activation, name="predictions")(x)

    def pooling(self, x, mode: str):
        """Global `"avg"` or `"max"` pooling of the features, without a classifier."""
        if mode == "avg":
            return self.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return self.layers.GlobalMaxPooling2D(name="max_pool")(x)

    def layer(self, inputs, plan: LayerPlan):
        """One layer (MBConv, depthwise-separable or regular conv) with its SE and skip op."""
        layers, name = self.layers, plan.name
        x = inputs
        if plan.op == "conv":
            x = self.conv(x, plan.output_filters, plan.kernel_size, plan.strides, name + "_conv")
            x = self.batch_norm(x, name + "_bn")
            x = layers.ReLU(name=name + "_activation")(x)
            if plan.se_filters:
                x = self.squeeze_excite(x, plan.se_filters, name)
        else:
            if plan.expanded_filters != plan.input_filters:
                x = self.conv(x, plan.expanded_filters, 1, (1, 1), name + "_expand_conv")
                x = self.batch_norm(x, name + "_expand_bn")
                x = layers.ReLU(name=name + "_expand_activation")(x)
            x = self.depthwise_conv(x, plan.kernel_size, plan.strides, name + "_dwconv")
            x = self.batch_norm(x, name + "_bn")
            x = layers.ReLU(name=name + "_activation")(x)
            if plan.se_filters:
                x = self.squeeze_excite(x, plan.se_filters, name)
            x = self.conv(x, plan.output_filters, 1, (1, 1), name + "_project_conv")
            x = self.batch_norm(x, name + "_project_bn")
        if plan.skip == "identity":
            x = layers.Add(name=name + "_add")([x, inputs])
        elif plan.skip == "pool":
            shortcut = layers.AveragePooling2D(
                3, strides=plan.strides, padding="same", name=name + "_skip_pool"
            )(inputs)
            if plan.projects_skip:
                shortcut = self.conv(shortcut, plan.output_filters, 1, (1, 1), name + "_skip_conv")
                shortcut = self.batch_norm(shortcut, name + "_skip_bn")
            x = layers.Add(name=name + "_add")([x, shortcut])
        return x


def build_model(
    arch: ArchSpec | str | Sequence[str],
    *,
    input_shape: tuple[int | None, int | None, int] | None = (224, 224, 3),
    input_tensor: Any = None,
    include_top: bool = True,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    depth_multiplier: float = 1.0,
    dropout_rate: float | None = None,
    include_preprocessing: bool = False,
    padding: str = "same",
    bn_momentum: float = 0.99,
    bn_epsilon: float = 1e-3,
    framework: str = "keras",
    name: str | None = None,
):
    """Builds a Keras functional model from an architecture spec.

    The network is: 3x3 stride-2 stem conv, BN, ReLU -> the blocks -> 1x1 conv to `head_filters`, BN,
    ReLU -> [global average pooling, dropout, dense] (the part in brackets only with `include_top`).

    Args:
        arch: An `ArchSpec`, a reference name (`"a1"`, `"b1"`, `"small"`, `"d1"`, `"d1_320"`) or block
            strings.
        input_shape: Input shape without the batch dimension, channels last.
        input_tensor: Optional Keras tensor to use as the model input.
        include_top: Whether to include the classifier (global pooling, dropout, dense). The 1x1 head conv
            is part of the features either way, as in `keras.applications`.
        pooling: With `include_top=False`: `None`, `"avg"` or `"max"` global pooling of the features.
        classes: Number of classes of the classifier.
        classifier_activation: Activation of the classifier, or `None` for logits.
        depth_multiplier: Width multiplier applied to the stem and every block (not to the head).
        dropout_rate: Dropout before the classifier; `None` uses the architecture's default.
        include_preprocessing: Whether the model rescales [0, 255] RGB inputs and normalises them with the
            ImageNet mean and standard deviation.
        padding: `"same"` (TensorFlow reference) or `"symmetric"` (PyTorch models: k // 2 on every side).
        bn_momentum: BatchNormalization momentum.
        bn_epsilon: BatchNormalization epsilon (1e-3 in the reference, 1e-5 in PyTorch models).
        framework: `"keras"` (Keras 3) or `"tf_keras"` (Keras 2, for tensorflow-model-optimization).
        name: Model name; defaults to the architecture's name.

    Returns:
        A functional model (a `keras.Model`, or a `tf_keras.Model` for `framework="tf_keras"`).

    Example:

    ```python
    model = build_model("a1", input_shape=(224, 224, 3), classes=1000)
    model.count_params()  # 3,920,526: 3,887,038 trainable + 33,488 BN moving statistics
    ```
    """
    arch = get_architecture(arch)
    check_choice("padding", padding, PADDINGS)
    check_choice("pooling", pooling, POOLINGS)
    classes = check_int("classes", classes, minimum=1, maximum=MAX_CLASSES)
    if dropout_rate is None:
        dropout_rate = arch.dropout_rate
    check_number("dropout_rate", dropout_rate, low=0, high=1, high_open=True)
    keras_module = _framework(framework)
    recipes = LayerRecipes(keras_module, padding, bn_momentum, bn_epsilon)
    stem_filters, plans = plan_layers(arch, depth_multiplier)

    if input_tensor is None:
        inputs = keras_module.layers.Input(shape=input_shape, name="input_layer")
    elif hasattr(keras_module, "backend") and not keras_module.backend.is_keras_tensor(input_tensor):
        inputs = keras_module.layers.Input(tensor=input_tensor, shape=input_shape, name="input_layer")
    else:
        inputs = input_tensor
    check_include_preprocessing(include_preprocessing, inputs.shape[-1])

    # Build stem
    x = inputs
    if include_preprocessing:
        # The layers of a given input_tensor's graph are part of the model: the preprocessing layers must
        # not repeat their names (an unnamed keras.layers.Rescaling is called "rescaling" too).
        taken = _upstream_layer_names(keras_module, inputs) if inputs is input_tensor else ()
        x = recipes.preprocessing(inputs, taken)
    x = recipes.stem(x, stem_filters)
    # Build blocks
    for plan in plans:
        x = recipes.layer(x, plan)
    # Build top. As in keras.applications, the 1x1 head conv belongs to the features: include_top adds the
    # classifier.
    x = recipes.head(x, arch.head_filters)
    if include_top:
        x = recipes.classifier(x, classes, classifier_activation, dropout_rate)
    elif pooling is not None:
        x = recipes.pooling(x, pooling)

    model_inputs = inputs
    if input_tensor is not None:
        # The model starts where the given tensor's graph starts, as in keras.applications.
        sources = keras_module.utils.get_source_inputs(input_tensor)
        model_inputs = sources[0] if len(sources) == 1 else sources
    model = keras_module.Model(model_inputs, x, name=name or arch.name)
    config = {
        "arch": arch.to_dict(),
        "input_shape": [None if d is None else int(d) for d in inputs.shape[1:]],
        "include_top": include_top,
        "pooling": pooling,
        "classes": classes,
        "classifier_activation": classifier_activation,
        "depth_multiplier": float(depth_multiplier),
        "dropout_rate": float(dropout_rate),
        "include_preprocessing": bool(include_preprocessing),
        "padding": padding,
        "bn_momentum": float(bn_momentum),
        "bn_epsilon": float(bn_epsilon),
        "name": model.name,
    }
    setattr(model, _BUILD_CONFIG_ATTRIBUTE, json.dumps(config))
    return model


def get_build_config(model) -> dict[str, Any]:
    """The `build_model` arguments that rebuild a model: `build_model(**get_build_config(model))`.

    `build_model` records its arguments on the model it returns. A model without that record (reloaded
    from a `.keras` file, or cloned) gets them inferred from its layers, whose names and settings the
    builder makes stable: the widths found become the architecture (with `depth_multiplier=1.0`), so the
    rebuilt network has the same layers, names and weight shapes, but the block strings may differ from
    the original ones where several spellings build the same layers (an SE ratio, `dconv` vs `e1`).

    Args:
        model: A model made by `build_model` (or `keras_mnas.applications`), in Keras 3 or tf_keras.

    Returns:
        A dict of `build_model` keyword arguments; `"arch"` is an `ArchSpec.to_dict()` dict.

    Raises:
        ValueError: if the model was not made by `build_model` (its layers do not follow the builder's).

    Example:

    ```python
    model = build_model("small", input_shape=(64, 64, 3), classes=10)
    twin = build_model(**get_build_config(model), framework="tf_keras")
    ```
    """
    recorded = getattr(model, _BUILD_CONFIG_ATTRIBUTE, None)
    if isinstance(recorded, str):
        config = json.loads(recorded)
        config["input_shape"] = tuple(config["input_shape"])
        return config
    return _infer_build_config(model)


_LAYER_PREFIX = re.compile(r"^block(\d+)([a-z]+)_")


def _se_ratio_for(se_filters_by_width: list[tuple[int, int]]) -> float:
    """An SE ratio giving `max(1, int(width * ratio)) == se_filters` for every (width, se_filters)."""
    low, high = 0.0, 1.0
    for width, se_filters in se_filters_by_width:
        if se_filters == 1:  # max(1, ...) also covers ratios that round down to 0
            low, high = max(low, 0.0), min(high, 2.0 / width)
        else:
            low, high = max(low, se_filters / width), min(high, (se_filters + 1) / width)
    ratio = (low + high) / 2
    if not low < high or not 0 < ratio <= 1:
        raise ValueError(f"No squeeze-and-excitation ratio gives the widths {se_filters_by_width}.")
    return ratio


def _infer_build_config(model) -> dict[str, Any]:
    layers = {layer.name: layer for layer in model.layers}
    name = getattr(model, "name", type(model).__name__)
    for required in ("stem_conv", "stem_bn", "top_conv"):
        if required not in layers:
            raise ValueError(
                f"Model {name!r} was not made by keras_mnas.build_model: it has no layer {required!r}, and "
                "no build configuration is recorded on it. Expected a model from build_model or "
                "keras_mnas.applications (or one saved from them)."
            )

    def config_of(layer_name):
        return layers[layer_name].get_config()

    # Layer prefixes (block2a, block2b, ...) grouped by block, in model order.
    blocks: dict[int, list[str]] = {}
    for layer_name in layers:
        match = _LAYER_PREFIX.match(layer_name)
        if match:
            prefix = layer_name[: match.end() - 1]
            prefixes = blocks.setdefault(int(match.group(1)), [])
            if prefix not in prefixes:
                prefixes.append(prefix)
    if sorted(blocks) != list(range(1, len(blocks) + 1)):
        raise ValueError(f"Model {name!r}: its blocks are numbered {sorted(blocks)}, not 1, 2, ..., n.")

    width = int(config_of("stem_conv")["filters"])
    stem_filters = width
    specs = []
    for index in sorted(blocks):
        prefixes = blocks[index]
        skips, se_widths, expand_ratio = [], [], None
        for position, prefix in enumerate(prefixes):
            op = "conv" if prefix + "_conv" in layers else "mbconv"
            spatial = config_of(prefix + ("_conv" if op == "conv" else "_dwconv"))
            if position == 0:
                kernel_size, strides = int(spatial["kernel_size"][0]), tuple(spatial["strides"])
                first_op = op
            output = int((spatial if op == "conv" else config_of(prefix + "_project_conv"))["filters"])
            expanded = (
                int(config_of(prefix + "_expand_conv")["filters"])
                if prefix + "_expand_conv" in layers
                else width
            )
            ratio = expanded // width
            if op != first_op or expanded != width * ratio or expand_ratio not in (None, ratio):
                raise ValueError(f"Model {name!r}: the layers of block {index} do not share one operation.")
            expand_ratio = ratio
            if prefix + "_se_reduce" in layers:
                se_widths.append((width, int(config_of(prefix + "_se_reduce")["filters"])))
            skips.append(
                "pool"
                if prefix + "_skip_pool" in layers
                else "identity"
                if prefix + "_add" in layers
                else "none"
            )
            width = output
        skip = "pool" if "pool" in skips else "identity" if "identity" in skips else "none"
        specs.append(
            BlockSpec(
                repeats=len(prefixes),
                kernel_size=kernel_size,
                strides=strides,
                input_filters=specs[-1].output_filters if specs else stem_filters,
                output_filters=width,
                expand_ratio=expand_ratio,
                se_ratio=_se_ratio_for(se_widths) if se_widths else None,
                op=first_op,
                skip=skip,
            )
        )
    include_top = "predictions" in layers
    dropout_rate = float(config_of("top_dropout")["rate"]) if "top_dropout" in layers else 0.0
    bn = config_of("stem_bn")
    activation = config_of("predictions")["activation"] if include_top else "softmax"
    arch_name = name if re.fullmatch(r"[A-Za-z0-9_.-]+", name) else "mnasnet"
    return {
        "arch": ArchSpec(
            blocks=tuple(specs),
            stem_filters=stem_filters,
            head_filters=int(config_of("top_conv")["filters"]),
            dropout_rate=dropout_rate,
            name=arch_name,
        ).to_dict(),
        "input_shape": tuple(None if d is None else int(d) for d in model.inputs[0].shape[1:]),
        "include_top": include_top,
        "pooling": None
        if include_top
        else "avg"
        if "avg_pool" in layers
        else "max"
        if "max_pool" in layers
        else None,
        "classes": int(config_of("predictions")["units"]) if include_top else 1000,
        "classifier_activation": None if activation == "linear" else activation,
        "depth_multiplier": 1.0,
        "dropout_rate": dropout_rate,
        "include_preprocessing": "rescaling" in layers,
        "padding": "symmetric" if "stem_conv_pad" in layers else "same",
        "bn_momentum": float(bn["momentum"]),
        "bn_epsilon": float(bn["epsilon"]),
        "name": name,
    }
