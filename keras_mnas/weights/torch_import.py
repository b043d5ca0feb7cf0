"""Weight import from timm and torchvision MnasNet checkpoints, without PyTorch.

Three layers of functionality:

* `read_torch_state_dict(path)` reads a `.safetensors` file (via `safetensors.numpy`) or a PyTorch
  `torch.save` zip checkpoint (`.pth`, `.pt`, `.bin`, `.ckpt`) into `{name: numpy.ndarray}`. Zip checkpoints
  are read with a restricted unpickler that only knows how to rebuild tensors and ordered dicts: any other
  global in the pickle is refused before anything is called, so a checkpoint can never run code.
* `load_torch_weights(model, source)` copies a timm (`conv_stem`, `blocks.S.L.*`, `conv_head`, ...) or
  torchvision (`layers.N.*`, `classifier.1`) MnasNet state dict into a model built by
  `keras_mnas.build_model`, layer by layer, checking every shape.
* `convert_torch_checkpoint(source, output_path, arch)` does both and saves a `.weights.h5` file (with its
  build settings recorded) or a `.keras` file.

PyTorch MnasNets pad `k // 2` on every side of a strided convolution and use a BatchNorm epsilon of 1e-5,
so the Keras model must be built with `**TORCH_CONVENTIONS` to reproduce their outputs.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pathlib
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

#: Build options that make a keras_mnas model compute what the PyTorch (timm / torchvision) models compute.
TORCH_CONVENTIONS: dict[str, Any] = {"padding": "symmetric", "bn_epsilon": 1e-5}

_ZIP_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# Keys under which training scripts commonly wrap the state dict, most specific first.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
# Prefixes added by torch.nn.DataParallel / DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_IGNORED_SUFFIXES = (".num_batches_tracked",)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """Raised when a PyTorch checkpoint's pickle references a global the restricted reader refuses."""


class TorchConventionWarning(UserWarning):
    """Warned when a model's padding or BatchNorm epsilon differ from the PyTorch models' conventions."""


def torch_build_kwargs() -> dict[str, Any]:
    """Returns the `build_model` options that match PyTorch MnasNets (a fresh copy of `TORCH_CONVENTIONS`).

    Example:

    ```python
    model = keras_mnas.build_model("b1", classes=1000, **torch_build_kwargs())
    ```
    """
    return dict(TORCH_CONVENTIONS)


# --------------------------------------------------------------------------------------------------
# Reading checkpoints
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stands for a `torch.<X>Storage` class (or `torch.UntypedStorage`) in the unpickled data."""

    name: str
    dtype: np.dtype
    bfloat16: bool = False


@dataclasses.dataclass(frozen=True)
class _TorchDtype:
    """Stands for a `torch.<dtype>` object (used by `_rebuild_tensor_v3` for newer dtypes)."""

    name: str
    dtype: np.dtype | None


@dataclasses.dataclass
class _Storage:
    """The bytes of one storage of the archive, read as a flat array of its element type."""

    data: np.ndarray
    bfloat16: bool
    byteorder: str  # "<" or ">", from the archive's byteorder record


# torch's legacy storage class names, by the numpy dtype of their elements (little-endian by default).
_STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",  # read as raw 16-bit words, then widened to float32
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexDoubleStorage": "c16",
    "ComplexFloatStorage": "c8",
}
_TORCH_DTYPES = {
    "float64": "f8",
    "float32": "f4",
    "float16": "f2",
    "bfloat16": "u2",
    "int64": "i8",
    "int32": "i4",
    "int16": "i2",
    "int8": "i1",
    "uint8": "u1",
    "uint16": "u2",
    "uint32": "u4",
    "uint64": "u8",
    "bool": "?",
}


def _bfloat16_to_float32(words: np.ndarray) -> np.ndarray:
    # bfloat16 is the upper half of a float32: shift the 16-bit word into place.
    out = np.empty(words.shape, dtype=np.float32)
    out.view(np.uint32)[...] = words.astype(np.uint32) << 16
    return out


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a `torch.save` `data.pkl`, allowing only what a state dict is made of.

    `find_class` is the only way a pickle can reach a Python callable (GLOBAL, STACK_GLOBAL, INST and the
    copyreg extension opcodes all go through it), so refusing every global not listed here means no code
    from the file is ever run.
    """

    def __init__(self, file, load_storage: Callable[[_StorageType, str, int], _Storage], source: str):
        super().__init__(file)
        self._load_storage = load_storage
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            code = _STORAGE_DTYPES[name]
            return _StorageType(name, np.dtype(code), bfloat16=name == "BFloat16Storage")
        if (module, name) in (("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")):
            return _StorageType(name, np.dtype("u1"))
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDtype(name, np.dtype(_TORCH_DTYPES[name]))
        raise UnsafeCheckpointError(
            f"Refusing to unpickle {self._source}: its data.pkl references the global "
            f"'{module}.{name}', which is not part of a plain state dict (tensors in dicts, lists and "
            "numbers). keras_mnas reads PyTorch checkpoints with a restricted unpickler and never runs "
            "code from a file. If you trust the file, load it with torch and re-save just the weights, "
            "e.g. safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')."
        )

    def persistent_load(self, pid: Any) -> _Storage:
        # torch.save writes every storage as ('storage', storage_type, key, location, numel).
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(
                f"Unsupported persistent id in {self._source}: expected "
                f"('storage', type, key, location, numel); received {pid!r}."
            )
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"Unsupported storage type {storage_type!r} in {self._source}.")
        if isinstance(key, bytes):
            key = key.decode("ascii")
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise pickle.UnpicklingError(f"Malformed storage key {key!r} in {self._source}.")
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"Malformed storage size {numel!r} in {self._source}.")
        return self._load_storage(storage_type, key, numel)


