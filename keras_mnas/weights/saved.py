"""The build settings a Keras weights file was saved with, so that it loads into a model built the same way.

A weights file holds weights, not the settings that shape what the layers compute: the padding of strided
convolutions (`"same"`, or PyTorch's `"symmetric"`) and the BatchNorm epsilon. The same weights in a
model built with other settings load without an error and compute something else. So
`convert_torch_checkpoint` records its `build_model` arguments in the `.weights.h5` files it writes, a
`.keras` file carries its layers' settings anyway, and `saved_build_settings` reads them back for
`keras_mnas.applications`, which builds with them.

Example:

```python
convert_torch_checkpoint("mnasnet_100.safetensors", "b1.weights.h5", "b1")
saved_build_settings("b1.weights.h5")["padding"]  # 'symmetric'
model = keras_mnas.applications.MnasNetB1(weights="b1.weights.h5", classifier_activation=None)
```
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

from keras_mnas.builder import get_build_config

#: The HDF5 attribute of a `.weights.h5` file that holds the `build_model` arguments, as JSON.
BUILD_CONFIG_ATTRIBUTE = "keras_mnas_build_config"

#: The settings that change what the layers compute with the same weights: a model must be built with
#: the values its weights were trained (or converted) with.
CONVENTION_KEYS = ("padding", "bn_epsilon", "bn_momentum")


def record_build_config(path: str | os.PathLike, model) -> None:
    """Writes a model's `build_model` arguments into the `.weights.h5` file its weights were saved to.

    Keras reads `.weights.h5` files by their groups and ignores root attributes, so the file still loads
    everywhere as before.

    Args:
        path: A `.weights.h5` file written by `model.save_weights`.
        model: The model made by `keras_mnas.build_model` whose weights the file holds.

    Example:

    ```python
    model.save_weights("small.weights.h5")
    record_build_config("small.weights.h5", model)
    ```
    """
    import h5py

    config = get_build_config(model)
    with h5py.File(os.fspath(path), "a") as file:
        file.attrs[BUILD_CONFIG_ATTRIBUTE] = json.dumps(config)


def _layer_settings(layers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The conventions of a saved keras-mnas model, from its layers' configs (a `.keras` file's JSON)."""
    by_name = {layer.get("config", {}).get("name"): layer for layer in layers if isinstance(layer, dict)}
    stem_bn = by_name.get("stem_bn", {}).get("config")
    if "stem_conv" not in by_name or not stem_bn:
        return None  # not a keras-mnas model: nothing to say
    return {
        # The builder pads strided convolutions itself only for PyTorch's symmetric padding.
        "padding": "symmetric" if "stem_conv_pad" in by_name else "same",
        "bn_epsilon": float(stem_bn["epsilon"]),
        "bn_momentum": float(stem_bn["momentum"]),
    }


def _functional_layers(config: Any) -> list[dict[str, Any]]:
    inner = config.get("config", {}) if isinstance(config, dict) else {}
    layers = inner.get("layers") if isinstance(inner, dict) else None
    return layers if isinstance(layers, list) else []


def saved_build_settings(path: str | os.PathLike) -> dict[str, Any] | None:
    """Reads the build settings recorded in or with a Keras weights file.

    A `.weights.h5` file written by `convert_torch_checkpoint` (or given `record_build_config`) holds
    every `build_model` argument. A `.keras` file (and a legacy whole-model `.h5` file) holds its layers'
    configs, from which the padding and BatchNorm settings are read. A `.weights.h5` file saved from a
    model with PyTorch's symmetric padding but without the record tells only its padding: it holds
    `ZeroPadding2D` layers, and its BatchNorm epsilon is unknown (`None`).

    Args:
        path: A `.weights.h5`, `.keras` or `.h5` file.

    Returns:
        A dict with `"padding"`, `"bn_epsilon"` and `"bn_momentum"` (and every other `build_model` argument
        when the file records them), or `None` when the file says nothing: it then holds a model built
        with the defaults, `"same"` padding, or was not saved from a keras-mnas model.

    Example:

    ```python
    saved_build_settings("semnasnet_050.weights.h5")  # {'padding': 'symmetric', 'bn_epsilon': 1e-05, ...}
    ```
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):  # a .keras file
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                return None
            config = json.loads(archive.read("config.json"))
        return _layer_settings(_functional_layers(config))

    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError:
        return None  # not HDF5: Keras' own loading says what is wrong with it
    with file:
        recorded = file.attrs.get(BUILD_CONFIG_ATTRIBUTE)
        if recorded is not None:
            return json.loads(recorded)
        model_config = file.attrs.get("model_config")  # a legacy whole-model .h5 file
        if model_config is not None:
            if isinstance(model_config, bytes):
                model_config = model_config.decode("utf-8")
            return _layer_settings(_functional_layers(json.loads(model_config)))
        # Keras groups a .weights.h5 file's layers by class; only symmetric padding adds ZeroPadding2D.
        layers = file.get("layers")
        if layers is not None and any(name.startswith("zero_padding2d") for name in layers):
            return {"padding": "symmetric", "bn_epsilon": None, "bn_momentum": None}
    return None
