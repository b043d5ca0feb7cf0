import doctest

import keras
import pytest
from _fake_source import FOUR_BLOCKS, NETWORK, TWO_BLOCKS

import keras_mnas
from keras_mnas.counting import count_model_macs
from keras_mnas.latency.lut import KINDS, LayerConfig, model_configs, network_configs, network_keys
from keras_mnas.latency.lut import configs as configs_lib


def test_docstring_examples():
    result = doctest.testmod(configs_lib, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_keys_round_trip_for_every_kind():
    configs = [
        *network_configs("a1", input_shape=(96, 80, 3), include_preprocessing=True, padding="symmetric"),
        *network_configs("small", input_shape=(64, 64, 3), include_top=False, pooling="max"),
        *network_configs(FOUR_BLOCKS, classifier_activation=None, **NETWORK),
    ]
    assert {c.kind for c in configs} == set(KINDS)
    for config in configs:
        assert LayerConfig.from_key(config.key) == config


def test_mbconv_with_expansion_one_is_the_depthwise_separable_layer():
    mbconv = LayerConfig("layer", (8, 8), 16, 16, op="mbconv", kernel_size=3, expanded_filters=16)
    dconv = LayerConfig("layer", (8, 8), 16, 16, op="dconv", kernel_size=3)
    assert mbconv == dconv and mbconv.key == "layer:dconv_k3_s11_i16_o16_noskip@8x8"


@pytest.mark.parametrize(
    "key",
    [
        "layer:mbconv_k3_s22_i16_o24@8x8",  # mbconv without its expanded width
        "layer:dconv_k3_s22_i16_e48_o24@8x8",  # an expanded width on a non-MBConv layer
        "layer:mbconv_k3_s22_i16_e48_o24_bogus@8x8",
        "layer:conv_k3_s22_i16_o24_identity@8x8",  # identity is written as no skip token
        "stem:k3_s22_i3_o32",  # no resolution
        "widget:i3@8x8",
        "head:i320@3x3",
        "layer:conv_k3_s2_i16_o24@8x8",
        "",
    ],
)
def test_malformed_keys_are_refused(key):
    with pytest.raises(ValueError, match="Malformed layer configuration key"):
        LayerConfig.from_key(key)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="block"), "kind"),
        (dict(input_size=(8,)), "input_size"),
        (dict(input_filters=0), "input_filters"),
        (dict(op="sepconv"), "op"),
        (dict(skip="dense"), "skip"),
        (dict(padding="valid"), "padding"),
        (dict(kind="pooling", mode="sum"), "mode"),
        (dict(kind="preprocessing", input_filters=1, output_filters=1), "needs 3 input channels"),
    ],
)
def test_bad_configurations_are_refused(kwargs, match):
    fields = dict(kind="layer", input_size=(8, 8), input_filters=16, output_filters=16, op="dconv")
    fields.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LayerConfig(**fields)


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        ("a1", {}),
        ("b1", dict(include_preprocessing=True, padding="symmetric")),
        ("small", dict(include_top=False, pooling="avg", depth_multiplier=0.5)),
        ("d1", dict(include_top=False)),
        (FOUR_BLOCKS, dict(classes=7, classifier_activation=None)),
    ],
)
def test_a_built_model_reads_as_the_configs_of_its_spec(arch, kwargs):
    model = keras_mnas.build_model(arch, input_shape=(48, 40, 3), **kwargs)
    expected = network_configs(arch, input_shape=(48, 40, 3), **kwargs)
    assert model_configs(model) == expected
    assert network_keys(arch, input_shape=(48, 40, 3), **kwargs) == [c.key for c in expected]
    # The pieces' mult-adds add up to the network's: the table covers every layer that computes.
    pieces = sum(count_model_macs(c.build_model()) for c in expected)
    assert pieces == count_model_macs(model)


def test_model_configs_refuses_other_models_and_undefined_shapes():
    inputs = keras.Input((16, 16, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    refused = r"not made by keras_mnas\.build_model.*predicts keras-mnas architectures only"
    with pytest.raises(ValueError, match=refused):
        model_configs(other)
    with pytest.raises(ValueError, match="concrete shape"):
        model_configs(keras_mnas.build_model(TWO_BLOCKS, input_shape=(None, None, 3), classes=3))


def test_network_configs_refuses_bad_inputs():
    with pytest.raises(ValueError, match="input_shape"):
        network_configs("a1", input_shape=(None, 32, 3))
    with pytest.raises(ValueError, match="padding"):
        network_configs("a1", padding="valid")
    with pytest.raises(ValueError, match="classes"):
        network_configs("a1", classes=0)
    with pytest.raises(ValueError, match="Unknown architecture"):
        network_configs("a7")
    with pytest.raises(ValueError, match="needs 3 input channels; received 1"):
        network_keys("a1", input_shape=(32, 32, 1), include_preprocessing=True)
    # As in build_model: the string "False" is truthy and would add a preprocessing entry.
    with pytest.raises(ValueError, match="include_preprocessing must be True or False; received 'False'"):
        network_configs("a1", include_preprocessing="False")


def test_every_entry_is_built_by_the_recipe_that_builds_it_in_a_network():
    # Preprocessing, stem, head and classifier: the same layers, names and weight shapes as in the network.
    model = keras_mnas.build_model(
        "small", input_shape=(40, 40, 3), classes=5, include_preprocessing=True, dropout_rate=0.0
    )
    shapes = {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers}
    configs = model_configs(model)
    assert [c.kind for c in configs[:2]] + [c.kind for c in configs[-2:]] == [
        "preprocessing",
        "stem",
        "head",
        "classifier",
    ]
    for config in configs[:2] + configs[-2:]:
        piece = config.build_model()
        for layer in piece.layers[1:]:  # after the input
            assert shapes[layer.name] == [tuple(w.shape) for w in layer.weights], layer.name
    pooled = keras_mnas.build_model("small", input_shape=(40, 40, 3), include_top=False, pooling="max")
    entry = model_configs(pooled)[-1]
    assert entry.kind == "pooling" and [x.name for x in entry.build_model().layers[1:]] == ["max_pool"]
