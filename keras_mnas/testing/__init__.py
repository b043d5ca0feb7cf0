"""Test doubles for code that talks to Android phones, so it can be tested without phones.

`keras_mnas.testing.adb_double.AdbDouble` is a loopback adb server that speaks the ADB host protocol to the
real `adbutils` client and answers like one or more phones, with injectable faults. keras-mnas's own tests use
it, and so can tests of code built on `keras_mnas.latency.AndroidLatency` (a CI job has no phones).
`keras_mnas.testing.ScriptedLatency` answers `measure` from a list, so a test of a search script gets exact,
instant latencies.
"""

from keras_mnas.testing.adb_double import (
    ADB_SERVER_VERSION,
    FAULT_ACTIONS,
    AdbDouble,
    BenchmarkRun,
    FakeBenchmark,
    FakePhone,
    Fault,
    fake_benchmark_binary,
    fake_benchmark_output,
)
from keras_mnas.testing.latency import ScriptedLatency

__all__ = [
    "ADB_SERVER_VERSION",
    "FAULT_ACTIONS",
    "AdbDouble",
    "BenchmarkRun",
    "FakeBenchmark",
    "FakePhone",
    "Fault",
    "ScriptedLatency",
    "fake_benchmark_binary",
    "fake_benchmark_output",
]
