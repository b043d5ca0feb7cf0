"""Int8 deployment: quantization-aware training, post-training quantization, and int8 TFLite accuracy.

Phones run int8 models. Two routes lead from a trained Keras 3 model to a full-integer int8 `.tflite`:

- **Post-training quantization** (`post_training_quantize`): the float model is converted with int8 kernels,
  the activation ranges calibrated on a representative sample of the training inputs. No training, and no
  chance for the weights to adapt to the rounding.
- **Quantization-aware training** (`prepare_qat` / `quantize_aware_train`, then `export_int8`): a short
  fine-tuning with the int8 rounding simulated in the forward pass, so the weights adapt to it.

tensorflow-model-optimization (tfmot), which simulates the rounding, only accepts tf_keras (Keras 2) models.
`to_tf_keras` rebuilds a keras-mnas model with the same builder in tf_keras and copies the weights across by
layer name; the twin computes the same function (to 1e-5, tested). `prepare_qat` then annotates it for tfmot's
default 8-bit scheme, with these choices for the layers that scheme does not cover:

| layer | where | choice |
|---|---|---|
| `Multiply` | SE excite | output quantized (TFLite's int8 `MUL` has its own output scale) |
| `Rescaling`, `Normalization` | `include_preprocessing=True` | fused into one frozen 1x1 depthwise conv |
| `GlobalAveragePooling2D(keepdims=True)` | SE squeeze | tfmot's rule (output quantized); keepdims kept |
| `BatchNormalization` | after every conv | tfmot's: no fake-quant between conv, BN, ReLU; TFLite folds BN |

Every exported model is checked: `export_int8` refuses to return a model in which an operator still computes
in floating point (`float_ops`).

Input and output are int8 by default, as in `keras_mnas.tflite.convert_to_tflite(quantization="int8")`: it
is the model whose latency the search measures, and integer-only accelerators (Edge TPU, microcontrollers)
need it. `export_int8(..., io_dtype="float32")` keeps float input and output around int8 operators instead
(a drop-in replacement for the float model, at the cost of a QUANTIZE and a DEQUANTIZE).
`evaluate_tflite` and `predict_tflite` (from `keras_mnas.tflite`, importable from here too) handle both,
quantizing inputs and dequantizing outputs with the model's own parameters.

Example:

```python
from keras_mnas import quantization

model.fit(x, y, epochs=10)  # a Keras 3 model from keras_mnas
ptq_bytes = quantization.post_training_quantize(model, x)
qat_model = quantization.quantize_aware_train(model, x, y, epochs=2, batch_size=32)
qat_bytes = quantization.export_int8(qat_model, "model_int8.tflite")
print(quantization.evaluate_tflite(ptq_bytes, x_val, y_val))
print(quantization.evaluate_tflite(qat_bytes, x_val, y_val))
```
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_mnas import tflite as tflite_lib
from keras_mnas.builder import build_model, get_build_config

# Running and inspecting a TFLite model is `keras_mnas.tflite`'s job; int8 users find the three here too.
from keras_mnas.tflite import evaluate_tflite as evaluate_tflite
from keras_mnas.tflite import float_ops as float_ops
from keras_mnas.tflite import predict_tflite as predict_tflite
from keras_mnas.utils.checks import check_bool
from keras_mnas.utils.io import atomic_write_bytes

#: Input/output types of an exported int8 model.
IO_DTYPES = ("int8", "float32")

#: Layer classes of the builder that tfmot's default 8-bit scheme does not quantize; `prepare_qat` quantizes
#: their output (see the module docstring).
OUTPUT_QUANTIZED_LAYERS = ("Multiply",)


def _import_tfmot():
    """Imports tensorflow_model_optimization, leaving `tf.keras` and the environment as they were.

    tfmot sets `TF_USE_LEGACY_KERAS=1` when imported. If `tf.keras` has not been resolved yet, it would then
    resolve to tf_keras for the rest of the process, and child processes would inherit the setting.
    """
    try:
        import tensorflow as tf
        import tf_keras  # noqa: F401  (tfmot needs it; fail here with the install hint)
    except ImportError as error:
        raise ImportError(
            "Quantization-aware training needs tf_keras and tensorflow-model-optimization: "
            "pip install 'keras-mnas[quant]'."
        ) from error
    saved = os.environ.get("TF_USE_LEGACY_KERAS")
    getattr(tf.keras, "version", None)  # resolves tf.keras under the caller's setting
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as error:
        raise ImportError(
            "Quantization-aware training needs tensorflow-model-optimization: "
            "pip install 'keras-mnas[quant]'."
        ) from error
    finally:
        if saved is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = saved
    return tfmot


@functools.cache
def _output_quantize_config_class():
    """A tfmot `QuantizeConfig` that quantizes a layer's output only (8-bit, per tensor, asymmetric)."""
    quantize = _import_tfmot().quantization.keras

    class OutputQuantizeConfig(quantize.QuantizeConfig):
        # The same fake-quant TFLite applies to every int8 activation: one scale and zero point per tensor.
        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [
                quantize.quantizers.MovingAverageQuantizer(
                    num_bits=8, per_axis=False, symmetric=False, narrow_range=False
                )
            ]

        def get_config(self):
            return {}

    OutputQuantizeConfig.__name__ = OutputQuantizeConfig.__qualname__ = "KerasMnasOutputQuantizeConfig"
    return OutputQuantizeConfig


