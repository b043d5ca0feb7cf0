import random

import numpy as np
import pytest

from keras_mnas import ArchSpec, BlockSpec, build_model
from keras_mnas.architecture import OPS, SKIPS
from keras_mnas.counting import count_cost

# Published and computed reference figures: trainable parameters at 224x224, 1000 classes.
REFERENCE_PARAMS = [
    ("a1", 1.0, 3_887_038),
    ("b1", 1.0, 4_383_312),
    ("small", 1.0, 2_030_264),
    ("d1", 1.0, 3_638_404),
    ("d1_320", 1.0, 6_932_240),
    ("a1", 0.35, 1_747_018),
    ("a1", 0.5, 2_082_006),
    ("a1", 0.75, 2_912_278),
    ("a1", 1.4, 6_105_992),
    ("b1", 0.5, 2_218_512),
    ("b1", 0.75, 3_170_208),
    ("b1", 1.4, 7_115_728),
    ("b1", 1.3, 6_282_256),  # torchvision mnasnet1_3
]
REFERENCE_MACS = [
    ("a1", 1.0, 311.6e6),
    ("b1", 1.0, 314.4e6),
    ("small", 1.0, 68.3e6),
    ("a1", 0.35, 61.7e6),
    ("a1", 0.5, 103.2e6),
    ("a1", 0.75, 223.4e6),
    ("a1", 1.4, 586.3e6),
]


@pytest.mark.parametrize("arch, multiplier, expected", REFERENCE_PARAMS)
def test_trainable_params_equal_the_reference(arch, multiplier, expected):
    assert count_cost(arch, depth_multiplier=multiplier).trainable_params == expected


@pytest.mark.parametrize("arch, multiplier, expected", REFERENCE_MACS)
def test_mult_adds_within_one_percent_of_the_reference(arch, multiplier, expected):
    macs = count_cost(arch, depth_multiplier=multiplier).macs
    assert abs(macs - expected) / expected < 0.01


def test_bn_statistics_and_total():
    cost = count_cost("a1")
    assert cost.non_trainable_params == 33_488
    assert cost.params == 3_887_038 + 33_488


def test_macs_scale_with_resolution_and_classes():
    small, large = count_cost("a1", input_shape=(112, 112, 3)), count_cost("a1")
    assert 3.5 < large.macs / small.macs < 4.5
    headless = count_cost("a1", include_top=False)
    assert count_cost("a1").trainable_params - headless.trainable_params == 1280 * 1000 + 1000


def _random_arch(rng):
    blocks = []
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(OPS)
        blocks.append(
            BlockSpec(
                repeats=rng.randint(1, 3),
                kernel_size=rng.choice([3, 5]),
                strides=rng.choice([(1, 1), (2, 2)]),
                input_filters=8,
                output_filters=rng.choice([8, 12, 16, 24]),
                expand_ratio=rng.choice([3, 6]) if op == "mbconv" else 1,
                se_ratio=rng.choice([None, 0.25]),
                op=op,
                skip=rng.choice(SKIPS),
            )
        )
    return ArchSpec(blocks=tuple(blocks), stem_filters=rng.choice([8, 16]), head_filters=64, name="random")


@pytest.mark.parametrize("seed", range(6))
def test_counts_match_the_built_model_for_every_op_and_skip(seed):
    rng = random.Random(seed)
    arch = _random_arch(rng)
    multiplier = rng.choice([0.5, 1.0, 1.25])
    model = build_model(arch, input_shape=(40, 40, 3), classes=7, depth_multiplier=multiplier)
    cost = count_cost(arch, input_shape=(40, 40, 3), classes=7, depth_multiplier=multiplier)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert (cost.trainable_params, cost.non_trainable_params) == (trainable, non_trainable), str(arch)


def test_rejects_undefined_input_shape():
    with pytest.raises(ValueError, match="concrete input_shape"):
        count_cost("a1", input_shape=(None, None, 3))


def test_model_walker_agrees_with_the_analytic_count():
    from keras_mnas.counting import count_model_macs

    arch = _random_arch(random.Random(11))
    model = build_model(arch, input_shape=(40, 40, 3), classes=7)
    assert count_model_macs(model) == count_cost(arch, input_shape=(40, 40, 3), classes=7).macs


def test_model_walker_counts_keras_applications_and_separable_convs():
    import keras

    from keras_mnas.counting import count_model_macs

    mobilenet_v2 = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    assert abs(count_model_macs(mobilenet_v2) - 300e6) / 300e6 < 0.01  # published: 300M mult-adds
    inputs = keras.Input((8, 8, 4))
    outputs = keras.layers.SeparableConv2D(6, 3, padding="same")(inputs)
    assert count_model_macs(keras.Model(inputs, outputs)) == 8 * 8 * (3 * 3 * 4 + 4 * 6)
    with pytest.raises(ValueError, match="defined spatial dimensions"):
        count_model_macs(build_model("small", input_shape=(None, None, 3)))