def _check_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise pickle.UnpicklingError(f"Malformed tensor {what}: {value!r}.")
    return tuple(value)


def _view(storage: _Storage, offset: Any, size: Any, stride: Any, dtype: np.dtype | None = None):
    """Rebuilds a tensor as a contiguous numpy array from its storage, offset, size and stride."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"Expected a storage to rebuild a tensor; received {storage!r}.")
    data = storage.data
    if dtype is not None:  # _rebuild_tensor_v3: an untyped (byte) storage reinterpreted as `dtype`
        if data.nbytes % dtype.itemsize:
            raise pickle.UnpicklingError("A storage's size is not a multiple of its tensor's dtype.")
        data = data.view(dtype.newbyteorder(storage.byteorder))
    size = _check_int_tuple(size, "size")
    stride = _check_int_tuple(stride, "stride")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 or len(size) != len(stride):
        raise pickle.UnpicklingError(
            f"Malformed tensor: offset {offset!r}, size {size!r}, stride {stride!r}."
        )
    if 0 in size:
        array = np.zeros(size, dtype=data.dtype)
    else:
        # Bounds check before as_strided, which would otherwise read past the storage.
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= data.size:
            raise pickle.UnpicklingError(
                f"A tensor of size {size} and stride {stride} at offset {offset} reaches element "
                f"{last} of a storage of {data.size} elements: the checkpoint is corrupt."
            )
        array = np.lib.stride_tricks.as_strided(
            data[offset:],
            shape=size,
            strides=tuple(s * data.dtype.itemsize for s in stride),
            writeable=False,
        )
    # A native-endian, C-contiguous copy that owns its memory (the storage may be shared by views).
    # Not np.ascontiguousarray, which would turn a 0-d tensor (num_batches_tracked) into shape (1,).
    array = np.array(array, dtype=data.dtype.newbyteorder("="), order="C", copy=True)
    if storage.bfloat16:
        array = _bfloat16_to_float32(array)
    return array


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    if metadata:  # conj / neg bits: never set on weights
        raise pickle.UnpicklingError(f"Unsupported tensor metadata {metadata!r}.")
    return _view(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None
):
    if metadata:
        raise pickle.UnpicklingError(f"Unsupported tensor metadata {metadata!r}.")
    if not isinstance(dtype, _TorchDtype) or dtype.dtype is None:
        raise pickle.UnpicklingError(f"Unsupported tensor dtype {dtype!r}.")
    array = _view(storage, storage_offset, size, stride, dtype=dtype.dtype)
    return _bfloat16_to_float32(array) if dtype.name == "bfloat16" else array


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


def _read_torch_zip(path: pathlib.Path) -> Any:
    """Reads a `torch.save` zip archive: `<dir>/data.pkl` plus one `<dir>/data/<key>` record per storage."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pickles) != 1:
            raise ValueError(
                f"{path} is a zip file but not a PyTorch checkpoint: expected exactly one "
                f"'<archive>/data.pkl' record; found {pickles or 'none'}."
            )
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in names:
            mark = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if mark not in ("little", "big"):
                raise ValueError(f"{path}: unknown byte order mark {mark!r}.")
            byteorder = "<" if mark == "little" else ">"
        storages: dict[str, _Storage] = {}

        def load_storage(storage_type: _StorageType, key: str, numel: int) -> _Storage:
            if key in storages:
                return storages[key]
            record = f"{prefix}data/{key}"
            if record not in names:
                raise ValueError(f"{path}: the pickle refers to storage {record!r}, which is missing.")
            dtype = storage_type.dtype.newbyteorder(byteorder)
            nbytes = numel * dtype.itemsize
            info = archive.getinfo(record)
            if info.file_size < nbytes:
                raise ValueError(
                    f"{path}: storage {record!r} holds {info.file_size} bytes; {nbytes} expected."
                )
            with archive.open(record) as file:
                raw = file.read(nbytes)  # never more than the pickle declared
            array = np.frombuffer(raw, dtype=dtype, count=numel)
            storages[key] = _Storage(array, storage_type.bfloat16, byteorder)
            return storages[key]

        data = archive.read(pickles[0])
        return _RestrictedUnpickler(io.BytesIO(data), load_storage, str(path)).load()


