"""What LiteRT runs for each table entry, and the features its in-network cost is fitted on.

Converting keras-mnas networks shows what the runtime executes. Batch normalisation and ReLU fold into the
convolution before them (one `CONV_2D` or `DEPTHWISE_CONV_2D` with a fused activation). Squeeze-and-excitation
stays `MEAN`, two `CONV_2D` and a `MUL`. A residual is one `ADD`; a pooling skip an `AVERAGE_POOL_2D`, a 1x1
`CONV_2D` and an `ADD`. Nothing fuses across two entries: a network's operators are exactly the sum of its
entries' operators (a test checks it). So an entry is the right unit, and
what a one-entry model misses is how the same kernels run inside a network: with cold caches, after
another layer's writes, and with the network's own fixed costs.

`entry_times` reads those in-network costs off one run of a whole network instead: benchmark_model's
per-operator profile (`--enable_op_profiling`) names each operator after its output tensor, and the converter
names tensors after the Keras layers that made them (`mnasnet/block2a_expand_conv/...`), so each operator's
time goes to the entry its layer belongs to.

`entry_features` describes one entry for `fit_kernel_terms` (in `calibration`): its time alone, net of the
baseline, under its kernel type, one count of that type, and the bytes of activations and weights it moves.
A calibration weighs each feature once, fitted on end-to-end measurements, so every entry gets an in-network
cost, and a network is the sum of its entries' costs plus a fixed cost.

Example:

>>> kernel_type(LayerConfig.from_key("layer:mbconv_k5_s22_i24_e72_o40_se6_poolskip@48x48"))
'mbconv_se'
>>> sorted(entry_features(LayerConfig.from_key("head:i320_o1280@4x4"), 0.05))
['activation_mb', 'head:count', 'head:ms', 'weight_mb']
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from keras_mnas.counting import count_layer
from keras_mnas.latency.lut.configs import LayerConfig

#: Kernel types, one per kind of entry the runtime executes differently.
KERNEL_TYPES = (
    "stem",
    "conv",
    "conv_se",
    "dconv",
    "dconv_se",
    "mbconv",
    "mbconv_se",
    "head",
    "top",
)

# Activations and weights are float32 in the timed models; int8 tables scale both by the same factor, which
# the fitted coefficients absorb.
_BYTES = 4.0


def kernel_type(config: LayerConfig) -> str:
    """The kernel type of an entry: its layer op (with `_se` when it has SE), or its kind.

    The classifier, a pooling top and the preprocessing are `"top"`: one of them per network at most.
    """
    if config.kind == "layer":
        return f"{config.op}_se" if config.se_filters else config.op
    if config.kind in ("stem", "head"):
        return config.kind
    return "top"


def _se_channels(config: LayerConfig) -> int:
    # SE runs on the conv's output, or on the depthwise conv's (expanded) output.
    if not config.se_filters:
        return 0
    return config.output_filters if config.op == "conv" else config.expanded_filters


def traffic(config: LayerConfig) -> tuple[float, float]:
    """(activation elements read and written, weight elements) of an entry, as its kernels run.

    A layer's weights are its trainable parameters as `counting.count_layer` counts them (batch
    normalisation folds into per-channel biases of about the same size).

    Example:

    >>> traffic(LayerConfig("layer", (8, 8), 16, 32, op="conv", kernel_size=3))
    (3072.0, 4672.0)
    """
    h, w = config.input_size
    ho, wo = config.output_size
    cin, cout, k = config.input_filters, config.output_filters, config.kernel_size
    inputs, outputs = h * w * cin, ho * wo * cout
    if config.kind == "stem":
        return inputs + outputs, k * k * cin * cout
    if config.kind == "head":
        return inputs + outputs, cin * cout
    if config.kind != "layer":
        return inputs + cout, cin * cout if config.kind == "classifier" else 0
    if config.op == "conv":
        activations = inputs + outputs
    else:
        expanded = config.expanded_filters
        # The expand conv writes the wide tensor and the depthwise conv reads it (mbconv only); the depthwise
        # conv writes its strided output and the projection reads it.
        wide = h * w * expanded if config.op == "mbconv" else 0
        activations = inputs + 2 * wide + 2 * ho * wo * expanded + outputs
    activations += 2 * ho * wo * _se_channels(config)  # the excitation reads and rescales the tensor
    if config.skip == "pool":
        activations += inputs + 2 * outputs
    elif config.skip == "identity":
        activations += 2 * outputs
    return float(activations), float(count_layer(config.to_plan(), config.input_size).trainable_params)


def mult_adds(config: LayerConfig) -> float:
    """The multiply-adds of one entry's kernels, as they run.

    A layer's are `counting.count_layer`'s plus what the published figures leave out and the runtime still
    computes: SE's global mean and rescaling, and the pooling skip's averaging.

    Example:

    >>> mult_adds(LayerConfig("layer", (8, 8), 16, 32, op="conv", kernel_size=3))
    294912.0
    """
    h, w = config.input_size
    ho, wo = config.output_size
    cin, cout, k = config.input_filters, config.output_filters, config.kernel_size
    if config.kind == "stem":
        return float(ho * wo * k * k * cin * cout)
    if config.kind == "head":
        return float(h * w * cin * cout)
    if config.kind != "layer":
        return float(h * w * cin + (cin * cout if config.kind == "classifier" else 0))
    macs = count_layer(config.to_plan(), config.input_size).macs
    macs += 2 * ho * wo * _se_channels(config)
    if config.skip == "pool":
        macs += h * w * cin
    return float(macs)


@functools.lru_cache(maxsize=65536)
def _static_features(key: str) -> tuple[str, float, float]:
    config = LayerConfig.from_key(key)
    activations, weights = traffic(config)
    return kernel_type(config), activations * _BYTES / 1e6, weights * _BYTES / 1e6


def entry_features(config: LayerConfig | str, net_ms: float) -> dict[str, float]:
    """The features of one entry whose time alone, net of the baseline, is `net_ms`.

    Args:
        config: The entry (a `LayerConfig` or its key).
        net_ms: Its table entry net of the baseline (`LatencyLookupTable.entry_ms`).

    Returns:
        `{"<type>:ms": net_ms, "<type>:count": 1.0, "activation_mb": ..., "weight_mb": ...}`, where `<type>`
        is `kernel_type(config)` and the sizes are the megabytes of activations read and written and of
        weights.

    Raises:
        ValueError: for a malformed key.
    """
    key = config.key if isinstance(config, LayerConfig) else config
    kind, activation_mb, weight_mb = _static_features(key)
    return {
        f"{kind}:ms": float(net_ms),
        f"{kind}:count": 1.0,
        "activation_mb": activation_mb,
        "weight_mb": weight_mb,
    }


#: Every feature name `entry_features` can return, in a fixed order.
FEATURES = (
    *(f"{kind}:ms" for kind in KERNEL_TYPES),
    *(f"{kind}:count" for kind in KERNEL_TYPES),
    "activation_mb",
    "weight_mb",
)


# benchmark_model names an operator "[output tensor, ...]:node index" (TFLite's profile summarizer).
_NODE_NAME = re.compile(r"\[(?P<outputs>.*)\]:(?P<index>[0-9]+)")


def entry_times(
    by_node: Mapping[str, Any], keys: Sequence[str], layer_names: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Each entry's share of a network's per-operator profile, in milliseconds per run.

    An operator belongs to the entry whose Keras layer name its output tensor carries (the converter names
    a fused convolution, batch normalisation and ReLU after all three). An operator whose output carries no
    layer name is the network's output, which the converter renames (e.g. `Identity`): it belongs to the
    last entry (the classifier's softmax, or a pooling top's only operator). One elsewhere belongs to the
    entry of the operator before it in run order. The interpreter's own events (allocation, delegate
    set-up) are not operators and are left out: they are the network's fixed cost, which the calibration
    fits.

    Args:
        by_node: The profile of the network's operators, `{name: {"node_type", "avg_ms", ...}}` as
            `AndroidLatency(op_profile=True)` records it in `provenance["op_profile"]["by_node"]`, measured
            without a delegate (with XNNPACK the whole network is one delegate node).
        keys: The network's entry keys, in network order (`network_keys`).
        layer_names: For each entry, the layer names it is built of (`configs.network_layer_names`).

    Returns:
        `{key: milliseconds}` for every entry of the network (an entry the network holds twice counts its
        mean).

    Raises:
        ValueError: when the profile is of a delegate node, names no keras-mnas layer, or leaves an entry
            without any operator.

    Example:

    >>> profile = {"[mnasnet/stem_activation/Relu;mnasnet/stem_conv/convolution]:0": {"avg_ms": 0.3},
    ...            "[mnasnet/top_activation/Relu;mnasnet/top_conv/convolution]:1": {"avg_ms": 0.2},
    ...            "[Identity]:2": {"avg_ms": 0.05}}
    >>> entry_times(profile, ["stem:k3_s22_i3_o16@32x32", "head:i16_o64@16x16"],
    ...             [("stem",), ("top_conv", "top_bn", "top_activation")])
    {'stem:k3_s22_i3_o16@32x32': 0.3, 'head:i16_o64@16x16': 0.25}
    """
    if len(keys) != len(layer_names):
        raise ValueError(
            f"entry_times needs one tuple of layer names per entry; received {len(keys)} keys and "
            f"{len(layer_names)} tuples."
        )
    owner = {}
    for position, names in enumerate(layer_names):
        for name in names:
            owner[name] = position
    operators = []
    for name, timing in by_node.items():
        match = _NODE_NAME.fullmatch(name)
        node_type = timing.get("node_type", "") if isinstance(timing, Mapping) else ""
        if "delegate" in str(node_type).lower():
            raise ValueError(
                f"The operator profile holds a delegate node ({name!r}, {node_type}): the delegate runs the "
                "network as one node, whose inside cannot be cut into entries. Profile with delegate='none' "
                "(`AndroidLatency(..., delegate='none', op_profile=True)`)."
            )
        if match is not None:
            operators.append((int(match["index"]), match["outputs"], float(timing["avg_ms"])))
    operators.sort()
    owners = [_owner_of(outputs, owner) for _, outputs, _ in operators]
    named = [i for i, position in enumerate(owners) if position is not None]
    totals = [0.0] * len(keys)
    counted = [0] * len(keys)
    current = 0
    for i, ((_, _, ms), position) in enumerate(zip(operators, owners, strict=True)):
        if position is None:
            # After the last named operator: the network's output, which ends the last entry (a global
            # pooling top may be that one operator). Elsewhere: part of the entry before it.
            position = len(keys) - 1 if named and i > named[-1] else current
        current = position
        totals[position] += ms
        counted[position] += 1
    if not named:
        raise ValueError(
            f"The operator profile names no layer of this keras-mnas network (its {len(operators)} operators "
            f"are named e.g. {[o for _, o, _ in operators[:2]]}): it is not the profile of this network, "
            "converted by keras-mnas."
        )
    empty = [keys[i] for i, count in enumerate(counted) if count == 0]
    if empty:
        raise ValueError(
            f"The operator profile has no operator for the entries {empty}: it is not the profile of this "
            "network (or its layers were renamed)."
        )
    times: dict[str, list[float]] = {}
    for key, total in zip(keys, totals, strict=True):
        times.setdefault(key, []).append(total)
    return {key: sum(values) / len(values) for key, values in times.items()}


def operators_ms(by_node: Mapping[str, Any]) -> float:
    """The time a per-operator profile spends in the model's operators (delegate nodes included).

    This is a one-entry model's time without the cost of invoking it: what `entry_times` gives an entry
    inside a network, so that entries measured alone and in networks add up alike.

    Example:

    >>> operators_ms({"[stem_conv]:0": {"avg_ms": 0.25}, "[Identity]:1": {"avg_ms": 0.05},
    ...               "AllocateTensors/0": {"avg_ms": 1.0}})
    0.3
    """
    return sum(float(t["avg_ms"]) for name, t in by_node.items() if _NODE_NAME.fullmatch(name))


def _owner_of(outputs: str, owner: Mapping[str, int]) -> int | None:
    """The entry whose layer names a tensor name: "model/block2a_expand_conv_1/convolution" -> block2a's."""
    for tensor in re.split(r"[;,] ?", outputs):
        scopes = tensor.split("/")
        # The first scope is the model's own name, unless the tensor has no scope at all.
        for scope in scopes[1:] if len(scopes) > 1 else scopes:
            for name, position in owner.items():
                if scope == name or scope.startswith(name + "_"):
                    return position
    return None