# --------------------------------------------------------------------------------------------------------
# The tf_keras twin and quantization-aware training


def _copy_weights(source_model, target_model, *, skip: Sequence[str] = ()) -> None:
    """Copies weights by layer name; every weighted layer on either side (but `skip`) must find its match."""
    source_layers = {layer.name: layer for layer in source_model.layers}
    copied = set()
    for layer in target_model.layers:
        if not layer.weights or layer.name in skip:
            continue
        source = source_layers.get(layer.name)
        if source is None:
            raise ValueError(
                f"The tf_keras twin has a layer {layer.name!r} that model {source_model.name!r} lacks; was "
                "the model changed after build_model made it?"
            )
        weights = source.get_weights()
        expected = [tuple(w.shape) for w in layer.get_weights()]
        received = [tuple(w.shape) for w in weights]
        if expected != received:
            raise ValueError(
                f"Layer {layer.name!r}: the tf_keras twin expects weights of shapes {expected}; model "
                f"{source_model.name!r} has {received}."
            )
        layer.set_weights(weights)
        copied.add(layer.name)
    missed = sorted(
        layer.name
        for layer in source_model.layers
        if layer.weights and layer.name not in copied and layer.name not in skip
    )
    if missed:
        raise ValueError(
            f"Model {source_model.name!r} has weights the tf_keras twin has no place for: {missed}."
        )


def to_tf_keras(model):
    """Builds the tf_keras (Keras 2) twin of a keras-mnas model and copies its weights across by layer name.

    The twin is built by the same builder (`build_model(..., framework="tf_keras")`) from the arguments the
    model was built with (`keras_mnas.builder.get_build_config`: recorded by `build_model`, or inferred from
    the layers of a model reloaded from a file), so it has the same layers, names and weights, and its
    outputs equal the Keras 3 model's to float rounding (1e-5, tested).

    Args:
        model: A model from `keras_mnas.build_model`, `keras_mnas.applications` or a search, trained or not.

    Returns:
        A `tf_keras.Model`.

    Raises:
        ValueError: if the model was not made by the keras-mnas builder, or a layer's weights do not fit.

    Example:

    ```python
    model = keras_mnas.applications.MnasNetSmall(weights=None, input_shape=(64, 64, 3), classes=10)
    twin = to_tf_keras(model)
    np.allclose(twin(x).numpy(), model(x), atol=1e-5)  # True
    ```
    """
    twin = build_model(**get_build_config(model), framework="tf_keras")
    _copy_weights(model, twin)
    return twin


