import keras_tuner
import numpy as np
import pytest

from keras_mnas import applications
from keras_mnas.search.space import MnasHyperModel, MnasSearchSpace, SkeletonBlock


def test_default_space_is_the_papers():
    space = MnasSearchSpace()
    assert space.choices_per_block == 432
    assert space.searched_blocks == (1, 2, 3, 4, 5)
    assert space.size == 432**5
    assert 13.0 < space.log10_size < 13.3
    assert "432 choices" in repr(space)


def test_declared_hyperparameters_cover_every_decision():
    space = MnasSearchSpace(input_shape=(32, 32, 3), classes=10)
    hp = keras_tuner.HyperParameters()
    MnasHyperModel(space).declare_hyperparameters(hp)
    names = [p.name for p in hp.space]
    assert len(names) == 5 * 6
    assert names[:6] == [f"block2_{d}" for d in ("conv_op", "kernel", "se", "skip", "filters", "layers")]
    assert hp.get("block2_conv_op") in ("conv", "dconv", "mbconv3", "mbconv6")


def test_values_decode_to_block_strings():
    space = MnasSearchSpace(input_shape=(32, 32, 3), classes=10)
    values = space.default_values()
    values.update(
        {
            "block3_conv_op": "conv",
            "block3_kernel": 5,
            "block3_se": 0.25,
            "block3_skip": "pool",
            "block3_filters": 1.25,
            "block3_layers": 1,
            "block4_conv_op": "dconv",
            "block4_layers": -1,
            "block4_filters": 0.75,
        }
    )
    arch = space.decode(values)
    assert arch.block_strings[0] == "r1_k3_s11_e1_i32_o16_noskip"  # fixed block
    assert arch.block_strings[2] == "r4_k5_s22_i24_o40_se0.25_conv_poolskip"  # 32 x 1.25, 3 + 1 layers
    assert arch.block_strings[3] == "r3_k3_s22_i40_o48_dconv"  # 64 x 0.75, 4 - 1 layers, input follows
    # A searched architecture becomes an application at any width and resolution.
    model = applications.MnasNet(arch, input_shape=(64, 64, 3), classes=10, depth_multiplier=0.5)
    assert model.output.shape == (None, 10)


def test_layers_never_drop_below_one():
    space = MnasSearchSpace(input_shape=(32, 32, 3), classes=10, fixed_blocks={})
    values = space.default_values()
    values["block1_layers"] = -1  # MobileNetV2's first block has a single layer
    assert space.decode(values).blocks[0].repeats == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"conv_ops": ("conv", "sepconv")}, "`conv_ops` must be"),
        ({"kernel_sizes": (3, 4)}, "odd positive integers"),
        ({"se_ratios": (0, 2)}, r"numbers in \[0, 1\]"),
        ({"skip_ops": ("pool", "dense")}, "`skip_ops` must be"),
        ({"filter_multipliers": ()}, "non-empty"),
        ({"kernel_sizes": (3, 3)}, "without repeats"),
        ({"fixed_blocks": {9: "r1_k3_s11_e1_i32_o16"}}, r"block indices in \[0, 6\]"),
        ({"fixed_blocks": {i: "r1_k3_s11_e1_i32_o16" for i in range(7)}}, "nothing is left to search"),
        ({"input_shape": (None, None, 3)}, "concrete"),
        ({"skeleton": [(6, 24, 2)]}, r"\(t, c, n, s\)"),
        ({"classes": 0}, "`classes` must be an integer >= 1"),
    ],
)
def test_invalid_configurations_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MnasSearchSpace(**kwargs)


def test_decode_rejects_values_outside_the_space():
    space = MnasSearchSpace()
    values = space.default_values()
    values["block2_kernel"] = 7
    with pytest.raises(ValueError, match=r"'block2_kernel' must be one of \[3, 5\]; received 7"):
        space.decode(values)


