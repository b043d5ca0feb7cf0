"""The weight-sharing supernet of a `MnasSearchSpace`: every candidate of the space is one path through it.

Every layer position the space can produce is one slot holding the largest weights any candidate needs
there: the largest kernel, the widest input, expansion and output, the largest squeeze-and-excitation, one
weight set per kind of operation (`conv`, `dconv`, `mbconv` of every expansion). A path chooses, per slot:
the operation (a one-hot weighting of the kinds), the kernel size (a centred square mask of the largest
kernel), the widths (channel masks of the widest), SE on or off, the skip and whether the slot is used at all
(trailing layers of a block are skipped). The path is a second input of the model, a vector of numbers, so
every path runs through the same graph with the same static shapes: training samples a new path per batch
without retracing, under XLA and on the JAX backend.

`Supernet.extract` builds a candidate stand-alone with the project's builder and copies its weights out of
the supernet: in inference mode it computes what the supernet computes on that path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_mnas.architecture import ArchSpec, LayerPlan, plan_layers
from keras_mnas.search.space import MnasSearchSpace
from keras_mnas.utils.checks import check_int, check_number, check_type

# The kinds of operation that own a weight set; every `mbconv<E>` shares the `mbconv` one (masked).
OP_KINDS = ("conv", "dconv", "mbconv")
# Per-slot numbers after the operation weights, in this order, in a path vector.
_SLOT_FIELDS = (
    "kernel",  # kernel size
    "input",  # input width
    "expanded",  # width after the expansion (the input width without one)
    "expand",  # 1 when the mbconv has an expansion conv
    "se",  # squeeze-and-excitation width, 0 without SE
    "output",  # output width
    "identity",  # 1 with an identity residual
    "pool",  # 1 with an average-pooled residual without projection
    "project",  # 1 with an average-pooled residual projected by a 1x1 conv
    "active",  # 0 when the slot is a skipped trailing layer
)


@dataclasses.dataclass(frozen=True)
class SlotSpec:
    """The largest sizes of one layer position of the supernet (what its weights are sized for)."""

    name: str  # layer prefix, e.g. "block2b", as the builder names it
    block: int
    position: int
    strides: tuple[int, int]
    kinds: tuple[str, ...]
    kernel: int
    input_filters: int
    expanded: int  # widest mbconv expansion (0 without mbconv)
    output_filters: int
    se_filters: int  # 0 when no choice has SE
    identity: bool  # whether an identity residual is possible here
    pool: bool  # whether a pooled residual is possible here
    optional: bool  # whether a path can skip the slot

    @property
    def size(self) -> int:
        return len(self.kinds) + len(_SLOT_FIELDS)


def _choices_of_block(space: MnasSearchSpace, index: int) -> dict[str, tuple]:
    if index in space.fixed_blocks:
        block = space.fixed_blocks[index]
        op = f"mbconv{block.expand_ratio}" if block.op == "mbconv" else block.op
        return {
            "conv_op": (op,),
            "kernel": (block.kernel_size,),
            "se": (block.se_ratio or 0.0,),
            "skip": (block.skip,),
            "repeats": (block.repeats,),
        }
    row = space.skeleton[index]
    return {
        "conv_op": space.conv_ops,
        "kernel": space.kernel_sizes,
        "se": space.se_ratios,
        "skip": space.skip_ops,
        "repeats": tuple(sorted({max(1, row.repeats + d) for d in space.layer_deltas})),
    }


def plan_slots(space: MnasSearchSpace) -> list[SlotSpec]:
    """The supernet's slots for a space: every layer position with the largest sizes any candidate needs.

    Each block's output width depends only on its own filter choice, so the widest candidate of every block
    is found by decoding the space once per filter multiplier.

    Args:
        space: The search space.

    Returns:
        One `SlotSpec` per layer position, in network order.
    """
    check_type("space", space, MnasSearchSpace, "a MnasSearchSpace")
    widest: dict[int, int] = {}
    for multiplier in space.filter_multipliers:
        values = space.default_values()
        values.update({space.hp_name(i, "filters"): multiplier for i in space.searched_blocks})
        stem, plans = plan_layers(space.decode(values), space.depth_multiplier)
        for plan in plans:
            block = int(plan.name[len("block") :].rstrip("abcdefghijklmnopqrstuvwxyz")) - 1
            widest[block] = max(widest.get(block, 0), plan.output_filters)
    slots = []
    width = stem
    for index, row in enumerate(space.skeleton):
        choices = _choices_of_block(space, index)
        expansions = [int(op[len("mbconv") :]) for op in choices["conv_op"] if op.startswith("mbconv")]
        kinds = tuple(k for k in OP_KINDS if any(op.startswith(k) for op in choices["conv_op"]))
        se_ratio = max(choices["se"])
        stride = space.fixed_blocks[index].strides if index in space.fixed_blocks else (row.stride,) * 2
        for position in range(max(choices["repeats"])):
            strides = tuple(stride) if position == 0 else (1, 1)
            slots.append(
                SlotSpec(
                    name=f"block{index + 1}{_letter(position)}",
                    block=index,
                    position=position,
                    strides=strides,
                    kinds=kinds,
                    kernel=max(choices["kernel"]),
                    input_filters=width,
                    expanded=width * max(expansions) if expansions else 0,
                    output_filters=widest[index],
                    se_filters=max(1, int(width * se_ratio)) if se_ratio else 0,
                    identity="identity" in choices["skip"] and strides == (1, 1),
                    pool="pool" in choices["skip"],
                    optional=position >= min(choices["repeats"]),
                )
            )
            width = widest[index]
    return slots


def _letter(index: int) -> str:
    # The builder's layer letters: a, b, ..., z (blocks never repeat more than 26 layers... nor need to).
    return "abcdefghijklmnopqrstuvwxyz"[index]


def _block_of(plan: LayerPlan) -> tuple[int, int]:
    digits = plan.name[len("block") :]
    number = digits.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(number) - 1, "abcdefghijklmnopqrstuvwxyz".index(digits[len(number) :])


def _kind(plan: LayerPlan) -> str:
    return "mbconv" if plan.op == "mbconv" else plan.op


def _channel_mask(ops, count, size):
    return ops.cast(ops.arange(size, dtype="float32") < count, "float32")


def _kernel_mask(ops, kernel, size):
    # A centred k x k square of the K x K kernel: with "same" padding the smaller kernel then reads exactly
    # the pixels a k x k convolution reads (the padding differs by (K - k) / 2 on each side).
    distance = ops.abs(ops.arange(size, dtype="float32") - size // 2)
    line = ops.cast(distance <= (kernel - 1) / 2, "float32")
    return ops.reshape(line[:, None] * line[None, :], (size, size, 1, 1))


def _fit_channels(ops, x, channels):
    """`x` with `channels` channels: padded with zeros or cut (the cut channels are masked, hence zero)."""
    have = x.shape[-1]
    if have == channels:
        return x
    if have > channels:
        return x[..., :channels]
    return ops.pad(x, [(0, 0), (0, 0), (0, 0), (0, channels - have)])


def _he_normal(rng: np.random.Generator, fan_in: int):
    """He-normal initial values drawn by NumPy from `rng`, as a Keras initializer.

    A backend's random initializer is not reproducible from the supernet's seed alone, and on JAX it
    compiles once per shape, which costs more than the supernet's first training step.
    """
    scale = np.sqrt(2.0 / max(1, fan_in))

    def initializer(shape, dtype=None):
        return rng.normal(0.0, scale, shape).clip(-2 * scale, 2 * scale).astype("float32")

    return initializer


def _make_slot_layer():
    import keras
    from keras import ops

    class SupernetSlot(keras.layers.Layer):
        """One layer position of the supernet: every operation's largest weights, masked by the path."""

        def __init__(
            self, spec: SlotSpec, offset: int, bn_momentum: float, bn_epsilon: float, seed: int, **kwargs
        ):
            super().__init__(name=spec.name, **kwargs)
            rng = np.random.default_rng(seed)
            self.spec = spec
            self.offset = offset
            bn = {"momentum": bn_momentum, "epsilon": bn_epsilon}
            s, k = spec, spec.kernel
            self.bns = {}

            def weight(name, shape, initializer="he_normal"):
                if initializer == "he_normal":
                    fan_in = shape[0] * shape[1] if name.endswith("_dw") else int(np.prod(shape[:-1]))
                    initializer = _he_normal(rng, fan_in)
                return self.add_weight(name=name, shape=shape, initializer=initializer)

            def batch_norm(name):
                layer = keras.layers.BatchNormalization(name=f"{s.name}_{name}", **bn)
                self.bns[name] = layer
                return layer

            self.w = {}
            if "conv" in s.kinds:
                self.w["conv"] = weight("conv", (k, k, s.input_filters, s.output_filters))
                batch_norm("conv_bn")
            for kind, width in (("dconv", s.input_filters), ("mbconv", s.expanded)):
                if kind not in s.kinds:
                    continue
                if kind == "mbconv":
                    self.w["mbconv_expand"] = weight("mbconv_expand", (1, 1, s.input_filters, width))
                    batch_norm("mbconv_expand_bn")
                self.w[f"{kind}_dw"] = weight(f"{kind}_dw", (k, k, width, 1))
                batch_norm(f"{kind}_bn")
                self.w[f"{kind}_project"] = weight(f"{kind}_project", (1, 1, width, s.output_filters))
                batch_norm(f"{kind}_project_bn")
            if s.se_filters:
                for kind in s.kinds:
                    width = {"conv": s.output_filters, "dconv": s.input_filters, "mbconv": s.expanded}[kind]
                    self.w[f"{kind}_se_reduce"] = weight(f"{kind}_se_reduce", (width, s.se_filters))
                    self.w[f"{kind}_se_reduce_bias"] = weight(
                        f"{kind}_se_reduce_bias", (s.se_filters,), "zeros"
                    )
                    self.w[f"{kind}_se_expand"] = weight(f"{kind}_se_expand", (s.se_filters, width))
                    self.w[f"{kind}_se_expand_bias"] = weight(f"{kind}_se_expand_bias", (width,), "zeros")
            if s.pool:  # the projection of a pooled residual, used when a path changes the width
                self.w["skip_conv"] = weight("skip_conv", (1, 1, s.input_filters, s.output_filters))
                batch_norm("skip_bn")

        def build(self, x_shape, paths_shape):
            s = self.spec
            for name, layer in self.bns.items():
                width = {
                    "conv_bn": s.output_filters,
                    "mbconv_expand_bn": s.expanded,
                    "mbconv_bn": s.expanded,
                    "dconv_bn": s.input_filters,
                    "skip_bn": s.output_filters,
                }.get(name, s.output_filters)
                layer.build((None, None, None, width))

        def _bn(self, name, x, mask, training):
            return self.bns[name](x, training=training) * mask

        def _se(self, kind, x, se_mask, se_on):
            squeezed = ops.mean(x, axis=(1, 2))
            reduced = ops.relu(
                ops.matmul(squeezed, self.w[f"{kind}_se_reduce"]) + self.w[f"{kind}_se_reduce_bias"]
            )
            reduced = reduced * se_mask
            scale = ops.sigmoid(
                ops.matmul(reduced, self.w[f"{kind}_se_expand"]) + self.w[f"{kind}_se_expand_bias"]
            )
            scale = ops.reshape(scale, (-1, 1, 1, scale.shape[-1]))
            return x * (1.0 + se_on * (scale - 1.0))

        def call(self, x, paths, training=None):
            s = self.spec
            # Every row of `paths` holds the batch's path: the first is read.
            path = paths[0, self.offset : self.offset + s.size]
            weights = path[: len(s.kinds)]
            field = {name: path[len(s.kinds) + i] for i, name in enumerate(_SLOT_FIELDS)}
            kernel_mask = _kernel_mask(ops, field["kernel"], s.kernel)
            out_mask = _channel_mask(ops, field["output"], s.output_filters)
            se_mask = _channel_mask(ops, field["se"], s.se_filters) if s.se_filters else None
            se_on = ops.cast(field["se"] > 0, "float32")
            strides = s.strides
            mixed = 0.0
            for index, kind in enumerate(s.kinds):
                if kind == "conv":
                    y = ops.conv(x, self.w["conv"] * kernel_mask, strides=strides, padding="same")
                    y = ops.relu(self._bn("conv_bn", y, out_mask, training))
                    if s.se_filters:
                        y = self._se("conv", y, se_mask, se_on)
                else:
                    if kind == "mbconv":
                        expanded_mask = _channel_mask(ops, field["expanded"], s.expanded)
                        e = ops.conv(x, self.w["mbconv_expand"], padding="same")
                        e = ops.relu(self._bn("mbconv_expand_bn", e, expanded_mask, training))
                        # mbconv1 has no expansion conv: its depthwise conv reads the input itself.
                        y = field["expand"] * e + (1.0 - field["expand"]) * _fit_channels(ops, x, s.expanded)
                    else:
                        expanded_mask = _channel_mask(ops, field["input"], s.input_filters)
                        y = x
                    y = ops.depthwise_conv(
                        y, self.w[f"{kind}_dw"] * kernel_mask, strides=strides, padding="same"
                    )
                    y = ops.relu(self._bn(f"{kind}_bn", y, expanded_mask, training))
                    if s.se_filters:
                        y = self._se(kind, y, se_mask, se_on)
                    y = ops.conv(y, self.w[f"{kind}_project"], padding="same")
                    y = self._bn(f"{kind}_project_bn", y, out_mask, training)
                mixed = mixed + weights[index] * y
            if s.identity:
                mixed = mixed + field["identity"] * _fit_channels(ops, x, s.output_filters)
            if s.pool:
                pooled = ops.average_pool(x, 3, strides=strides, padding="same")
                mixed = mixed + field["pool"] * _fit_channels(ops, pooled, s.output_filters)
                if "skip_conv" in self.w:
                    projected = ops.conv(pooled, self.w["skip_conv"], padding="same")
                    mixed = mixed + field["project"] * self._bn("skip_bn", projected, out_mask, training)
            if s.optional:
                # A skipped trailing layer passes its input on (it has the block's width and stride 1).
                mixed = field["active"] * mixed + (1.0 - field["active"]) * _fit_channels(
                    ops, x, s.output_filters
                )
            return mixed

    return SupernetSlot


