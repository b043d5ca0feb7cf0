"""Int8 deployment on real data: scikit-learn's digits upscaled to 16x16, a small MnasNet-like network."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_mnas import ArchSpec, build_model
from keras_mnas import quantization as quant
from keras_mnas.tflite import convert_to_tflite, tflite_op_summary

pytest.importorskip("tensorflow_model_optimization")
tf_keras = pytest.importorskip("tf_keras")

# Every operation of the search space, one layer each: MBConv with SE, depthwise-separable with a pooling
# skip, a regular conv with SE and a projected pooling skip, an identity residual.
ARCH = ArchSpec.from_strings(
    [
        "r1_k3_s11_e1_i16_o8_noskip",
        "r1_k3_s22_e3_i8_o16_se0.25",
        "r1_k5_s11_i16_o16_dconv_poolskip",
        "r1_k3_s22_i16_o24_conv_se0.25_poolskip",
        "r1_k3_s11_e6_i24_o24",
    ],
    stem_filters=16,
    head_filters=64,
    dropout_rate=0.0,
    name="digits_net",
)


@pytest.fixture(scope="module")
def digits():
    """16x16 grey digits as [0, 255] RGB images, for a model with its own preprocessing."""
    data = load_digits()
    x = np.kron(data.images.astype("float32") * (255 / 16), np.ones((2, 2), "float32"))
    x = np.repeat(x[..., None], 3, axis=-1)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], data.target[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


@pytest.fixture(scope="module")
def trained(digits):
    """A float model with built-in preprocessing (the applications' default) trained to over 85%."""
    (x, y), (x_val, y_val) = digits
    keras.utils.set_random_seed(0)
    model = build_model(
        ARCH, input_shape=(16, 16, 3), classes=10, bn_momentum=0.9, include_preprocessing=True
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    accuracy = model.evaluate(x_val, y_val, verbose=0)[1]
    assert accuracy > 0.85, "the float model did not learn: the comparisons below would be meaningless"
    return model, accuracy, convert_to_tflite(model)


@pytest.fixture(scope="module")
def qat_model(trained, digits):
    (x, y), _ = digits
    return quant.quantize_aware_train(trained[0], x, y, epochs=1, batch_size=32, verbose=0)


@pytest.fixture(scope="module")
def qat_int8(qat_model):
    return quant.export_int8(qat_model)


def randomize_batch_norm(model, seed=0):
    """Non-trivial BN statistics, so that a twin that mishandled BN would show it."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.2, beta.shape),
                    rng.normal(0, 0.2, mean.shape),
                    rng.uniform(0.5, 1.5, variance.shape),
                ]
            )


@pytest.mark.parametrize(
    "kwargs, channels",
    [
        ({}, 1),
        ({"include_preprocessing": True, "padding": "symmetric", "bn_epsilon": 1e-5, "classes": 7}, 3),
    ],
)
def test_tf_keras_twin_computes_the_same_function(tmp_path, kwargs, channels):
    model = build_model(ARCH, input_shape=(16, 16, channels), **{"classes": 10, **kwargs})
    randomize_batch_norm(model)
    x = (
        np.random.default_rng(1)
        .uniform(0, 255 if channels == 3 else 1, (8, 16, 16, channels))
        .astype("float32")
    )
    expected = np.asarray(model(x, training=False))
    twin = quant.to_tf_keras(model)
    assert isinstance(twin, tf_keras.Model)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(twin(x, training=False).numpy(), expected, atol=1e-5)
    # A model reloaded from a file carries no build record: its twin is rebuilt from its layers.
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(quant.to_tf_keras(reloaded)(x, training=False).numpy(), expected, atol=1e-5)


def test_qat_int8_model_is_full_integer_smaller_and_within_two_points_of_float(
    trained, qat_model, qat_int8, digits
):
    model, float_accuracy, float_bytes = trained
    _, (x_val, y_val) = digits
    summary = tflite_op_summary(qat_int8)
    assert quant.float_ops(qat_int8) == []
    assert summary["inputs"][0]["dtype"] == "int8" and summary["outputs"][0]["dtype"] == "int8"
    assert all("float32" not in op["input_dtypes"] + op["output_dtypes"] for op in summary["ops"])
    # Batch normalization is folded into the convolutions, SE's multiply runs in int8, and the built-in
    # preprocessing is one depthwise convolution.
    convolutions = sum(type(layer).__name__ == "Conv2D" for layer in model.layers)
    depthwise = sum(type(layer).__name__ == "DepthwiseConv2D" for layer in model.layers)
    assert summary["op_counts"]["CONV_2D"] == convolutions
    assert summary["op_counts"]["DEPTHWISE_CONV_2D"] == depthwise + 1
    assert summary["op_counts"]["MUL"] == 2  # the two SE layers
    assert len(qat_int8) < 0.7 * len(float_bytes)
    int8_accuracy = quant.evaluate_tflite(qat_int8, x_val, y_val)
    assert int8_accuracy >= float_accuracy - 0.02, (int8_accuracy, float_accuracy)
    # The TFLite model computes what the quantization-aware Keras model simulated.
    agreement = np.mean(
        np.argmax(quant.predict_tflite(qat_int8, x_val), 1)
        == np.argmax(qat_model.predict(x_val, verbose=0), 1)
    )
    assert agreement > 0.97


def test_qat_export_with_float_input_and_output(qat_model, qat_int8, digits, tmp_path):
    _, (x_val, _) = digits
    path = tmp_path / "float_io.tflite"
    float_io = quant.export_int8(qat_model, path, io_dtype="float32")
    assert path.read_bytes() == float_io
    summary = tflite_op_summary(float_io)
    assert summary["inputs"][0]["dtype"] == "float32" and summary["outputs"][0]["dtype"] == "float32"
    assert quant.float_ops(float_io) == []
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(summary["op_counts"])
    np.testing.assert_allclose(
        quant.predict_tflite(float_io, x_val[:50]), quant.predict_tflite(qat_int8, x_val[:50]), atol=0.02
    )


def test_post_training_quantization_calibrated_on_training_data(trained, digits, tmp_path):
    model, float_accuracy, float_bytes = trained
    (x, _), (x_val, y_val) = digits
    # The float TFLite model reproduces the Keras accuracy: evaluate_tflite reads the outputs right.
    assert quant.evaluate_tflite(float_bytes, x_val, y_val) == pytest.approx(
        float_accuracy, abs=1 / len(x_val)
    )
    assert "CONV_2D" in quant.float_ops(float_bytes)  # a float model is listed as such
    path = tmp_path / "ptq.tflite"
    int8_bytes = quant.post_training_quantize(model, x, path, num_samples=64)
    assert path.read_bytes() == int8_bytes
    assert quant.float_ops(int8_bytes) == []
    assert len(int8_bytes) < 0.7 * len(float_bytes)
    # No fine-tuning: a wider margin than quantization-aware training's.
    assert quant.evaluate_tflite(int8_bytes, x_val, y_val) >= float_accuracy - 0.05
    # One-hot labels and a path work too.
    one_hot = np.eye(10)[y_val]
    assert quant.evaluate_tflite(path, x_val, one_hot) == quant.evaluate_tflite(int8_bytes, x_val, y_val)


def test_representative_sample_is_a_seeded_draw_without_repeats():
    x = np.arange(300 * 4, dtype="float64").reshape(300, 2, 2, 1)  # every sample distinct
    sample = quant.representative_sample(x, 100, seed=3)
    assert sample.shape == (100, 2, 2, 1) and sample.dtype == np.float32
    firsts = sample[:, 0, 0, 0]
    assert len(set(firsts)) == 100 and set(firsts) <= set(x[:, 0, 0, 0])
    np.testing.assert_array_equal(sample, quant.representative_sample(x, 100, seed=3))
    assert not np.array_equal(sample, quant.representative_sample(x, 100, seed=4))
    assert len(quant.representative_sample(x[:10], 100)) == 10


def test_bad_arguments_are_rejected_by_name(trained, qat_model, digits):
    model, _, float_bytes = trained
    (x, y), (x_val, y_val) = digits
    with pytest.raises(ValueError, match="expects a quantization-aware model"):
        quant.export_int8(quant.to_tf_keras(model))
    with pytest.raises(ValueError, match="io_dtype must be one of"):
        quant.export_int8(qat_model, io_dtype="uint8")
    sequential = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match=r"was not made by keras_mnas\.build_model"):
        quant.to_tf_keras(sequential)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        quant.quantize_aware_train(model, x, y, epochs=0)
    with pytest.raises(ValueError, match="array of training inputs"):
        quant.representative_sample([[0.0]], 10)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        quant.representative_sample(x, 0)
    with pytest.raises(ValueError, match="same, non-zero number of samples"):
        quant.evaluate_tflite(float_bytes, x_val, y_val[:-1])
    with pytest.raises(ValueError, match=r"x must have shape \(num_samples, \*\(16, 16, 3\)\)"):
        quant.evaluate_tflite(float_bytes, x_val[:, :8], y_val)
    with pytest.raises(ValueError, match=r"Expected TFLite model bytes or a \.tflite path"):
        quant.evaluate_tflite(model, x_val, y_val)


def test_int8_models_xnnpack_refuses_still_run_on_builtin_kernels(qat_int8, digits, monkeypatch):
    # Trained weights can give quantization parameters XNNPACK will not prepare ("failed to create XNNPACK
    # runtime"); accuracy must then come from TFLite's own int8 kernels, not fail the trial.
    _, (x_val, _) = digits
    expected = quant.predict_tflite(qat_int8, x_val[:20])
    load_interpreter = quant.tflite_lib.load_interpreter

    def xnnpack_refuses(tflite_bytes, *, num_threads=1, use_default_delegate=True):
        interpreter = load_interpreter(
            tflite_bytes, num_threads=num_threads, use_default_delegate=use_default_delegate
        )
        if use_default_delegate:

            def allocate_tensors():
                raise RuntimeError("failed to create XNNPACK runtimeNode number 92 failed to prepare.")

            interpreter.allocate_tensors = allocate_tensors
        return interpreter

    monkeypatch.setattr(quant.tflite_lib, "load_interpreter", xnnpack_refuses)
    # The builtin kernels round differently from XNNPACK's, by an amount that varies from machine to
    # machine: where a 0.05 bound had passed in earlier runs, another machine saw 13 steps of the output scale
    # (1/256) on one output of 200, a quarter of a step on average, and a near-tie (118 against 118 steps)
    # resolved the other way.
    fallback = quant.predict_tflite(qat_int8, x_val[:20])
    assert np.abs(fallback - expected).mean() < 2 / 256
    np.testing.assert_allclose(fallback, expected, atol=0.1)
    runner_up, top = np.sort(expected, axis=-1)[:, -2:].T
    clear = top - runner_up > 0.1
    assert clear.sum() >= 15  # most samples are not near-ties, so the comparison below means something
    np.testing.assert_array_equal(fallback.argmax(axis=-1)[clear], expected.argmax(axis=-1)[clear])


def test_a_qat_model_saved_as_h5_loads_back_and_computes_the_same(qat_model, digits, tmp_path):
    _, (x_val, _) = digits
    qat_model.save(tmp_path / "qat.h5")
    loaded = quant.load_qat_model(tmp_path / "qat.h5")
    np.testing.assert_allclose(
        loaded.predict(x_val[:8], verbose=0), qat_model.predict(x_val[:8], verbose=0), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(FileNotFoundError, match="No quantization-aware model"):
        quant.load_qat_model(tmp_path / "missing.h5")
    # tfmot's QuantizeLayer does not survive .keras (3 of 5 variables saved): say so rather than fail deep.
    qat_model.save(tmp_path / "qat.keras")
    with pytest.raises(ValueError, match=r"Save QAT models with qat_model.save\('qat.h5'\)"):
        quant.load_qat_model(tmp_path / "qat.keras")


def _model_with_code(marker):
    """A tf_keras model whose Lambda layer writes `marker` when it runs: what a hostile .h5 file holds."""
    # The lambda is saved as bytecode; its default argument keeps the path inside it.
    writes = tf_keras.layers.Lambda(
        lambda x, path=str(marker): (open(path, "w").close(), x)[1], name="payload"
    )
    inputs = tf_keras.Input((4,))
    return tf_keras.Model(inputs, tf_keras.layers.Dense(2)(writes(inputs)))


def test_loading_never_runs_code_from_the_file_unless_asked(tmp_path):
    marker = tmp_path / "marker"
    _model_with_code(marker).save(tmp_path / "hostile.h5")
    marker.unlink(missing_ok=True)  # building the model ran the lambda once, here, on purpose
    with pytest.raises(ValueError, match=r"Lambda layer 'payload'.*safe_mode=False"):
        quant.load_qat_model(tmp_path / "hostile.h5")
    assert not marker.exists()
    with pytest.raises(TypeError, match="`safe_mode` must be True or False; received 'no'"):
        quant.load_qat_model(tmp_path / "hostile.h5", safe_mode="no")
    assert not marker.exists()
    loaded = quant.load_qat_model(tmp_path / "hostile.h5", safe_mode=False)  # the user trusts this file
    assert marker.exists()
    assert [layer.name for layer in loaded.layers][1] == "payload"
