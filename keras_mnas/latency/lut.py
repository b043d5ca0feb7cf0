"""Latency predicted from a lookup table of per-layer timings, calibrated on a few end-to-end measurements.

FBNet, ProxylessNAS and HW-NAS-Bench predict a network's latency as the sum of per-layer entries of a lookup
table keyed by the layer's configuration and input shape. `LatencyLookupTable` does that for keras-mnas
architectures, on any `LatencySource`:

1. **Profile.** Each distinct layer configuration (`LayerConfig`: operation, kernel, strides, widths, SE
   width, skip op, input resolution; the stem, the head, the pooling and the classifier are entries of their
   own) is built as a tiny Keras model and measured once with the source's `measure`, exactly like a whole
   model. A phone source therefore profiles the same way the host does.
2. **Compose.** A one-layer model's time includes the interpreter's fixed cost of one invocation. The table
   also measures an (almost) empty model, the *baseline*, and subtracts it from every entry, so a sum of
   entries counts that fixed cost zero times instead of once per layer.
3. **Calibrate.** A layer measured on its own runs with its weights and activations hot in the caches;
   inside a network it does not, and the converter may fuse across layer boundaries. A few architectures
   are measured end to end and a line `measured = scale * sum(entries) + intercept` is fitted (least
   squares on relative errors, which is what "within 10%" measures). Without calibration the prediction is
   the sum plus one baseline.

The table is JSON: its entries, the baseline, the calibration, the source's `config()`, the provenance of the
measurements, the keras-mnas version and dates, under a format version. It predicts from an `ArchSpec`
without building a model (tens of microseconds), from a built keras-mnas model (`measure`, by reading the
model's layers), and from hyperparameter values of a `MnasSearchSpace`; it can tell that a candidate is far
over a latency budget before the candidate is built.

Example:

```python
from keras_mnas.latency import HostLatency, LatencyLookupTable
from keras_mnas.search import MnasSearchSpace

space = MnasSearchSpace(input_shape=(96, 96, 3))
lut = LatencyLookupTable(profiler=HostLatency())
lut.profile_space(space)                          # every distinct layer of the space, with a progress line
lut.calibrate([space.decode(v) for v in some_values], input_shape=space.input_shape)
lut.save("lut-host-96.json")

lut = LatencyLookupTable.load("lut-host-96.json")
lut.predict("a1", input_shape=(96, 96, 3))        # milliseconds, without building anything
tuner = MnasTuner(space=space, latency=lut, target_latency_ms=3.0, max_trials=100)
```
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import itertools
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from keras_mnas.architecture import ArchSpec, get_architecture, plan_layers, round_filters
from keras_mnas.builder import check_include_preprocessing, check_preprocessing_channels
from keras_mnas.latency.base import QUANTIZATIONS, LatencyResult, LatencySource
from keras_mnas.utils.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)

#: Identifies a latency table file.
FORMAT_NAME = "keras-mnas-latency-table"
#: Bumped whenever the meaning of a table file changes; older or newer files are refused.
FORMAT_VERSION = 1

#: The kinds of entries, in network order.
KINDS = ("preprocessing", "stem", "layer", "head", "pooling", "classifier")
_LAYER_OPS = ("conv", "dconv", "mbconv")
_SKIPS = ("identity", "none", "pool")
_PADDINGS = ("same", "symmetric")
_POOLINGS = ("avg", "max")
ON_MISSING = ("error", "profile")

# Facts that change with every measurement; dropping them lets thousands of entries share a few records.
_VOLATILE_PROVENANCE = frozenset(
    {"model", "cache_key", "conversion_seconds", "per_repeat_median_ms", "temperatures", "temperature_c"}
)
_BLOCK_PREFIX = re.compile(r"^(block[0-9]+[a-z]+)_")


class MissingEntryError(LookupError):
    """A prediction needs layer configurations the table has not profiled.

    Attributes:
        configs: The missing `LayerConfig`s, in network order.

    Example:

    ```python
    try:
        lut.predict(arch, input_shape=(96, 96, 3))
    except MissingEntryError as error:
        lut.profile(error.configs)
    ```
    """

    def __init__(self, configs: Sequence[LayerConfig]):
        self.configs = list(configs)
        shown = ", ".join(repr(c.key) for c in self.configs[:3])
        more = f" and {len(self.configs) - 3} more" if len(self.configs) > 3 else ""
        super().__init__(
            f"The latency table has no entry for {shown}{more}. Profile them first "
            "(`lut.profile(configs)`, `lut.profile_architectures(...)` or `lut.profile_space(space)`), "
            "or create the table with a profiler and on_missing='profile' to profile on demand."
        )


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"LayerConfig.{name} must be an integer >= {minimum}; received {value!r}.")


def _format_key(
    kind,
    size,
    input_filters,
    output_filters,
    op,
    kernel_size,
    strides,
    expanded,
    se_filters,
    skip,
    padding,
    mode,
) -> str:
    # One formatter for LayerConfig.key and for the fast path of predictions, so they cannot disagree.
    pad = "_sympad" if padding == "symmetric" else ""
    if kind == "layer":
        body = f"{op}_k{kernel_size}_s{strides[0]}{strides[1]}_i{input_filters}"
        if op == "mbconv":
            body += f"_e{expanded}"
        body += f"_o{output_filters}"
        if se_filters:
            body += f"_se{se_filters}"
        if skip != "identity":
            body += "_noskip" if skip == "none" else "_poolskip"
    elif kind == "stem":
        body = f"k{kernel_size}_s{strides[0]}{strides[1]}_i{input_filters}_o{output_filters}"
    elif kind == "head":
        body = f"i{input_filters}_o{output_filters}"
    elif kind == "pooling":
        body = f"{mode}_i{input_filters}"
    elif kind == "classifier":
        body = f"i{input_filters}_o{output_filters}_{mode}"
    else:
        body = f"i{input_filters}"
    return f"{kind}:{body}{pad}@{size[0]}x{size[1]}"


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """One entry of the table: a piece of a network with everything that changes its latency.

    `key` is its canonical text, e.g. `"layer:mbconv_k5_s22_i24_e72_o40_se6_poolskip@48x48"`, and
    `LayerConfig.from_key` reads it back.

    Args:
        kind: `"preprocessing"` (rescaling and normalisation), `"stem"` (3x3 stride-2 conv, BN, ReLU),
            `"layer"` (one searched layer with its SE and skip op), `"head"` (1x1 conv, BN, ReLU),
            `"pooling"` (global pooling without classifier) or `"classifier"` (global average pooling and
            the dense layer).
        input_size: `(height, width)` of the input.
        input_filters: Input channels.
        output_filters: Output channels (classes for the classifier; the input channels for pooling and
            preprocessing).
        op: For layers: `"conv"`, `"dconv"` (depthwise-separable, also MBConv with expansion 1, which builds
            the same layers) or `"mbconv"`.
        kernel_size: Kernel of the spatial convolution (stem and layers).
        strides: Strides of the spatial convolution.
        expanded_filters: For MBConv: the expanded width (equal to `input_filters` otherwise).
        se_filters: Width of the squeeze-and-excitation reduction, 0 without SE.
        skip: For layers: `"identity"`, `"pool"` or `"none"`.
        padding: `"same"` or `"symmetric"` (explicit k // 2 padding of strided convs).
        mode: `"avg"` or `"max"` for pooling; the activation (`"softmax"`, `"linear"`, ...) for the
            classifier.

    Example:

    >>> config = LayerConfig("layer", (48, 48), 24, 40, op="mbconv", kernel_size=5, strides=(2, 2),
    ...                      expanded_filters=72, se_filters=6, skip="pool")
    >>> config.key
    'layer:mbconv_k5_s22_i24_e72_o40_se6_poolskip@48x48'
    >>> LayerConfig.from_key(config.key) == config
    True
    """

    kind: str
    input_size: tuple[int, int]
    input_filters: int
    output_filters: int
    op: str = ""
    kernel_size: int = 1
    strides: tuple[int, int] = (1, 1)
    expanded_filters: int = 0
    se_filters: int = 0
    skip: str = "none"
    padding: str = "same"
    mode: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"LayerConfig.kind must be one of {KINDS}; received {self.kind!r}.")
        for name in ("input_size", "strides"):
            value = tuple(getattr(self, name))
            if len(value) != 2:
                raise ValueError(f"LayerConfig.{name} must be two integers; received {value!r}.")
            for item in value:
                _check_positive_int(name, item)
            object.__setattr__(self, name, (int(value[0]), int(value[1])))
        _check_positive_int("input_filters", self.input_filters)
        _check_positive_int("output_filters", self.output_filters)
        _check_positive_int("kernel_size", self.kernel_size)
        _check_positive_int("se_filters", self.se_filters, minimum=0)
        if self.padding not in _PADDINGS:
            raise ValueError(f"LayerConfig.padding must be one of {_PADDINGS}; received {self.padding!r}.")
        if self.kind == "layer":
            if self.op not in _LAYER_OPS:
                raise ValueError(f"LayerConfig.op must be one of {_LAYER_OPS}; received {self.op!r}.")
            if self.skip not in _SKIPS:
                raise ValueError(f"LayerConfig.skip must be one of {_SKIPS}; received {self.skip!r}.")
            if self.expanded_filters == 0:
                object.__setattr__(self, "expanded_filters", self.input_filters)
            _check_positive_int("expanded_filters", self.expanded_filters)
            if self.op == "mbconv" and self.expanded_filters == self.input_filters:
                # An expansion of 1 builds no expand conv: exactly the depthwise-separable layer.
                object.__setattr__(self, "op", "dconv")
            if self.op != "mbconv" and self.expanded_filters != self.input_filters:
                raise ValueError(
                    f"LayerConfig.expanded_filters applies to op='mbconv' only; received op={self.op!r} "
                    f"with {self.input_filters} input and {self.expanded_filters} expanded filters."
                )
        if self.kind == "preprocessing":
            check_preprocessing_channels(self.input_filters)
        if self.kind == "pooling" and self.mode not in _POOLINGS:
            raise ValueError(f"A pooling entry's mode must be one of {_POOLINGS}; received {self.mode!r}.")
        if self.kind == "classifier" and not self.mode:
            object.__setattr__(self, "mode", "linear")

    @functools.cached_property
    def key(self) -> str:
        """The canonical text of this configuration (the table's key)."""
        return _format_key(*(getattr(self, f.name) for f in dataclasses.fields(self)))

    @classmethod
    def from_key(cls, key: str) -> LayerConfig:
        """Reads a configuration back from its `key`.

        Raises:
            ValueError: naming the key, when it is not one `LayerConfig.key` writes.
        """

        def fail(reason):
            raise ValueError(
                f"Malformed layer configuration key {key!r}: {reason}. Expected e.g. "
                "'layer:mbconv_k5_s22_i24_e72_o40_se6_poolskip@48x48' or 'stem:k3_s22_i3_o32@96x96'."
            )

        if not isinstance(key, str):
            fail("it is not a string")
        match = re.fullmatch(r"([a-z]+):([A-Za-z0-9_]+)@([0-9]+)x([0-9]+)", key)
        if not match:
            fail("it is not '<kind>:<tokens>@<height>x<width>'")
        kind, body, h, w = match.groups()
        if kind not in KINDS:
            fail(f"unknown kind {kind!r}")
        tokens = body.split("_")
        fields: dict[str, Any] = {"kind": kind, "input_size": (int(h), int(w))}
        if tokens[-1] == "sympad":
            fields["padding"] = "symmetric"
            tokens = tokens[:-1]
        if kind == "layer":
            fields["op"] = tokens.pop(0) if tokens else ""
            fields["skip"] = "identity"
        elif kind == "pooling":
            fields["mode"] = tokens.pop(0) if tokens else ""
        elif kind == "classifier":
            fields["mode"] = tokens.pop() if tokens else ""
        names = {"k": "kernel_size", "i": "input_filters", "e": "expanded_filters", "o": "output_filters"}
        for token in tokens:
            number = re.fullmatch(r"(se|k|s|i|e|o)([0-9]+)", token)
            if token in ("noskip", "poolskip") and kind == "layer":
                fields["skip"] = "none" if token == "noskip" else "pool"
            elif number and number.group(1) == "s" and len(number.group(2)) == 2:
                fields["strides"] = (int(number.group(2)[0]), int(number.group(2)[1]))
            elif number and number.group(1) == "se":
                fields["se_filters"] = int(number.group(2))
            elif number and number.group(1) in names:
                fields[names[number.group(1)]] = int(number.group(2))
            else:
                fail(f"unknown token {token!r}")
        if kind in ("pooling", "preprocessing"):
            fields["output_filters"] = fields.get("input_filters", 0)
        for required in ("input_filters", "output_filters"):
            if required not in fields:
                fail(f"it has no {required.split('_')[0]} width")
        try:
            config = cls(**fields)
        except ValueError as error:
            fail(str(error))
        if config.key != key:
            fail(f"its canonical form is {config.key!r}")
        return config

    @property
    def output_size(self) -> tuple[int, int]:
        """`(height, width)` of the output (1x1 after global pooling)."""
        if self.kind in ("pooling", "classifier"):
            return (1, 1)
        return (
            math.ceil(self.input_size[0] / self.strides[0]),
            math.ceil(self.input_size[1] / self.strides[1]),
        )

    def build_model(self, *, name: str = "lut_entry"):
        """Builds the one-piece Keras model that is timed for this entry.

        The pieces are made by the same code as `keras_mnas.build_model`, with the same layer names, so an
        entry times exactly what a network contains.

        Example:

        ```python
        LayerConfig.from_key("head:i320_o1280@3x3").build_model().summary()
        ```
        """
        import keras

        from keras_mnas.architecture import LayerPlan
        from keras_mnas.builder import IMAGENET_MEAN, IMAGENET_STD, LayerRecipes

        blocks = LayerRecipes(keras, self.padding, 0.99, 1e-3)
        layers = keras.layers
        inputs = keras.Input((*self.input_size, self.input_filters), name="input_layer")
        if self.kind == "preprocessing":
            x = layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
            x = layers.Normalization(
                mean=list(IMAGENET_MEAN), variance=[s**2 for s in IMAGENET_STD], name="normalization"
            )(x)
        elif self.kind == "stem":
            x = blocks.conv(inputs, self.output_filters, self.kernel_size, self.strides, "stem_conv")
            x = blocks.batch_norm(x, "stem_bn")
            x = layers.ReLU(name="stem_activation")(x)
        elif self.kind == "layer":
            plan = LayerPlan(
                name="block1a",
                op=self.op,
                kernel_size=self.kernel_size,
                strides=self.strides,
                input_filters=self.input_filters,
                expanded_filters=self.expanded_filters,
                output_filters=self.output_filters,
                se_filters=self.se_filters,
                skip=self.skip,
            )
            x = blocks.layer(inputs, plan)
        elif self.kind == "head":
            x = blocks.conv(inputs, self.output_filters, 1, (1, 1), "top_conv")
            x = blocks.batch_norm(x, "top_bn")
            x = layers.ReLU(name="top_activation")(x)
        elif self.kind == "pooling":
            pool = layers.GlobalAveragePooling2D if self.mode == "avg" else layers.GlobalMaxPooling2D
            x = pool(name=f"{self.mode}_pool")(inputs)
        else:
            x = layers.GlobalAveragePooling2D(name="avg_pool")(inputs)
            activation = None if self.mode == "linear" else self.mode
            x = layers.Dense(self.output_filters, activation=activation, name="predictions")(x)
        return keras.Model(inputs, x, name=name)


def _check_input_shape(input_shape: Any) -> tuple[int, int, int]:
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in input_shape
        )
    ):
        raise ValueError(
            "A latency prediction needs a concrete input_shape (height, width, channels) of positive "
            f"integers; received {input_shape!r}."
        )
    return (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))


