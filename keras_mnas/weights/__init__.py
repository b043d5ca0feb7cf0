"""Weights for keras_mnas models: import from PyTorch (timm and torchvision) MnasNet checkpoints.

Example:

```python
from keras_mnas import build_model
from keras_mnas.weights import TORCH_CONVENTIONS, load_torch_weights

model = build_model("b1", classes=1000, classifier_activation=None, **TORCH_CONVENTIONS)
load_torch_weights(model, "mnasnet_100.safetensors")
```
"""

from keras_mnas.weights.saved import record_build_config, saved_build_settings
from keras_mnas.weights.torch_import import (
    TORCH_CONVENTIONS,
    TorchConventionWarning,
    TorchLoadResult,
    UnsafeCheckpointError,
    convert_torch_checkpoint,
    load_torch_weights,
    read_torch_state_dict,
    torch_build_kwargs,
)

__all__ = [
    "TORCH_CONVENTIONS",
    "TorchConventionWarning",
    "TorchLoadResult",
    "UnsafeCheckpointError",
    "convert_torch_checkpoint",
    "load_torch_weights",
    "read_torch_state_dict",
    "record_build_config",
    "saved_build_settings",
    "torch_build_kwargs",
]