def _preprocessing_affine(model) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel `(scale, offset)` of a model's built-in preprocessing: `x * scale + offset`."""
    rescaling, normalization = model.get_layer("rescaling"), model.get_layer("normalization")
    channels = int(model.inputs[0].shape[-1])
    # Both layers are per-channel affine maps: their values at 0 and 1 give the offset and the scale.
    probe = np.stack([np.zeros((1, 1, channels)), np.ones((1, 1, channels))]).astype("float32")
    zero, one = (np.asarray(v).reshape(channels) for v in np.asarray(normalization(rescaling(probe))))
    return one - zero, zero


def _fused_preprocessing_twin(model, config: dict[str, Any]):
    """The tf_keras twin with Rescaling + Normalization replaced by one frozen 1x1 depthwise convolution.

    The two layers compute a multiply then a subtract: in int8 the tensor between them needs a range that
    no fake-quant provides, so TFLite would leave both in float. One per-channel affine layer is one int8
    operator whose output tfmot quantizes like any convolution's.
    """
    import tf_keras

    inputs = tf_keras.layers.Input(shape=config["input_shape"], name="input_layer")
    preprocessing = tf_keras.layers.DepthwiseConv2D(1, use_bias=True, name="preprocessing", trainable=False)
    features = preprocessing(inputs)
    twin = build_model(
        **{**config, "include_preprocessing": False}, input_tensor=features, framework="tf_keras"
    )
    scale, offset = _preprocessing_affine(model)
    preprocessing.set_weights([scale.reshape(1, 1, -1, 1), offset])
    _copy_weights(model, twin, skip=("preprocessing",))
    return twin


def prepare_qat(model):
    """Returns a quantization-aware (fake-quantized) tf_keras copy of a keras-mnas model, ready to compile.

    The model goes through `to_tf_keras` and tfmot's default 8-bit scheme (per-channel symmetric weights,
    per-tensor asymmetric activations, batch normalization kept apart from fake-quant so that TFLite folds
    it into the convolution). Layers the scheme does not cover are annotated to quantize their output (see
    `OUTPUT_QUANTIZED_LAYERS`); a model's built-in preprocessing (`include_preprocessing=True`) becomes
    one frozen 1x1 depthwise convolution computing the same per-channel affine map. Compile the result with
    a tf_keras optimizer (or an identifier such as `"adam"`: a Keras 3 optimizer object does not work on a
    tf_keras model), fit it briefly with a small learning rate, and convert it with `export_int8`.

    Args:
        model: A (trained) model from the keras-mnas builder.

    Returns:
        An uncompiled `tf_keras.Model` whose forward pass simulates int8 inference.

    Example:

    ```python
    qat_model = prepare_qat(model)
    qat_model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    qat_model.fit(x, y, epochs=2)
    tflite_bytes = export_int8(qat_model)
    ```
    """
    tfmot = _import_tfmot()
    import tf_keras

    quantize = tfmot.quantization.keras
    config = get_build_config(model)
    twin = _fused_preprocessing_twin(model, config) if config["include_preprocessing"] else to_tf_keras(model)
    config_class = _output_quantize_config_class()

    def annotate(layer):
        # Returning the layer itself (not a copy) keeps its weights in the clone.
        if type(layer).__name__ in OUTPUT_QUANTIZED_LAYERS:
            return quantize.quantize_annotate_layer(layer, config_class())
        return layer

    annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
    annotated = quantize.quantize_annotate_model(annotated)
    with quantize.quantize_scope({config_class.__name__: config_class}):
        return quantize.quantize_apply(annotated)


def _lambda_layers(config: Any) -> list[str]:
    """Names of the `Lambda` layers holding Python bytecode, anywhere in a saved model's config."""
    found = []
    if isinstance(config, dict):
        inner = config.get("config")
        lambda_code = isinstance(inner, dict) and inner.get("function_type", "lambda") == "lambda"
        if config.get("class_name") == "Lambda" and lambda_code:
            found.append(str(inner.get("name", "?")))
        for value in config.values():
            found += _lambda_layers(value)
    elif isinstance(config, list):
        for value in config:
            found += _lambda_layers(value)
    return found


