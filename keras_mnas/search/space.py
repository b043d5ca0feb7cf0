"""The factorized hierarchical search space of MnasNet (`MnasHyperModel` builds it for KerasTuner).

The network is a sequence of blocks over a skeleton (MobileNetV2's by default). Every searched block picks,
independently of the others (section 4.1 of the paper):

| decision | default choices |
|---|---|
| conv op | `conv`, `dconv`, `mbconv3`, `mbconv6` |
| kernel size | 3, 5 |
| squeeze-and-excitation ratio | 0, 0.25 |
| skip op | `pool`, `identity`, `none` |
| output filters | 0.75, 1.0, 1.25 x the skeleton's |
| layers | the skeleton's -1, +0, +1 |

That is 4 x 2 x 2 x 3 x 3 x 3 = 432 choices per block. Fixed blocks keep the block string they are given.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from keras_mnas.architecture import (
    MAX_BLOCKS,
    MAX_CLASSES,
    MAX_EXPANSION,
    MAX_FILTERS,
    MAX_KERNEL,
    MAX_MULTIPLIER,
    MAX_REPEATS,
    MAX_STRIDE,
    ArchSpec,
    BlockSpec,
    decode_block,
    get_architecture,
    plan_layers,
    round_filters,
)
from keras_mnas.builder import build_model
from keras_mnas.counting import count_cost
from keras_mnas.latency.lut.configs import LayerConfig, network_configs
from keras_mnas.utils.checks import check_choices, check_int, check_number, is_integer, is_number

if TYPE_CHECKING:
    import keras_tuner


@dataclasses.dataclass(frozen=True)
class SkeletonBlock:
    """One block of the skeleton the search deltas refer to: MobileNetV2's `(t, c, n, s)` rows."""

    expand_ratio: int
    filters: int
    repeats: int
    stride: int

    def __post_init__(self):
        # Checked here, not when a candidate is decoded: a negative width would otherwise round up to the
        # filter divisor without a word.
        for name, maximum in (
            ("expand_ratio", MAX_EXPANSION),
            ("filters", MAX_FILTERS),
            ("repeats", MAX_REPEATS),
            ("stride", MAX_STRIDE),
        ):
            value = check_int(f"SkeletonBlock.{name}", getattr(self, name), minimum=1, maximum=maximum)
            object.__setattr__(self, name, value)


#: MobileNetV2's skeleton as (expansion t, channels c, repeats n, stride s).
MOBILENET_V2_SKELETON: tuple[SkeletonBlock, ...] = tuple(
    SkeletonBlock(*row)
    for row in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
)

#: By default the first and last blocks are fixed to MnasNet-A1's and the middle five are searched
#: (the paper's S^5 search space).
DEFAULT_FIXED_BLOCKS = {0: "r1_k3_s11_e1_i32_o16_noskip", 6: "r1_k3_s11_e6_i160_o320"}

_CONV_OP = re.compile(r"conv|dconv|mbconv([1-9][0-9]?)", re.ASCII)
MAX_INPUT_SIZE = 8192  # pixels per side, and channels
DECISIONS = ("conv_op", "kernel", "se", "skip", "filters", "layers")


