"""Latency of Keras models: the common interface and the host CPU timer.

Example:

```python
from keras_mnas.latency import HostLatency

result = HostLatency().measure(model)
print(result.median_ms)
```
"""

from keras_mnas.latency.base import QUANTIZATIONS, LatencyResult, LatencySource
from keras_mnas.latency.host import HostLatency
from keras_mnas.latency.tflite import convert_to_tflite, tflite_op_summary

__all__ = [
    "QUANTIZATIONS",
    "HostLatency",
    "LatencyResult",
    "LatencySource",
    "convert_to_tflite",
    "tflite_op_summary",
]
