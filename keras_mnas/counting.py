"""Parameters and multiply-adds of an architecture, counted without building a model.

The counts walk the same `plan_layers` expansion the builder uses, so they cannot drift from what is built.
Counting is pure Python and takes microseconds, which is what a search needs to filter candidates cheaply.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from keras_mnas.architecture import ArchSpec, LayerPlan, get_architecture, plan_layers
from keras_mnas.utils.checks import check_bool, check_input_shape, check_int


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """What an architecture costs.

    Attributes:
        trainable_params: Trainable parameters (Keras' `trainable_weights`).
        non_trainable_params: BatchNormalization moving statistics.
        macs: Multiply-accumulates of one forward pass at batch size 1 (convolutions, SE and the classifier;
            BN, activations, pooling and additions are not counted, as in the published figures).
    """

    trainable_params: int
    non_trainable_params: int
    macs: int

    @property
    def params(self) -> int:
        """All parameters, as Keras' `count_params()` reports them."""
        return self.trainable_params + self.non_trainable_params


def _out_size(size: int, stride: int) -> int:
    # "same" and symmetric k // 2 padding give the same output size for odd kernels.
    return math.ceil(size / stride)


def count_layer(plan: LayerPlan, input_size: tuple[int, int]) -> ModelCost:
    """Counts parameters and mult-adds of one layer, as `count_cost` counts them for a whole network.

    The latency lookup table describes its entries with the same figures, so a layer costs the same
    mult-adds wherever it is counted.

    Args:
        plan: The layer, as `plan_layers` resolves it.
        input_size: `(height, width)` of the layer's input.

    Returns:
        A `ModelCost` of the layer alone: its convolutions, batch normalisations, SE and skip projection.

    Example:

    >>> from keras_mnas.architecture import get_architecture, plan_layers
    >>> _, plans = plan_layers(get_architecture("a1"))
    >>> count_layer(plans[0], (112, 112)).macs  # depthwise 3x3 over 32 channels, then 1x1 to 16
    10035200
    """
    height, width = (int(d) for d in input_size)
    out_height, out_width = _out_size(height, plan.strides[0]), _out_size(width, plan.strides[1])
    trainable = non_trainable = macs = 0

    def conv(cin, cout, kernel, pixels, depthwise=False):
        nonlocal trainable, macs
        weights = kernel * kernel * (cin if depthwise else cin * cout)
        trainable += weights
        macs += weights * pixels

    def batch_norm(filters):
        nonlocal trainable, non_trainable
        trainable += 2 * filters
        non_trainable += 2 * filters

    def squeeze_excite(filters, se_filters):
        nonlocal trainable, macs
        weights = 2 * filters * se_filters
        trainable += weights + se_filters + filters  # both 1x1 convs have a bias
        macs += weights

    out_pixels = out_height * out_width
    if plan.op == "conv":
        conv(plan.input_filters, plan.output_filters, plan.kernel_size, out_pixels)
        batch_norm(plan.output_filters)
        if plan.se_filters:
            squeeze_excite(plan.output_filters, plan.se_filters)
    else:
        if plan.expanded_filters != plan.input_filters:
            conv(plan.input_filters, plan.expanded_filters, 1, height * width)
            batch_norm(plan.expanded_filters)
        conv(plan.expanded_filters, None, plan.kernel_size, out_pixels, depthwise=True)
        batch_norm(plan.expanded_filters)
        if plan.se_filters:
            squeeze_excite(plan.expanded_filters, plan.se_filters)
        conv(plan.expanded_filters, plan.output_filters, 1, out_pixels)
        batch_norm(plan.output_filters)
    if plan.projects_skip:
        # The projection runs on the pooled input, at the layer's output resolution.
        conv(plan.input_filters, plan.output_filters, 1, out_pixels)
        batch_norm(plan.output_filters)
    return ModelCost(trainable, non_trainable, macs)


def count_cost(
    arch: ArchSpec | str | Sequence[str],
    *,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    classes: int = 1000,
    depth_multiplier: float = 1.0,
    include_top: bool = True,
) -> ModelCost:
    """Counts parameters and mult-adds of an architecture without building it.

    Args:
        arch: An `ArchSpec`, a reference name or block strings.
        input_shape: `(height, width, channels)` of the input.
        classes: Number of classes of the classifier.
        depth_multiplier: Width multiplier.
        include_top: Whether the classifier is counted.

    Returns:
        A `ModelCost`.

    Example:

    >>> cost = count_cost("a1")
    >>> cost.trainable_params
    3887038
    >>> round(cost.macs / 1e6, 1)
    311.6
    """
    arch = get_architecture(arch)
    height, width, channels = check_input_shape(input_shape, "count_cost")
    classes = check_int("classes", classes, minimum=1)
    check_bool("include_top", include_top)
    stem_filters, plans = plan_layers(arch, depth_multiplier)
    height, width = _out_size(height, 2), _out_size(width, 2)
    stem_weights = 3 * 3 * channels * stem_filters
    trainable = stem_weights + 2 * stem_filters  # the conv and its BN's scale and offset
    non_trainable = 2 * stem_filters
    macs = stem_weights * height * width
    for plan in plans:
        cost = count_layer(plan, (height, width))
        trainable += cost.trainable_params
        non_trainable += cost.non_trainable_params
        macs += cost.macs
        height, width = _out_size(height, plan.strides[0]), _out_size(width, plan.strides[1])
    head_weights = plans[-1].output_filters * arch.head_filters
    trainable += head_weights + 2 * arch.head_filters
    non_trainable += 2 * arch.head_filters
    macs += head_weights * height * width
    if include_top:
        trainable += arch.head_filters * classes + classes
        macs += arch.head_filters * classes
    return ModelCost(trainable, non_trainable, macs)


def count_model_macs(model) -> int:
    """Counts the mult-adds of a built Keras model by walking its layers (batch size 1).

    Counts `Conv2D` (grouped too), `DepthwiseConv2D`, `SeparableConv2D` and `Dense`, the layers that carry
    the multiplications in mobile networks; nested models are walked. It needs defined spatial dimensions.
    Use it for models keras-mnas did not build (e.g. `keras.applications.MobileNetV3Small`); for keras-mnas
    architectures `count_cost` gives the same figure without building anything.

    Example:

    ```python
    count_model_macs(keras.applications.MobileNetV2(weights=None))  # about 300M
    ```
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_model_macs(layer)
            continue
        counted = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
        if not isinstance(layer, (*counted, keras.layers.Dense)):
            continue
        output_shape = tuple(layer.output.shape)
        if any(d is None for d in output_shape[1:]):
            raise ValueError(
                f"count_model_macs needs defined spatial dimensions; layer {layer.name!r} has output shape "
                f"{output_shape}. Build the model with a concrete input_shape."
            )
        positions = int(math.prod(output_shape[1:-1]))  # spatial positions (1 for Dense on vectors)
        if isinstance(layer, keras.layers.SeparableConv2D):
            depthwise, pointwise = layer.depthwise_kernel.shape, layer.pointwise_kernel.shape
            total += positions * (int(math.prod(depthwise)) + int(math.prod(pointwise)))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            kernel = layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel
            total += positions * int(math.prod(kernel.shape))
        else:
            total += positions * int(math.prod(layer.kernel.shape))
    return total
