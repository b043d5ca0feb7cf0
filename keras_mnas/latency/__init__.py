"""Latency of Keras models: the common interface, the host CPU timer, phones, and the lookup table.

Every source implements `LatencySource.measure(model) -> LatencyResult`. The sources that time a TFLite
flatbuffer (`HostLatency`, `AndroidLatency`, `AndroidDevicePool`) share `TFLiteLatencySource`: one
conversion path and one result cache. `LatencyLookupTable` predicts a network's latency from per-layer
figures. Converting models to TFLite is `keras_mnas.tflite`'s job.

The Android sources are imported on first use, so that a host-only user never imports `adbutils`.

Example:

```python
from keras_mnas.latency import HostLatency

result = HostLatency().measure(model)
print(result.median_ms)
```
"""

from keras_mnas.latency.base import QUANTIZATIONS, LatencyResult, LatencySource, TFLiteLatencySource

# The finer error kinds stay importable from here (aliased: not in `__all__`); their home is `.errors`.
from keras_mnas.latency.errors import BenchmarkError as BenchmarkError
from keras_mnas.latency.errors import DeadlineExceededError as DeadlineExceededError
from keras_mnas.latency.errors import DeviceBusyError as DeviceBusyError
from keras_mnas.latency.errors import DeviceError, LatencyMeasurementError, ModelError, SetupError
from keras_mnas.latency.errors import DeviceTooHotError as DeviceTooHotError
from keras_mnas.latency.errors import DeviceUnavailableError as DeviceUnavailableError
from keras_mnas.latency.host import HostLatency
from keras_mnas.latency.lut import (
    Calibration,
    LatencyLookupTable,
    LayerConfig,
    MissingEntryError,
    model_configs,
    network_configs,
)
from keras_mnas.utils.lazy import lazy_attributes

__all__ = [
    "QUANTIZATIONS",
    "AndroidDevicePool",
    "AndroidLatency",
    "Calibration",
    "DeviceError",
    "HostLatency",
    "LatencyLookupTable",
    "LatencyMeasurementError",
    "LatencyResult",
    "LatencySource",
    "LayerConfig",
    "MissingEntryError",
    "ModelError",
    "SetupError",
    "TFLiteLatencySource",
    "list_devices",
    "model_configs",
    "network_configs",
]

# Names served on first access (PEP 562): the Android modules import adbutils, and conversion lives in
# keras_mnas.tflite (re-exported here because user code and the guides import it from this package).
_LAZY = {
    "AndroidLatency": "keras_mnas.latency.android",
    "AndroidDeviceInfo": "keras_mnas.latency.android",
    "DELEGATES": "keras_mnas.latency.android",
    "ThermalState": "keras_mnas.latency.android",
    "elf_abi": "keras_mnas.latency.android",
    "list_devices": "keras_mnas.latency.android",
    "AndroidDevicePool": "keras_mnas.latency.pool",
    "PhoneStats": "keras_mnas.latency.pool",
    "convert_to_tflite": "keras_mnas.tflite",
    "tflite_op_summary": "keras_mnas.tflite",
    # Moving to keras_mnas.search with the lookup table's space-aware helpers; served from lut until then.
    "search_space_configs": "keras_mnas.latency.lut",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
