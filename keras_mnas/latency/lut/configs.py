"""The entries of a latency lookup table: one `LayerConfig` per piece of a network, and its text key.

A network is cut into the pieces `keras_mnas.builder.LayerRecipes` builds: the input preprocessing, the stem,
every searched layer (with its SE and skip op), the head, and the global pooling or the classifier. A
`LayerConfig` names one such piece with everything that changes its latency; `network_configs` lists the
pieces of an architecture without building it, and `model_configs` those of a built model.

Example:

>>> configs = network_configs("a1", input_shape=(96, 96, 3))
>>> configs[1].key
'layer:dconv_k3_s11_i32_o16_noskip@48x48'
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from keras_mnas.architecture import ArchSpec, LayerPlan, get_architecture, plan_layers
from keras_mnas.builder import (
    LayerRecipes,
    check_include_preprocessing,
    check_preprocessing_channels,
    get_build_config,
)
from keras_mnas.utils.checks import check_choice, check_input_shape, check_int

#: The kinds of entries, in network order.
KINDS = ("preprocessing", "stem", "layer", "head", "pooling", "classifier")
#: The `keras_mnas.build_model` arguments that decide which entries a network is made of.
NETWORK_ARGS = (
    "input_shape",
    "depth_multiplier",
    "include_top",
    "pooling",
    "classes",
    "classifier_activation",
    "include_preprocessing",
    "padding",
)
_LAYER_OPS = ("conv", "dconv", "mbconv")
_SKIPS = ("identity", "none", "pool")
_PADDINGS = ("same", "symmetric")
_POOLINGS = ("avg", "max")


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

    Raises:
        ValueError: naming the field, for a value outside those above.

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
        check_choice("LayerConfig.kind", self.kind, KINDS)
        for name in ("input_size", "strides"):
            value = tuple(getattr(self, name))
            if len(value) != 2:
                raise ValueError(f"`LayerConfig.{name}` must be two integers; received {value!r}.")
            pair = tuple(check_int(f"LayerConfig.{name}", item, minimum=1) for item in value)
            object.__setattr__(self, name, pair)
        check_int("LayerConfig.input_filters", self.input_filters, minimum=1)
        check_int("LayerConfig.output_filters", self.output_filters, minimum=1)
        check_int("LayerConfig.kernel_size", self.kernel_size, minimum=1)
        check_int("LayerConfig.se_filters", self.se_filters, minimum=0)
        check_choice("LayerConfig.padding", self.padding, _PADDINGS)
        if self.kind == "layer":
            check_choice("LayerConfig.op", self.op, _LAYER_OPS)
            check_choice("LayerConfig.skip", self.skip, _SKIPS)
            if self.expanded_filters == 0:
                object.__setattr__(self, "expanded_filters", self.input_filters)
            check_int("LayerConfig.expanded_filters", self.expanded_filters, minimum=1)
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
        if self.kind == "pooling":
            check_choice("LayerConfig.mode (of a pooling entry)", self.mode, _POOLINGS)
        if self.kind == "classifier" and not self.mode:
            object.__setattr__(self, "mode", "linear")

    @classmethod
    def from_plan(cls, plan: LayerPlan, input_size: tuple[int, int], padding: str = "same") -> LayerConfig:
        """The entry of one searched layer, from the `LayerPlan` the builder builds it from.

        Example:

        >>> from keras_mnas.architecture import get_architecture, plan_layers
        >>> _, plans = plan_layers(get_architecture("a1"))
        >>> LayerConfig.from_plan(plans[0], (112, 112)).key
        'layer:dconv_k3_s11_i32_o16_noskip@112x112'
        """
        return cls(
            "layer",
            input_size,
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

    def to_plan(self, name: str = "block1a") -> LayerPlan:
        """The `LayerPlan` of a `"layer"` entry, named `name` (the inverse of `from_plan`)."""
        if self.kind != "layer":
            raise ValueError(f"Only a 'layer' entry has a layer plan; this one is a {self.kind!r} entry.")
        return LayerPlan(
            name=name,
            op=self.op,
            kernel_size=self.kernel_size,
            strides=self.strides,
            input_filters=self.input_filters,
            expanded_filters=self.expanded_filters,
            output_filters=self.output_filters,
            se_filters=self.se_filters,
            skip=self.skip,
        )

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

        The piece is made by the `LayerRecipes` method that `keras_mnas.build_model` calls for it, so an
        entry times exactly what a network contains, with the same layer names.

        Example:

        ```python
        LayerConfig.from_key("head:i320_o1280@3x3").build_model().summary()
        ```
        """
        import keras  # here, not at the top: configs and keys are used without building anything

        recipes = LayerRecipes(keras, self.padding, 0.99, 1e-3)
        inputs = keras.Input((*self.input_size, self.input_filters), name="input_layer")
        if self.kind == "preprocessing":
            x = recipes.preprocessing(inputs)
        elif self.kind == "stem":
            x = recipes.stem(inputs, self.output_filters, self.kernel_size, self.strides)
        elif self.kind == "layer":
            x = recipes.layer(inputs, self.to_plan())
        elif self.kind == "head":
            x = recipes.head(inputs, self.output_filters)
        elif self.kind == "pooling":
            x = recipes.pooling(inputs, self.mode)
        else:
            activation = None if self.mode == "linear" else self.mode
            x = recipes.classifier(inputs, self.output_filters, activation)
        return keras.Model(inputs, x, name=name)