class Supernet:
    """The weight-sharing supernet of a search space, and the paths through it.

    `model` is a Keras model taking `[images, paths]`: `paths` holds one path vector per example (every row
    the same; the first is used), made by `encode`. Training feeds a new path with every batch; the shapes
    never change, so nothing is retraced. `extract` builds the stand-alone candidate of a path with the
    supernet's weights.

    Args:
        space: The search space (`include_preprocessing` is not supported: normalise inputs beforehand).
        bn_momentum: BatchNormalization momentum, as `MnasHyperModel`'s (the statistics are re-estimated
            for each evaluated candidate anyway).
        bn_epsilon: BatchNormalization epsilon.
        seed: Seed of the initial weights.

    Example:

    ```python
    space = MnasSearchSpace(((1, 8, 1, 1), (6, 16, 2, 2)), fixed_blocks={}, input_shape=(16, 16, 3),
                            classes=4, stem_filters=8, head_filters=32)
    supernet = Supernet(space)
    values = space.default_values()
    logits = supernet.predict(np.zeros((2, 16, 16, 3), "float32"), values)
    model = supernet.extract(values)  # the same candidate, stand-alone
    ```
    """

    def __init__(
        self, space: MnasSearchSpace, *, bn_momentum: float = 0.5, bn_epsilon: float = 1e-3, seed: int = 0
    ):
        import keras

        self.space = check_type("space", space, MnasSearchSpace, "a MnasSearchSpace")
        self.bn_momentum = check_number("bn_momentum", bn_momentum, low=0, high=1, high_open=True)
        self.bn_epsilon = check_number("bn_epsilon", bn_epsilon, low=0, low_open=True)
        seed = check_int("seed", seed, minimum=0)
        self.slots = plan_slots(space)
        self.path_size = sum(slot.size for slot in self.slots)
        slot_layer = _make_slot_layer()
        bn = {"momentum": self.bn_momentum, "epsilon": self.bn_epsilon}
        images = keras.Input(space.input_shape, name="images")
        paths = keras.Input((self.path_size,), name="paths")
        rng = np.random.default_rng([seed, self.path_size])
        channels = space.input_shape[-1]
        x = keras.layers.Conv2D(
            self._stem_width(),
            3,
            strides=2,
            padding="same",
            use_bias=False,
            kernel_initializer=_he_normal(rng, 9 * channels),
            name="stem_conv",
        )(images)
        x = keras.layers.BatchNormalization(name="stem_bn", **bn)(x)
        x = keras.layers.ReLU(name="stem_activation")(x)
        offset = 0
        for slot in self.slots:
            x = slot_layer(slot, offset, self.bn_momentum, self.bn_epsilon, seed + offset)(x, paths)
            offset += slot.size
        head = keras.layers.Conv2D(
            space.head_filters,
            1,
            use_bias=False,
            kernel_initializer=_he_normal(rng, self.slots[-1].output_filters),
            name="top_conv",
        )
        x = head(x)
        x = keras.layers.BatchNormalization(name="top_bn", **bn)(x)
        x = keras.layers.ReLU(name="top_activation")(x)
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # No dropout: a resumed training must draw what the uninterrupted one drew, and Keras' dropout seeds
        # are not part of a checkpoint. (The extracted candidates keep the space's dropout.)
        outputs = keras.layers.Dense(
            space.classes,
            activation="softmax",
            kernel_initializer=_he_normal(rng, space.head_filters),
            name="predictions",
        )(x)
        self.model = keras.Model([images, paths], outputs, name="supernet")

    def _stem_width(self) -> int:
        stem, _ = plan_layers(self.space.decode(self.space.default_values()), self.space.depth_multiplier)
        return stem

    def architecture(self, values: Mapping[str, Any] | ArchSpec) -> ArchSpec:
        """The architecture of a path given as hyperparameter values (or already an `ArchSpec`)."""
        if isinstance(values, ArchSpec):
            return values
        return self.space.architecture(values)

    def encode(
        self, values: Mapping[str, Any] | ArchSpec, *, mix_ops: bool = False, largest_filters: bool = False
    ) -> np.ndarray:
        """The path vector of one candidate, from its hyperparameter values (or its `ArchSpec`).

        Args:
            values: `{hyperparameter name: value}` as a trial holds them (missing decisions take the space's
                defaults), or an `ArchSpec` of the space.
            mix_ops: TuNAS's op warm-up: every kind of operation of every layer runs, their outputs averaged
                (mbconv at its widest expansion).
            largest_filters: TuNAS's filter warm-up: every searched block at its widest output and, when it
                is an mbconv, its widest expansion (only with hyperparameter values).

        Returns:
            A float32 vector of `path_size` numbers: per slot, the weight of each kind of operation, then
            kernel size, expanded width, expansion on/off, SE width, output width, the three skips and
            whether the slot is used.

        Raises:
            ValueError: when the values are not a candidate of the space.
        """
        if largest_filters and not isinstance(values, ArchSpec):
            values = self._widest(values)
        arch = self.architecture(values)
        _, plans = plan_layers(arch, self.space.depth_multiplier)
        by_position = {_block_of(plan): plan for plan in plans}
        vector = []
        for slot in self.slots:
            plan = by_position.get((slot.block, slot.position))
            vector.extend(_encode_slot(slot, plan, mix_ops=mix_ops))
        by_slot = {(slot.block, slot.position) for slot in self.slots}
        if not set(by_position) <= by_slot:
            raise ValueError(
                f"The architecture {arch.block_strings} has layers the supernet of this space does not have; "
                "expected a candidate of the space."
            )
        return np.asarray(vector, dtype="float32")

    def _widest(self, values: Mapping[str, Any]) -> dict[str, Any]:
        space = self.space
        widest = dict(space.default_values())
        widest.update(values)
        expansions = [op for op in space.conv_ops if op.startswith("mbconv")]
        largest_mbconv = max(expansions, key=lambda op: int(op[len("mbconv") :])) if expansions else None
        for index in space.searched_blocks:
            widest[space.hp_name(index, "filters")] = max(space.filter_multipliers)
            op = space.hp_name(index, "conv_op")
            if str(widest[op]).startswith("mbconv"):
                widest[op] = largest_mbconv
        return widest

    def paths(self, values: Mapping[str, Any] | ArchSpec, batch_size: int) -> np.ndarray:
        """`encode(values)` repeated for a batch: the model's second input."""
        return np.tile(self.encode(values), (int(batch_size), 1))

    def predict(
        self, images: Any, values: Mapping[str, Any] | ArchSpec, *, batch_size: int = 64
    ) -> np.ndarray:
        """The supernet's outputs on one path, in inference mode."""
        images = np.asarray(images, dtype="float32")
        # Keras' predict compiles the model once; calling it eagerly would, on JAX, compile op by op.
        return self.model.predict([images, self.paths(values, len(images))], batch_size=batch_size, verbose=0)

    def batch_norms(self) -> list:
        """Every BatchNormalization layer of the supernet, the slots' included, in network order."""
        import keras

        norms = []
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                norms.append(layer)
            norms.extend(getattr(layer, "bns", {}).values())
        return norms

    def extract(self, values: Mapping[str, Any] | ArchSpec, *, model: Any = None):
        """The stand-alone candidate of a path, built by the builder, with the supernet's weights.

        This is how a one-shot search exports a winner: the model is an ordinary keras-mnas model (built as
        `MnasHyperModel` builds candidates), so it converts, saves and fine-tunes like any other.

        Args:
            values: The candidate's hyperparameter values, or its `ArchSpec`.
            model: The candidate already built by the space's builder (e.g. by `MnasHyperModel.build`)
                to copy the weights into; built here by default.

        Returns:
            A `keras.Model` whose outputs in inference mode equal the supernet's on this path.
        """
        arch = self.architecture(values)
        if model is None:
            model = self.space.build(arch, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
        layers = {layer.name: layer for layer in model.layers}
        supernet = {layer.name: layer for layer in self.model.layers}

        def copy_bn(target: str, source, width: int):
            layers[target].set_weights([np.asarray(v)[:width] for v in _bn_variables(source)])

        copy = lambda name: layers[name].set_weights(supernet[name].get_weights())  # noqa: E731
        copy("stem_conv")
        copy("stem_bn")
        _, plans = plan_layers(arch, self.space.depth_multiplier)
        for plan in plans:
            slot_layer = supernet[plan.name]
            _copy_layer(plan, slot_layer, layers, copy_bn)
        last = plans[-1].output_filters
        layers["top_conv"].set_weights([supernet["top_conv"].get_weights()[0][:, :, :last, :]])
        copy("top_bn")
        copy("predictions")
        return model


def _bn_variables(layer) -> list:
    return [layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance]


def _centre(kernel: np.ndarray, size: int) -> np.ndarray:
    start = (kernel.shape[0] - size) // 2
    return kernel[start : start + size, start : start + size]


def _copy_layer(plan: LayerPlan, slot_layer, layers: dict, copy_bn) -> None:
    """Copies one layer's weights out of its supernet slot into the stand-alone model's layers."""
    w = {name: np.asarray(variable) for name, variable in slot_layer.w.items()}
    bns = slot_layer.bns
    name, k = plan.name, plan.kernel_size
    cin, cexp, cout, cse = plan.input_filters, plan.expanded_filters, plan.output_filters, plan.se_filters
    kind = _kind(plan)
    if kind == "conv":
        layers[name + "_conv"].set_weights([_centre(w["conv"], k)[:, :, :cin, :cout]])
        copy_bn(name + "_bn", bns["conv_bn"], cout)
        se_width = cout
    else:
        if cexp != cin:
            layers[name + "_expand_conv"].set_weights([w["mbconv_expand"][:, :, :cin, :cexp]])
            copy_bn(name + "_expand_bn", bns["mbconv_expand_bn"], cexp)
        layers[name + "_dwconv"].set_weights([_centre(w[f"{kind}_dw"], k)[:, :, :cexp, :]])
        copy_bn(name + "_bn", bns[f"{kind}_bn"], cexp)
        layers[name + "_project_conv"].set_weights([w[f"{kind}_project"][:, :, :cexp, :cout]])
        copy_bn(name + "_project_bn", bns[f"{kind}_project_bn"], cout)
        se_width = cexp
    if cse:
        layers[name + "_se_reduce"].set_weights(
            [w[f"{kind}_se_reduce"][None, None, :se_width, :cse], w[f"{kind}_se_reduce_bias"][:cse]]
        )
        layers[name + "_se_expand"].set_weights(
            [w[f"{kind}_se_expand"][None, None, :cse, :se_width], w[f"{kind}_se_expand_bias"][:se_width]]
        )
    if plan.projects_skip:
        layers[name + "_skip_conv"].set_weights([w["skip_conv"][:, :, :cin, :cout]])
        copy_bn(name + "_skip_bn", bns["skip_bn"], cout)


def _encode_slot(slot: SlotSpec, plan: LayerPlan | None, *, mix_ops: bool = False) -> list[float]:
    if plan is None:  # a trailing layer this path skips: everything off
        if not slot.optional:
            raise ValueError(f"Layer {slot.name} is in every candidate of the space, but the path skips it.")
        return [0.0] * slot.size
    kind = _kind(plan)
    if kind not in slot.kinds or plan.kernel_size > slot.kernel or plan.output_filters > slot.output_filters:
        raise ValueError(f"Layer {plan.name} ({plan}) does not fit the supernet's slot {slot}.")
    fields = {
        "kernel": plan.kernel_size,
        "input": plan.input_filters,
        "expanded": plan.expanded_filters,
        "expand": float(kind == "mbconv" and plan.expanded_filters != plan.input_filters),
        "se": plan.se_filters,
        "output": plan.output_filters,
        "identity": float(plan.skip == "identity"),
        "pool": float(plan.skip == "pool" and not plan.projects_skip),
        "project": float(plan.projects_skip),
        "active": 1.0,
    }
    weights = [float(kind == k) for k in slot.kinds]
    if mix_ops:
        weights = [1.0 / len(slot.kinds)] * len(slot.kinds)
        if slot.expanded:  # the mbconv of the mix at its widest expansion
            ratio = slot.expanded // slot.input_filters
            fields["expanded"] = plan.input_filters * ratio
            fields["expand"] = float(ratio > 1)
    return weights + [float(fields[f]) for f in _SLOT_FIELDS]