def network_configs(
    arch: ArchSpec | str | Sequence[str] | Mapping[str, Any],
    *,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    depth_multiplier: float = 1.0,
    include_top: bool = True,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    include_preprocessing: bool = False,
    padding: str = "same",
) -> list[LayerConfig]:
    """The table entries a network is made of, in order, without building it.

    The arguments are those of `keras_mnas.build_model`, and the result describes what it would build.

    Example:

    >>> configs = network_configs("a1", input_shape=(96, 96, 3))
    >>> len(configs), configs[0].key, configs[-1].key
    (19, 'stem:k3_s22_i3_o32@96x96', 'classifier:i1280_o1000_softmax@3x3')
    """
    fields = _network_fields(
        arch,
        input_shape,
        depth_multiplier,
        include_top,
        pooling,
        classes,
        classifier_activation,
        include_preprocessing,
        padding,
    )
    return [LayerConfig(*f) for f in fields]


def network_keys(arch: ArchSpec | str | Sequence[str] | Mapping[str, Any], **network: Any) -> list[str]:
    """The keys of `network_configs(arch, **network)`, computed without making `LayerConfig` objects.

    This is the path predictions take: it is several times faster than making and validating the configs.

    Example:

    >>> network_keys("a1", input_shape=(96, 96, 3))[1]
    'layer:dconv_k3_s11_i32_o16_noskip@48x48'
    """
    return [_format_key(*f) for f in _network_fields(arch, **network)]


