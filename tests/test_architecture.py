import math
import random

import pytest

from keras_mnas.architecture import (
    ARCHITECTURES,
    OPS,
    SKIPS,
    ArchSpec,
    BlockSpec,
    decode_block,
    encode_block,
    get_architecture,
    plan_layers,
    round_filters,
)

REFERENCE_STRINGS = {
    "a1": "r1_k3_s11_e1_i32_o16_noskip, r2_k3_s22_e6_i16_o24, r3_k5_s22_e3_i24_o40_se0.25, "
    "r4_k3_s22_e6_i40_o80, r2_k3_s11_e6_i80_o112_se0.25, r3_k5_s22_e6_i112_o160_se0.25, "
    "r1_k3_s11_e6_i160_o320",
    "small": "r1_k3_s11_e1_i16_o8, r1_k3_s22_e3_i8_o16, r2_k3_s22_e6_i16_o16, "
    "r4_k5_s22_e6_i16_o32_se0.25, r3_k3_s11_e6_i32_o32_se0.25, r3_k5_s22_e6_i32_o88_se0.25, "
    "r1_k3_s11_e6_i88_o144",
}


@pytest.mark.parametrize("name", sorted(REFERENCE_STRINGS))
def test_reference_strings_round_trip_exactly(name):
    strings = [s.strip() for s in REFERENCE_STRINGS[name].split(",")]
    assert [encode_block(decode_block(s)) for s in strings] == strings
    assert list(ARCHITECTURES[name].block_strings) == strings


def test_decode_reference_semantics():
    block = decode_block("r3_k5_s22_e3_i24_o40_se0.25")
    assert block == BlockSpec(3, 5, (2, 2), 24, 40, expand_ratio=3, se_ratio=0.25)
    assert decode_block("r1_k3_s11_e1_i32_o16_noskip").skip == "none"
    assert decode_block("r1_k3_s11_e1_i32_o16").skip == "identity"


@pytest.mark.parametrize(
    "text, op, skip",
    [
        ("r2_k5_s22_i24_o40_conv", "conv", "identity"),
        ("r1_k3_s11_i32_o16_se0.25_dconv_poolskip", "dconv", "pool"),
        ("r4_k3_s22_e6_i40_o80_poolskip", "mbconv", "pool"),
        ("r1_k3_s11_i16_o16_conv_noskip", "conv", "none"),
    ],
)
def test_search_space_ops_are_expressible(text, op, skip):
    block = decode_block(text)
    assert (block.op, block.skip) == (op, skip)
    assert encode_block(block) == text


def test_any_token_order_decodes_to_the_same_block():
    assert decode_block("noskip_o16_i32_e1_s11_k3_r1") == decode_block("r1_k3_s11_e1_i32_o16_noskip")


def test_random_blocks_round_trip():
    rng = random.Random(0)
    for _ in range(500):
        op = rng.choice(OPS)
        block = BlockSpec(
            repeats=rng.randint(1, 6),
            kernel_size=rng.choice([1, 3, 5, 7]),
            strides=rng.choice([(1, 1), (2, 2), (1, 2)]),
            input_filters=rng.randint(1, 512),
            output_filters=rng.randint(1, 512),
            expand_ratio=rng.choice([1, 3, 6, 9]) if op == "mbconv" else 1,
            se_ratio=rng.choice([None, 0.25, 0.5, 0.125]),
            op=op,
            skip=rng.choice(SKIPS),
        )
        text = encode_block(block)
        assert decode_block(text) == block
        assert encode_block(decode_block(text)) == text


@pytest.mark.parametrize(
    "bad, hint",
    [
        ("", "empty"),
        ("r2_k3_s22_e6_i16", "'o' is missing"),
        ("r2_k3_s2_e6_i16_o24", "two digits"),
        ("r2_k3_s22_e6_i16_o24_x7", "unknown token"),
        ("r2_k3_s22_e6_i16_o24_se1.5", "(0, 1]"),
        ("r2_k3_s22_e6_i16_o24_sefoo", "SE ratio must be a number"),
        ("r2_r3_k3_s22_e6_i16_o24", "appears twice"),
        ("r0_k3_s22_e6_i16_o24", "positive integer"),
        ("r2_k4_s22_e6_i16_o24", "odd"),
        ("r2_k3_s22_e6_i16_o24_dconv", "no expansion ratio"),
        ("r2_k3_s22_i16_o24_conv_dconv", "more than one operation"),
        ("r2_k3_s22_i16_o24_noskip_poolskip", "more than one skip"),
        ("r2_k3_s22_e1.5_i16_o24", "positive integer"),
    ],
)
def test_malformed_strings_name_the_string_and_the_problem(bad, hint):
    with pytest.raises(ValueError) as info:
        decode_block(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert hint in message
    assert "Expected the form" in message


def test_decode_rejects_non_strings():
    with pytest.raises(ValueError, match="must be a str"):
        decode_block(None)


@pytest.mark.parametrize(
    "filters, multiplier, expected",
    [
        (32, 0.35, 16),
        (16, 0.5, 8),
        (24, 0.75, 24),
        (40, 1.4, 56),
        (36, 1.0, 36),
        (1280, 1.0, 1280),
        (32, 1.3, 40),
        (112, 0.35, 40),
    ],
)
def test_round_filters_follows_the_reference(filters, multiplier, expected):
    assert round_filters(filters, multiplier) == expected


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "1"])
def test_round_filters_rejects_bad_multipliers(bad):
    with pytest.raises(ValueError, match="width multiplier"):
        round_filters(32, bad)


