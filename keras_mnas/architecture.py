"""MnasNet architectures as data: block strings, their decoder and encoder, and the reference models.

A block string describes one *block*: `repeats` identical layers of one operation, of which only the first
may change resolution and width. The notation is the one of the reference implementation
(`tensorflow/tpu`, `models/official/mnasnet`), extended so that every choice of the MnasNet search space
can be written down:

| token | meaning | example |
|---|---|---|
| `r<N>` | number of layers in the block | `r3` |
| `k<K>` | kernel size | `k5` |
| `s<HW>` | strides, two digits | `s22` |
| `e<E>` | MBConv expansion ratio (MBConv only) | `e6` |
| `i<F>` | input filters (informative: the real input width is used) | `i24` |
| `o<F>` | output filters | `o40` |
| `se<R>` | squeeze-and-excitation ratio | `se0.25` |
| `conv` / `dconv` | the operation: regular conv / depthwise-separable conv (default: MBConv) | `conv` |
| `noskip` / `poolskip` | the skip op: none / pooling (default: identity residual) | `noskip` |

Decoding accepts tokens in any order, but nothing else: no whitespace, ASCII digits only, and sizes within
`MAX_REPEATS`, `MAX_KERNEL`, `MAX_STRIDE`, `MAX_EXPANSION` and `MAX_FILTERS`. Encoding writes the canonical
order above, so
`encode_block(decode_block(s)) == s` for every canonical string, and `decode_block(encode_block(b)) == b`
for every block.

Example:

```python
block = decode_block("r3_k5_s22_e3_i24_o40_se0.25")
block.repeats, block.kernel_size, block.se_ratio  # (3, 5, 0.25)
encode_block(block)  # 'r3_k5_s22_e3_i24_o40_se0.25'
```
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keras_mnas.utils import checks

OPS = ("mbconv", "dconv", "conv")
SKIPS = ("identity", "none", "pool")

# Sane upper bounds on every size. Far above any mobile network (MnasNet-A1 has 4 layers in a block, kernels
# of 5, strides of 2, expansion 6 and 320 filters), low enough that planning, counting and building stay fast.
MAX_REPEATS = 64
MAX_KERNEL = 31
MAX_STRIDE = 9  # one digit per axis: the `s<HW>` token must decode to what it encodes
MAX_EXPANSION = 64
MAX_FILTERS = 16384
MAX_MULTIPLIER = 16.0
MAX_BLOCKS = 64
MAX_CLASSES = 1_000_000  # a classifier far wider than any dataset's labels is a typo, not a model

_OP_WORDS = {"conv": "conv", "dconv": "dconv"}
_SKIP_WORDS = {"noskip": "none", "poolskip": "pool"}
_NUMBER_TOKEN = re.compile(r"(se|r|k|s|e|i|o)(.+)", re.ASCII | re.DOTALL)
# ASCII digits only (Python's int() and float() also read full-width digits, spaces and underscores).
_POSITIVE_INT = re.compile(r"[1-9][0-9]*", re.ASCII)
_RATIO = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e-?[0-9]{1,3})?", re.ASCII)
_ALLOWED = re.compile(r"[a-z0-9._-]+", re.ASCII)
_MAX_BLOCK_STRING = 200  # far longer than any valid block string, short enough to keep decoding instant
_FORMAT = (
    "r<repeats>_k<kernel>_s<HW>[_e<expansion>]_i<in>_o<out>[_se<ratio>][_conv|_dconv][_noskip|_poolskip]"
)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block of a MnasNet-style network.

    Args:
        repeats: Number of identical layers in the block (>= 1).
        kernel_size: Kernel size of the spatial convolution (odd, >= 1).
        strides: Strides of the first layer, `(sh, sw)`; the other layers use 1.
        input_filters: Declared input width. Informative only: the builder uses the real width of the
            tensor it receives (the reference `small` model declares 16 where the stem gives 8).
        output_filters: Output width of every layer of the block.
        expand_ratio: MBConv expansion ratio; must be 1 for `dconv` and `conv`.
        se_ratio: Squeeze-and-excitation ratio relative to the layer's input width, or `None` for no SE.
        op: `"mbconv"` (mobile inverted bottleneck), `"dconv"` (depthwise-separable) or `"conv"` (regular).
        skip: `"identity"` (residual when the shapes allow), `"none"`, or `"pool"` (average-pooled input,
            projected with a 1x1 conv when the width changes, added to the output).
    """

    repeats: int
    kernel_size: int
    strides: tuple[int, int]
    input_filters: int
    output_filters: int
    expand_ratio: int = 1
    se_ratio: float | None = None
    op: str = "mbconv"
    skip: str = "identity"

    def __post_init__(self):
        # Stored in canonical types (a NumPy integer becomes an int), so specs compare, hash and encode alike.
        def size(name, maximum):
            value = checks.check_int(f"BlockSpec.{name}", getattr(self, name), minimum=1, maximum=maximum)
            object.__setattr__(self, name, value)

        size("repeats", MAX_REPEATS)
        size("kernel_size", MAX_KERNEL)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"`BlockSpec.kernel_size` must be odd; received {self.kernel_size}.")
        strides = tuple(self.strides) if isinstance(self.strides, (list, tuple)) else self.strides
        if not (
            isinstance(strides, tuple)
            and len(strides) == 2
            and all(checks.is_integer(s) and 1 <= s <= MAX_STRIDE for s in strides)
        ):
            raise ValueError(
                f"`BlockSpec.strides` must be two integers in [1, {MAX_STRIDE}], e.g. (2, 2); "
                f"received {self.strides!r}."
            )
        object.__setattr__(self, "strides", tuple(int(s) for s in strides))
        size("input_filters", MAX_FILTERS)
        size("output_filters", MAX_FILTERS)
        size("expand_ratio", MAX_EXPANSION)
        checks.check_choice("BlockSpec.op", self.op, OPS)
        checks.check_choice("BlockSpec.skip", self.skip, SKIPS)
        if self.op != "mbconv" and self.expand_ratio != 1:
            raise ValueError(
                f"`BlockSpec.expand_ratio` applies to op='mbconv' only; received op={self.op!r} with "
                f"expand_ratio={self.expand_ratio}."
            )
        ratio = checks.check_number(
            "BlockSpec.se_ratio", self.se_ratio, low=0, high=1, low_open=True, allow_none=True
        )
        object.__setattr__(self, "se_ratio", ratio)

    def replace(self, **changes: Any) -> BlockSpec:
        """Returns a copy with some fields changed (validated like a new spec)."""
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        return encode_block(self)