def test_config_round_trip():
    space = MnasSearchSpace(kernel_sizes=(3, 5, 7), input_shape=(64, 64, 3), classes=5)
    again = MnasSearchSpace.from_config(space.get_config())
    assert again.get_config() == space.get_config()
    assert again.choices_per_block == 432 // 2 * 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"space": "mnasnet"}, "space must be a MnasSearchSpace; received str"),
        ({"learning_rate": 0}, "`learning_rate` must be a finite number > 0; received 0"),
        ({"bn_momentum": 1.0}, "`bn_momentum` must be a finite number >= 0 and < 1; received 1.0"),
        ({"include_preprocessing": 1}, r"include_preprocessing must be True or False; received 1 \(int\)"),
        (
            {"space": MnasSearchSpace(input_shape=(32, 32, 1)), "include_preprocessing": True},
            "needs 3 input channels; received 1",
        ),
    ],
)
def test_hypermodel_refuses_bad_arguments_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MnasHyperModel(**kwargs)


def test_hypermodel_builds_trainable_candidates():
    space = MnasSearchSpace(input_shape=(32, 32, 3), classes=4, depth_multiplier=0.25)
    hypermodel = MnasHyperModel(space, optimizer="sgd")
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values["block3_conv_op"] = "conv"
    model = hypermodel.build(hp)
    assert model.get_layer("block3a_conv") is not None
    assert model.optimizer.__class__.__name__ == "SGD"
    x = np.random.RandomState(0).rand(8, 32, 32, 3).astype("float32")
    history = model.fit(x, np.arange(8) % 4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert hypermodel.architecture(hp).blocks[2].op == "conv"


@pytest.mark.parametrize(
    "loss, labels",
    [
        ("sparse_categorical_crossentropy", np.arange(8) % 4),
        ("categorical_crossentropy", np.eye(4, dtype="float32")[np.arange(8) % 4]),
    ],
)
def test_candidates_train_after_a_single_trace(loss, labels):
    # A second trace of the training step costs a CPU candidate as much as its whole proxy training.
    from keras_mnas.search import MOBILENET_V2_SKELETON

    space = MnasSearchSpace(MOBILENET_V2_SKELETON[:2], input_shape=(16, 16, 3), classes=4, head_filters=32)
    model = MnasHyperModel(space, loss=loss).build(keras_tuner.HyperParameters())
    assert model.optimizer.built
    traces = []
    train_step = model.train_step
    model.train_step = lambda data: traces.append(1) or train_step(data)
    x = np.random.RandomState(0).rand(8, 16, 16, 3).astype("float32")
    history = model.fit(x, labels, validation_data=(x, labels), batch_size=4, epochs=2, verbose=0)
    assert len(traces) == 1
    predicted = np.argmax(model.predict(x, verbose=0), axis=-1)
    expected = np.mean(predicted == np.arange(8) % 4)
    assert history.history["val_accuracy"][-1] == pytest.approx(expected)


def test_random_architectures_are_distinct_seeded_and_respect_exclusions():
    space = MnasSearchSpace(input_shape=(32, 32, 3), classes=4)
    first = [arch.block_strings for arch in space.sample_architectures(10, seed=3)]
    assert len(set(first)) == 10
    assert [a.block_strings for a in space.sample_architectures(10, seed=3)] == first
    assert [space.decode(v).block_strings for v in space.sample_values(10, seed=3)] == first
    excluded = space.sample_architectures(5, seed=3)
    others = space.sample_architectures(10, seed=3, exclude=excluded)
    assert not {a.block_strings for a in others} & set(first[:5])


def test_architecture_fills_the_decisions_the_values_leave_out():
    space = MnasSearchSpace(input_shape=(32, 32, 3), classes=10)
    arch = space.architecture({"block2_kernel": 5})
    assert arch == space.decode({**space.default_values(), "block2_kernel": 5})
    assert arch.blocks[1].kernel_size == 5
    assert space.architecture({}) == space.decode(space.default_values())
    hp = keras_tuner.HyperParameters()
    hp.Fixed("block2_kernel", 5)
    assert space.architecture(hp) == arch  # KerasTuner's values, as a hypermodel receives them
    assert MnasHyperModel(space).architecture(hp) == arch
    with pytest.raises(ValueError, match=r"'block2_kernel' must be one of \[3, 5\]; received 7"):
        space.architecture({"block2_kernel": 7})


def test_the_hypermodel_keeps_its_import_path_from_the_space_module():
    from keras_mnas.search import hypermodel, space

    assert space.MnasHyperModel is hypermodel.MnasHyperModel is MnasHyperModel
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        space.Nothing  # noqa: B018


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"filter_multipliers": [1e308]},
            r"`filter_multipliers` must be a non-empty list of positive numbers <= 16",
        ),
        (
            {
                "skeleton": [(1, 16, 1, 1), (6, 2048, 1, 2)],
                "fixed_blocks": {},
                "filter_multipliers": [1.0, 16.0],
            },
            "`filter_multipliers` must keep every width at most 16384 filters",
        ),
        ({"depth_multiplier": 1e308}, r"`depth_multiplier` must be a finite number > 0 and <= 16"),
        (
            {"layer_deltas": [0, 10**12]},
            r"`layer_deltas` must be a non-empty list of integers in \[-64, 64\]",
        ),
        ({"layer_deltas": [0, 63]}, "`layer_deltas` must keep every block at most 64 layers deep"),
        ({"conv_ops": ["mbconv6\n"]}, "`conv_ops` must be"),
        ({"conv_ops": ["mbconv65"]}, "`conv_ops` must be"),
        ({"kernel_sizes": [33]}, "odd positive integers <= 31"),
        ({"stem_filters": 0}, "`stem_filters` must be an integer >= 1"),
        ({"head_filters": 2.5}, "`head_filters` must be an integer >= 1"),
        ({"dropout_rate": 1.0}, "`dropout_rate` must be a finite number >= 0 and < 1"),
        ({"skeleton": [(1, -16, 1, 1), (6, 24, 2, 2)]}, r"`skeleton\[0\]`: `SkeletonBlock.filters` must be"),
        ({"fixed_blocks": {True: "r1_k3_s11_e1_i32_o16_noskip"}}, r"`fixed_blocks` keys .*; received True"),
        ({"fixed_blocks": {0: "r1_k3 _s11_e1_i32_o16"}}, r"`fixed_blocks\[0\]`: Malformed block string"),
        ({"input_shape": (8, 8, 10**5)}, "`input_shape` must be a concrete"),
        ({"classes": 10**7}, "`classes` must be an integer >= 1 and <= 1000000"),
    ],
)
def test_every_bad_space_argument_is_refused_up_front_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MnasSearchSpace(**kwargs)


def test_skeleton_blocks_refuse_negative_sizes():
    # Negative filters silently became the filter divisor (4) once decoded.
    with pytest.raises(
        ValueError, match=r"`SkeletonBlock.filters` must be an integer >= 1 and <= 16384; received -5"
    ):
        SkeletonBlock(1, -5, 1, 1)


def test_a_saved_space_config_loads_and_a_bad_one_is_refused_by_name():
    space = MnasSearchSpace(fixed_blocks={0: "r1_k3_s11_e1_i32_o16_noskip"}, input_shape=(32, 32, 3))
    assert MnasSearchSpace.from_config(space.get_config()).get_config() == space.get_config()
    with pytest.raises(ValueError, match=r"Unknown MnasSearchSpace settings \['size'\]"):
        MnasSearchSpace.from_config({**space.get_config(), "size": 3})
    with pytest.raises(ValueError, match="`fixed_blocks` keys must be block indices"):
        MnasSearchSpace.from_config({**space.get_config(), "fixed_blocks": {"first": "r1_k3_s11_i8_o8"}})
    values = {**space.default_values(), "block2_layers": True}  # True == 1, but not a choice
    with pytest.raises(ValueError, match="'block2_layers' must be one of"):
        space.decode(values)