def _network_fields(
    arch,
    input_shape=(224, 224, 3),
    depth_multiplier=1.0,
    include_top=True,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=False,
    padding="same",
) -> list[tuple]:
    """The `LayerConfig` fields of every entry of a network, as tuples in field order."""
    arch = get_architecture(arch)
    height, width, channels = _check_input_shape(input_shape)
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}; received {padding!r}.")
    if pooling not in (None, *_POOLINGS):
        raise ValueError(f"pooling must be None, 'avg' or 'max'; received {pooling!r}.")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive integer; received {classes!r}.")
    stem_filters, plans = plan_layers(arch, depth_multiplier)
    fields = []
    size = (height, width)
    check_include_preprocessing(include_preprocessing, channels)
    if include_preprocessing:
        fields.append(("preprocessing", size, channels, channels, "", 1, (1, 1), 0, 0, "none", padding, ""))
    fields.append(("stem", size, channels, stem_filters, "", 3, (2, 2), 0, 0, "none", padding, ""))
    size = (-(-height // 2), -(-width // 2))
    for plan in plans:
        op = plan.op
        if op == "mbconv" and plan.expanded_filters == plan.input_filters:
            op = "dconv"  # as LayerConfig normalises it: no expand conv is built
        strides = plan.strides
        fields.append(
            (
                "layer",
                size,
                plan.input_filters,
                plan.output_filters,
                op,
                plan.kernel_size,
                strides,
                plan.expanded_filters,
                plan.se_filters,
                plan.skip,
                padding,
                "",
            )
        )
        size = (-(-size[0] // strides[0]), -(-size[1] // strides[1]))
    head = arch.head_filters
    fields.append(("head", size, plans[-1].output_filters, head, "", 1, (1, 1), 0, 0, "none", padding, ""))
    if include_top:
        mode = classifier_activation or "linear"
        fields.append(("classifier", size, head, classes, "", 1, (1, 1), 0, 0, "none", padding, mode))
    elif pooling is not None:
        fields.append(("pooling", size, head, head, "", 1, (1, 1), 0, 0, "none", padding, pooling))
    return fields


def _layer_activation(layer) -> str:
    activation = layer.get_config().get("activation", "linear")
    if isinstance(activation, dict):  # a serialised activation object
        activation = activation.get("config", {}).get("name") or activation.get("class_name", "linear")
    return str(activation)


def model_configs(model) -> list[LayerConfig]:
    """The table entries of a model built by `keras_mnas.build_model`, read from its layers.

    This is how the table predicts the latency of a built candidate (`LatencyLookupTable.measure`): the
    builder's stable layer names (`stem_conv`, `block3b_dwconv`, `block3b_se_reduce`, `top_conv`, ...) give
    every layer's operation, widths, SE and skip op.

    Raises:
        ValueError: for a model keras-mnas did not build, or one without a concrete input shape.

    Example:

    ```python
    model = keras_mnas.build_model("a1", input_shape=(96, 96, 3))
    model_configs(model) == network_configs("a1", input_shape=(96, 96, 3))  # True
    ```
    """
    layers = {}
    order = []
    for layer in getattr(model, "layers", []):
        layers[layer.name] = layer
        order.append(layer.name)
    name = getattr(model, "name", type(model).__name__)
    if "stem_conv" not in layers or "top_conv" not in layers:
        raise ValueError(
            f"Model {name!r} was not built by keras_mnas.build_model (it has no 'stem_conv' and 'top_conv' "
            "layers): the lookup table predicts keras-mnas architectures only. Measure it with a real "
            "latency source instead."
        )
    inputs = list(getattr(model, "inputs", None) or [])
    shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ValueError(
            f"Model {name!r} needs one input with a concrete shape to be predicted; it has "
            f"{[tuple(x.shape) for x in inputs]}. Build it with input_shape=(height, width, channels)."
        )
    size = (int(shape[1]), int(shape[2]))
    width = int(shape[3])
    padding = "symmetric" if "stem_conv_pad" in layers else "same"
    configs = []
    if "rescaling" in layers or "normalization" in layers:
        configs.append(LayerConfig("preprocessing", size, width, width, padding=padding))
    stem = layers["stem_conv"]
    config = LayerConfig(
        "stem",
        size,
        width,
        int(stem.filters),
        kernel_size=int(stem.kernel_size[0]),
        strides=tuple(stem.strides),
        padding=padding,
    )
    configs.append(config)
    size, width = config.output_size, config.output_filters
    prefixes = []
    for layer_name in order:
        match = _BLOCK_PREFIX.match(layer_name)
        if match and match.group(1) not in prefixes:
            prefixes.append(match.group(1))
    for prefix in prefixes:
        if f"{prefix}_conv" in layers:
            main = layers[f"{prefix}_conv"]
            op, expanded, output = "conv", width, int(main.filters)
        elif f"{prefix}_dwconv" in layers:
            main = layers[f"{prefix}_dwconv"]
            expand = layers.get(f"{prefix}_expand_conv")
            op = "mbconv" if expand is not None else "dconv"
            expanded = int(expand.filters) if expand is not None else width
            if f"{prefix}_project_conv" not in layers:
                raise ValueError(f"Model {name!r}: layer {prefix!r} has no '{prefix}_project_conv'.")
            output = int(layers[f"{prefix}_project_conv"].filters)
        else:
            raise ValueError(
                f"Model {name!r}: cannot tell the operation of layer {prefix!r} (no '{prefix}_conv' or "
                f"'{prefix}_dwconv'); was it built by keras_mnas.build_model?"
            )
        reduce = layers.get(f"{prefix}_se_reduce")
        if f"{prefix}_skip_pool" in layers:
            skip = "pool"
        elif f"{prefix}_add" in layers:
            skip = "identity"
        else:
            skip = "none"
        config = LayerConfig(
            "layer",
            size,
            width,
            output,
            op=op,
            kernel_size=int(main.kernel_size[0]),
            strides=tuple(main.strides),
            expanded_filters=expanded,
            se_filters=int(reduce.filters) if reduce is not None else 0,
            skip=skip,
            padding=padding,
        )
        configs.append(config)
        size, width = config.output_size, config.output_filters
    head = int(layers["top_conv"].filters)
    configs.append(LayerConfig("head", size, width, head, padding=padding))
    if "predictions" in layers:
        dense = layers["predictions"]
        configs.append(
            LayerConfig(
                "classifier", size, head, int(dense.units), padding=padding, mode=_layer_activation(dense)
            )
        )
    elif "avg_pool" in layers or "max_pool" in layers:
        mode = "avg" if "avg_pool" in layers else "max"
        configs.append(LayerConfig("pooling", size, head, head, padding=padding, mode=mode))
    return configs


def search_space_configs(space, *, include_preprocessing: bool = False) -> list[LayerConfig]:
    """Every distinct table entry a `MnasSearchSpace` can produce, computed exactly.

    Blocks are independent in the space, so a searched block contributes, for every choice of operation,
    kernel, SE ratio, skip op and output width, and every input width its predecessor can produce: its first
    layer (with the block's stride) and, when some layer choice gives it two layers or more, one repeated
    layer (stride 1, input width = output width). Choices that build the same layer (an identity skip where
    shapes change builds no residual) count once. The input resolution of every block is fixed by the
    skeleton's strides. Candidates are built as `MnasHyperModel` builds them: with the classifier, softmax,
    'same' padding.

    Args:
        space: A `keras_mnas.search.MnasSearchSpace`.
        include_preprocessing: Whether candidates rescale and normalise their inputs themselves.

    Returns:
        The configurations, sorted by network position and then by key.

    Example:

    ```python
    len(search_space_configs(MnasSearchSpace(input_shape=(96, 96, 3))))  # 1975
    ```
    """
    from keras_mnas.search.space import MnasSearchSpace

    if not isinstance(space, MnasSearchSpace):
        raise ValueError(f"Expected a MnasSearchSpace; received {type(space).__name__}.")
    multiplier = space.depth_multiplier
    found: dict[str, tuple[int, LayerConfig]] = {}

    def add(position, config):
        found.setdefault(config.key, (position, config))

    # The stem (and preprocessing) of any architecture of the space; the one-block body is a placeholder.
    start = network_configs(
        ArchSpec(blocks=("r1_k1_s11_i8_o8",), stem_filters=space.stem_filters),
        input_shape=space.input_shape,
        depth_multiplier=multiplier,
        include_preprocessing=include_preprocessing,
    )[: 2 if include_preprocessing else 1]
    for config in start:
        add(0, config)
    size = start[-1].output_size
    defaults = space.default_values()
    decisions = (
        ("conv_op", space.conv_ops),
        ("kernel", space.kernel_sizes),
        ("se", space.se_ratios),
        ("skip", space.skip_ops),
        ("filters", space.filter_multipliers),
    )
    # Unscaled widths that can enter each block (decode's widths; plan_layers applies the multiplier).
    incoming = {space.stem_filters}
    for index in range(len(space.skeleton)):
        if index in space.fixed_blocks:
            blocks = [space.fixed_blocks[index]]
        else:
            # The layer choice only decides how many repeated layers there are: take the most layers.
            most_layers = max(space.layer_deltas, key=lambda delta: space.skeleton[index].repeats + delta)
            blocks = []
            for combination in itertools.product(*(choices for _, choices in decisions)):
                values = dict(defaults)
                for (decision, _), value in zip(decisions, combination, strict=True):
                    values[space.hp_name(index, decision)] = value
                values[space.hp_name(index, "layers")] = most_layers
                blocks.append(space.decode(values).blocks[index])
        for block in blocks:
            for in_filters in sorted(incoming):
                repeats = min(block.repeats, 2)  # every repeated layer of a block is the same configuration
                arch = ArchSpec(blocks=(block.replace(input_filters=in_filters, repeats=repeats),))
                _, plans = plan_layers(arch.replace(stem_filters=in_filters), multiplier)
                layer_size = size
                for plan in plans:
                    config = _layer_config(plan, layer_size, "same")
                    add(1 + index, config)
                    layer_size = config.output_size
        strides = blocks[0].strides
        size = (math.ceil(size[0] / strides[0]), math.ceil(size[1] / strides[1]))
        incoming = {block.output_filters for block in blocks}
    for in_filters in sorted(incoming):
        scaled = round_filters(in_filters, multiplier)
        add(len(space.skeleton) + 1, LayerConfig("head", size, scaled, space.head_filters))
    add(
        len(space.skeleton) + 2,
        LayerConfig("classifier", size, space.head_filters, space.classes, mode="softmax"),
    )
    return [config for _, config in sorted(found.values(), key=lambda item: (item[0], item[1].key))]


def _layer_config(plan, size: tuple[int, int], padding: str) -> LayerConfig:
    return LayerConfig(
        "layer",
        size,
        plan.input_filters,
        plan.output_filters,
        op=plan.op,
        kernel_size=plan.kernel_size,
        strides=plan.strides,
        expanded_filters=plan.expanded_filters,
        se_filters=plan.se_filters,
        skip=plan.skip,
        padding=padding,
    )


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The fitted line from a sum of table entries to an end-to-end latency.

    `predicted_ms = scale * sum_of_entries_ms + intercept_ms`, fitted by least squares on the relative errors
    of `measurements` (each a dict with at least `lut_ms` and `measured_ms`), keeping `intercept_ms >= 0`.

    Attributes:
        scale: Multiplies the sum of entries.
        intercept_ms: Added to it (the whole network's fixed cost).
        measurements: What it was fitted on, with the architecture of each when known.
        fitted: When it was fitted (ISO 8601, UTC).

    Example:

    >>> calibration = Calibration(1.2, 0.3, ({"lut_ms": 2.0, "measured_ms": 2.5},))
    >>> round(calibration.apply(2.0), 6), [round(e, 6) for e in calibration.relative_errors]
    (2.7, [0.08])
    """

    scale: float
    intercept_ms: float
    measurements: tuple[dict[str, Any], ...] = ()
    fitted: str = ""

    def __post_init__(self):
        for name in ("scale", "intercept_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"Calibration.{name} must be a finite number; received {value!r}.")
        if self.scale <= 0:
            raise ValueError(f"Calibration.scale must be positive; received {self.scale!r}.")
        object.__setattr__(self, "measurements", tuple(dict(m) for m in self.measurements))

    def apply(self, lut_ms: float) -> float:
        """The calibrated latency for a sum of entries."""
        return self.scale * lut_ms + self.intercept_ms

    @property
    def relative_errors(self) -> list[float]:
        """`predicted / measured - 1` of every calibration measurement (in-sample)."""
        return [self.apply(m["lut_ms"]) / m["measured_ms"] - 1 for m in self.measurements]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "intercept_ms": self.intercept_ms,
            "fitted": self.fitted,
            "measurements": [dict(m) for m in self.measurements],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        if not isinstance(data, Mapping) or "scale" not in data or "intercept_ms" not in data:
            raise ValueError(f"A calibration needs 'scale' and 'intercept_ms'; received {data!r}.")
        return cls(
            scale=data["scale"],
            intercept_ms=data["intercept_ms"],
            measurements=tuple(data.get("measurements", ())),
            fitted=str(data.get("fitted", "")),
        )


def fit_line(
    x: Sequence[float], y: Sequence[float], *, nonnegative_intercept: bool = False
) -> tuple[float, float]:
    """Fits `y ~ scale * x + intercept` minimising the squared *relative* errors `(fit - y) / y`.

    Relative errors are what "within 10%" measures, and they keep the slowest models from dominating the fit.
    Used for the table's calibration and for the FLOPs proxy of the benchmark alike.

    Args:
        x: The predictor (a sum of table entries, or mult-adds).
        y: The measured latencies (positive).
        nonnegative_intercept: Constrain the intercept to be >= 0. A fixed cost cannot be negative; a negative
            fitted one (usually noise in a few measurements) predicts a negative latency for networks much
            smaller than the calibration ones. When the free fit's intercept is negative the line is refitted
            through the origin, the least-squares solution under the constraint.

    Returns:
        `(scale, intercept)`.

    Raises:
        ValueError: with fewer than two points, mismatched lengths, non-positive latencies, or when all `x`
            are equal (the line is then undetermined).

    Example:

    >>> fit_line([1.0, 2.0, 3.0], [2.5, 4.5, 6.5])
    (2.0, 0.5)
    >>> fit_line([1.0, 2.0], [1.0, 4.0], nonnegative_intercept=True)  # the free fit: (3.0, -2.0)
    (1.2, 0.0)
    """
    x_values = np.asarray(x, dtype=np.float64).ravel()
    y_values = np.asarray(y, dtype=np.float64).ravel()
    if x_values.size != y_values.size:
        raise ValueError(f"fit_line needs as many x as y; received {x_values.size} and {y_values.size}.")
    if x_values.size < 2:
        raise ValueError(
            f"Fitting a scale and an intercept needs at least 2 measurements; received {x_values.size}."
        )
    if not (np.all(np.isfinite(x_values)) and np.all(np.isfinite(y_values)) and np.all(y_values > 0)):
        raise ValueError("fit_line needs finite predictors and positive, finite measured latencies.")
    if np.ptp(x_values) <= 1e-12 * max(1.0, float(np.max(np.abs(x_values)))):
        raise ValueError(
            "All calibration models have the same predicted latency, so a scale cannot be fitted: calibrate "
            "on architectures of different sizes."
        )
    design = np.stack([x_values / y_values, 1.0 / y_values], axis=1)
    (scale, intercept), *_ = np.linalg.lstsq(design, np.ones_like(y_values), rcond=None)
    if nonnegative_intercept and intercept < 0:
        # The loss is convex, so with the free optimum outside the constraint the constrained one lies on its
        # boundary: intercept 0, and the one-parameter least squares of scale * x / y against 1.
        ratio = design[:, 0]
        scale, intercept = float(np.sum(ratio) / np.sum(ratio * ratio)), 0.0
    return round(float(scale), 12), round(float(intercept), 12)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class _Progress:
    """A progress line on stderr, at most every few seconds."""

    def __init__(self, total: int, enabled: bool, what: str):
        self.total, self.enabled, self.what = total, enabled, what
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 5.0 and done < self.total):
            return
        self.last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else float("nan")
        print(
            f"\r{self.what}: {done}/{self.total} ({rate:.2f}/s, about {left / 60:.1f} min left)   ",
            end="\n" if done >= self.total else "",
            file=sys.stderr,
            flush=True,
        )


class LatencyLookupTable(LatencySource):
    """A latency source that predicts from per-layer timings instead of measuring (`name = "lut"`).

    See the module docstring for how entries are profiled, composed and calibrated. Predictions return a
    `LatencyResult` with `runs=0` and `provenance["prediction"] = True`.

    Args:
        profiler: The `LatencySource` the entries are measured on (e.g. `HostLatency()` or a phone). Needed to
            profile and to calibrate; a loaded table predicts without it. A table only ever holds entries of
            one source configuration: a profiler whose `config()` differs from the table's is refused.
        quantization: `"float32"` or `"int8"`: which TFLite models the entries time.
        on_missing: `"error"` (default): predicting a network with unprofiled entries raises
            `MissingEntryError`, naming them; `"profile"`: they are profiled on demand with `profiler`
            (and the table is saved again when it has a `path`).
        path: Where the table is saved. A table with a path (given here, or set by `load` and `save`) is
            saved after profiling (and every `save_every_seconds` during it) and after calibration.

    Example:

    ```python
    lut = LatencyLookupTable(profiler=HostLatency())
    lut.profile_architectures(["a1", "b1", "small"], input_shape=(96, 96, 3))
    lut.calibrate(["a1", "b1", "small"], input_shape=(96, 96, 3))
    lut.predict("a1", input_shape=(96, 96, 3))
    lut.save("lut.json")
    ```
    """

    name = "lut"

    def __init__(
        self,
        *,
        profiler: LatencySource | None = None,
        quantization: str = "float32",
        on_missing: str = "error",
        path: str | os.PathLike | None = None,
    ):
        if profiler is not None and not isinstance(profiler, LatencySource):
            raise ValueError(
                f"profiler must be a keras_mnas.latency.LatencySource; received {type(profiler).__name__}."
            )
        if isinstance(profiler, LatencyLookupTable):
            raise ValueError("A lookup table cannot be profiled on another lookup table's predictions.")
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}; received {quantization!r}.")
        if on_missing not in ON_MISSING:
            raise ValueError(f"on_missing must be one of {ON_MISSING}; received {on_missing!r}.")
        if on_missing == "profile" and profiler is None:
            raise ValueError(
                "on_missing='profile' needs a profiler (the LatencySource to measure entries on)."
            )
        self.profiler = profiler
        self.quantization = quantization
        self.on_missing = on_missing
        if path is not None and os.path.exists(path):
            raise ValueError(
                f"{os.fspath(path)!r} already exists: open it with LatencyLookupTable.load(path, "
                "profiler=...) to extend it, or choose another path (a new table would overwrite it)."
            )
        self.path = os.fspath(path) if path is not None else None
        self.source_config: dict[str, Any] | None = _jsonable(profiler.config()) if profiler else None
        self.created = _now()
        self.updated = self.created
        self.keras_mnas_version = _keras_mnas_version()
        self.baseline: dict[str, Any] | None = None
        self.calibration: Calibration | None = None
        # key -> {"median_ms", "cv", "robust_cv" (when known), "runs", "provenance"}
        self._raw: dict[str, dict[str, Any]] = {}
        self._net: dict[str, float] = {}  # key -> entry minus baseline, what predictions add up
        self._provenance: list[dict[str, Any]] = []
        self._provenance_index: dict[str, int] = {}
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------------------------
    # Contents.

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, config: LayerConfig | str) -> bool:
        return (config.key if isinstance(config, LayerConfig) else config) in self._raw

    @property
    def keys(self) -> list[str]:
        """The keys of the profiled entries."""
        return list(self._raw)

    def entry_ms(self, config: LayerConfig | str) -> float:
        """An entry's latency net of the baseline (what a prediction adds for it), in milliseconds.

        Raises:
            MissingEntryError: when the configuration was not profiled.

        Example:

        ```python
        lut.entry_ms("head:i320_o1280@3x3")
        ```
        """
        key = config.key if isinstance(config, LayerConfig) else config
        if key not in self._net:
            raise MissingEntryError(
                [config if isinstance(config, LayerConfig) else LayerConfig.from_key(key)]
            )
        return self._net[key]

    def missing(self, configs: Iterable[LayerConfig]) -> list[LayerConfig]:
        """The configurations among `configs` that have no entry (duplicates removed, order kept)."""
        seen, result = set(), []
        for config in configs:
            if config.key not in self._raw and config.key not in seen:
                seen.add(config.key)
                result.append(config)
        return result

    # ----------------------------------------------------------------------------------------------
    # Profiling.

    def _require_profiler(self, source: LatencySource | None, what: str) -> LatencySource:
        source = source or self.profiler
        if source is None:
            raise ValueError(f"{what} needs a latency source: pass profiler= to LatencyLookupTable(...).")
        config = _jsonable(source.config())
        if self.source_config is None:
            self.source_config = config
        elif config != self.source_config:
            raise ValueError(
                f"This table holds entries measured on {self.source_config}; the source given now is "
                f"{config}. One table describes one source: make a new table for the other one."
            )
        return source

    def _measure(self, source: LatencySource, model, input_shape) -> LatencyResult:
        data = None
        if self.quantization == "int8":
            # The ranges it learns do not change the timing; random inputs of the right shape suffice.
            data = np.random.default_rng(0).random((4, *input_shape), dtype=np.float32)
        return source.measure(model, quantization=self.quantization, representative_data=data)

    def _record(self, result: LatencyResult) -> dict[str, Any]:
        provenance = {k: v for k, v in result.provenance.items() if k not in _VOLATILE_PROVENANCE}
        provenance = _jsonable({"result_source": result.source, **provenance})
        text = json.dumps(provenance, sort_keys=True)
        if text not in self._provenance_index:
            self._provenance_index[text] = len(self._provenance)
            self._provenance.append(provenance)
        return {
            "median_ms": float(result.median_ms),
            "cv": float(result.cv),
            **({} if result.robust_cv is None else {"robust_cv": float(result.robust_cv)}),
            "runs": int(result.runs),
            "provenance": self._provenance_index[text],
        }

    def _set_entry(self, key: str, record: dict[str, Any]) -> None:
        self._raw[key] = record
        baseline = self.baseline["median_ms"] if self.baseline else 0.0
        # A tiny layer may time below the baseline by noise; it then adds nothing rather than a negative time.
        self._net[key] = max(record["median_ms"] - baseline, 0.0)

    def measure_baseline(self, source: LatencySource | None = None) -> float:
        """Measures the fixed cost of one invocation: a model with a single ReLU on a 1x1x1 input.

        Called by the first `profile`; call it again to re-measure. Every entry is stored as measured and the
        baseline is subtracted when predicting.

        Returns:
            The baseline in milliseconds.
        """
        import keras

        source = self._require_profiler(source, "Measuring the baseline")
        inputs = keras.Input((1, 1, 1), name="input_layer")
        model = keras.Model(inputs, keras.layers.ReLU(name="baseline_relu")(inputs), name="lut_baseline")
        result = self._measure(source, model, (1, 1, 1))
        with self._lock:
            self.baseline = {"model": "ReLU on a 1x1x1 input", **self._record(result)}
            for key, record in list(self._raw.items()):
                self._set_entry(key, record)
            self.updated = _now()
        return float(result.median_ms)

    def profile(
        self,
        configs: Iterable[LayerConfig],
        *,
        source: LatencySource | None = None,
        progress: bool = True,
        save_every_seconds: float = 60.0,
        remeasure: bool = False,
    ) -> int:
        """Measures the configurations that have no entry yet, one tiny model each.

        Args:
            configs: `LayerConfig`s (e.g. `network_configs(...)` or `search_space_configs(space)`).
            source: The latency source to measure on (default: the table's `profiler`).
            progress: Whether to print a progress line with the rate and time left on stderr.
            save_every_seconds: With a `path`, how often the table is saved while profiling, so an interrupted
                run keeps what it measured.
            remeasure: Measure configurations that already have an entry again.

        Returns:
            The number of configurations measured.

        Raises:
            ValueError: when the source's `config()` differs from the one the table was profiled on.

        Example:

        ```python
        lut.profile(network_configs("a1", input_shape=(96, 96, 3)))
        ```
        """
        configs = list(configs)
        for config in configs:
            if not isinstance(config, LayerConfig):
                raise ValueError(f"profile expects LayerConfig objects; received {config!r}.")
        source = self._require_profiler(source, "Profiling")
        todo = configs if remeasure else self.missing(configs)
        if remeasure:
            todo = list({c.key: c for c in todo}.values())
        if not todo:
            return 0
        if self.baseline is None:
            self.measure_baseline(source)
        bar = _Progress(len(todo), progress, "Profiling layer configurations")
        last_save = time.monotonic()
        for done, config in enumerate(todo, start=1):
            model = config.build_model()
            try:
                result = self._measure(source, model, (*config.input_size, config.input_filters))
            except BaseException:
                # The source's own error (a model error, a device error) or an interrupt reaches the caller
                # unchanged; what was measured so far is kept.
                logger.error("Profiling %r on %r failed.", config.key, source.name)
                if self.path:
                    self.save()
                raise
            finally:
                del model
            with self._lock:
                self._set_entry(config.key, self._record(result))
                self.updated = _now()
            bar.update(done)
            if self.path and time.monotonic() - last_save >= save_every_seconds:
                self.save()
                last_save = time.monotonic()
        if self.path:
            self.save()
        return len(todo)

    def profile_architectures(
        self,
        architectures: Iterable[ArchSpec | str | Sequence[str]],
        *,
        source: LatencySource | None = None,
        progress: bool = True,
        **network: Any,
    ) -> int:
        """Profiles every entry the given architectures need (only those not in the table yet).

        Args:
            architectures: Architectures (`ArchSpec`, reference names, block strings).
            source: The latency source (default: the profiler).
            progress: Whether to print a progress line.
            **network: How they are built, as for `network_configs` (`input_shape`, `depth_multiplier`,
                `classes`, `include_top`, ...).

        Returns:
            The number of configurations measured.

        Example:

        ```python
        lut.profile_architectures(["a1", "b1"], input_shape=(128, 128, 3), classes=10)
        ```
        """
        configs = [c for arch in architectures for c in network_configs(arch, **network)]
        return self.profile(configs, source=source, progress=progress)

    def profile_space(
        self,
        space,
        *,
        include_preprocessing: bool = False,
        source: LatencySource | None = None,
        progress: bool = True,
    ) -> int:
        """Profiles every distinct entry of a `MnasSearchSpace` (see `search_space_configs`).

        The default MnasNet space has 1,975 entries at any resolution. Conversion dominates the cost of an
        entry: 0.3-0.7 s each on a busy 2-core host in `benchmarks/latency.py`, so 10-20 minutes for
        the whole space.

        Args:
            space: The `MnasSearchSpace`.
            include_preprocessing: Set it as the search's `MnasHyperModel(include_preprocessing=...)`:
                candidates that normalise their inputs themselves need one more entry.
            source: The latency source (default: the profiler).
            progress: Whether to print a progress line.

        Example:

        ```python
        lut.profile_space(MnasSearchSpace(input_shape=(128, 128, 3)))
        ```
        """
        configs = search_space_configs(space, include_preprocessing=include_preprocessing)
        return self.profile(configs, source=source, progress=progress)

    # ----------------------------------------------------------------------------------------------
    # Predicting.

    def _sum_keys(self, keys: Sequence[str], make_configs: Callable[[], Sequence[LayerConfig]]) -> float:
        net = self._net
        try:
            return sum([net[key] for key in keys])
        except KeyError:
            pass
        configs = list(make_configs())
        missing = self.missing(configs)
        if self.on_missing == "profile":
            self.profile(missing, progress=False)
            return sum(net[config.key] for config in configs)
        raise MissingEntryError(missing)

    def sum_entries(self, configs: Sequence[LayerConfig]) -> float:
        """The sum of the entries (net of the baseline), uncalibrated; profiles or raises for missing ones."""
        configs = list(configs)
        return self._sum_keys([config.key for config in configs], lambda: configs)

    def lut_ms(self, arch: ArchSpec | str | Sequence[str] | Mapping[str, Any], **network: Any) -> float:
        """An architecture's uncalibrated sum of entries (what the calibration line is fitted on).

        Example:

        ```python
        lut.lut_ms("a1", input_shape=(96, 96, 3))
        ```
        """
        return self._sum_keys(network_keys(arch, **network), lambda: network_configs(arch, **network))

    def _calibrated(self, lut_ms: float) -> float:
        if self.calibration is not None:
            predicted = self.calibration.apply(lut_ms)
        else:
            predicted = lut_ms + (self.baseline["median_ms"] if self.baseline else 0.0)
        if not predicted > 0:
            raise ValueError(
                f"The calibration maps a sum of entries of {lut_ms:.4f} ms to {predicted:.4f} ms: this "
                "network is outside the range the table was calibrated on. Calibrate on networks of "
                "similar size."
            )
        return predicted

    def predict_configs(self, configs: Sequence[LayerConfig]) -> float:
        """The predicted latency (ms) of a network given as its entries."""
        return self._calibrated(self.sum_entries(configs))

    def predict(self, arch: ArchSpec | str | Sequence[str] | Mapping[str, Any], **network: Any) -> float:
        """Predicts the latency of an architecture in milliseconds, without building it.

        Args:
            arch: An `ArchSpec`, a reference name, block strings or an architecture dict.
            **network: How it would be built, as for `keras_mnas.build_model`: `input_shape` (default
                `(224, 224, 3)`), `depth_multiplier`, `classes`, `include_top`, `pooling`,
                `classifier_activation`, `include_preprocessing`, `padding`.

        Returns:
            `scale * sum(entries) + intercept` when calibrated, else `sum(entries) + baseline`.

        Raises:
            MissingEntryError: naming the configurations the table lacks (with `on_missing="error"`).

        Example:

        ```python
        lut.predict("a1", input_shape=(96, 96, 3), depth_multiplier=0.5)
        ```
        """
        return self._calibrated(self.lut_ms(arch, **network))

    def predict_candidate(
        self, space, values: Mapping[str, Any] | Any, *, include_preprocessing: bool = False
    ) -> float:
        """Predicts a candidate of a `MnasSearchSpace` from its hyperparameter values (or its `ArchSpec`).

        The candidate is predicted as `MnasHyperModel` builds it: the space's input shape, classes and width
        multiplier, with the classifier, and with the input preprocessing when `include_preprocessing` (set
        it as the search's `MnasHyperModel` is).

        Example:

        ```python
        lut.predict_candidate(space, space.default_values())
        ```
        """
        if isinstance(values, ArchSpec):
            arch = values
        else:
            if not isinstance(values, Mapping):
                values = getattr(values, "values", values)  # a keras_tuner.HyperParameters
            if not isinstance(values, Mapping):
                raise ValueError(
                    "predict_candidate expects hyperparameter values (a dict or keras_tuner.HyperParameters) "
                    f"or an ArchSpec; received {type(values).__name__}."
                )
            # Decisions a partial dict leaves out take the space's defaults, as MnasHyperModel does.
            arch = space.decode({**space.default_values(), **values})
        return self.predict(
            arch,
            input_shape=space.input_shape,
            classes=space.classes,
            depth_multiplier=space.depth_multiplier,
            include_preprocessing=include_preprocessing,
        )

    def _result(self, predicted_ms: float, entries: int) -> LatencyResult:
        threads = (self.source_config or {}).get("threads", 1)
        return LatencyResult(
            median_ms=predicted_ms,
            mean_ms=predicted_ms,
            p90_ms=predicted_ms,
            std_ms=0.0,
            cv=0.0,
            runs=0,
            warmup_runs=0,
            threads=int(threads) if isinstance(threads, int) else 1,
            source=self.name,
            quantization=self.quantization,
            provenance={
                "prediction": True,
                "method": "sum of lookup-table entries" + (", calibrated" if self.calibration else ""),
                "entries": entries,
                "table": self.path,
                "table_source": self.source_config,
                "format_version": FORMAT_VERSION,
            },
        )

    def measure(self, model, *, quantization: str = "float32", representative_data=None) -> LatencyResult:
        """Predicts the latency of a model built by `keras_mnas.build_model` (as the tuner does).

        The model is read (`model_configs`), not converted or run. `representative_data` is ignored.

        Returns:
            A `LatencyResult` with `runs=0` and `provenance["prediction"] = True`.

        Raises:
            ValueError: when `quantization` differs from the table's, or the model was not built by
                keras-mnas.
            MissingEntryError: naming the configurations the table lacks (with `on_missing="error"`).

        Example:

        ```python
        lut.measure(keras_mnas.build_model("a1", input_shape=(96, 96, 3))).median_ms
        ```
        """
        if quantization != self.quantization:
            raise ValueError(
                f"This table holds {self.quantization} timings; it cannot predict "
                f"quantization={quantization!r}."
            )
        configs = model_configs(model)
        return self._result(self.predict_configs(configs), len(configs))

    def config(self) -> dict[str, Any]:
        """What the predictions depend on: the table's source, quantization and calibration."""
        calibration = (
            {"scale": self.calibration.scale, "intercept_ms": self.calibration.intercept_ms}
            if self.calibration
            else None
        )
        return {
            **super().config(),
            "format_version": FORMAT_VERSION,
            "quantization": self.quantization,
            "source": self.source_config,
            "calibration": calibration,
        }

    # ----------------------------------------------------------------------------------------------
    # Budgets.

    def far_over_budget(
        self,
        arch: ArchSpec | str | Sequence[str] | Mapping[str, Any],
        budget_ms: float,
        *,
        tolerance: float = 0.25,
        **network: Any,
    ) -> bool:
        """Whether an architecture's predicted latency exceeds `budget_ms * (1 + tolerance)`.

        A candidate that fails this is not worth building, measuring or training under a hard latency
        constraint. `tolerance` leaves room for the prediction's error: choose it above the table's error on
        your models (the calibration's `relative_errors`, or the benchmark's figures).

        Example:

        ```python
        lut.far_over_budget("a1", 2.0, input_shape=(96, 96, 3))  # True if A1 predicts above 2.5 ms
        ```
        """
        return self.predict(arch, **network) > _budget_limit(budget_ms, tolerance)

    def budget_filter(
        self, space, budget_ms: float, *, tolerance: float = 0.25, include_preprocessing: bool = False
    ) -> Callable[[Mapping[str, Any] | Any], bool]:
        """A function telling, from a candidate's hyperparameter values, whether to skip it before building.

        Args:
            space: The `MnasSearchSpace` the values belong to.
            budget_ms: The hard latency budget.
            tolerance: Skip only above `budget_ms * (1 + tolerance)`.
            include_preprocessing: Whether candidates normalise their inputs themselves (as the search's
                `MnasHyperModel`).

        Returns:
            `skip(values) -> bool`, accepting a `{name: value}` dict, a `keras_tuner.HyperParameters` or an
            `ArchSpec`; True means "far over budget".

        Example:

        ```python
        skip = lut.budget_filter(space, budget_ms=3.0)
        skip(space.default_values())
        ```
        """
        limit = _budget_limit(budget_ms, tolerance)

        def skip(values: Mapping[str, Any] | Any) -> bool:
            return self.predict_candidate(space, values, include_preprocessing=include_preprocessing) > limit

        return skip

    # ----------------------------------------------------------------------------------------------
    # Calibration.

    def fit_calibration(self, measurements: Sequence[Mapping[str, Any]]) -> Calibration:
        """Fits and sets the calibration from `{"lut_ms": ..., "measured_ms": ...}` pairs.

        `lut_ms` is the uncalibrated sum of entries (`sum_entries`) of the measured network. Extra keys (the
        architecture, its input shape) are kept in the table for the record. The intercept (the network's
        fixed cost) is kept >= 0 (see `fit_line`), so no network smaller than the calibration ones is
        predicted a negative latency because of noise in a few measurements.

        Raises:
            ValueError: for fewer than two measurements, equal sums, or a fit with a non-positive scale.

        Example:

        ```python
        lut.fit_calibration([{"lut_ms": 1.9, "measured_ms": 2.4}, {"lut_ms": 3.1, "measured_ms": 3.8}])
        ```
        """
        rows = [dict(m) for m in measurements]
        for row in rows:
            if "lut_ms" not in row or "measured_ms" not in row:
                raise ValueError(
                    f"Each calibration measurement needs 'lut_ms' and 'measured_ms'; received {row!r}."
                )
        scale, intercept = fit_line(
            [r["lut_ms"] for r in rows], [r["measured_ms"] for r in rows], nonnegative_intercept=True
        )
        if scale <= 0:
            raise ValueError(
                f"The calibration fit gives a non-positive scale ({scale:.4g}): the measured latencies "
                "do not grow with the table's sums. Check that the table and the measurements come from "
                "the same source, and calibrate on architectures of clearly different sizes."
            )
        with self._lock:
            self.calibration = Calibration(scale, intercept, tuple(_jsonable(rows)), _now())
            self.updated = _now()
        if self.path:
            self.save()
        return self.calibration

    def calibrate(
        self,
        architectures: Iterable[ArchSpec | str | Sequence[str]],
        *,
        source: LatencySource | None = None,
        progress: bool = True,
        **network: Any,
    ) -> Calibration:
        """Measures architectures end to end and fits the calibration line on them.

        Missing entries of these architectures are profiled first. A handful of architectures spanning the
        sizes you will predict (5-20) is enough for two parameters; more average out measurement noise.

        Args:
            architectures: The architectures to measure.
            source: The latency source (default: the profiler; it must be the table's source).
            progress: Whether to print progress lines.
            **network: How they are built, as for `keras_mnas.build_model` (`input_shape`, `classes`, ...).

        Returns:
            The `Calibration`, also stored in the table.

        Example:

        ```python
        calibration = lut.calibrate(["a1", "b1", "small"], input_shape=(128, 128, 3))
        calibration.scale, calibration.intercept_ms, calibration.relative_errors
        ```
        """
        from keras_mnas.builder import build_model

        source = self._require_profiler(source, "Calibrating")
        architectures = [get_architecture(a) for a in architectures]
        self.profile_architectures(architectures, source=source, progress=progress, **network)
        input_shape = _check_input_shape(network.get("input_shape", (224, 224, 3)))
        rows = []
        bar = _Progress(len(architectures), progress, "Measuring calibration models")
        for done, arch in enumerate(architectures, start=1):
            model = build_model(arch, **network)
            result = self._measure(source, model, input_shape)
            del model
            rows.append(
                {
                    "architecture": arch.to_dict(),
                    "network": _jsonable(network),
                    "lut_ms": self.lut_ms(arch, **network),
                    "measured_ms": float(result.median_ms),
                    "cv": float(result.cv),
                }
            )
            bar.update(done)
        return self.fit_calibration(rows)

    # ----------------------------------------------------------------------------------------------
    # Files.

    def to_dict(self) -> dict[str, Any]:
        """The table as a JSON-serialisable dict (what `save` writes)."""
        with self._lock:
            return {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "keras_mnas_version": self.keras_mnas_version,
                "created": self.created,
                "updated": self.updated,
                "quantization": self.quantization,
                "source": self.source_config,
                "baseline": self.baseline,
                "calibration": self.calibration.to_dict() if self.calibration else None,
                "provenance": list(self._provenance),
                "entries": {key: dict(record) for key, record in self._raw.items()},
            }

    def save(self, path: str | os.PathLike | None = None) -> str:
        """Writes the table as JSON, atomically; returns the path (also remembered as `self.path`).

        Example:

        ```python
        lut.save("lut-host-128.json")
        ```
        """
        path = os.fspath(path) if path is not None else self.path
        if path is None:
            raise ValueError("save() needs a path: the table was neither loaded from nor saved to a file.")
        atomic_write_json(path, self.to_dict())
        self.path = path
        return path

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        profiler: LatencySource | None = None,
        on_missing: str = "error",
        path: str | os.PathLike | None = None,
    ) -> LatencyLookupTable:
        """Rebuilds a table from `to_dict`'s output, checking its format.

        Raises:
            ValueError: for another format or format version, malformed entries, or a profiler whose
                `config()` differs from the table's source.
        """
        where = f" in {os.fspath(path)!r}" if path is not None else ""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT_NAME:
            raise ValueError(f"Not a keras-mnas latency table{where}: expected 'format': {FORMAT_NAME!r}.")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"Latency table{where} has format version {data.get('format_version')!r}; this "
                f"keras-mnas reads version {FORMAT_VERSION}. Profile the table again with this version."
            )
        table = cls(quantization=data.get("quantization", "float32"))
        table.path = os.fspath(path) if path is not None else None
        table.source_config = data.get("source")
        table.created = str(data.get("created", ""))
        table.updated = str(data.get("updated", ""))
        table.keras_mnas_version = str(data.get("keras_mnas_version", ""))
        provenance = data.get("provenance") or []
        if not isinstance(provenance, list) or not all(isinstance(p, dict) for p in provenance):
            raise ValueError(f"Latency table{where}: 'provenance' must be a list of objects.")
        table._provenance = [dict(p) for p in provenance]
        table._provenance_index = {json.dumps(p, sort_keys=True): i for i, p in enumerate(table._provenance)}
        baseline = data.get("baseline")
        if baseline is not None:
            _check_record(baseline, "baseline", where, len(provenance))
        table.baseline = dict(baseline) if baseline is not None else None
        entries = data.get("entries")
        if not isinstance(entries, Mapping):
            raise ValueError(f"Latency table{where}: 'entries' must be an object of key -> measurement.")
        for key, record in entries.items():
            LayerConfig.from_key(key)  # a malformed key is an error now, not a silent miss later
            _check_record(record, key, where, len(provenance))
            table._set_entry(key, dict(record))
        if data.get("calibration") is not None:
            table.calibration = Calibration.from_dict(data["calibration"])
        if profiler is not None:
            table._require_profiler(profiler, "A profiler")
            table.profiler = profiler
        if on_missing not in ON_MISSING:
            raise ValueError(f"on_missing must be one of {ON_MISSING}; received {on_missing!r}.")
        if on_missing == "profile" and profiler is None:
            raise ValueError(
                "on_missing='profile' needs a profiler (the LatencySource to measure entries on)."
            )
        table.on_missing = on_missing
        return table

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, profiler: LatencySource | None = None, on_missing: str = "error"
    ) -> LatencyLookupTable:
        """Reads a table written by `save`.

        Args:
            path: The JSON file.
            profiler: Optional source to extend the table with (its `config()` must match the table's).
            on_missing: `"error"` or `"profile"` (needs `profiler`), as for the constructor.

        Example:

        ```python
        lut = LatencyLookupTable.load("lut.json")
        ```
        """
        return cls.from_dict(read_json(path), profiler=profiler, on_missing=on_missing, path=path)

    def __repr__(self) -> str:
        source = (self.source_config or {}).get("name", "no source")
        calibrated = "calibrated" if self.calibration else "uncalibrated"
        return f"LatencyLookupTable({len(self)} entries, {self.quantization}, {source}, {calibrated})"


def _budget_limit(budget_ms: Any, tolerance: Any) -> float:
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) or not budget_ms > 0:
        raise ValueError(f"budget_ms must be a positive number of milliseconds; received {budget_ms!r}.")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError(f"tolerance must be a non-negative fraction such as 0.25; received {tolerance!r}.")
    return budget_ms * (1 + tolerance)


def _check_record(record: Any, key: str, where: str, provenance_count: int) -> None:
    ok = (
        isinstance(record, Mapping)
        and isinstance(record.get("median_ms"), (int, float))
        and math.isfinite(record["median_ms"])
        and record["median_ms"] > 0
        and isinstance(record.get("provenance"), int)
        and 0 <= record["provenance"] < provenance_count
    )
    if not ok:
        raise ValueError(
            f"Latency table{where}: the entry {key!r} must be an object with a positive 'median_ms' and a "
            f"'provenance' index below {provenance_count}; received {record!r}."
        )


def _keras_mnas_version() -> str:
    import keras_mnas

    return str(getattr(keras_mnas, "__version__", "unknown"))


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2.0  # ties share their average rank
        start = end + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two equally long sequences; `None` when it is undefined.

    Example:

    >>> spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 40.0, 30.0])
    0.8
    """
    if len(a) != len(b):
        raise ValueError(f"spearman needs sequences of equal length; received {len(a)} and {len(b)}.")
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    mean_a, mean_b = sum(ra) / len(ra), sum(rb) / len(rb)
    covariance = sum((x - mean_a) * (y - mean_b) for x, y in zip(ra, rb, strict=True))
    spread = math.sqrt(sum((x - mean_a) ** 2 for x in ra) * sum((y - mean_b) ** 2 for y in rb))
    return round(covariance / spread, 12) if spread > 0 else None
