import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_mnas import ArchSpec, build_model
from keras_mnas.builder import get_build_config

TINY = ArchSpec.from_strings(
    [
        "r1_k3_s11_e1_i8_o8_noskip",
        "r2_k3_s22_e3_i8_o16_se0.25",
        "r1_k5_s22_i16_o24_conv_poolskip",
        "r2_k3_s11_i24_o24_se0.25_dconv_poolskip",
    ],
    stem_filters=8,
    head_filters=32,
    name="tiny",
)


def test_layer_names_are_readable_stable_and_unique():
    model = build_model("a1")
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    for expected in [
        "stem_conv",
        "stem_bn",
        "block1a_dwconv",
        "block2a_expand_conv",
        "block2b_add",
        "block3b_dwconv",
        "block3b_se_reduce",
        "block3b_se_expand",
        "block3b_project_conv",
        "top_conv",
        "avg_pool",
        "top_dropout",
        "predictions",
    ]:
        assert expected in names
    assert build_model("a1").get_layer("block3b_dwconv").kernel_size == (5, 5)


def test_every_op_and_skip_builds_and_runs():
    model = build_model(TINY, input_shape=(32, 32, 3), classes=5)
    names = {layer.name for layer in model.layers}
    # Pooling skip where the layer changes stride and width: pooled and projected.
    assert {"block3a_skip_pool", "block3a_skip_conv", "block3a_skip_bn", "block3a_add"} <= names
    # Pooling skip with equal shapes: pooled, not projected.
    assert "block4b_skip_pool" in names and "block4b_skip_conv" not in names
    assert "block3a_conv" in names and "block4a_dwconv" in names and "block4a_expand_conv" not in names
    out = model(np.random.rand(2, 32, 32, 3).astype("float32"))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(np.sum(np.asarray(out), axis=1), 1.0, rtol=1e-5)


def test_symmetric_padding_matches_pytorch_conventions():
    same = build_model(TINY, input_shape=(33, 33, 3), include_top=False)
    symmetric = build_model(TINY, input_shape=(33, 33, 3), include_top=False, padding="symmetric")
    assert same.output.shape == symmetric.output.shape
    pad = symmetric.get_layer("stem_conv_pad")
    assert pad.padding == ((1, 1), (1, 1))
    assert symmetric.get_layer("stem_conv").padding == "valid"
    assert "stem_conv_pad" not in {layer.name for layer in same.layers}


def test_head_pooling_and_input_tensor():
    features = build_model(TINY, input_shape=(32, 32, 3), include_top=False)
    assert features.output.shape == (None, 4, 4, 32)  # the 1x1 head conv belongs to the features
    pooled = build_model(TINY, input_shape=(32, 32, 3), include_top=False, pooling="max")
    assert pooled.output.shape == (None, 32)
    tensor = keras.Input((48, 48, 3))
    model = build_model(TINY, input_tensor=tensor, classes=3)
    assert model.input.shape == (None, 48, 48, 3) and model.output.shape == (None, 3)


def test_bn_conventions_and_preprocessing():
    model = build_model(TINY, input_shape=(32, 32, 3), include_preprocessing=True, bn_epsilon=1e-5)
    bn = model.get_layer("block2a_bn")
    assert bn.epsilon == 1e-5 and bn.momentum == 0.99
    assert model.layers[1].name == "rescaling" and model.layers[2].name == "normalization"
    # A NumPy bool (from a config array, say) counts as a bool.
    plain = build_model(TINY, input_shape=(32, 32, 3), include_preprocessing=np.False_)
    assert "rescaling" not in [layer.name for layer in plain.layers]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"padding": "valid"}, "`padding` must be one of"),
        ({"pooling": "sum"}, "`pooling` must be one of"),
        ({"classes": 0}, "`classes` must be an integer >= 1"),
        ({"classes": 10**9}, "`classes` must be an integer >= 1 and <= 1000000; received 1000000000"),
        ({"dropout_rate": 1.0}, "`dropout_rate` must be a finite number >= 0 and < 1"),
        ({"framework": "jax"}, "`framework` must be one of"),
        # "False" is truthy: taken as given it would silently add the preprocessing layers.
        ({"include_preprocessing": "False"}, "include_preprocessing must be True or False; received 'False'"),
        # ImageNet's mean and standard deviation are per RGB channel: grey inputs fail clearly, not in Keras.
        ({"input_shape": (32, 32, 1), "include_preprocessing": True}, "needs 3 input channels; received 1"),
        (
            {"input_tensor": keras.Input((32, 32, 4)), "include_preprocessing": True},
            "needs 3 input channels; received 4",
        ),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(TINY, **{"input_shape": (32, 32, 3), **kwargs})


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        (TINY, {"input_shape": (32, 32, 3), "classes": 5, "classifier_activation": None}),
        (TINY, {"input_shape": (32, 32, 3), "depth_multiplier": 0.75, "include_preprocessing": True}),
        (
            "small",
            {"input_shape": (48, 48, 1), "include_top": False, "pooling": "max", "padding": "symmetric"},
        ),
    ],
)
def test_build_config_rebuilds_the_model_even_after_a_reload(tmp_path, arch, kwargs):
    model = build_model(arch, **kwargs)
    assert build_model(**get_build_config(model)).get_config() == model.get_config()
    # A reloaded model carries no record: its arguments are inferred from its layers.
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    rebuilt = build_model(**get_build_config(reloaded))

    def layout(m):
        return [
            (layer.name, type(layer).__name__, [tuple(w.shape) for w in layer.weights]) for layer in m.layers
        ]

    assert layout(rebuilt) == layout(model)
    assert rebuilt.output.shape == model.output.shape


def test_build_config_refuses_models_the_builder_did_not_make():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="stem_conv")])
    with pytest.raises(ValueError, match=r"not made by keras_mnas\.build_model: it has no layer 'stem_bn'"):
        get_build_config(model)


def test_tf_keras_twin_has_the_same_weights_and_outputs():
    tf_keras = pytest.importorskip("tf_keras")
    model = build_model(TINY, input_shape=(32, 32, 3), classes=4)
    twin = build_model(TINY, input_shape=(32, 32, 3), classes=4, framework="tf_keras")
    assert isinstance(twin, tf_keras.Model)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    for layer in model.layers:
        twin.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.RandomState(0).rand(3, 32, 32, 3).astype("float32")
    np.testing.assert_allclose(twin(x, training=False).numpy(), np.asarray(model(x)), atol=1e-5)


def test_models_build_on_another_keras_backend():
    pytest.importorskip("jax")
    # Model code uses keras.layers only: it must build and run on a backend other than TensorFlow.
    code = textwrap.dedent(
        """
        import os
        os.environ["KERAS_BACKEND"] = "jax"
        import numpy as np, keras
        from keras_mnas import build_model
        assert keras.backend.backend() == "jax"
        model = build_model("small", input_shape=(64, 64, 3), classes=10)
        out = model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)
        assert out.shape == (1, 10), out.shape
        print("ok", model.count_params())
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok" in result.stdout