def _saved_code(path: str) -> list[str]:
    """What in the saved model at `path` would run Python code when loaded (empty when nothing would)."""
    if os.path.isdir(path):
        # A SavedModel keeps its Keras configs as JSON inside keras_metadata.pb.
        metadata = os.path.join(path, "keras_metadata.pb")
        if os.path.exists(metadata):
            with open(metadata, "rb") as file:
                if re.search(rb'"class_name":\s*"Lambda"', file.read()):
                    return ["a Lambda layer"]
        return []
    import h5py

    with h5py.File(path, "r") as file:
        config = file.attrs.get("model_config")
    if config is None:
        return []
    if isinstance(config, bytes):
        config = config.decode("utf-8")
    return [f"Lambda layer {name!r}" for name in _lambda_layers(json.loads(config))]


def load_qat_model(path: str | os.PathLike, *, safe_mode: bool = True):
    """Loads a quantization-aware model saved with `qat_model.save("....h5")`, to train or export it.

    A QAT model holds tfmot's fake-quant wrappers and keras-mnas's `QuantizeConfig` for the SE `Multiply`;
    `tf_keras.models.load_model` alone does not know them. This loads inside a scope that does.

    A `Lambda` layer saves its Python function as bytecode, which loading would run: anyone who can hand you
    a model file could run any code on your machine. As Keras's `load_model` does, loading refuses such a
    file unless you trust it and pass `safe_mode=False`. keras-mnas models have no `Lambda` layers.

    Save QAT models as `.h5` (or a SavedModel directory): tfmot 0.8's input `QuantizeLayer` writes only 3 of
    its 5 variables to a `.keras` file, which then never loads again.

    Args:
        path: The `.h5` file (or SavedModel directory) written by `qat_model.save(path)`.
        safe_mode: Refuse a model whose loading would run code stored in the file (a `Lambda` layer's
            bytecode). Pass `False` only for a file from a source you trust.

    Returns:
        The `tf_keras.Model`, compiled as it was saved.

    Raises:
        FileNotFoundError: when `path` does not exist.
        ValueError: for a `.keras` file, or, with `safe_mode=True`, a model holding a `Lambda` layer.
        TypeError: when `safe_mode` is not a bool.

    Example:

    ```python
    qat_model = quantization.quantize_aware_train(model, x, y, epochs=1)
    qat_model.save("qat.h5")
    tflite_bytes = quantization.export_int8(quantization.load_qat_model("qat.h5"))
    ```
    """
    check_bool("safe_mode", safe_mode)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No quantization-aware model at {os.fspath(path)!r}.")
    if os.fspath(path).endswith(".keras"):
        raise ValueError(
            f"Cannot load the quantization-aware model {os.fspath(path)!r}: tfmot's QuantizeLayer does not "
            "survive the .keras format (it saves 3 of its 5 variables). Save QAT models with "
            "qat_model.save('qat.h5'), or keep the float model and rerun quantize_aware_train."
        )
    tfmot = _import_tfmot()
    import tf_keras

    if safe_mode:
        code = _saved_code(os.fspath(path))
        if code:
            raise ValueError(
                f"Refusing to load {os.fspath(path)!r}: it holds {', '.join(code)}, whose Python code would "
                "run while loading. If you trust the file's source, pass safe_mode=False."
            )
    # tf_keras checks safe mode only inside this scope (its .keras loader opens it; the .h5 and SavedModel
    # loaders do not): a second guard for anything the scan above does not see.
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    config_class = _output_quantize_config_class()
    with SafeModeScope(safe_mode), tfmot.quantization.keras.quantize_scope(
        {config_class.__name__: config_class}
    ):
        return tf_keras.models.load_model(path)


