"""What LiteRT runs for each table entry, and the features its in-network cost is fitted on.

Converting keras-mnas networks shows what the runtime executes. Batch normalisation and ReLU fold into the
convolution before them (one `CONV_2D` or `DEPTHWISE_CONV_2D` with a fused activation). Squeeze-and-excitation
stays `MEAN`, two `CONV_2D` and a `MUL`. A residual is one `ADD`; a pooling skip an `AVERAGE_POOL_2D`, a 1x1
`CONV_2D` and an `ADD`. Nothing fuses across two entries: a network's operators are exactly the sum of its
entries' operators (a test checks it). So an entry is the right unit, and
what a one-entry model misses is how the same kernels run inside a network: with cold caches, after
another layer's writes, and with the network's own fixed costs.

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


def _traffic(config: LayerConfig) -> tuple[float, float]:
    """(activation elements read and written, weight elements) of an entry, as its kernels run."""
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
        activations, weights = inputs + outputs, k * k * cin * cout
    else:
        expanded = config.expanded_filters
        # The expand conv writes the wide tensor and the depthwise conv reads it (mbconv only); the depthwise
        # conv writes its strided output and the projection reads it.
        wide = h * w * expanded if config.op == "mbconv" else 0
        activations = inputs + 2 * wide + 2 * ho * wo * expanded + outputs
        weights = (cin * expanded if config.op == "mbconv" else 0) + k * k * expanded + expanded * cout
        if config.se_filters:
            activations += 2 * ho * wo * expanded  # the excitation reads and rescales the tensor
            weights += 2 * expanded * config.se_filters
    if config.skip == "pool":
        activations += inputs + 2 * outputs
        weights += cin * cout
    elif config.skip == "identity":
        activations += 2 * outputs
    return float(activations), float(weights)


@functools.lru_cache(maxsize=65536)
def _static_features(key: str) -> tuple[str, float, float]:
    config = LayerConfig.from_key(key)
    activations, weights = _traffic(config)
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