def _check_input_shape(input_shape: Any) -> tuple[int, int, int]:
    return check_input_shape(input_shape, "A latency prediction")


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

    Returns:
        The `LayerConfig`s in network order.

    Raises:
        ValueError: for an unknown architecture or an argument `build_model` would refuse, or an input shape
            that is not concrete.

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


def network_layer_names(
    arch: ArchSpec | str | Sequence[str] | Mapping[str, Any], **network: Any
) -> list[tuple[str, ...]]:
    """The Keras layer names of each entry of `network_configs(arch, **network)`, in the same order.

    These are the names `keras_mnas.build_model` gives (`stem_conv`, `block2a_expand_conv`, `top_conv`,
    `predictions`, ...), as the prefixes they start with: what a converted model's tensor names carry, so
    that a per-operator profile can be cut into entries (`kernels.entry_times`).

    Example:

    >>> names = network_layer_names("a1", input_shape=(96, 96, 3))
    >>> names[0], names[1], names[-1]
    (('stem',), ('block1a',), ('avg_pool', 'top_dropout', 'predictions'))
    """
    fields = _network_fields(arch, **network)
    _, plans = plan_layers(get_architecture(arch), network.get("depth_multiplier", 1.0))
    plan_names = iter(plan.name for plan in plans)
    names = []
    for field in fields:
        kind, mode = field[0], field[-1]
        if kind == "layer":
            names.append((next(plan_names),))
        else:
            names.append(
                {
                    "preprocessing": ("rescaling", "normalization"),
                    "stem": ("stem",),
                    "head": ("top_conv", "top_bn", "top_activation"),
                    "classifier": ("avg_pool", "top_dropout", "predictions"),
                    "pooling": (f"{mode}_pool",),
                }[kind]
            )
    return names


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
    check_choice("padding", padding, _PADDINGS)
    check_choice("pooling", pooling, (None, *_POOLINGS))
    check_int("classes", classes, minimum=1)
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


def model_configs(model) -> list[LayerConfig]:
    """The table entries of a model built by `keras_mnas.build_model`.

    This is how the table predicts the latency of a built candidate (`LatencyLookupTable.measure`). The
    model's build configuration (`keras_mnas.builder.get_build_config`: recorded by `build_model`, or read
    from the builder's stable layer names) gives the `network_configs` arguments.

    Raises:
        ValueError: for a model keras-mnas did not build, or one without a concrete input shape.

    Example:

    ```python
    model = keras_mnas.build_model("a1", input_shape=(96, 96, 3))
    model_configs(model) == network_configs("a1", input_shape=(96, 96, 3))  # True
    ```
    """
    try:
        config = get_build_config(model)
    except ValueError as error:
        raise ValueError(
            f"{error} The lookup table predicts keras-mnas architectures only: measure other models with a "
            "real latency source."
        ) from error
    if any(d is None for d in config["input_shape"]):
        raise ValueError(
            f"Model {config['name']!r} needs an input with a concrete shape to be predicted; its input shape "
            f"is {tuple(config['input_shape'])}. Build it with input_shape=(height, width, channels)."
        )
    return network_configs(config["arch"], **{name: config[name] for name in NETWORK_ARGS})