class MnasSearchSpace:
    """The factorized hierarchical search space, configurable in every dimension.

    Args:
        skeleton: The blocks the deltas refer to, as `SkeletonBlock`s or `(t, c, n, s)` tuples.
        conv_ops: Choices of the operation: `"conv"`, `"dconv"` or `"mbconv<E>"` for any expansion E.
        kernel_sizes: Choices of the kernel size (odd integers).
        se_ratios: Choices of the SE ratio; 0 means no squeeze-and-excitation.
        skip_ops: Choices among `"pool"`, `"identity"`, `"none"`.
        filter_multipliers: Choices of the output width relative to the skeleton's.
        layer_deltas: Choices added to the skeleton's number of layers (the result is at least 1).
        fixed_blocks: `{block index: block string}` for blocks that are not searched. By default the first
            and last blocks are MnasNet-A1's and the five in between are searched.
        filter_divisor: Searched widths are rounded to a multiple of this.
        input_shape: Input shape of the built models (must be concrete: latency is measured).
        classes: Number of classes.
        depth_multiplier: Width multiplier applied to the whole network (after the search's choices).
        stem_filters: Stem width.
        head_filters: Head width.
        dropout_rate: Dropout before the classifier.

    Example:

    ```python
    space = MnasSearchSpace(input_shape=(32, 32, 3), classes=10)
    space.choices_per_block  # 432
    space.log10_size         # about 13.2: 432 ** 5
    ```
    """

    def __init__(
        self,
        skeleton: Sequence[SkeletonBlock | tuple[int, int, int, int]] = MOBILENET_V2_SKELETON,
        *,
        conv_ops: Sequence[str] = ("conv", "dconv", "mbconv3", "mbconv6"),
        kernel_sizes: Sequence[int] = (3, 5),
        se_ratios: Sequence[float] = (0.0, 0.25),
        skip_ops: Sequence[str] = ("pool", "identity", "none"),
        filter_multipliers: Sequence[float] = (0.75, 1.0, 1.25),
        layer_deltas: Sequence[int] = (-1, 0, 1),
        fixed_blocks: Mapping[int, str | BlockSpec] | None = None,
        filter_divisor: int = 4,
        input_shape: tuple[int, int, int] = (224, 224, 3),
        classes: int = 1000,
        depth_multiplier: float = 1.0,
        stem_filters: int = 32,
        head_filters: int = 1280,
        dropout_rate: float = 0.2,
    ):
        if isinstance(skeleton, (str, bytes)) or not isinstance(skeleton, Sequence) or not skeleton:
            raise ValueError(
                f"`skeleton` must be a non-empty list of (t, c, n, s) rows; received {skeleton!r}."
            )
        if len(skeleton) > MAX_BLOCKS:
            raise ValueError(f"`skeleton` must have at most {MAX_BLOCKS} rows; received {len(skeleton)}.")
        rows = []
        for index, row in enumerate(skeleton):
            if not isinstance(row, SkeletonBlock):
                if not (isinstance(row, (tuple, list)) and len(row) == 4):
                    raise ValueError(
                        f"`skeleton[{index}]` must be (t, c, n, s) with positive integers; received {row!r}."
                    )
                try:
                    row = SkeletonBlock(*row)
                except ValueError as error:
                    raise ValueError(f"`skeleton[{index}]`: {error}") from None
            rows.append(row)
        self.skeleton = tuple(rows)
        self.conv_ops = check_choices(
            "conv_ops",
            conv_ops,
            lambda v: isinstance(v, str) and _CONV_OP.fullmatch(v) is not None,
            f"'conv', 'dconv' or 'mbconv<E>' with 1 <= E <= {MAX_EXPANSION}",
        )
        for op in self.conv_ops:
            if op.startswith("mbconv") and int(op[len("mbconv") :]) > MAX_EXPANSION:
                raise ValueError(
                    f"`conv_ops` must be 'conv', 'dconv' or 'mbconv<E>' with 1 <= E <= {MAX_EXPANSION}; "
                    f"received {op!r}."
                )
        self.kernel_sizes = check_choices(
            "kernel_sizes",
            kernel_sizes,
            lambda v: is_integer(v) and 1 <= v <= MAX_KERNEL and v % 2 == 1,
            f"odd positive integers <= {MAX_KERNEL}",
        )
        self.se_ratios = check_choices(
            "se_ratios", se_ratios, lambda v: is_number(v) and 0 <= v <= 1, "numbers in [0, 1]"
        )
        self.skip_ops = check_choices(
            "skip_ops",
            skip_ops,
            lambda v: isinstance(v, str) and v in ("pool", "identity", "none"),
            "'pool', 'identity', 'none'",
        )
        self.filter_multipliers = check_choices(
            "filter_multipliers",
            filter_multipliers,
            lambda v: is_number(v) and 0 < v <= MAX_MULTIPLIER,
            f"positive numbers <= {MAX_MULTIPLIER:g}",
        )
        self.layer_deltas = check_choices(
            "layer_deltas",
            layer_deltas,
            lambda v: is_integer(v) and -MAX_REPEATS <= v <= MAX_REPEATS,
            f"integers in [-{MAX_REPEATS}, {MAX_REPEATS}]",
        )
        if fixed_blocks is None:
            fixed_blocks = {i: s for i, s in DEFAULT_FIXED_BLOCKS.items() if i < len(self.skeleton)}
        if not isinstance(fixed_blocks, Mapping):
            raise ValueError(
                f"`fixed_blocks` must be a dict {{index: block string}}; received {fixed_blocks!r}."
            )
        self.fixed_blocks: dict[int, BlockSpec] = {}
        for index, block in fixed_blocks.items():
            if not is_integer(index) or not 0 <= index < len(self.skeleton):
                raise ValueError(
                    f"`fixed_blocks` keys must be block indices in [0, {len(self.skeleton) - 1}]; "
                    f"received {index!r}."
                )
            if not isinstance(block, (str, BlockSpec)):
                raise ValueError(
                    f"`fixed_blocks[{index}]` must be a block string or a BlockSpec; received {block!r}."
                )
            try:
                self.fixed_blocks[int(index)] = decode_block(block) if isinstance(block, str) else block
            except ValueError as error:
                raise ValueError(f"`fixed_blocks[{index}]`: {error}") from None
        if not self.searched_blocks:
            raise ValueError("Every block is fixed: nothing is left to search. Fix fewer blocks.")
        self.filter_divisor = check_int("filter_divisor", filter_divisor, minimum=1, maximum=MAX_FILTERS)
        # Every candidate must fit the architecture's bounds: checked here, against the largest choices,
        # rather than when a trial decodes its values.
        for index in self.searched_blocks:
            row = self.skeleton[index]
            if row.repeats + max(self.layer_deltas) > MAX_REPEATS:
                raise ValueError(
                    f"`layer_deltas` must keep every block at most {MAX_REPEATS} layers deep; received "
                    f"{list(self.layer_deltas)}, which gives skeleton[{index}] (n={row.repeats}) "
                    f"{row.repeats + max(self.layer_deltas)} layers."
                )
            widest = self._width(row.filters, max(self.filter_multipliers))
            if widest > MAX_FILTERS:
                raise ValueError(
                    f"`filter_multipliers` must keep every width at most {MAX_FILTERS} filters; received "
                    f"{list(self.filter_multipliers)}, which gives skeleton[{index}] (c={row.filters}) "
                    f"{widest} filters."
                )
        if not (
            isinstance(input_shape, (tuple, list))
            and len(input_shape) == 3
            and all(is_integer(d) and 0 < d <= MAX_INPUT_SIZE for d in input_shape)
        ):
            raise ValueError(
                f"`input_shape` must be a concrete (height, width, channels) of positive integers <= "
                f"{MAX_INPUT_SIZE}, since every candidate's latency is measured; received {input_shape!r}."
            )
        self.input_shape = tuple(int(d) for d in input_shape)
        self.classes = check_int("classes", classes, minimum=1, maximum=MAX_CLASSES)
        self.depth_multiplier = check_number(
            "depth_multiplier", depth_multiplier, low=0, high=MAX_MULTIPLIER, low_open=True
        )
        self.stem_filters = check_int("stem_filters", stem_filters, minimum=1, maximum=MAX_FILTERS)
        self.head_filters = check_int("head_filters", head_filters, minimum=1, maximum=MAX_FILTERS)
        self.dropout_rate = check_number("dropout_rate", dropout_rate, low=0, high=1, high_open=True)
        # Decoding the defaults checks the fixed blocks against the rest, with ArchSpec's messages.
        self.decode(self.default_values())

    @property
    def searched_blocks(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.skeleton)) if i not in self.fixed_blocks)

    @property
    def choices_per_block(self) -> int:
        return math.prod(len(choices) for choices in self._choices().values())

    @property
    def size(self) -> int:
        """Number of architectures in the space (counting choice combinations)."""
        return self.choices_per_block ** len(self.searched_blocks)

    @property
    def log10_size(self) -> float:
        return len(self.searched_blocks) * math.log10(self.choices_per_block)

    def _choices(self) -> dict[str, tuple]:
        return {
            "conv_op": self.conv_ops,
            "kernel": self.kernel_sizes,
            "se": self.se_ratios,
            "skip": self.skip_ops,
            "filters": self.filter_multipliers,
            "layers": self.layer_deltas,
        }

    @staticmethod
    def hp_name(block_index: int, decision: str) -> str:
        """The hyperparameter name of one decision, e.g. `block3_kernel` (blocks count from 1)."""
        return f"block{block_index + 1}_{decision}"

    def declare(self, hp: keras_tuner.HyperParameters) -> None:
        """Declares every decision as a `Choice` hyperparameter, in block order."""
        for index in self.searched_blocks:
            for decision, choices in self._choices().items():
                hp.Choice(
                    self.hp_name(index, decision), list(choices), ordered=decision in ("filters", "layers")
                )

    def sample_values(
        self, count: int, *, seed: int = 0, exclude: Sequence[ArchSpec] = ()
    ) -> list[dict[str, Any]]:
        """Hyperparameter values of `count` distinct random architectures, every decision drawn uniformly.

        Args:
            count: How many architectures.
            seed: Seed of the draw (the same seed draws the same architectures).
            exclude: Architectures not to draw, e.g. those a predictor was calibrated on.

        Returns:
            A list of values dicts (`decode` turns each into its `ArchSpec`); fewer than `count` only when
            the space has fewer distinct architectures left.

        Example:

        ```python
        values = MnasSearchSpace(input_shape=(96, 96, 3)).sample_values(20, seed=1)
        ```
        """
        import random

        import keras_tuner

        hp = keras_tuner.HyperParameters()
        self.declare(hp)
        rng = random.Random(seed)
        seen = {arch.block_strings for arch in exclude}
        found: list[dict[str, Any]] = []
        attempts = 0
        while len(found) < count and attempts < 100 * count + 1000:
            attempts += 1
            values = {parameter.name: rng.choice(list(parameter.values)) for parameter in hp.space}
            block_strings = self.decode(values).block_strings
            if block_strings not in seen:
                seen.add(block_strings)
                found.append(values)
        return found

    def sample_architectures(
        self, count: int, *, seed: int = 0, exclude: Sequence[ArchSpec] = ()
    ) -> list[ArchSpec]:
        """`count` distinct random architectures of the space: `sample_values`, decoded.

        Example:

        ```python
        archs = MnasSearchSpace(input_shape=(96, 96, 3)).sample_architectures(20, seed=1)
        ```
        """
        return [self.decode(values) for values in self.sample_values(count, seed=seed, exclude=exclude)]

    def default_values(self) -> dict[str, Any]:
        """The skeleton's own choices where they are available, else each decision's first choice."""
        preferred = {"filters": 1.0, "layers": 0, "skip": "identity", "conv_op": "mbconv6"}
        values = {}
        for index in self.searched_blocks:
            for decision, choices in self._choices().items():
                want = preferred.get(decision)
                values[self.hp_name(index, decision)] = want if want in choices else choices[0]
        return values

    def architecture(self, values: Mapping[str, Any] | keras_tuner.HyperParameters) -> ArchSpec:
        """The architecture a trial's values describe; decisions they leave out take `default_values()`.

        A trial's values can lack a decision (KerasTuner records only the hyperparameters the trial saw),
        and every reader of a trial (the hypermodel, `SearchProject`, the lookup table) fills them the same
        way through this method.

        Args:
            values: A `{name: value}` dict or a `keras_tuner.HyperParameters`.

        Returns:
            The `ArchSpec`.

        Raises:
            ValueError: when a value is not one of its decision's choices.

        Example:

        ```python
        space = MnasSearchSpace(input_shape=(32, 32, 3), classes=10)
        space.architecture({"block2_kernel": 5})  # every other decision at its default
        ```
        """
        if not isinstance(values, Mapping):
            values = values.values
        return self.decode({**self.default_values(), **values})

    def _width(self, filters: int, multiplier: float) -> int:
        divisor = self.filter_divisor
        scaled = filters * multiplier
        return max(divisor, int(scaled / divisor + 0.5) * divisor)

    def decode(self, values: Mapping[str, Any] | keras_tuner.HyperParameters) -> ArchSpec:
        """Turns a trial's hyperparameter values into an architecture spec.

        Args:
            values: A `{name: value}` dict or a `keras_tuner.HyperParameters`.

        Returns:
            The `ArchSpec`, which `keras_mnas.applications.MnasNet(arch)` builds at any width and resolution.
        """
        if not isinstance(values, Mapping):  # keras_tuner.HyperParameters, without importing KerasTuner
            values = values.values
        blocks = []
        width = self.stem_filters
        for index, row in enumerate(self.skeleton):
            if index in self.fixed_blocks:
                block = self.fixed_blocks[index].replace(input_filters=width)
            else:
                choice = {}
                for decision, choices in self._choices().items():
                    name = self.hp_name(index, decision)
                    if name not in values:
                        raise ValueError(f"Missing hyperparameter {name!r}; expected one of {list(choices)}.")
                    # `True in (0, 1)` holds in Python: a boolean is never a choice here.
                    if isinstance(values[name], bool) or values[name] not in choices:
                        raise ValueError(
                            f"Hyperparameter {name!r} must be one of {list(choices)}; "
                            f"received {values[name]!r}."
                        )
                    choice[decision] = values[name]
                op = choice["conv_op"]
                expand = int(op[len("mbconv") :]) if op.startswith("mbconv") else 1
                block = BlockSpec(
                    repeats=max(1, row.repeats + choice["layers"]),
                    kernel_size=choice["kernel"],
                    strides=(row.stride, row.stride),
                    input_filters=width,
                    output_filters=self._width(row.filters, choice["filters"]),
                    expand_ratio=expand,
                    se_ratio=choice["se"] or None,
                    op="mbconv" if op.startswith("mbconv") else op,
                    skip=choice["skip"],
                )
            blocks.append(block)
            width = block.output_filters
        return ArchSpec(
            blocks=tuple(blocks),
            stem_filters=self.stem_filters,
            head_filters=self.head_filters,
            dropout_rate=self.dropout_rate,
            name="mnas_candidate",
        )

    def cost(self, arch: ArchSpec):
        """Parameters and mult-adds of a candidate at this space's resolution, width and classes."""
        return count_cost(
            arch, input_shape=self.input_shape, classes=self.classes, depth_multiplier=self.depth_multiplier
        )

    def build(self, arch: ArchSpec | str, **kwargs: Any):
        """Builds a candidate with this space's input shape, classes and width multiplier."""
        return build_model(
            get_architecture(arch),
            input_shape=self.input_shape,
            classes=self.classes,
            depth_multiplier=self.depth_multiplier,
            **kwargs,
        )

    def network_kwargs(self) -> dict[str, Any]:
        """The `keras_mnas.build_model` arguments every candidate of this space is built with.

        They are also what a latency lookup table needs to predict a candidate from its `ArchSpec`.

        Example:

        >>> MnasSearchSpace(input_shape=(96, 96, 3), classes=10).network_kwargs()
        {'input_shape': (96, 96, 3), 'classes': 10, 'depth_multiplier': 1.0}
        """
        return {
            "input_shape": tuple(self.input_shape),
            "classes": self.classes,
            "depth_multiplier": self.depth_multiplier,
        }

    def layer_configs(self, include_preprocessing: bool = False) -> list[LayerConfig]:
        """Every distinct latency-table entry a candidate of this space can contain, computed exactly.

        Blocks are independent in the space, so a searched block contributes, for every choice of operation,
        kernel, SE ratio, skip op and output width, and every input width its predecessor can produce: its
        first layer (with the block's stride) and, when some layer choice gives it two layers or more, one
        repeated layer (stride 1, input width = output width). Choices that build the same layer (an identity
        skip where shapes change builds no residual) count once. The input resolution of every block is
        fixed by the skeleton's strides. Candidates are built as `MnasHyperModel` builds them: with the
        classifier, softmax, 'same' padding.

        Args:
            include_preprocessing: Whether candidates rescale and normalise their inputs themselves (as
                `MnasHyperModel(include_preprocessing=True)` builds them): that adds one entry.

        Returns:
            The `keras_mnas.latency.LayerConfig`s, sorted by network position and then by key.

        Example:

        ```python
        len(MnasSearchSpace(input_shape=(96, 96, 3)).layer_configs())  # 1975
        ```
        """
        multiplier = self.depth_multiplier
        found: dict[str, tuple[int, LayerConfig]] = {}

        def add(position, config):
            found.setdefault(config.key, (position, config))

        # The stem (and preprocessing) of any architecture of the space; the one-block body is a placeholder.
        start = network_configs(
            ArchSpec(blocks=("r1_k1_s11_i8_o8",), stem_filters=self.stem_filters),
            input_shape=self.input_shape,
            depth_multiplier=multiplier,
            include_preprocessing=include_preprocessing,
        )[: 2 if include_preprocessing else 1]
        for config in start:
            add(0, config)
        size = start[-1].output_size
        defaults = self.default_values()
        decisions = (
            ("conv_op", self.conv_ops),
            ("kernel", self.kernel_sizes),
            ("se", self.se_ratios),
            ("skip", self.skip_ops),
            ("filters", self.filter_multipliers),
        )
        # Unscaled widths that can enter each block (decode's widths; plan_layers applies the multiplier).
        incoming = {self.stem_filters}
        for index in range(len(self.skeleton)):
            if index in self.fixed_blocks:
                blocks = [self.fixed_blocks[index]]
            else:
                # The layer choice only decides how many repeated layers there are: take the most layers.
                most_layers = max(self.layer_deltas, key=lambda delta: self.skeleton[index].repeats + delta)
                blocks = []
                for combination in itertools.product(*(choices for _, choices in decisions)):
                    values = dict(defaults)
                    for (decision, _), value in zip(decisions, combination, strict=True):
                        values[self.hp_name(index, decision)] = value
                    values[self.hp_name(index, "layers")] = most_layers
                    blocks.append(self.decode(values).blocks[index])
            for block in blocks:
                for in_filters in sorted(incoming):
                    repeats = min(block.repeats, 2)  # every repeated layer of a block is configured alike
                    arch = ArchSpec(blocks=(block.replace(input_filters=in_filters, repeats=repeats),))
                    _, plans = plan_layers(arch.replace(stem_filters=in_filters), multiplier)
                    layer_size = size
                    for plan in plans:
                        config = LayerConfig.from_plan(plan, layer_size)
                        add(1 + index, config)
                        layer_size = config.output_size
            strides = blocks[0].strides
            size = (math.ceil(size[0] / strides[0]), math.ceil(size[1] / strides[1]))
            incoming = {block.output_filters for block in blocks}
        for in_filters in sorted(incoming):
            scaled = round_filters(in_filters, multiplier)
            add(len(self.skeleton) + 1, LayerConfig("head", size, scaled, self.head_filters))
        add(
            len(self.skeleton) + 2,
            LayerConfig("classifier", size, self.head_filters, self.classes, mode="softmax"),
        )
        return [config for _, config in sorted(found.values(), key=lambda item: (item[0], item[1].key))]

    def get_config(self) -> dict[str, Any]:
        """A JSON-serialisable description; a resumed search compares it with the saved one."""
        return {
            "skeleton": [dataclasses.astuple(row) for row in self.skeleton],
            "conv_ops": list(self.conv_ops),
            "kernel_sizes": list(self.kernel_sizes),
            "se_ratios": list(self.se_ratios),
            "skip_ops": list(self.skip_ops),
            "filter_multipliers": list(self.filter_multipliers),
            "layer_deltas": list(self.layer_deltas),
            "fixed_blocks": {str(i): str(b) for i, b in sorted(self.fixed_blocks.items())},
            "filter_divisor": self.filter_divisor,
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "depth_multiplier": self.depth_multiplier,
            "stem_filters": self.stem_filters,
            "head_filters": self.head_filters,
            "dropout_rate": self.dropout_rate,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MnasSearchSpace:
        """Rebuilds a space from `get_config()` (the inverse); refuses a config of another shape by name."""
        if not isinstance(config, Mapping):
            raise ValueError(
                f"`config` must be a dict from MnasSearchSpace.get_config(); received {config!r}."
            )
        config = dict(config)
        fixed = config.get("fixed_blocks")
        if isinstance(fixed, Mapping):
            # Saved as JSON, whose keys are strings: "0", not 0. Anything else stays as it is, to be refused.
            config["fixed_blocks"] = {
                int(i) if isinstance(i, str) and re.fullmatch(r"[0-9]{1,3}", i, re.ASCII) else i: b
                for i, b in fixed.items()
            }
        if isinstance(config.get("skeleton"), list):
            config["skeleton"] = [tuple(row) if isinstance(row, list) else row for row in config["skeleton"]]
        if isinstance(config.get("input_shape"), list):
            config["input_shape"] = tuple(config["input_shape"])
        known = set(inspect.signature(cls).parameters)
        unknown = sorted(map(str, set(config) - known))
        if unknown:
            raise ValueError(f"Unknown MnasSearchSpace settings {unknown}; expected some of {sorted(known)}.")
        return cls(**config)

    def __repr__(self) -> str:
        return (
            f"MnasSearchSpace({len(self.searched_blocks)} searched blocks x {self.choices_per_block} choices "
            f"= 10^{self.log10_size:.1f} architectures, input {self.input_shape}, {self.classes} classes)"
        )


def __getattr__(name: str) -> Any:
    # MnasHyperModel subclasses keras_tuner.HyperModel: it lives in its own module so that reading a space
    # (SearchProject, `keras-mnas results`) does not import KerasTuner and TensorFlow.
    if name == "MnasHyperModel":
        from keras_mnas.search.hypermodel import MnasHyperModel

        return MnasHyperModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
