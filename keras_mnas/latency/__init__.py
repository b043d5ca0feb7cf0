"""Latency of Keras models: the common interface and the host CPU timer.

Example:

```python
from keras_mnas.latency import HostLatency

result = HostLatency().measure(model)
print(result.median_ms)
```
"""

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
from keras_mnas.latency.tflite import convert_to_tflite, tflite_op_summary

__all__ = [
    "QUANTIZATIONS",
    "BenchmarkError",
    "BenchmarkOutput",
    "DeadlineExceededError",
    "DeviceBusyError",
    "DeviceError",
    "DeviceTooHotError",
    "DeviceUnavailableError",
    "HostLatency",
    "LatencyMeasurementError",
    "LatencyResult",
    "LatencySource",
    "ModelError",
    "RunStats",
    "SetupError",
    "convert_to_tflite",
    "parse_benchmark_output",
    "tflite_op_summary",
]
