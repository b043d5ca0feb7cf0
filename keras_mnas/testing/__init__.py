"""Test doubles for code that talks to Android phones, so it can be tested without phones.

`keras_mnas.testing.adb_double.AdbDouble` is a loopback adb server that speaks the ADB host protocol to the
real `adbutils` client and answers like one or more phones, with injectable faults. keras-mnas's own tests use
it, and so can tests of code built on `keras_mnas.latency.AndroidLatency` (a CI job has no phones).
`keras_mnas.testing.RealAdbServer` runs the installed `adb` server on a private loopback port and connects
`AdbdDevice`s to it: loopback phones speaking adbd's side of the transport protocol, so tests run the whole
path a phone is reached by (adbutils, the real server, the transport, shell v1 or v2, sync). `PROFILES` holds
phones of Android 6, 10 and 14 as their adbd and tools answer.
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
    model_op_profile,
)
from keras_mnas.testing.adbd import AdbdDevice
from keras_mnas.testing.latency import ScriptedLatency
from keras_mnas.testing.phone_profiles import PROFILES, PhoneProfile, ProfilePhone
from keras_mnas.testing.real_adb import RealAdbServer, adb_missing_reason, adb_program

__all__ = [
    "ADB_SERVER_VERSION",
    "FAULT_ACTIONS",
    "AdbDouble",
    "AdbdDevice",
    "BenchmarkRun",
    "FakeBenchmark",
    "FakePhone",
    "Fault",
    "PROFILES",
    "PhoneProfile",
    "ProfilePhone",
    "RealAdbServer",
    "ScriptedLatency",
    "adb_missing_reason",
    "adb_program",
    "fake_benchmark_binary",
    "fake_benchmark_output",
    "model_op_profile",
]