def test_arch_spec_dict_round_trip_and_names():
    arch = get_architecture("mnasnet-a1")
    assert arch is ARCHITECTURES["a1"]
    assert ArchSpec.from_dict(arch.to_dict()) == arch
    assert get_architecture(list(arch.block_strings)).blocks == arch.blocks
    assert get_architecture(", ".join(arch.block_strings)).blocks == arch.blocks
    with pytest.raises(ValueError, match="Unknown architecture 'a7'"):
        get_architecture("a7")
    with pytest.raises(ValueError, match="Unknown architecture fields"):
        ArchSpec.from_dict({"blocks": ["r1_k3_s11_e1_i32_o16"], "depth": 3})
    with pytest.raises(ValueError, match="at least one block"):
        ArchSpec(blocks=())


def test_plan_layers_resolves_widths_strides_and_skips():
    stem, plans = plan_layers(ARCHITECTURES["a1"])
    assert stem == 32
    assert [p.name for p in plans[:4]] == ["block1a", "block2a", "block2b", "block3a"]
    block2a, block2b = plans[1], plans[2]
    assert block2a.strides == (2, 2) and block2b.strides == (1, 1)
    assert block2a.skip == "none" and block2b.skip == "identity"  # identity only where shapes match
    assert block2a.expanded_filters == 16 * 6 and block2b.input_filters == 24
    block3a = plans[3]
    assert block3a.se_filters == int(24 * 0.25)  # SE width from the layer's input, not the expansion


def test_plan_layers_uses_the_real_input_width():
    # The reference "small" declares i16 for its first block, but the stem gives 8 filters.
    stem, plans = plan_layers(ARCHITECTURES["small"])
    assert stem == 8 and plans[0].input_filters == 8


@pytest.mark.parametrize(
    "bad, hint",
    [
        ("r1000000000_k3_s11_e1_i8_o8", "too large (10 digits)"),  # plan_layers never returned
        ("r65_k3_s11_e1_i8_o8", "`BlockSpec.repeats` must be an integer >= 1 and <= 64"),
        ("r1_k33_s11_e1_i8_o8", "`BlockSpec.kernel_size` must be an integer >= 1 and <= 31"),
        ("r1_k3_s11_e65_i8_o8", "`BlockSpec.expand_ratio` must be an integer >= 1 and <= 64"),
        ("r1_k3_s11_e1_i8_o16385", "`BlockSpec.output_filters` must be an integer >= 1 and <= 16384"),
        ("r1\n_k3_s11_e1_i8_o8", "whitespace"),
        ("r1_k3_s11_e1_i8_o8_se 0.25", "whitespace"),
        (" r1_k3_s11_e1_i8_o8", "whitespace"),
        ("r1_k3_s11_e1_i8_o8\n", "whitespace"),
        ("r\uff11_k3_s11_e1_i8_o8", "ASCII digits"),
        ("r1_k3_s11_e1_i8_o8_se0.2_5", "unknown token"),
        ("r1_k3_s11_e1_i8_o8_se1_000", "unknown token"),
        ("r" + "1" * 4300 + "_k3_s11_i8_o8", "longer than 200 characters"),
    ],
)
def test_block_strings_follow_a_strict_grammar_with_bounded_sizes(bad, hint):
    with pytest.raises(ValueError) as info:
        decode_block(bad)
    assert hint in str(info.value)
    assert "Malformed block string" in str(info.value)
    assert len(str(info.value)) < 600  # a huge input is shortened, not echoed whole


def test_every_block_that_encodes_decodes():
    # Strides (10, 10) encoded as 's1010', which decoding refused: a saved architecture could not be loaded.
    with pytest.raises(ValueError, match=r"`BlockSpec.strides` must be two integers in \[1, 9\]"):
        BlockSpec(1, 3, (10, 10), 8, 8)
    block = BlockSpec(64, 31, (9, 9), 16384, 16384, expand_ratio=64, se_ratio=1e-05)
    assert decode_block(encode_block(block)) == block


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: ArchSpec.from_dict({"blocks": None}),
            "'blocks' must be a list of block strings; received None",
        ),
        (lambda: ArchSpec.from_dict({"blocks": "r1_k3_s11_i8_o8"}), "'blocks' must be a list"),
        (lambda: ArchSpec(blocks=("r1_k3_s11_i8_o8",) * 65), "`ArchSpec.blocks` must hold at most 64 blocks"),
        (lambda: ArchSpec(blocks=("r1_k3_s11_i8_o8",), stem_filters=True), "`ArchSpec.stem_filters` must be"),
        (lambda: ArchSpec(blocks=("r1_k3_s11_i8_o8",), dropout_rate=math.nan), "`ArchSpec.dropout_rate`"),
        (lambda: plan_layers(ARCHITECTURES["a1"], 1e308), r"`depth_multiplier` must be a finite number > 0"),
        (lambda: round_filters(32, 17.0), "`multiplier` .* <= 16"),
    ],
)
def test_architecture_arguments_are_refused_by_name(call, match):
    with pytest.raises(ValueError, match=match):
        call()