def quantize_aware_train(
    model,
    x: Any = None,
    y: Any = None,
    *,
    epochs: int = 1,
    learning_rate: float = 1e-4,
    optimizer: Any = None,
    loss: Any = "sparse_categorical_crossentropy",
    metrics: Sequence[Any] = ("accuracy",),
    **fit_kwargs: Any,
):
    """Fine-tunes a keras-mnas model with int8 rounding simulated, and returns the quantization-aware model.

    `prepare_qat`, `compile` and `fit` in one call; convert the result with `export_int8`. Start from a
    trained float model: a short fine-tuning (one to a few epochs, a tenth of the training learning rate)
    recovers most of what post-training quantization loses.

    Args:
        model: A trained model from the keras-mnas builder (Keras 3).
        x: Training inputs, as for `model.fit`.
        y: Training targets, as for `model.fit`.
        epochs: Epochs of quantization-aware fine-tuning.
        learning_rate: Learning rate of the default Adam optimizer.
        optimizer: A tf_keras optimizer or an identifier; default `tf_keras.optimizers.Adam(learning_rate)`.
        loss: Loss passed to `compile` (default: sparse categorical cross-entropy on class indices).
        metrics: Metrics passed to `compile`.
        **fit_kwargs: Anything else `fit` takes: `batch_size`, `validation_data`, `callbacks` (tf_keras
            callbacks), `verbose`, ...

    Returns:
        The trained quantization-aware `tf_keras.Model` (its `history` attribute holds the fit history).

    Raises:
        ValueError: for a non-positive `epochs` or `learning_rate`.

    Example:

    ```python
    qat_model = quantize_aware_train(model, x, y, epochs=2, batch_size=32, validation_data=(x_val, y_val))
    export_int8(qat_model, "model_int8.tflite")
    ```
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer; received {epochs!r}.")
    if not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a positive number; received {learning_rate!r}.")
    qat_model = prepare_qat(model)
    import tf_keras

    if optimizer is None:
        optimizer = tf_keras.optimizers.Adam(learning_rate)
    qat_model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    qat_model.fit(x, y, epochs=epochs, **fit_kwargs)
    return qat_model


# --------------------------------------------------------------------------------------------------------
# Conversion to int8 TFLite


def export_int8(
    qat_model, filepath: str | os.PathLike | None = None, *, io_dtype: str = "int8", verbose: bool = False
) -> bytes:
    """Converts a quantization-aware model to a full-integer int8 TFLite model (batch size 1).

    The ranges come from the model's fake-quant layers, so no representative data is needed. Batch
    normalization is folded into the convolutions by the converter. The result is checked: every operator
    must compute in int8.

    Args:
        qat_model: A model from `prepare_qat` or `quantize_aware_train`.
        filepath: Optional `.tflite` path to write (atomically).
        io_dtype: `"int8"` (default: integer input and output) or `"float32"` (float input and output
            around int8 operators).
        verbose: Show the converter's output.

    Returns:
        The TFLite flatbuffer.

    Raises:
        ValueError: for a model that is not quantization-aware, an undefined input shape, or an unknown
            `io_dtype`.
        RuntimeError: when the conversion fails or leaves float operators.

    Example:

    ```python
    tflite_bytes = export_int8(qat_model, "model_int8.tflite")
    evaluate_tflite(tflite_bytes, x_val, y_val)
    ```
    """
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"io_dtype must be one of {IO_DTYPES}; received {io_dtype!r}.")
    layer_classes = {type(layer).__name__ for layer in getattr(qat_model, "layers", [])}
    if "QuantizeLayer" not in layer_classes and "QuantizeWrapperV2" not in layer_classes:
        raise ValueError(
            f"export_int8 expects a quantization-aware model from prepare_qat or quantize_aware_train; "
            f"received {type(qat_model).__name__} {getattr(qat_model, 'name', '')!r} without fake-quant "
            "layers. For a float model use post_training_quantize(model, x)."
        )
    shape = tuple(qat_model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"Cannot export a model whose input shape {tuple(qat_model.inputs[0].shape)} is not fully "
            "defined (batch aside): a TFLite model has one fixed input size. Build it with a fixed "
            "input_shape."
        )
    import tensorflow as tf

    spec = tf.TensorSpec((1, *shape), tf.float32, name="input_0")
    function = tf.function(lambda inputs: qat_model(inputs, training=False), input_signature=[spec])
    concrete = function.get_concrete_function()
    # The tf.function, not the tf_keras model, as the trackable: with the model the converter first saves a
    # tf_keras SavedModel, which traces every layer (about 20x slower for the same result).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], function)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if io_dtype == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # The converter and its stderr redirection are process-wide: shared with convert_to_tflite.
    with tflite_lib.CONVERSION_LOCK, tflite_lib.quiet_conversion(verbose) as log:
        try:
            tflite_bytes = converter.convert()
        except Exception as error:
            details = log.text()[-4000:].strip()
            raise RuntimeError(
                f"Int8 TFLite conversion of the quantization-aware model {qat_model.name!r} failed: {error}"
                + (f"\nConverter output:\n{details}" if details else "")
            ) from error
    remaining = float_ops(tflite_bytes)
    if remaining:
        raise RuntimeError(
            f"The int8 conversion of {qat_model.name!r} left operators computing in float: "
            f"{sorted(set(remaining))}. A layer without fake-quant ranges reached the converter; "
            "keras-mnas annotates every layer its builder makes, so this model has layers of another kind."
        )
    if filepath is not None:
        atomic_write_bytes(os.fspath(filepath), tflite_bytes)
    return tflite_bytes


def representative_sample(x: Any, num_samples: int = tflite_lib.DEFAULT_CALIBRATION_SAMPLES, seed: int = 0):
    """Draws int8 calibration inputs from training data: `num_samples` samples at random, without repeats.

    Args:
        x: Training inputs, an array with a leading sample axis.
        num_samples: How many samples (all of them when `x` has fewer).
        seed: Seed of the draw: the same seed and data give the same sample.

    Returns:
        A float32 numpy array of shape `(min(num_samples, len(x)), *x.shape[1:])`.

    Raises:
        ValueError: when `x` is not an array of samples (e.g. a `tf.data.Dataset`: pass an array drawn from
            it instead), or is empty.

    Example:

    ```python
    calibration = representative_sample(x_train, 100)
    ```
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; received {num_samples!r}.")
    if isinstance(x, (list, tuple)) or not hasattr(x, "shape") or not hasattr(x, "__getitem__"):
        raise ValueError(
            "Representative data is drawn from an array of training inputs with a leading sample axis; "
            f"received {type(x).__name__}. For a dataset or generator, pass representative_data=<an array of "
            "a few hundred inputs> instead."
        )
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(
            f"Representative data must be a non-empty array of samples; received an array of shape {x.shape}."
        )
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(x), size=min(num_samples, len(x)), replace=False))
    return x[indices].astype("float32", copy=False)


