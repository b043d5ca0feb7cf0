"""TFLite flatbuffers: converting Keras 3 models, looking inside them, and running them.

Every part of keras-mnas that needs a `.tflite` goes through this module: the latency sources convert the
model they time with `convert_to_tflite` and check bytes with `validate_tflite`, and the quantization module
converts, inspects (`float_ops`) and evaluates (`predict_tflite`, `evaluate_tflite`) int8 models with it.
TensorFlow and LiteRT are imported lazily, inside the functions, so that importing `keras_mnas` never pulls
them in.

Example:

```python
from keras_mnas import tflite

tflite_bytes = tflite.convert_to_tflite(model)
tflite.tflite_op_summary(tflite_bytes)["op_counts"]  # {"CONV_2D": 2, "MEAN": 1, ...}
tflite.evaluate_tflite(tflite_bytes, x_val, y_val)  # accuracy, as LiteRT computes it
```
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The quantizations a model can be converted (and timed) with: plain float, or full-integer int8.
QUANTIZATIONS = ("float32", "int8")

#: How a Keras model is turned into a TFLite flatbuffer. `"concrete_function"` traces
#: `model(x, training=False)` at batch size 1 and converts the frozen graph (fast);
#: `"saved_model"` exports through `keras.export.ExportArchive` first, the route
#: `model.export(..., format="litert")` takes (slower; kept as a fallback for models the first route
#: cannot take).
CONVERSION_METHODS = ("concrete_function", "saved_model")

#: Default number of batch-1 samples taken from a representative array for int8 calibration.
DEFAULT_CALIBRATION_SAMPLES = 100

# The converter and the stderr redirection below are process-wide: one conversion at a time.
CONVERSION_LOCK = threading.Lock()

# TensorFlow's rules for graph name scopes (tensorflow/python/framework/ops.py): Keras opens one per layer
# while tracing, and a root scope (the model's) may not start with "_", "-", "\\" or "/".
_ROOT_SCOPE_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
_SCOPE_NAME = re.compile(r"^[A-Za-z0-9_.\\/>-]*$")
_SCOPE_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9_.\\/>-]")


def model_input_specs(
    model, input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None
) -> list[tuple[tuple[int, ...], str]]:
    """Returns `(shape_without_batch, dtype)` for each model input, refusing undefined dimensions.

    A TFLite model has one fixed input shape. A Keras model whose spatial dimensions are `None`
    converts into a model with a placeholder 1x1 input, which then runs (or fails to run) on a 1x1
    image and "measures" a meaningless figure, so it is refused here.

    Args:
        model: A Keras model.
        input_shape: Optional shape (batch size excluded) to use instead of the model's own, e.g.
            `(224, 224, 3)`; a list of shapes for a model with several inputs.

    Returns:
        One `(shape, dtype)` pair per input, the shape without the batch axis.

    Raises:
        ValueError: if a dimension other than the batch is undefined, or no shape is known at all.

    Example:

    ```python
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3)])
    model_input_specs(model)  # [((32, 32, 3), "float32")]
    ```
    """
    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        inputs = []
    model_shapes = [tuple(x.shape) for x in inputs]
    dtypes = [str(getattr(x, "dtype", "float32")) for x in inputs]

    if input_shape is not None:
        shapes = _normalize_input_shape_arg(input_shape)
        if model_shapes and len(shapes) != len(model_shapes):
            raise ValueError(
                f"`input_shape` must give one shape per model input: the model has "
                f"{len(model_shapes)} inputs {model_shapes}; received {input_shape!r}."
            )
        for shape, model_shape in zip(shapes, model_shapes, strict=False):
            if len(shape) != len(model_shape) - 1:
                raise ValueError(
                    f"`input_shape` excludes the batch axis, so it must have "
                    f"{len(model_shape) - 1} dimensions for a model input of shape {model_shape}; "
                    f"received {shape}."
                )
        if not dtypes:
            dtypes = ["float32"] * len(shapes)
    else:
        if not model_shapes:
            raise ValueError(
                f"Cannot convert model {getattr(model, 'name', model)!r} to TFLite: it has no "
                "known input shape. Build it on a `keras.Input` with a fixed `input_shape` (e.g. "
                "`input_shape=(224, 224, 3)`) or pass `input_shape=`."
            )
        shapes = [s[1:] for s in model_shapes]

    for shape in shapes:
        if not shape or any(d is None or int(d) <= 0 for d in shape):
            shown = model_shapes[0] if len(model_shapes) == 1 else model_shapes
            raise ValueError(
                f"Cannot convert model {getattr(model, 'name', model)!r} to TFLite: its input "
                f"shape {shown} is not fully defined (only the batch size may be None). A TFLite "
                "model has one fixed input size; converting an undefined one yields a 1x1 model "
                "whose latency is meaningless. Build the model with a fixed `input_shape`, e.g. "
                "`input_shape=(224, 224, 3)`, or pass `input_shape=` to `convert_to_tflite`."
            )
    return [(tuple(int(d) for d in s), dt) for s, dt in zip(shapes, dtypes, strict=True)]


def _normalize_input_shape_arg(input_shape) -> list[tuple]:
    shape = list(input_shape)
    if shape and all(isinstance(s, (list, tuple)) for s in shape):
        return [tuple(s) for s in shape]
    return [tuple(shape)]


def calibration_batches(
    representative_data,
    specs: Sequence[tuple[tuple[int, ...], str]],
    *,
    num_samples: int = DEFAULT_CALIBRATION_SAMPLES,
) -> list[list[np.ndarray]]:
    """Materialises int8 calibration data: a list of batches, each a list of one array per input.

    Args:
        representative_data: A numpy array of samples with a leading sample axis (the first
            `num_samples` are used, one at a time, as batch-1 inputs), or a callable returning an
            iterable of batches (each an array, or a list/tuple of arrays for a multi-input model).
        specs: The model's `(shape, dtype)` input specs, from `model_input_specs`.
        num_samples: How many samples of an array to use.

    Returns:
        The calibration batches, ready to be fed to the TFLite converter.

    Example:

    ```python
    batches = calibration_batches(np.random.rand(8, 32, 32, 3), [((32, 32, 3), "float32")])
    len(batches), batches[0][0].shape  # (8, (1, 32, 32, 3))
    ```
    """
    if representative_data is None:
        raise ValueError(
            "quantization='int8' needs `representative_data` to calibrate the quantization "
            "ranges: an array of input samples (e.g. a few hundred training images) or a callable "
            "returning an iterable of input batches; received None."
        )
    if callable(representative_data):
        batches = [_as_input_list(b, specs) for b in representative_data()]
    else:
        data = np.asarray(representative_data)
        if len(specs) != 1:
            raise ValueError(
                f"An array of representative data only fits a single-input model; this model has "
                f"{len(specs)} inputs. Pass a callable returning batches as lists of arrays "
                "instead."
            )
        shape, dtype = specs[0]
        if data.ndim != len(shape) + 1 or tuple(data.shape[1:]) != shape:
            raise ValueError(
                f"`representative_data` must be an array of samples of shape "
                f"(num_samples, *{shape}) matching the model input; received an array of shape "
                f"{data.shape}."
            )
        data = data[:num_samples].astype(dtype, copy=False)
        batches = [[np.ascontiguousarray(data[i : i + 1])] for i in range(len(data))]
    if not batches:
        raise ValueError("`representative_data` yielded no samples; int8 calibration needs at least one.")
    return batches


def _as_input_list(batch, specs) -> list[np.ndarray]:
    items = list(batch) if isinstance(batch, (list, tuple)) else [batch]
    if len(items) != len(specs):
        raise ValueError(
            f"Each representative batch must hold one array per model input ({len(specs)}); "
            f"received {len(items)}."
        )
    out = []
    for item, (_, dtype) in zip(items, specs, strict=True):
        array = np.asarray(item)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(dtype, copy=False)
        out.append(array)
    return out


def convert_to_tflite(
    model,
    *,
    quantization: str = "float32",
    representative_data=None,
    input_shape: Sequence[int] | None = None,
    method: str = "concrete_function",
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    verbose: bool = False,
) -> bytes:
    """Converts a Keras 3 model (TensorFlow backend) to a TFLite flatbuffer with a batch size of 1.

    The model runs in inference mode (`training=False`). `"float32"` is a plain conversion.
    `"int8"` is full-integer post-training quantization: `tf.lite.Optimize.DEFAULT`, only
    `TFLITE_BUILTINS_INT8` kernels, and int8 model input and output, with the ranges calibrated on
    `representative_data`. Every op must be a TFLite builtin (no Flex/Select TF ops), so that the
    model runs in a plain LiteRT runtime. Any name Keras accepts works: a model or layer name that
    TensorFlow refuses as a graph scope (`"my model"`) is replaced by a valid one while tracing, and put back.

    Args:
        model: A Keras model with a fully defined input shape (batch size aside).
        quantization: `"float32"` or `"int8"`.
        representative_data: Needed for `"int8"`, ignored for `"float32"`: an array of input
            samples (up to `calibration_samples` are used, one per batch) or a callable returning an
            iterable of input batches.
        input_shape: Optional input shape without the batch axis, to convert a model whose own input
            shape is not fully defined, e.g. `(224, 224, 3)`.
        method: `"concrete_function"` (default, fast) or `"saved_model"` (through
            `keras.export.ExportArchive`, slower). See `CONVERSION_METHODS`.
        calibration_samples: How many samples of a representative array to calibrate with.
        verbose: Show TensorFlow's converter output (hidden by default, and reported on failure).

    Returns:
        The TFLite flatbuffer as `bytes`.

    Raises:
        ValueError: for an unknown quantization or method, an undefined input shape, or int8 without
            representative data.
        RuntimeError: when the converter fails.

    Example:

    ```python
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3)])
    float_bytes = convert_to_tflite(model)
    int8_bytes = convert_to_tflite(
        model, quantization="int8", representative_data=np.random.rand(16, 32, 32, 3)
    )
    ```
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}; received {quantization!r}.")
    if method not in CONVERSION_METHODS:
        raise ValueError(f"`method` must be one of {CONVERSION_METHODS}; received {method!r}.")
    if calibration_samples < 1:
        raise ValueError(f"`calibration_samples` must be >= 1; received {calibration_samples!r}.")
    specs = model_input_specs(model, input_shape)
    batches = None
    if quantization == "int8":
        batches = calibration_batches(representative_data, specs, num_samples=calibration_samples)

    import keras

    if keras.backend.backend() != "tensorflow":
        # The model is traced with tf.function: only TensorFlow-backend layers produce a TF graph.
        raise RuntimeError(
            "convert_to_tflite needs the TensorFlow Keras backend (KERAS_BACKEND=tensorflow); "
            f"the active backend is {keras.backend.backend()!r}."
        )
    import tensorflow as tf

    tensor_specs = [
        tf.TensorSpec((1, *shape), tf.as_dtype(dtype), name=f"input_{i}")
        for i, (shape, dtype) in enumerate(specs)
    ]

    def configure(converter):
        # Builtins only: a Flex op would not run in the plain LiteRT interpreter being timed.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: iter(batches)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter

    model_name = getattr(model, "name", model)  # read now: names are lent for the tracing below
    with CONVERSION_LOCK, quiet_conversion(verbose) as log, _scope_safe_names(model):
        try:
            if method == "concrete_function":
                return _convert_concrete_function(tf, model, tensor_specs, configure)
            return _convert_saved_model(tf, model, tensor_specs, configure)
        except Exception as e:
            details = log.text()[-4000:].strip()
            raise RuntimeError(
                f"TFLite conversion ({quantization}, method={method!r}) of model "
                f"{model_name!r} with input specs {specs} failed: {e}"
                + (f"\nConverter output:\n{details}" if details else "")
            ) from e