def _unwrap_state_dict(obj: Any, source: str) -> dict[str, np.ndarray]:
    """Finds the state dict in a checkpoint object and strips DataParallel-style key prefixes."""
    seen = []
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        key = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        seen.append(key)
        obj = obj[key]
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        found = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"Could not find a state dict in {source}: expected a dict of tensors, possibly wrapped "
            f"under one of {list(_WRAPPER_KEYS)}; found {found}"
            + (f" (after unwrapping {seen})." if seen else ".")
        )
    state = {str(k): _to_numpy(v) for k, v in obj.items()}
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _is_array(value: Any) -> bool:
    # numpy arrays, and tensors of other frameworks (torch, tf, jax) that numpy can convert.
    return isinstance(value, np.ndarray) or (hasattr(value, "shape") and hasattr(value, "dtype"))


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and _is_array(v) for k, v in obj.items())


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        # Once ml_dtypes is imported (TensorFlow and JAX do), safetensors.numpy returns bfloat16 arrays.
        return value.astype(np.float32) if value.dtype.name == "bfloat16" else value
    if hasattr(value, "detach"):  # a torch tensor, when the caller passes model.state_dict()
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def _read_safetensors_widening_bfloat16(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Reads a safetensors file holding bfloat16 tensors, which numpy (and safetensors.numpy) lack.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's dtype,
    shape and byte range, then the data.
    """
    import json

    raw = path.read_bytes()
    (length,) = np.frombuffer(raw[:8], dtype="<u8")
    header = json.loads(raw[8 : 8 + int(length)])
    data = memoryview(raw)[8 + int(length) :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']!r}.")
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=_SAFETENSORS_DTYPES[info["dtype"]])
        array = array.reshape(info["shape"])
        if info["dtype"] == "BF16":
            array = _bfloat16_to_float32(array)
        tensors[name] = np.array(array, dtype=array.dtype.newbyteorder("="), copy=True)
    return tensors


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict from a `.safetensors` file or a `torch.save` checkpoint, without torch.

    `.safetensors` files are read with `safetensors.numpy`. `.pth`, `.pt`, `.bin` and `.ckpt` files (the
    zip format `torch.save` has written since PyTorch 1.6) are read with a restricted unpickler that
    rebuilds tensors as numpy arrays and refuses any other global, so that loading a file never runs its
    code. A state dict wrapped in a training checkpoint (`{"state_dict": ...}`, `{"model": ...}`, ...) is
    unwrapped and the `module.` prefix of `DataParallel` is removed. bfloat16 tensors become float32.

    Args:
        path: The checkpoint file.

    Returns:
        An ordered `{name: numpy.ndarray}` dict (C-contiguous, native byte order).

    Raises:
        UnsafeCheckpointError: if the pickle references a global that is not part of a state dict.
        ValueError: for a legacy (pre-1.6) or malformed checkpoint, or one holding no state dict.
        FileNotFoundError: if the file does not exist.

    Example:

    ```python
    state = read_torch_state_dict("mnasnet1.0_top1_73.512-f206786ef8.pth")
    state["layers.0.weight"].shape  # (32, 3, 3, 3)
    ```
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {str(path)!r}.")
    if path.suffix == ".safetensors":
        try:
            import safetensors.numpy
        except ImportError as error:  # an optional dependency
            raise ImportError(
                "Reading .safetensors files needs the 'safetensors' package: pip install safetensors."
            ) from error
        try:
            tensors = safetensors.numpy.load_file(str(path))
        except TypeError as error:
            if "bfloat16" not in str(error):
                raise
            tensors = _read_safetensors_widening_bfloat16(path)
        return _unwrap_state_dict(tensors, str(path))
    if zipfile.is_zipfile(path):
        return _unwrap_state_dict(_read_torch_zip(path), str(path))
    with open(path, "rb") as file:
        head = file.read(2)
    if head[:1] == b"\x80":
        raise ValueError(
            f"{path} is a legacy (pre-1.6, non-zip) torch.save file, which keras_mnas does not read. "
            "Re-save it with a current PyTorch: torch.save(torch.load(path, weights_only=True), new_path), "
            "or convert it to .safetensors."
        )
    raise ValueError(
        f"Cannot read {path}: expected a .safetensors file or a PyTorch zip checkpoint "
        f"({', '.join(_ZIP_SUFFIXES)}); the file is neither."
    )


# --------------------------------------------------------------------------------------------------
# Mapping checkpoint tensors onto Keras layers
# --------------------------------------------------------------------------------------------------

_BLOCK_LAYER = re.compile(r"^block(\d+)([a-z]+)_(.+)$")

# timm block modules, by the Keras layer suffix: inverted residual (MBConv) and depthwise-separable blocks.
_TIMM_IR = {
    "expand_conv": "conv_pw",
    "expand_bn": "bn1",
    "dwconv": "conv_dw",
    "bn": "bn2",
    "se_reduce": "se.conv_reduce",
    "se_expand": "se.conv_expand",
    "project_conv": "conv_pwl",
    "project_bn": "bn3",
}
_TIMM_DS = {
    "dwconv": "conv_dw",
    "bn": "bn1",
    "se_reduce": "se.conv_reduce",
    "se_expand": "se.conv_expand",
    "project_conv": "conv_pw",
    "project_bn": "bn2",
}
_TIMM_CONV = {"conv": "conv", "bn": "bn1"}  # timm ConvBnAct
_TIMM_FIXED = {
    "stem_conv": "conv_stem",
    "stem_bn": "bn1",
    "top_conv": "conv_head",
    "top_bn": "bn2",
    "predictions": "classifier",
}
# torchvision: `layers` is one Sequential; the first block is spelled out, the others are stacks of
# _InvertedResidual whose own `layers` Sequential holds conv, bn, relu, dwconv, bn, relu, conv, bn.
_TV_FIRST = {
    "stem_conv": "layers.0",
    "stem_bn": "layers.1",
    "block1a_dwconv": "layers.3",
    "block1a_bn": "layers.4",
    "block1a_project_conv": "layers.6",
    "block1a_project_bn": "layers.7",
}
_TV_IR = {
    "expand_conv": 0,
    "expand_bn": 1,
    "dwconv": 3,
    "bn": 4,
    "project_conv": 6,
    "project_bn": 7,
}


def _letters_to_index(letters: str) -> int:
    # The inverse of the builder's a, b, ..., z, aa, ab, ... layer letters.
    index = 0
    for char in letters:
        index = index * 26 + (ord(char) - ord("a") + 1)
    return index - 1


def _detect_flavour(state: Mapping[str, np.ndarray]) -> str:
    if "conv_stem.weight" in state:
        return "timm"
    if "layers.0.weight" in state:
        return "torchvision"
    raise ValueError(
        "Unrecognised checkpoint: expected a timm MnasNet state dict (with 'conv_stem.weight') or a "
        f"torchvision one (with 'layers.0.weight'); the first keys are {list(state)[:8]}."
    )


def _timm_module(name: str, state: Mapping[str, np.ndarray]) -> str | None:
    if name in _TIMM_FIXED:
        return _TIMM_FIXED[name]
    match = _BLOCK_LAYER.match(name)
    if not match:
        return None
    block, letters, suffix = match.groups()
    prefix = f"blocks.{int(block) - 1}.{_letters_to_index(letters)}"
    # The checkpoint says which block type it holds: an inverted residual has a `conv_pwl`.
    if f"{prefix}.conv_pwl.weight" in state:
        table = _TIMM_IR
    elif f"{prefix}.conv.weight" in state:
        table = _TIMM_CONV
    else:
        table = _TIMM_DS
    return f"{prefix}.{table[suffix]}" if suffix in table else None


def _torchvision_module(name: str, state: Mapping[str, np.ndarray], num_blocks: int) -> str | None:
    if name in _TV_FIRST:
        return _TV_FIRST[name]
    # After the first block (indices 0-7) come the stacks, then the head conv and its BatchNorm.
    if name == "top_conv":
        return f"layers.{num_blocks + 7}"
    if name == "top_bn":
        return f"layers.{num_blocks + 8}"
    if name == "predictions":
        return "classifier.1"
    match = _BLOCK_LAYER.match(name)
    if not match or int(match.group(1)) < 2 or match.group(3) not in _TV_IR:
        return None
    block, letters, suffix = match.groups()
    return f"layers.{int(block) + 6}.{_letters_to_index(letters)}.layers.{_TV_IR[suffix]}"


def _weighted_layers(model) -> list:
    """The model's layers that hold weights, in the model's (forward) order, descending into sub-models."""
    found = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.weights:  # a nested model
            found.extend(_weighted_layers(layer))
        elif layer.weights:
            found.append(layer)
    return found


def _conv_kernel(layer):
    # Keras 3 names the depthwise kernel `kernel`; tf_keras (framework="tf_keras") `depthwise_kernel`.
    kernel = getattr(layer, "depthwise_kernel", None)
    return layer.kernel if kernel is None else kernel


def _layer_targets(layer) -> list[tuple[str, Any, Callable[[np.ndarray, tuple], np.ndarray], str]]:
    """(checkpoint suffix, Keras variable, PyTorch -> Keras transform, PyTorch layout) for one layer."""
    kind = type(layer).__name__
    if kind == "DepthwiseConv2D":

        def depthwise(w, shape):
            # (C * m, 1, kh, kw) -> (kh, kw, C, m): torch orders depthwise outputs channel-major.
            if w.ndim != 4 or w.shape[1] != 1 or len(shape) != 4:
                return w
            return w.reshape(shape[2], shape[3], w.shape[2], w.shape[3]).transpose(2, 3, 0, 1)

        targets = [("weight", _conv_kernel(layer), depthwise, "(C, 1, H, W)")]
    elif kind == "Conv2D":
        targets = [
            ("weight", layer.kernel, lambda w, s: w.transpose(2, 3, 1, 0) if w.ndim == 4 else w, "OIHW")
        ]
    elif kind == "Dense":
        targets = [("weight", layer.kernel, lambda w, s: w.T if w.ndim == 2 else w, "(out, in)")]
    elif kind == "BatchNormalization":
        same = lambda w, s: w  # noqa: E731
        targets = [
            (suffix, variable, same, "(C,)")
            for suffix, variable in (
                ("weight", getattr(layer, "gamma", None)),
                ("bias", getattr(layer, "beta", None)),
                ("running_mean", layer.moving_mean),
                ("running_var", layer.moving_variance),
            )
            if variable is not None
        ]
        return targets
    else:
        raise ValueError(
            f"Layer {layer.name!r} ({kind}) holds weights but is not a Conv2D, DepthwiseConv2D, "
            "BatchNormalization or Dense layer: load_torch_weights expects a model built by "
            "keras_mnas.build_model."
        )
    if getattr(layer, "use_bias", False):
        targets.append(("bias", layer.bias, lambda w, s: w, "(C,)"))
    return targets


@dataclasses.dataclass(frozen=True)
class TorchLoadResult:
    """What `load_torch_weights` did.

    Attributes:
        flavour: `"timm"` or `"torchvision"`.
        loaded: Names of the Keras layers that received weights, in forward order.
        missing: Names of the Keras layers the checkpoint has no weights for (left unchanged).
        unexpected: Checkpoint keys that no Keras layer used (`num_batches_tracked` is never listed).
    """

    flavour: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


def _check_conventions(model) -> None:
    problems = []
    epsilons = sorted(
        {
            float(layer.epsilon)
            for layer in _weighted_layers(model)
            if type(layer).__name__ == "BatchNormalization" and not np.isclose(layer.epsilon, 1e-5)
        }
    )
    if epsilons:
        problems.append(f"BatchNormalization epsilon {epsilons} instead of 1e-5")
    asymmetric = [
        layer.name
        for layer in _weighted_layers(model)
        if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D")
        and layer.padding == "same"
        and tuple(layer.strides) != (1, 1)
        and max(layer.kernel_size) > 1
    ]
    if asymmetric:
        problems.append(
            f"'same' padding on strided convolutions ({asymmetric[0]!r}, ...), which pads "
            "asymmetrically where PyTorch pads k // 2 on every side"
        )
    if problems:
        warnings.warn(
            "The model does not follow the PyTorch models' conventions: "
            + "; ".join(problems)
            + ". The weights load, but the outputs will differ from PyTorch's. Build the model with "
            "build_model(..., padding='symmetric', bn_epsilon=1e-5), i.e. **TORCH_CONVENTIONS.",
            TorchConventionWarning,
            stacklevel=3,
        )


def _shape_hint(flavour: str, key: str, state: Mapping[str, np.ndarray], layer_name: str) -> str:
    hint = (
        "Check that the model was built with the checkpoint's architecture, depth_multiplier and "
        "classes (or include_top=False to drop the classifier)."
    )
    if flavour == "torchvision" and layer_name in ("stem_conv", "stem_bn", "block1a_dwconv"):
        width = state.get("layers.0.weight", np.zeros((0,))).shape[:1]
        if width == (32,):
            hint += (
                " Note: torchvision's version-1 checkpoints of mnasnet with alpha != 1.0 have a fixed "
                "32-wide stem, which keras_mnas' builder does not reproduce."
            )
    return hint


def _mapping(model, state: Mapping[str, np.ndarray], flavour: str):
    layers = _weighted_layers(model)
    num_blocks = max(
        (int(m.group(1)) for m in (_BLOCK_LAYER.match(layer.name) for layer in layers) if m), default=0
    )
    for layer in layers:
        if flavour == "timm":
            module = _timm_module(layer.name, state)
        else:
            module = _torchvision_module(layer.name, state, num_blocks)
        yield layer, module


def load_torch_weights(
    model,
    source: str | os.PathLike | Mapping[str, Any],
    *,
    strict: bool = True,
    skip_classifier: bool = False,
) -> TorchLoadResult:
    """Copies a timm or torchvision MnasNet state dict into a model built by `keras_mnas.build_model`.

    The flavour is detected from the keys: timm models have `conv_stem`, `blocks.S.L.*`, `conv_head`,
    `bn2` and `classifier`; torchvision models have one `layers` Sequential and `classifier.1`. Each Keras
    layer with weights is mapped to its checkpoint module by name (`block3b_dwconv` is timm's
    `blocks.2.1.conv_dw` and torchvision's `layers.9.1.layers.3`), and its tensors are transposed to
    Keras layouts: convolutions OIHW -> HWIO, depthwise (C, 1, H, W) -> (H, W, C, 1), dense (out, in) ->
    (in, out); BatchNorm `weight`, `bias`, `running_mean` and `running_var` become `gamma`, `beta`,
    `moving_mean` and `moving_variance`. Every shape is checked before any weight is written, so a failed
    load leaves the model unchanged.

    To reproduce PyTorch's outputs, build the model with `**TORCH_CONVENTIONS`; a `TorchConventionWarning`
    says so otherwise.

    Args:
        model: A Keras model from `keras_mnas.build_model` (Keras 3 or `framework="tf_keras"`).
        source: A checkpoint path (see `read_torch_state_dict`) or a state dict of numpy arrays or torch
            tensors, possibly wrapped as `{"state_dict": ...}` and with `module.` prefixes.
        strict: If True, Keras layers without checkpoint weights and checkpoint tensors that no layer uses
            (`num_batches_tracked` aside) are an error. If False they are reported in the result, e.g. to
            load a checkpoint's features into a model built with `include_top=False`.
        skip_classifier: If True, the checkpoint's classifier (`classifier.*` in timm, `classifier.1.*` in
            torchvision) is set aside and never reported as unused: the way to load the features into a
            model built with `include_top=False` while `strict` still checks every other layer and tensor.

    Returns:
        A `TorchLoadResult` naming the loaded and missing layers and the unexpected keys.

    Raises:
        ValueError: on a shape mismatch (naming the checkpoint key and shape and the Keras layer and its
            expected shape), an unrecognised checkpoint, or, with `strict`, missing or unexpected weights.

    Example:

    ```python
    import timm
    from keras_mnas import build_model
    from keras_mnas.weights import TORCH_CONVENTIONS, load_torch_weights

    torch_model = timm.create_model("mnasnet_100", pretrained=True)
    model = build_model("b1", classes=1000, classifier_activation=None, **TORCH_CONVENTIONS)
    result = load_torch_weights(model, torch_model.state_dict())  # or a checkpoint path
    result.loaded[:2]  # ('stem_conv', 'stem_bn')
    ```
    """
    if isinstance(source, Mapping):
        label = "the given state dict"
        state = _unwrap_state_dict(source, label)
    else:
        label = str(source)
        state = read_torch_state_dict(source)
    flavour = _detect_flavour(state)
    if skip_classifier:
        state = _without_classifier(state, flavour)
    _check_conventions(model)

    assignments: list[tuple[Any, np.ndarray]] = []
    used: set[str] = set()
    loaded: list[str] = []
    missing: list[str] = []
    missing_keys: list[str] = []
    for layer, module in _mapping(model, state, flavour):
        targets = _layer_targets(layer)
        keys = [f"{module}.{suffix}" for suffix, *_ in targets] if module else []
        absent = [key for key in keys if key not in state]
        if module is None or absent:
            missing.append(layer.name)
            missing_keys.extend(absent or [f"<no {flavour} counterpart for {layer.name!r}>"])
            continue
        for key, (_, variable, transform, layout) in zip(keys, targets, strict=True):
            expected = tuple(variable.shape)
            value = transform(state[key], expected)
            if tuple(value.shape) != expected:
                raise ValueError(
                    f"Shape mismatch loading {label} into {model.name!r}: checkpoint tensor {key!r} has "
                    f"shape {tuple(state[key].shape)} (PyTorch layout {layout}), which in Keras layout is "
                    f"{tuple(value.shape)}, but Keras layer {layer.name!r} expects {expected} for its "
                    f"{variable.name!r} weight. {_shape_hint(flavour, key, state, layer.name)}"
                )
            assignments.append((variable, value))
            used.add(key)
        loaded.append(layer.name)
    unexpected = sorted(key for key in state if key not in used and not key.endswith(_IGNORED_SUFFIXES))
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} Keras layer(s) have no weights in the checkpoint: "
                f"{_preview(missing)} (looked for {_preview(missing_keys)})"
            )
        if unexpected:
            parts.append(f"{len(unexpected)} checkpoint tensor(s) are unused: {_preview(unexpected)}")
        raise ValueError(
            f"Loading the {flavour} checkpoint {label} into {model.name!r} failed: "
            + "; ".join(parts)
            + ". The architecture, depth_multiplier or classes may not match the checkpoint; use "
            "strict=False to load what matches (e.g. into a model built with include_top=False)."
        )
    for variable, value in assignments:
        variable.assign(value.astype(_variable_dtype(variable), copy=False))
    return TorchLoadResult(flavour, tuple(loaded), tuple(missing), tuple(unexpected))


def _classifier_prefix(flavour: str) -> str:
    return "classifier." if flavour == "timm" else "classifier.1."


def _without_classifier(state: Mapping[str, np.ndarray], flavour: str) -> dict[str, np.ndarray]:
    prefix = _classifier_prefix(flavour)
    return {key: value for key, value in state.items() if not key.startswith(prefix)}


def _variable_dtype(variable) -> str:
    dtype = variable.dtype
    return getattr(dtype, "name", None) or str(dtype)


def _preview(items: Iterable[str], limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"


def convert_torch_checkpoint(
    source: str | os.PathLike | Mapping[str, Any],
    output_path: str | os.PathLike,
    arch,
    *,
    depth_multiplier: float = 1.0,
    classes: int | None = None,
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    classifier_activation: str | None = None,
    **build_kwargs: Any,
):
    """Converts a timm or torchvision MnasNet checkpoint to a Keras `.weights.h5` or `.keras` file.

    The Keras model is built with `**TORCH_CONVENTIONS` so that it computes what the PyTorch model
    computes, loaded strictly with `load_torch_weights`, and saved. A `.weights.h5` file records the
    `build_model` arguments (`record_build_config`), so that `keras_mnas.applications` builds the model
    the weights need when given the file: `MnasNetA1(weights="a1.weights.h5")`.

    Args:
        source: A checkpoint path or a state dict (see `load_torch_weights`).
        output_path: Where to save: a path ending in `.weights.h5` (weights only) or `.keras` (the model).
        arch: The keras_mnas architecture (e.g. `"a1"` for timm `semnasnet_*`, `"b1"` for timm
            `mnasnet_*` and torchvision `mnasnet*`, `"small"` for timm `mnasnet_small`).
        depth_multiplier: The checkpoint's width multiplier (e.g. 0.5 for `mnasnet_050` / `mnasnet0_5`).
        classes: Number of classes; `None` infers it from the checkpoint's classifier (a checkpoint
            without a classifier gives a model without one, `include_top=False`).
        input_shape: The Keras model's input shape (channels last).
        classifier_activation: Activation of the classifier. `None` (the default) outputs logits, as the
            PyTorch models do; `"softmax"` outputs probabilities.
        **build_kwargs: Other `keras_mnas.build_model` options, e.g. `include_preprocessing=True`.

    Returns:
        The loaded Keras model.

    Example:

    ```python
    model = convert_torch_checkpoint(
        "mnasnet_100.safetensors", "mnasnet_b1.weights.h5", "b1", depth_multiplier=1.0
    )
    ```
    """
    from keras_mnas.builder import build_model

    output = pathlib.Path(output_path)
    if not (output.name.endswith(".weights.h5") or output.suffix == ".keras"):
        raise ValueError(f"output_path must end in '.weights.h5' or '.keras'; received {str(output_path)!r}.")
    conflicting = sorted(set(build_kwargs) & set(TORCH_CONVENTIONS))
    if conflicting:
        raise ValueError(
            f"convert_torch_checkpoint always builds with {TORCH_CONVENTIONS}; do not pass {conflicting}."
        )
    if isinstance(source, Mapping):
        state = _unwrap_state_dict(source, "the given state dict")
    else:
        state = read_torch_state_dict(source)
    flavour = _detect_flavour(state)
    classifier = _classifier_prefix(flavour)
    has_classifier = f"{classifier}weight" in state
    include_top = build_kwargs.pop("include_top", has_classifier)
    if not include_top:  # drop the classifier, and load the rest strictly
        state = _without_classifier(state, flavour)
    if classes is None:
        classes = int(state[f"{classifier}weight"].shape[0]) if has_classifier and include_top else 1000
    model = build_model(
        arch,
        input_shape=input_shape,
        include_top=include_top,
        classes=classes,
        classifier_activation=classifier_activation,
        depth_multiplier=depth_multiplier,
        **TORCH_CONVENTIONS,
        **build_kwargs,
    )
    load_torch_weights(model, state, strict=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".keras":
        model.save(output)  # the layers' configs carry the padding and epsilon
    else:
        from keras_mnas.weights.saved import record_build_config

        model.save_weights(output)
        # Weights alone do not say they need PyTorch's padding and epsilon: record the build settings, which
        # keras_mnas.applications reads back from the file.
        record_build_config(output, model)
    return model
