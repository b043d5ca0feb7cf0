"""Why a latency measurement failed, in a form a scheduler can act on.

Every failure of a device measurement is one of three kinds, and what to do about it differs:

- `ModelError`: the runtime on the phone cannot run this model (an op version it does not know, an op the
  delegate rejects). Measuring it on another phone of the same kind fails the same way, so it is reported,
  never retried.
- `DeviceError`: the phone, the USB link, the adb server or the benchmark process failed (offline,
  unauthorized, a dropped connection, a hung command, a crash, truncated output, a full disk). The same job
  may succeed on another phone or later; a pool retries it elsewhere.
- `SetupError`: something the user must fix (the benchmark binary is missing or built for another ABI, the
  phone refuses the core mask). Retrying cannot help.

All three derive from `LatencyMeasurementError`, whose `retryable` attribute says which is which.

Example:

```python
try:
    result = source.measure(model)
except keras_mnas.latency.ModelError as e:
    print("this model cannot run on the phone:", e)
except keras_mnas.latency.DeviceError as e:
    print("the phone failed, try again later:", e)
```
"""

from __future__ import annotations


class LatencyMeasurementError(RuntimeError):
    """A measurement failed; no figure was produced.

    Args:
        message: What went wrong, for a person.
        serial: The phone's serial, when a phone was involved.
        output: The benchmark tool's output (or the part received), when there was one.
        exit_code: The benchmark process's exit status, when known.

    Attributes:
        retryable: Whether the same job may succeed on another phone or later.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        serial: str | None = None,
        output: str | None = None,
        exit_code: int | None = None,
    ):
        super().__init__(message)
        self.serial = serial
        self.output = output
        self.exit_code = exit_code


class ModelError(LatencyMeasurementError):
    """The runtime cannot run this model, e.g. "Didn't find op for builtin opcode ... version ...".

    Not retryable: another phone with the same runtime rejects it the same way.
    """

    retryable = False


class DeviceError(LatencyMeasurementError):
    """The phone, its connection or the benchmark process failed; the job may succeed elsewhere."""

    retryable = True


class DeviceUnavailableError(DeviceError):
    """The phone cannot be used now: offline, unauthorized, unplugged, or no adb server answers."""


class DeviceBusyError(DeviceError):
    """Another worker holds the phone's lease: it is measuring something else right now."""


class DeviceTooHotError(DeviceError):
    """The phone did not cool down to the required thermal state within the maximum wait."""


class DeadlineExceededError(DeviceError):
    """An adb call did not complete within its total deadline (a hung command, a trickling link)."""


class BenchmarkError(DeviceError):
    """benchmark_model failed or its output is unusable (error lines, a crash, truncated output).

    Attributes:
        reason: A short tag: `"error"` (ERROR lines), `"exit"` (non-zero exit status), `"crash"`
            (killed by a signal), `"no-summary"` (no summary line), `"truncated"`, `"inconsistent"`.
    """

    def __init__(self, message: str, *, reason: str, **kwargs):
        super().__init__(message, **kwargs)
        self.reason = reason


class SetupError(LatencyMeasurementError):
    """A configuration problem only the user can fix: missing binary, wrong ABI, refused core mask."""

    retryable = False
