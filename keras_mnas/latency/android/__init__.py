"""Latency measured on an Android phone over ADB with TFLite's `benchmark_model`.

`AndroidLatency` converts a Keras model to TFLite, pushes the model and a user-supplied `benchmark_model`
binary to the phone (only when their content changed), runs the binary pinned to the phone's fastest core(s)
in several fresh processes, and reports the median. It talks to the phone through an adb server (local by
default, or the one on the machine the phone is plugged into) with `adbutils`.

Reliability is the point:

- every adb call has a total wall-clock deadline (adbutils' own timeout only bounds silence, so a command
  that trickles output, or a phone that stops answering mid-command, would otherwise hang a search);
- a dropped connection, truncated output, a crash, `ERROR:` lines or a missing summary never yield a number
  (`DeviceError`); a model the phone's runtime cannot run raises `ModelError`, which should not be retried;
- the phone must be cool before each process (`dumpsys thermalservice`, or its thermal zones), up to a
  maximum wait;
- a lease on the phone (`/data/local/tmp/keras_mnas.lease.N`, see `AndroidLatency`) keeps two workers, on
  this machine or others, from measuring on the same phone at once, even when one of them dies;
- every result records where and how it was measured (`LatencyResult.provenance`).

The package has one module per part: `adb` (the transport, with its deadlines and the adbutils overrides,
and discovery), `device` (facts about a phone and its binary), `lease` (the lease) and `source`
(`AndroidLatency`, the measurement loop).

Example:

```python
from keras_mnas.latency import AndroidLatency

source = AndroidLatency("R5CT1234ABC", binary="android_aarch64_benchmark_model")
result = source.measure(model)
print(result.median_ms, result.cv, result.provenance["soc"])
```
"""

from keras_mnas.latency.android.adb import DEFAULT_ADB_HOST, DEFAULT_ADB_PORT, list_devices, list_states
from keras_mnas.latency.android.device import AndroidDeviceInfo, ThermalState, elf_abi
from keras_mnas.latency.android.source import DEFAULT_REMOTE_DIR, DELEGATES, AndroidLatency

__all__ = [
    "DEFAULT_ADB_HOST",
    "DEFAULT_ADB_PORT",
    "DEFAULT_REMOTE_DIR",
    "DELEGATES",
    "AndroidDeviceInfo",
    "AndroidLatency",
    "ThermalState",
    "elf_abi",
    "list_devices",
    "list_states",
]