def _shown(value: Any) -> str:
    # A repr short enough for an error message, whatever was received.
    shown = repr(value)
    return shown if len(shown) <= 120 else f"{shown[:60]}...{shown[-30:]} ({len(shown)} characters)"


def _format_number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def decode_block(block_string: str) -> BlockSpec:
    """Decodes one block string into a `BlockSpec`.

    Args:
        block_string: e.g. `"r2_k3_s22_e6_i16_o24"` or `"r1_k5_s11_i32_o32_conv_poolskip"`.

    Returns:
        The `BlockSpec`.

    Raises:
        ValueError: naming the string and what was expected, for any malformed string.

    Example:

    >>> decode_block("r1_k3_s11_e1_i32_o16_noskip").skip
    'none'
    """
    if not isinstance(block_string, str):
        raise ValueError(
            f"`block_string` must be a str like 'r2_k3_s22_e6_i16_o24'; received {_shown(block_string)}."
        )

    def fail(reason):
        raise ValueError(
            f"Malformed block string {_shown(block_string)}: {reason}. Expected the form {_FORMAT}, "
            "e.g. 'r2_k3_s22_e6_i16_o24_se0.25'."
        )

    if not block_string:
        fail("it is empty")
    if len(block_string) > _MAX_BLOCK_STRING:
        fail(f"it is longer than {_MAX_BLOCK_STRING} characters")
    if any(ch.isspace() for ch in block_string):
        fail("it contains whitespace")
    if not _ALLOWED.fullmatch(block_string):
        fail("it may only contain lowercase ASCII letters, ASCII digits, '.', '-' and '_'")
    fields: dict[str, Any] = {}
    for token in block_string.split("_"):
        if token in _OP_WORDS or token in _SKIP_WORDS:
            key = "op" if token in _OP_WORDS else "skip"
            if key in fields:
                fail(f"more than one {'operation' if key == 'op' else 'skip'} word")
            fields[key] = _OP_WORDS.get(token) or _SKIP_WORDS[token]
            continue
        match = _NUMBER_TOKEN.fullmatch(token)
        if not match:
            fail(f"unknown token {token!r}")
        key, value = match.groups()
        if key in fields:
            fail(f"token {key!r} appears twice")
        if key == "s":
            if not re.fullmatch(r"[1-9][1-9]", value, re.ASCII):
                fail(f"strides must be two digits such as 's11' or 's22', got {token!r}")
            fields[key] = (int(value[0]), int(value[1]))
        elif key == "se":
            if not _RATIO.fullmatch(value):
                fail(f"the SE ratio must be a number, got {token!r}")
            ratio = float(value)
            if not 0 < ratio <= 1:
                fail(f"the SE ratio must be in (0, 1], got {token!r}")
            fields[key] = ratio
        else:
            if not _POSITIVE_INT.fullmatch(value):
                fail(f"{token!r} must be {key!r} followed by a positive integer")
            if len(value) > len(str(MAX_FILTERS)):
                # Refused before int(): no size of a block has this many digits.
                fail(f"{key!r} is followed by a number too large ({len(value)} digits)")
            fields[key] = int(value)
    for required in ("r", "k", "s", "i", "o"):
        if required not in fields:
            fail(f"the required token {required!r} is missing")
    op = fields.get("op", "mbconv")
    if op != "mbconv" and "e" in fields:
        fail(f"{op!r} has no expansion ratio, remove the 'e' token")
    try:
        return BlockSpec(
            repeats=fields["r"],
            kernel_size=fields["k"],
            strides=fields["s"],
            input_filters=fields["i"],
            output_filters=fields["o"],
            expand_ratio=fields.get("e", 1),
            se_ratio=fields.get("se"),
            op=op,
            skip=fields.get("skip", "identity"),
        )
    except (TypeError, ValueError) as error:
        fail(str(error))