def _scope_safe_name(name: str, root: bool) -> str:
    if (_ROOT_SCOPE_NAME if root else _SCOPE_NAME).match(name):
        return name
    safe = _SCOPE_NAME_CHARACTER.sub("_", name)
    return safe if not root or _ROOT_SCOPE_NAME.match(safe) else "model" + safe


@contextlib.contextmanager
def _scope_safe_names(model):
    """Lends a valid TensorFlow scope name to each layer whose name TensorFlow would refuse, while tracing.

    Keras accepts any layer name without a "/" (`"my model"`), but tracing opens a TensorFlow name scope
    per layer, and TensorFlow refuses spaces and most punctuation there. The original names are put back
    on exit, so the caller's model ends up unchanged.
    """
    flatten = getattr(model, "_flatten_layers", None)
    layers = list(flatten(include_self=True, recursive=True)) if callable(flatten) else [model]
    renamed = []
    try:
        for layer in layers:
            name = getattr(layer, "name", None)
            if not isinstance(name, str):
                continue
            safe = _scope_safe_name(name, root=layer is model)
            if safe != name:
                layer.name = safe
                renamed.append((layer, name))
        yield
    finally:
        for layer, name in reversed(renamed):
            layer.name = name


def _call_model(model, inputs):
    # A single-input model takes the tensor itself; a multi-input model a list.
    return model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)


