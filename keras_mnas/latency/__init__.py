"""Latency of Keras models: the common interface and the host CPU timer.

Example:

```python
from keras_mnas.latency import HostLatency

result = HostLatency().measure(model)
print(result.median_ms)
```
"""

from keras_mnas.latency.android import (
    DELEGATES,
    AndroidDeviceInfo,
    AndroidLatency,
    ThermalState,
    elf_abi,
    list_devices,
)
from keras_mnas.latency.base import QUANTIZATIONS, LatencyResult, LatencySource
from keras_mnas.latency.benchmark_model import BenchmarkOutput, RunStats, parse_benchmark_output
from keras_mnas.latency.errors import (
    BenchmarkError,
    DeadlineExceededError,
    DeviceBusyError,
    DeviceError,
    DeviceTooHotError,
    DeviceUnavailableError,
    LatencyMeasurementError,
    ModelError,
    SetupError,
)
from keras_mnas.latency.host import HostLatency
from keras_mnas.latency.lut import (
    Calibration,
    LatencyLookupTable,
    LayerConfig,
    MissingEntryError,
    model_configs,
    network_configs,
)
from keras_mnas.latency.pool import AndroidDevicePool, PhoneStats
from keras_mnas.latency.tflite import convert_to_tflite, tflite_op_summary

__all__ = [
    "DELEGATES",
    "QUANTIZATIONS",
    "AndroidDeviceInfo",
    "AndroidDevicePool",
    "AndroidLatency",
    "BenchmarkError",
    "BenchmarkOutput",
    "Calibration",
    "DeadlineExceededError",
    "DeviceBusyError",
    "DeviceError",
    "DeviceTooHotError",
    "DeviceUnavailableError",
    "HostLatency",
    "LatencyLookupTable",
    "LatencyMeasurementError",
    "LatencyResult",
    "LatencySource",
    "LayerConfig",
    "MissingEntryError",
    "ModelError",
    "PhoneStats",
    "RunStats",
    "SetupError",
    "ThermalState",
    "convert_to_tflite",
    "elf_abi",
    "list_devices",
    "model_configs",
    "network_configs",
    "parse_benchmark_output",
    "tflite_op_summary",
]