def encode_block(block: BlockSpec) -> str:
    """Encodes a `BlockSpec` as its canonical block string (the inverse of `decode_block`).

    Example:

    >>> encode_block(BlockSpec(2, 3, (2, 2), 16, 24, expand_ratio=6))
    'r2_k3_s22_e6_i16_o24'
    """
    if not isinstance(block, BlockSpec):
        raise ValueError(f"`block` must be a BlockSpec; received {type(block).__name__}.")
    tokens = [
        f"r{block.repeats}",
        f"k{block.kernel_size}",
        f"s{block.strides[0]}{block.strides[1]}",
    ]
    if block.op == "mbconv":
        tokens.append(f"e{block.expand_ratio}")
    tokens += [f"i{block.input_filters}", f"o{block.output_filters}"]
    if block.se_ratio is not None:
        tokens.append(f"se{_format_number(block.se_ratio)}")
    if block.op != "mbconv":
        tokens.append(block.op)
    if block.skip != "identity":
        tokens.append({"none": "noskip", "pool": "poolskip"}[block.skip])
    return "_".join(tokens)


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem, blocks and head.

    Args:
        blocks: The blocks, as `BlockSpec`s or block strings.
        stem_filters: Width of the 3x3 stride-2 stem convolution (scaled by the width multiplier).
        head_filters: Width of the 1x1 head convolution (never scaled, as in the reference).
        dropout_rate: Default dropout before the classifier.
        name: A short name used for the Keras model name.

    Example:

    ```python
    arch = ArchSpec.from_strings(
        ["r1_k3_s11_e1_i32_o16_noskip", "r2_k3_s22_e6_i16_o24"], stem_filters=32
    )
    arch.block_strings  # ('r1_k3_s11_e1_i32_o16_noskip', 'r2_k3_s22_e6_i16_o24')
    ```
    """

    blocks: tuple[BlockSpec, ...]
    stem_filters: int = 32
    head_filters: int = 1280
    dropout_rate: float = 0.2
    name: str = "mnasnet"

    def __post_init__(self):
        if isinstance(self.blocks, (str, bytes, Mapping)) or not isinstance(self.blocks, Iterable):
            raise ValueError(
                "`ArchSpec.blocks` must be a sequence of BlockSpec or block strings; "
                f"received {_shown(self.blocks)}."
            )
        blocks = tuple(self.blocks)
        if not blocks:
            raise ValueError("`ArchSpec.blocks` must contain at least one block; received none.")
        if len(blocks) > MAX_BLOCKS:
            raise ValueError(
                f"`ArchSpec.blocks` must hold at most {MAX_BLOCKS} blocks; received {len(blocks)}."
            )
        for block in blocks:
            if not isinstance(block, (str, BlockSpec)):
                raise ValueError(
                    f"`ArchSpec.blocks` must hold BlockSpec or block strings; received {_shown(block)}."
                )
        blocks = tuple(decode_block(b) if isinstance(b, str) else b for b in blocks)
        object.__setattr__(self, "blocks", blocks)
        for name in ("stem_filters", "head_filters"):
            value = checks.check_int(f"ArchSpec.{name}", getattr(self, name), minimum=1, maximum=MAX_FILTERS)
            object.__setattr__(self, name, value)
        rate = checks.check_number("ArchSpec.dropout_rate", self.dropout_rate, low=0, high=1, high_open=True)
        object.__setattr__(self, "dropout_rate", rate)
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", self.name, re.ASCII):
            raise ValueError(
                "`ArchSpec.name` must be 1 to 100 ASCII letters, digits, '_', '.' or '-'; "
                f"received {_shown(self.name)}."
            )

    @classmethod
    def from_strings(cls, block_strings: Sequence[str], **kwargs: Any) -> ArchSpec:
        """Builds a spec from block strings (a single comma-separated string works too).

        In a comma-separated string, whitespace around the commas is ignored; each block string itself
        must have none.
        """
        if isinstance(block_strings, str):
            block_strings = [s for s in (part.strip() for part in block_strings.split(",")) if s]
        if not isinstance(block_strings, Sequence):
            raise ValueError(
                f"`block_strings` must be a list of block strings; received {_shown(block_strings)}."
            )
        return cls(blocks=tuple(decode_block(s) for s in block_strings), **kwargs)

    @property
    def block_strings(self) -> tuple[str, ...]:
        return tuple(encode_block(b) for b in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (the inverse of `from_dict`)."""
        return {
            "name": self.name,
            "blocks": list(self.block_strings),
            "stem_filters": self.stem_filters,
            "head_filters": self.head_filters,
            "dropout_rate": self.dropout_rate,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        if not isinstance(data, Mapping) or "blocks" not in data:
            raise ValueError(
                "An architecture dict needs at least a 'blocks' list of block strings; "
                f"received {_shown(data)}."
            )
        known = {"name", "blocks", "stem_filters", "head_filters", "dropout_rate"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"Unknown architecture fields {sorted(map(str, unknown))}; expected {sorted(known)}."
            )
        if not isinstance(data["blocks"], (list, tuple)):
            raise ValueError(
                f"The architecture dict's 'blocks' must be a list of block strings; received "
                f"{_shown(data['blocks'])}."
            )
        return cls(**{k: (tuple(v) if k == "blocks" else v) for k, v in data.items()})

    def replace(self, **changes: Any) -> ArchSpec:
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        return ", ".join(self.block_strings)


def round_filters(filters: int, multiplier: float, divisor: int = 8) -> int:
    """Scales a width by `multiplier` and rounds it as the reference does.

    The result is a multiple of `divisor`, at least `divisor`, and never more than 10% below the scaled
    value. A multiplier of exactly 1.0 leaves the width untouched (the reference skips rounding when no
    multiplier is set, which is how `d1` keeps its 36-filter block).

    Example:

    >>> round_filters(32, 0.35)
    16
    """
    if not checks.is_number(multiplier) or not 0 < multiplier <= MAX_MULTIPLIER:
        raise ValueError(
            f"`multiplier` (the width multiplier) must be a positive number <= {MAX_MULTIPLIER:g}; "
            f"received {_shown(multiplier)}."
        )
    filters = checks.check_int("filters", filters, minimum=1, maximum=MAX_FILTERS)
    divisor = checks.check_int("divisor", divisor, minimum=1, maximum=MAX_FILTERS)
    if multiplier == 1.0:
        return int(filters)
    scaled = filters * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """One layer of a network with every width resolved: what the builder builds and the counter counts.

    `name` is the layer prefix, e.g. `"block3b"` (third block, second layer).
    """

    name: str
    op: str
    kernel_size: int
    strides: tuple[int, int]
    input_filters: int
    expanded_filters: int
    output_filters: int
    se_filters: int  # 0 when the layer has no squeeze-and-excitation
    skip: str  # "identity", "pool" or "none", after checking that an identity residual is possible

    @property
    def projects_skip(self) -> bool:
        """Whether a pooling skip needs a 1x1 projection because the width changes."""
        return self.skip == "pool" and self.input_filters != self.output_filters


def plan_layers(arch: ArchSpec, depth_multiplier: float = 1.0) -> tuple[int, list[LayerPlan]]:
    """Expands an architecture into its layers with resolved widths.

    Args:
        arch: The architecture.
        depth_multiplier: The width multiplier (the reference's name for it).

    Returns:
        `(stem_filters, layers)`: the scaled stem width and one `LayerPlan` per layer, in order.
    """
    if not isinstance(arch, ArchSpec):
        raise ValueError(f"`arch` must be an ArchSpec; received {type(arch).__name__}.")
    checks.check_number("depth_multiplier", depth_multiplier, low=0, high=MAX_MULTIPLIER, low_open=True)
    stem = round_filters(arch.stem_filters, depth_multiplier)
    width = stem
    plans = []
    for block_index, block in enumerate(arch.blocks):
        out = round_filters(block.output_filters, depth_multiplier)
        for layer_index in range(block.repeats):
            strides = block.strides if layer_index == 0 else (1, 1)
            expanded = width * block.expand_ratio
            se_filters = max(1, int(width * block.se_ratio)) if block.se_ratio else 0
            skip = block.skip
            if skip == "identity" and (strides != (1, 1) or width != out):
                skip = "none"  # an identity residual needs equal shapes
            plans.append(
                LayerPlan(
                    name=f"block{block_index + 1}{_layer_letter(layer_index)}",
                    op=block.op,
                    kernel_size=block.kernel_size,
                    strides=strides,
                    input_filters=width,
                    expanded_filters=expanded,
                    output_filters=out,
                    se_filters=se_filters,
                    skip=skip,
                )
            )
            width = out
    return stem, plans


def _layer_letter(index: int) -> str:
    # a..z, then aa, ab, ... so that names stay unique for very deep blocks
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("a") + remainder) + letters
    return letters