def post_training_quantize(
    model,
    x: Any,
    filepath: str | os.PathLike | None = None,
    *,
    num_samples: int = tflite_lib.DEFAULT_CALIBRATION_SAMPLES,
    seed: int = 0,
) -> bytes:
    """Full-integer int8 post-training quantization, calibrated on a sample of the training inputs.

    `keras_mnas.tflite.convert_to_tflite(quantization="int8")` on `representative_sample(x, num_samples)`:
    int8 operators, input and output, batch size 1.

    Args:
        model: A trained Keras 3 model with a fixed input shape.
        x: Training inputs to draw the calibration sample from (an array with a leading sample axis).
        filepath: Optional `.tflite` path to write (atomically).
        num_samples: Calibration samples.
        seed: Seed of the calibration draw.

    Returns:
        The TFLite flatbuffer.

    Example:

    ```python
    tflite_bytes = post_training_quantize(model, x_train, "model_ptq.tflite")
    ```
    """
    sample = representative_sample(x, num_samples, seed)
    tflite_bytes = tflite_lib.convert_to_tflite(
        model, quantization="int8", representative_data=sample, calibration_samples=len(sample)
    )
    if filepath is not None:
        atomic_write_bytes(os.fspath(filepath), tflite_bytes)
    return tflite_bytes
