import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_mnas import tflite as tflite_lib
from keras_mnas.tflite import convert_to_tflite, tflite_op_summary


def conv_model(input_shape=(32, 32, 3), filters=64, name="conv"):
    """A small CNN with fixed layer names; `filters=64` gives it ~40k conv weights."""
    inputs = keras.Input(input_shape, name=f"{name}_input")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name=f"{name}_stem")(inputs)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_c1")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    outputs = keras.layers.Dense(10, name=f"{name}_logits")(x)
    return keras.Model(inputs, outputs, name=name)


def run_tflite(tflite_bytes, x):
    interpreter = Interpreter(model_content=tflite_bytes)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return conv_model()


@pytest.fixture(scope="module")
def calibration():
    return np.random.default_rng(0).random((16, 32, 32, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def float_bytes(model):
    return convert_to_tflite(model)


@pytest.fixture(scope="module")
def int8_bytes(model, calibration):
    return convert_to_tflite(model, quantization="int8", representative_data=calibration)


def test_float_model_loads_and_computes_what_keras_computes(model, float_bytes):
    x = np.random.default_rng(1).random((1, 32, 32, 3), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(run_tflite(float_bytes, x), expected, rtol=1e-4, atol=1e-4)


def test_float_summary_has_float_io_and_conv_ops(float_bytes):
    summary = tflite_op_summary(float_bytes)
    assert summary["inputs"][0]["shape"] == [1, 32, 32, 3]
    assert summary["inputs"][0]["dtype"] == "float32"
    assert summary["outputs"][0]["dtype"] == "float32"
    assert summary["op_counts"]["CONV_2D"] == 3
    # Batch norm is folded into the convolution, not run as separate arithmetic.
    assert not {"MUL", "ADD", "RSQRT"} & set(summary["op_counts"])


def test_int8_model_is_fully_integer(int8_bytes):
    summary = tflite_op_summary(int8_bytes)
    assert [t["dtype"] for t in summary["inputs"]] == ["int8"]
    assert [t["dtype"] for t in summary["outputs"]] == ["int8"]
    convs = [op for op in summary["ops"] if op["op"] == "CONV_2D"]
    assert len(convs) == 3
    for op in convs:
        # Activations and weights int8, bias int32.
        assert op["input_dtypes"][:2] == ["int8", "int8"], op
        assert op["output_dtypes"] == ["int8"], op
    assert "QUANTIZE" not in summary["op_counts"]
    assert "DEQUANTIZE" not in summary["op_counts"]


def test_int8_model_is_smaller_and_runs(float_bytes, int8_bytes):
    assert len(int8_bytes) < 0.5 * len(float_bytes)
    x = np.random.default_rng(2).integers(-128, 127, (1, 32, 32, 3), dtype=np.int8)
    assert run_tflite(int8_bytes, x).dtype == np.int8


def test_int8_accepts_a_callable_of_batches(model, calibration):
    tflite_bytes = convert_to_tflite(
        model,
        quantization="int8",
        # float64 batches, as np.random.rand gives them, are cast to the input dtype.
        representative_data=lambda: ([calibration[i : i + 1].astype("float64")] for i in range(4)),
    )
    assert tflite_op_summary(tflite_bytes)["inputs"][0]["dtype"] == "int8"


def test_int8_without_representative_data_is_refused(model):
    with pytest.raises(ValueError, match="representative_data"):
        convert_to_tflite(model, quantization="int8")


def test_representative_data_of_the_wrong_shape_is_refused(model):
    with pytest.raises(ValueError, match=r"\(4, 28, 28, 3\)"):
        convert_to_tflite(model, quantization="int8", representative_data=np.zeros((4, 28, 28, 3)))


def test_unknown_quantization_lists_the_allowed_values(model):
    with pytest.raises(ValueError, match=r"float32.*int8.*'float16'"):
        convert_to_tflite(model, quantization="float16")


def test_unknown_method_is_refused(model):
    with pytest.raises(ValueError, match="concrete_function"):
        convert_to_tflite(model, method="onnx")


def test_undefined_spatial_dims_are_refused_before_converting(monkeypatch):
    def must_not_convert(*args, **kwargs):
        raise AssertionError("the converter must not run for an undefined input shape")

    monkeypatch.setattr(tflite_lib, "_convert_concrete_function", must_not_convert)
    dynamic = conv_model(input_shape=(None, None, 3), name="dynamic")
    with pytest.raises(ValueError, match=r"\(None, None, None, 3\).*input_shape"):
        convert_to_tflite(dynamic)


def test_input_shape_fixes_an_undefined_model_shape():
    dynamic = conv_model(input_shape=(None, None, 3), filters=8, name="dynamic")
    summary = tflite_op_summary(convert_to_tflite(dynamic, input_shape=(40, 24, 3)))
    assert summary["inputs"][0]["shape"] == [1, 40, 24, 3]
    assert summary["inputs"][0]["shape_signature"] == [1, 40, 24, 3]


def test_input_shape_of_the_wrong_rank_is_refused(model):
    with pytest.raises(ValueError, match="batch axis"):
        convert_to_tflite(model, input_shape=(1, 32, 32, 3))


def test_saved_model_method_gives_the_same_model(model, float_bytes):
    tflite_bytes = convert_to_tflite(model, method="saved_model")
    counts = tflite_op_summary(tflite_bytes)["op_counts"]
    assert counts == tflite_op_summary(float_bytes)["op_counts"]
    x = np.random.default_rng(3).random((1, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(run_tflite(tflite_bytes, x), run_tflite(float_bytes, x), atol=1e-5)


def test_conversion_failure_is_a_clear_error():
    class Unconvertible(keras.layers.Layer):
        def call(self, x):
            # A string op has no TFLite builtin kernel.
            import tensorflow as tf

            return tf.strings.to_number(tf.strings.as_string(x))

    inputs = keras.Input((4,))
    bad = keras.Model(inputs, Unconvertible()(inputs), name="bad")
    with pytest.raises(RuntimeError, match=r"TFLite conversion.*'bad'"):
        convert_to_tflite(bad)


@pytest.mark.parametrize(
    "method, layer_names",
    [
        ("concrete_function", ("first conv (3x3)", "last conv")),
        # A SavedModel names variables after their layers, so only model names may have spaces there.
        ("saved_model", ("first_conv", "last_conv")),
    ],
)
def test_names_tensorflow_refuses_as_scopes_convert_and_stay(method, layer_names):
    # Keras takes any name without a "/"; TensorFlow's graph scopes refuse spaces and a leading "_".
    inputs = keras.Input((8, 8, 3))
    inner_inputs = keras.Input((8, 8, 4))
    last = keras.layers.Conv2D(2, 1, name=layer_names[1])(inner_inputs)
    inner = keras.Model(inner_inputs, last, name="sub model")
    outputs = inner(keras.layers.Conv2D(4, 3, padding="same", name=layer_names[0])(inputs))
    model = keras.Model(inputs, outputs, name="my model")
    names = [layer.name for layer in model._flatten_layers(include_self=True, recursive=True)]
    tflite_bytes = convert_to_tflite(model, method=method)
    x = np.random.default_rng(4).random((1, 8, 8, 3), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(run_tflite(tflite_bytes, x), expected, rtol=1e-5, atol=1e-5)
    assert [layer.name for layer in model._flatten_layers(include_self=True, recursive=True)] == names
    underscored = keras.Model(inputs, keras.layers.Flatten()(inputs), name="_private")
    assert tflite_op_summary(convert_to_tflite(underscored, method=method))["outputs"][0]["shape"] == [1, 192]
    assert underscored.name == "_private"


def test_a_failed_conversion_names_the_model_as_given():
    class Unconvertible(keras.layers.Layer):
        def call(self, x):
            import tensorflow as tf

            return tf.strings.to_number(tf.strings.as_string(x))

    inputs = keras.Input((4,))
    bad = keras.Model(inputs, Unconvertible()(inputs), name="my bad model")
    with pytest.raises(RuntimeError, match=r"of model 'my bad model'"):
        convert_to_tflite(bad)
    assert bad.name == "my bad model"


@pytest.mark.parametrize("garbage", [b"not a tflite model" * 10, b""])
def test_op_summary_refuses_garbage(garbage):
    with pytest.raises(ValueError, match="TFLite"):
        tflite_op_summary(garbage)


def test_importing_the_package_does_not_import_tensorflow():
    code = "import sys, keras_mnas.latency; assert 'tensorflow' not in sys.modules, 'tf imported'"
    # The JAX backend keeps `import keras` (if the package does it) from importing TensorFlow.
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_another_keras_backend_is_a_clear_error(model, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match=r"TensorFlow Keras backend.*'jax'"):
        convert_to_tflite(model)