def _reference(name, blocks, stem, dropout):
    return ArchSpec.from_strings(blocks, stem_filters=stem, dropout_rate=dropout, name=name)


#: The reference architectures of `tensorflow/tpu` (models/official/mnasnet), by short name.
ARCHITECTURES: dict[str, ArchSpec] = {
    "a1": _reference(
        "mnasnet_a1",
        "r1_k3_s11_e1_i32_o16_noskip, r2_k3_s22_e6_i16_o24, r3_k5_s22_e3_i24_o40_se0.25, "
        "r4_k3_s22_e6_i40_o80, r2_k3_s11_e6_i80_o112_se0.25, r3_k5_s22_e6_i112_o160_se0.25, "
        "r1_k3_s11_e6_i160_o320",
        32,
        0.2,
    ),
    "b1": _reference(
        "mnasnet_b1",
        "r1_k3_s11_e1_i32_o16_noskip, r3_k3_s22_e3_i16_o24, r3_k5_s22_e3_i24_o40, "
        "r3_k5_s22_e6_i40_o80, r2_k3_s11_e6_i80_o96, r4_k5_s22_e6_i96_o192, "
        "r1_k3_s11_e6_i192_o320_noskip",
        32,
        0.2,
    ),
    "small": _reference(
        "mnasnet_small",
        "r1_k3_s11_e1_i16_o8, r1_k3_s22_e3_i8_o16, r2_k3_s22_e6_i16_o16, "
        "r4_k5_s22_e6_i16_o32_se0.25, r3_k3_s11_e6_i32_o32_se0.25, r3_k5_s22_e6_i32_o88_se0.25, "
        "r1_k3_s11_e6_i88_o144",
        8,
        0.0,
    ),
    "d1": _reference(
        "mnasnet_d1",
        "r1_k3_s11_e9_i32_o24, r3_k3_s22_e9_i24_o36, r5_k3_s22_e9_i36_o48, r4_k5_s22_e9_i48_o96, "
        "r5_k7_s11_e3_i96_o96, r3_k3_s22_e9_i96_o80, r1_k7_s11_e6_i80_o320_noskip",
        32,
        0.2,
    ),
    "d1_320": _reference(
        "mnasnet_d1_320",
        "r3_k5_s11_e6_i32_o24, r4_k7_s22_e9_i24_o36, r5_k5_s22_e9_i36_o48, r5_k7_s22_e6_i48_o96, "
        "r5_k3_s11_e9_i96_o144, r5_k5_s22_e6_i144_o160, r1_k7_s11_e9_i160_o320",
        32,
        0.2,
    ),
}


def get_architecture(arch: str | ArchSpec | Sequence[str] | dict) -> ArchSpec:
    """Resolves a reference name, block strings, a dict or an `ArchSpec` into an `ArchSpec`.

    Example:

    >>> get_architecture("a1").name
    'mnasnet_a1'
    """
    if isinstance(arch, ArchSpec):
        return arch
    if isinstance(arch, dict):
        return ArchSpec.from_dict(arch)
    if isinstance(arch, str):
        key = arch.lower().replace("-", "_")
        for prefix in ("mnasnet_", "mnasnet"):
            if key.startswith(prefix) and key[len(prefix) :] in ARCHITECTURES:
                key = key[len(prefix) :]
        if key in ARCHITECTURES:
            return ARCHITECTURES[key]
        if "_" in arch and any(ch.isdigit() for ch in arch):
            return ArchSpec.from_strings(arch)
        raise ValueError(
            f"Unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}, block strings, "
            "a dict or an ArchSpec."
        )
    if isinstance(arch, Sequence) and all(isinstance(s, str) for s in arch):
        return ArchSpec.from_strings(list(arch))
    raise ValueError(
        f"Expected an architecture name, block strings, a dict or an ArchSpec; received {arch!r}."
    )