def _convert_concrete_function(tf, model, tensor_specs, configure) -> bytes:
    fn = tf.function(lambda *xs: _call_model(model, xs), input_signature=tensor_specs)
    concrete = fn.get_concrete_function()
    # Passing the tf.function as `trackable_obj` selects the freeze-the-graph pipeline without the
    # deprecation warning; passing the Keras model instead lowers to a SavedModel whose Keras 3
    # variables stay uninitialised resource variables (the model then outputs garbage).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    return configure(converter).convert()


def _convert_saved_model(tf, model, tensor_specs, configure) -> bytes:
    import keras

    with tempfile.TemporaryDirectory(prefix="keras_mnas_export_") as export_dir:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            lambda *xs: _call_model(model, xs),
            input_signature=tensor_specs,
        )
        archive.write_out(export_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(export_dir)
        return configure(converter).convert()


class _CapturedLog:
    def __init__(self, path: str | None):
        self._path = path

    def text(self) -> str:
        if self._path is None:
            return ""
        try:
            with open(self._path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


@contextlib.contextmanager
def quiet_conversion(verbose: bool):
    """Hides TensorFlow's Python warnings and native stderr chatter, keeping it for errors."""
    if verbose:
        yield _CapturedLog(None)
        return
    absl_logger = logging.getLogger("absl")
    tf_logger = logging.getLogger("tensorflow")
    levels = (absl_logger.level, tf_logger.level)
    absl_logger.setLevel(logging.ERROR)
    tf_logger.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="keras_mnas_tflite_log_") as log_dir:
        log_path = os.path.join(log_dir, "stderr.txt")
        saved_fd = None
        try:
            sys.stderr.flush()
            with open(log_path, "wb") as log_file:
                try:
                    saved_fd = os.dup(2)
                    os.dup2(log_file.fileno(), 2)
                except OSError:  # No usable fd 2 (some embedded interpreters): stay noisy.
                    saved_fd = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield _CapturedLog(log_path)
        finally:
            if saved_fd is not None:
                sys.stderr.flush()
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
            absl_logger.setLevel(levels[0])
            tf_logger.setLevel(levels[1])


def _dtype_name(dtype) -> str:
    return np.dtype(dtype).name


def tflite_op_summary(tflite_bytes: bytes) -> dict[str, Any]:
    """Lists the operators of a TFLite model and the dtypes of their tensors.

    The model is read with the LiteRT interpreter without its default delegate, so the summary shows
    the model's own operators rather than one opaque XNNPACK node.

    Args:
        tflite_bytes: A TFLite flatbuffer.

    Returns:
        A dict with `"inputs"` and `"outputs"` (lists of `{"name", "shape", "shape_signature",
        "dtype"}`), `"ops"` (a list of `{"op", "input_dtypes", "output_dtypes"}` in execution order)
        and `"op_counts"` (`{op_name: count}`).

    Raises:
        ValueError: if the bytes are not a readable TFLite model.

    Example:

    ```python
    summary = tflite_op_summary(convert_to_tflite(model))
    summary["op_counts"]  # {"CONV_2D": 2, "MEAN": 1, ...}
    summary["inputs"][0]["dtype"]  # "float32"
    ```
    """
    interpreter = load_interpreter(tflite_bytes, use_default_delegate=False)
    ops = []
    counts: dict[str, int] = {}
    for details in interpreter._get_ops_details():
        name = details["op_name"]
        ops.append(
            {
                "op": name,
                "input_dtypes": [_dtype_name(t) for t in details["operand_types"]],
                "output_dtypes": [_dtype_name(t) for t in details["result_types"]],
            }
        )
        counts[name] = counts.get(name, 0) + 1

    def tensors(details_list):
        return [
            {
                "name": d["name"],
                "shape": [int(x) for x in d["shape"]],
                "shape_signature": [int(x) for x in d["shape_signature"]],
                "dtype": _dtype_name(d["dtype"]),
            }
            for d in details_list
        ]

    return {
        "inputs": tensors(interpreter.get_input_details()),
        "outputs": tensors(interpreter.get_output_details()),
        "ops": ops,
        "op_counts": counts,
    }


def load_interpreter(tflite_bytes: bytes, *, num_threads: int = 1, use_default_delegate: bool = True) -> Any:
    """Creates a LiteRT `Interpreter` for TFLite bytes, with a clear error for unreadable bytes.

    Args:
        tflite_bytes: A TFLite flatbuffer.
        num_threads: Interpreter threads.
        use_default_delegate: Whether LiteRT may apply its default (XNNPACK) delegate.

    Returns:
        An `ai_edge_litert.interpreter.Interpreter` (tensors not yet allocated).

    Example:

    ```python
    interpreter = load_interpreter(convert_to_tflite(model))
    interpreter.allocate_tensors()
    ```
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if not isinstance(tflite_bytes, (bytes, bytearray, memoryview)) or not len(tflite_bytes):
        raise ValueError(
            "Expected the non-empty bytes of a TFLite model; received "
            f"{type(tflite_bytes).__name__}"
            + (f" of length {len(tflite_bytes)}" if hasattr(tflite_bytes, "__len__") else "")
            + "."
        )
    resolver = (
        OpResolverType.AUTO if use_default_delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    try:
        return Interpreter(
            model_content=bytes(tflite_bytes),
            num_threads=num_threads,
            experimental_op_resolver_type=resolver,
        )
    except (ValueError, RuntimeError) as e:
        raise ValueError(
            f"Could not load the TFLite model ({len(tflite_bytes)} bytes): {e}. Expected a valid "
            "TFLite flatbuffer, e.g. from `convert_to_tflite`."
        ) from e


def validate_tflite(tflite_bytes: bytes | bytearray | memoryview) -> bytes:
    """Checks that bytes are a TFLite model with a fixed input shape, and returns them as `bytes`.

    A latency source calls this before timing anything: a model whose input has undefined (dynamic)
    dimensions other than the batch would run at a placeholder shape and report a meaningless figure.

    Args:
        tflite_bytes: The bytes to check.

    Returns:
        The same bytes, as `bytes`.

    Raises:
        ValueError: for bytes that are not a loadable TFLite flatbuffer, or a model whose input has
            undefined dimensions.

    Example:

    ```python
    tflite_bytes = validate_tflite(convert_to_tflite(model))
    ```
    """
    if isinstance(tflite_bytes, (bytearray, memoryview)):
        tflite_bytes = bytes(tflite_bytes)
    if not isinstance(tflite_bytes, bytes) or len(tflite_bytes) < 8 or tflite_bytes[4:8] != b"TFL3":
        shown = tflite_bytes[:8] if isinstance(tflite_bytes, bytes) else type(tflite_bytes).__name__
        raise ValueError(
            "Expected the bytes of a TFLite model (a flatbuffer with the 'TFL3' identifier); "
            f"received {shown!r}."
        )
    interpreter = load_interpreter(tflite_bytes, use_default_delegate=False)
    for detail in interpreter.get_input_details():
        signature = [int(d) for d in detail["shape_signature"]]
        if any(d < 0 for d in signature[1:]):
            raise ValueError(
                f"Cannot time a TFLite model whose input {detail['name']!r} has undefined dimensions (shape "
                f"signature {signature}): the runtime would run it at a placeholder shape and report a "
                "meaningless figure. Convert the model with a fixed input shape (batch size aside)."
            )
    return tflite_bytes


# --------------------------------------------------------------------------------------------------------
# Running a TFLite model

# Integer tensor types of a full-integer model: int8 activations and weights, int32 biases and shapes.
_INTEGER_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "bool"}


def float_ops(tflite_model: bytes | str | os.PathLike) -> list[str]:
    """Names the operators of a TFLite model that compute in floating point.

    A `QUANTIZE` from a float input and a `DEQUANTIZE` to a float output are conversions at the model's
    edges, not float computation, and are not listed. An empty list means a full-integer model.

    Args:
        tflite_model: TFLite bytes or a `.tflite` path.

    Returns:
        The operator names (with repeats), in execution order.

    Example:

    ```python
    float_ops(post_training_quantize(model, x))  # []
    float_ops(convert_to_tflite(model))  # ["CONV_2D", "DEPTHWISE_CONV_2D", ...]
    ```
    """
    summary = tflite_op_summary(_read_tflite(tflite_model))
    found = []
    for op in summary["ops"]:
        dtypes = set(op["input_dtypes"]) | set(op["output_dtypes"])
        if op["op"] in ("QUANTIZE", "DEQUANTIZE") or dtypes <= _INTEGER_DTYPES:
            continue
        found.append(op["op"])
    return found


def _read_tflite(tflite_model) -> bytes:
    if isinstance(tflite_model, (bytes, bytearray, memoryview)):
        return bytes(tflite_model)
    if isinstance(tflite_model, (str, os.PathLike)):
        with open(tflite_model, "rb") as f:
            return f.read()
    raise ValueError(
        f"Expected TFLite model bytes or a .tflite path; received {type(tflite_model).__name__}."
    )


def predict_tflite(tflite_model: bytes | str | os.PathLike, x: Any, *, num_threads: int = 1) -> np.ndarray:
    """Runs a single-input TFLite model on every sample of `x` with the LiteRT interpreter.

    Float inputs are quantized with the model's input scale and zero point when its input is integer, and
    integer outputs are dequantized, so the result is comparable with the Keras model's `predict`.

    Args:
        tflite_model: TFLite bytes or a `.tflite` path (batch size 1, as `convert_to_tflite` makes them).
        x: Inputs, a float array of shape `(num_samples, *input_shape)`.
        num_threads: Interpreter threads.

    Returns:
        A float32 array of shape `(num_samples, *output_shape)`.

    Raises:
        ValueError: for a model with several inputs or outputs, or inputs of the wrong shape.

    Example:

    ```python
    probabilities = predict_tflite("model_int8.tflite", x_val)
    ```
    """
    tflite_bytes = _read_tflite(tflite_model)
    interpreter = load_interpreter(tflite_bytes, num_threads=num_threads)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"predict_tflite runs single-input, single-output models; this one has {len(inputs)} inputs and "
            f"{len(outputs)} outputs."
        )
    input_detail, output_detail = inputs[0], outputs[0]
    sample_shape = tuple(int(d) for d in input_detail["shape"][1:])
    x = np.asarray(x, dtype="float32")
    if x.ndim != len(sample_shape) + 1 or tuple(x.shape[1:]) != sample_shape:
        raise ValueError(
            f"x must have shape (num_samples, *{sample_shape}) to match the TFLite model's input; received "
            f"{x.shape}."
        )
    try:
        interpreter.allocate_tensors()
    except RuntimeError as error:
        if "XNNPACK" not in str(error):
            raise
        # XNNPACK refuses some quantization parameters that trained weights can produce (e.g. a rescale
        # ratio out of its range); TFLite's builtin int8 kernels run them, and define the result anyway.
        interpreter = load_interpreter(
            tflite_bytes, num_threads=num_threads, use_default_delegate=False
        )
        interpreter.allocate_tensors()
    input_dtype = np.dtype(input_detail["dtype"])
    input_scale, input_zero_point = input_detail["quantization"]
    output_scale, output_zero_point = output_detail["quantization"]
    results = []
    for sample in x:
        batch = sample[None]
        if np.issubdtype(input_dtype, np.integer):
            info = np.iinfo(input_dtype)
            batch = np.clip(np.round(batch / input_scale + input_zero_point), info.min, info.max)
        interpreter.set_tensor(input_detail["index"], batch.astype(input_dtype))
        interpreter.invoke()
        output = interpreter.get_tensor(output_detail["index"])[0]
        if np.issubdtype(output.dtype, np.integer):
            output = (output.astype("float32") - output_zero_point) * output_scale
        results.append(output.astype("float32"))
    return np.stack(results) if results else np.zeros((0, *output_detail["shape"][1:]), "float32")


def evaluate_tflite(
    tflite_model: bytes | str | os.PathLike, x: Any, y: Any, *, num_threads: int = 1
) -> float:
    """Classification accuracy of a TFLite model (float or int8) on `(x, y)`, run with LiteRT.

    Args:
        tflite_model: TFLite bytes or a `.tflite` path.
        x: Inputs, a float array of shape `(num_samples, *input_shape)`.
        y: Labels: class indices of shape `(num_samples,)` (or `(num_samples, 1)`), or one-hot rows.
        num_threads: Interpreter threads.

    Returns:
        The fraction of samples whose highest-scoring class is the label.

    Raises:
        ValueError: when `x` and `y` hold different numbers of samples, or `y` is not labels.

    Example:

    ```python
    evaluate_tflite(post_training_quantize(model, x_train), x_val, y_val)  # e.g. 0.95
    ```
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        labels = np.argmax(y, axis=1)
    elif y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
        labels = y.reshape(-1)
    else:
        raise ValueError(
            f"y must be class indices of shape (num_samples,) or one-hot rows; received shape {y.shape}."
        )
    if len(labels) != len(x) or len(labels) == 0:
        raise ValueError(
            f"x and y must hold the same, non-zero number of samples; received {len(x)} and {len(labels)}."
        )
    scores = predict_tflite(tflite_model, x, num_threads=num_threads)
    return float(np.mean(np.argmax(scores.reshape(len(labels), -1), axis=1) == labels))
