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

Example:

```python
from keras_mnas.latency import AndroidLatency

source = AndroidLatency("R5CT1234ABC", binary="android_aarch64_benchmark_model")
result = source.measure(model)
print(result.median_ms, result.cv, result.provenance["soc"])
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import logging
import math
import os
import re
import shlex
import socket
import stat
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import adbutils
from adbutils.errors import AdbConnectionError

from keras_mnas.latency import tflite as tflite_lib
from keras_mnas.latency.base import QUANTIZATIONS, LatencyResult, LatencySource, check_seconds, percentile_cv
from keras_mnas.latency.benchmark_model import BenchmarkOutput, parse_benchmark_output
from keras_mnas.latency.errors import (
    DeadlineExceededError,
    DeviceBusyError,
    DeviceError,
    DeviceTooHotError,
    DeviceUnavailableError,
    LatencyMeasurementError,
    SetupError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How the model may be accelerated: `"xnnpack"` (the CPU with XNNPACK, TFLite's default), `"none"` (the
#: plain CPU kernels), `"gpu"` (the GPU delegate) or `"nnapi"` (Android's NNAPI).
DELEGATES = ("xnnpack", "none", "gpu", "nnapi")

DEFAULT_ADB_HOST = "127.0.0.1"
DEFAULT_ADB_PORT = 5037
DEFAULT_REMOTE_DIR = "/data/local/tmp"

_REMOTE_BINARY = "keras_mnas_benchmark_model"
_REMOTE_MODEL = "keras_mnas_model.tflite"
_LEASE_PREFIX = "keras_mnas.lease."
_LEASE_TAG = "keras_mnas-lease"

# ELF e_machine values of the Android ABIs.
_ELF_MACHINES = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86", 243: "riscv64"}
_ABI_BITS = {"arm64-v8a": 64, "armeabi-v7a": 32, "armeabi": 32, "x86_64": 64, "x86": 32, "riscv64": 64}
_PREBUILT_NAMES = {
    "arm64-v8a": "android_aarch64_benchmark_model",
    "armeabi-v7a": "android_arm_benchmark_model",
    "x86_64": "android_x86_64_benchmark_model",
    "x86": "android_x86_benchmark_model",
}

# dumpsys thermalservice's temperature types (android.os.Temperature).
_TEMPERATURE_TYPES = {0: "cpu", 1: "gpu", 2: "battery", 3: "skin", 4: "usb_port", 5: "power_amplifier"}

# ----------------------------------------------------------------------------------------------------
# Wall-clock deadlines for adb calls.
#
# adbutils' `timeout` is a socket timeout: it bounds the silence between two bytes, so a command that keeps
# printing, or a server that trickles, never times out. A `_Deadline` is armed around one adb call: every
# socket the call opens (through `_AdbClient`) is registered with it, and when the deadline passes a timer
# thread shuts those sockets down, which makes the blocked call return or raise at once. The call is then
# reported as `DeadlineExceededError` whatever it returned, because a cut-off answer is not an answer.

_active = threading.local()


class _Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True
        self._outer: _Deadline | None = None

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    def adopt(self, sock: socket.socket) -> None:
        with self._lock:
            if not self.expired:
                self._sockets.append(sock)
                return
        _cut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _cut(sock)

    def __enter__(self) -> _Deadline:
        self._outer = getattr(_active, "deadline", None)
        _active.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _active.deadline = self._outer


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _DeadlineConnection(adbutils.AdbConnection):
    """An adbutils connection that never starts an adb server and obeys the current deadline."""

    def __init__(self, host: str, port: int, deadline: _Deadline | None):
        self._adb_address = (host, port)
        self._deadline = deadline
        super().__init__(host, port)

    def _safe_connect(self):
        # adbutils would run `adb start-server` when nothing answers. A missing server is reported instead:
        # starting one here would be wrong for a remote server and surprising for a local one.
        return self._create_socket()

    def _create_socket(self):
        host, port = self._adb_address
        timeout = 3.0 if self._deadline is None else max(0.01, min(3.0, self._deadline.remaining()))
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise AdbConnectionError(f"no adb server answers at {host}:{port} ({e})") from e
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.settimeout(None)
        if self._deadline is not None:
            self._deadline.adopt(sock)
        return sock


class _AdbClient(adbutils.AdbClient):
    def __init__(self, host: str, port: int, silence_timeout: float):
        super().__init__(host=host, port=port, socket_timeout=silence_timeout)
        self._silence_timeout = silence_timeout
        self._version: int | None = None

    def server_version(self) -> int:
        # adbutils asks the server for its version before every transport it opens; it does not change
        # while the server runs, and asking doubles the connections a measurement makes.
        if self._version is None:
            self._version = super().server_version()
        return self._version

    def make_connection(self, timeout: float | None = None) -> adbutils.AdbConnection:
        deadline = getattr(_active, "deadline", None)
        connection = _DeadlineConnection(self.host, self.port, deadline)
        silence = timeout or self._silence_timeout
        if deadline is not None:
            silence = max(0.01, min(silence, deadline.remaining()))
        connection.conn.settimeout(silence)
        return connection


# ----------------------------------------------------------------------------------------------------
# Binaries.


def elf_abi(data: bytes) -> str:
    """The Android ABI an ELF executable is built for.

    Args:
        data: The executable's bytes (the first 20 are enough).

    Returns:
        `"arm64-v8a"`, `"armeabi-v7a"`, `"x86_64"`, `"x86"` or `"riscv64"`.

    Raises:
        SetupError: if the bytes are not an ELF executable for one of those machines.

    Example:

    ```python
    with open("android_aarch64_benchmark_model", "rb") as f:
        elf_abi(f.read(64))  # "arm64-v8a"
    ```
    """
    if len(data) < 20 or data[:4] != b"\x7fELF":
        head = data[:4]
        hint = (
            " (a Mach-O executable: built for macOS?)"
            if head in (b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
            else ""
        )
        raise SetupError(
            f"Expected benchmark_model to be an Android ELF executable; its first bytes are {head!r}{hint}. "
            "Download the prebuilt binary for the phone's ABI or build it with bazel (see docs/phones.md)."
        )
    byteorder = "little" if data[5] == 1 else "big"
    machine = int.from_bytes(data[18:20], byteorder)
    bits = 64 if data[4] == 2 else 32
    abi = _ELF_MACHINES.get(machine)
    if abi is None or _ABI_BITS[abi] != bits:
        raise SetupError(
            f"benchmark_model is a {bits}-bit ELF executable for machine type {machine}, which is not an "
            f"Android ABI keras-mnas knows ({sorted(set(_ELF_MACHINES.values()))})."
        )
    return abi


def _abi_compatible(binary_abi: str, device_abis: Sequence[str]) -> bool:
    if binary_abi == "armeabi-v7a":
        return any(a in ("armeabi-v7a", "armeabi") for a in device_abis)
    return binary_abi in device_abis


# ----------------------------------------------------------------------------------------------------
# Facts about a phone.


@dataclasses.dataclass(frozen=True)
class ThermalState:
    """A phone's thermal state at one moment.

    Attributes:
        status: `Thermal Status` of `dumpsys thermalservice` (0 none, 1 light, 2 moderate, 3 severe,
            4 critical, 5 emergency, 6 shutdown), or `None` when the phone has no thermal service.
        temperatures_c: Temperatures by sensor name, in degrees Celsius.
        cpu_max_c: The hottest CPU sensor, or `None`.
        source: `"thermalservice"`, `"thermal_zones"` or `"none"`.
    """

    status: int | None
    temperatures_c: dict[str, float]
    cpu_max_c: float | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class AndroidDeviceInfo:
    """What `list_devices` reports about one phone.

    Attributes:
        serial: The adb serial.
        state: adb's state: `"device"` (usable), `"offline"`, `"unauthorized"`, ...
        adb_server: `"host:port"` of the adb server the phone is reached through.
        model, manufacturer: `ro.product.model` and `ro.product.manufacturer`.
        soc: The system on chip (`ro.soc.manufacturer ro.soc.model` on Android 12+, else
            `ro.board.platform`).
        sdk: The Android API level (`ro.build.version.sdk`).
        android_release: `ro.build.version.release`, e.g. `"14"`.
        abi: The primary ABI (`ro.product.cpu.abi`), which `benchmark_model` must be built for.
        abilist: All ABIs the phone runs.
        fingerprint: `ro.build.fingerprint`.
        cpu_max_khz: Maximum frequency of each CPU.
        big_cores: The CPUs with the highest maximum frequency.
        thermal: The thermal state, or `None` when it could not be read.
        health: `"ok"`, `"hot"`, `"offline"`, `"unauthorized"`, `"error"`, ...
        error: What went wrong, when `health` is not `"ok"`.
    """

    serial: str
    state: str
    adb_server: str
    model: str = ""
    manufacturer: str = ""
    soc: str = ""
    sdk: int | None = None
    android_release: str = ""
    abi: str = ""
    abilist: tuple[str, ...] = ()
    fingerprint: str = ""
    cpu_max_khz: dict[int, int] = dataclasses.field(default_factory=dict)
    big_cores: tuple[int, ...] = ()
    thermal: ThermalState | None = None
    health: str = "ok"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        data = dataclasses.asdict(self)
        data["cpu_max_khz"] = {str(k): v for k, v in self.cpu_max_khz.items()}
        data["abilist"] = list(self.abilist)
        data["big_cores"] = list(self.big_cores)
        return data


_PROP_LINE = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*)\]\s*$")
_THERMAL_STATUS = re.compile(r"^\s*Thermal Status:\s*(\d+)", re.MULTILINE)
_TEMPERATURE = re.compile(r"Temperature\{mValue=([-+0-9.eE]+), mType=(-?\d+), mName=([^,}]+)")


def _parse_props(text: str) -> dict[str, str]:
    props = {}
    for line in text.splitlines():
        match = _PROP_LINE.match(line)
        if match:
            props[match["key"]] = match["value"]
    return props


def _parse_cpu_list(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            cpus.extend(range(int(first), int(last or first) + 1))
        except ValueError:
            raise DeviceError(f"Unexpected content of /sys/devices/system/cpu/possible: {text!r}.") from None
    return cpus


def _parse_thermalservice(text: str) -> ThermalState | None:
    match = _THERMAL_STATUS.search(text)
    if match is None:
        return None
    # Prefer the live readings; older builds only show the cached ones.
    section = text.split("Current temperatures from HAL:", 1)[-1].split("Current cooling devices", 1)[0]
    found = _TEMPERATURE.findall(section) or _TEMPERATURE.findall(text)
    temperatures: dict[str, float] = {}
    cpu = []
    for value, kind, name in found:
        try:
            celsius = float(value)
        except ValueError:
            continue
        if not math.isfinite(celsius):
            continue
        temperatures[name.strip()] = celsius
        if _TEMPERATURE_TYPES.get(int(kind)) == "cpu":
            cpu.append(celsius)
    return ThermalState(int(match.group(1)), temperatures, max(cpu) if cpu else None, "thermalservice")


def _zone_celsius(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    # Most kernels report millidegrees; a few report degrees.
    celsius = value / 1000.0 if abs(value) >= 1000 else value
    return celsius if -40.0 <= celsius <= 150.0 else None


# ----------------------------------------------------------------------------------------------------
# One phone over adb.


class _ShellOperator(str):
    """A shell list operator (`;`, `&&`) passed through unquoted; every other argument is quoted."""


_THEN = _ShellOperator(";")
_AND = _ShellOperator("&&")


def _command_line(args: Sequence[str]) -> str:
    return " ".join(a if isinstance(a, _ShellOperator) else shlex.quote(str(a)) for a in args)


@dataclasses.dataclass(frozen=True)
class _ShellResult:
    exit_code: int
    stdout: str
    stderr: str
    output: str


class _Phone:
    """adb operations on one phone, each with a total deadline and errors mapped to keras-mnas kinds."""

    def __init__(self, serial: str, host: str, port: int, call_timeout_s: float):
        self.serial = serial
        self.host = host
        self.port = port
        self.call_timeout_s = call_timeout_s
        self.client = _AdbClient(host, port, silence_timeout=call_timeout_s)
        self.device = self.client.device(serial)
        self._features: set[str] | None = None
        self.props: dict[str, str] | None = None
        self._cpu_max_khz: dict[int, int] | None = None
        self._has_sha256sum: bool | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def forget(self) -> None:
        """Drops what was learned about the phone (after a failure it may have been replaced or rebooted)."""
        self.client._version = None
        self.device = self.client.device(self.serial)
        self._features = None
        self.props = None
        self._cpu_max_khz = None
        self._has_sha256sum = None

    # -- the deadline wrapper ----------------------------------------------------------------------

    def call(self, what: str, fn: Callable[[], T], timeout: float | None = None) -> T:
        seconds = self.call_timeout_s if timeout is None else timeout
        error: BaseException | None = None
        result = None
        with _Deadline(seconds) as deadline:
            try:
                result = fn()
            except (adbutils.AdbError, OSError, EOFError, ValueError) as e:
                # ValueError: adbutils' shell v1 fails to parse its exit marker when the output was cut.
                error = e
        if deadline.expired:
            raise DeadlineExceededError(
                f"{what} on phone {self.serial} (adb server {self.address}) did not finish within its "
                f"{seconds:g} s deadline: the phone, the link or the command hangs.",
                serial=self.serial,
            ) from error
        if error is not None:
            raise self._translate(what, error) from error
        return result

    def _translate(self, what: str, error: BaseException) -> DeviceError:
        message = str(error)
        where = f"phone {self.serial} (adb server {self.address})"
        if isinstance(error, adbutils.AdbTimeout):
            return DeadlineExceededError(f"{what} on {where} went silent: {message}.", serial=self.serial)
        if isinstance(error, adbutils.AdbError):
            lowered = message.lower()
            if "no adb server answers" in lowered or "connect to adb server" in lowered:
                return DeviceUnavailableError(
                    f"No adb server answers at {self.address} ({message}). Start one with `adb start-server` "
                    "on the machine the phone is plugged into (see docs/phones.md for remote servers).",
                    serial=self.serial,
                )
            if "unauthorized" in lowered:
                return DeviceUnavailableError(
                    f"Phone {self.serial} is unauthorized: unlock it and accept the 'Allow USB debugging?' "
                    "prompt (tick 'Always allow from this computer').",
                    serial=self.serial,
                )
            if "offline" in lowered:
                return DeviceUnavailableError(
                    f"Phone {self.serial} is offline on adb server {self.address}: replug it or run "
                    "`adb reconnect`.",
                    serial=self.serial,
                )
            if "not found" in lowered and "device" in lowered:
                return DeviceUnavailableError(
                    f"Phone {self.serial} is not connected to adb server {self.address} ({message}).",
                    serial=self.serial,
                )
        return DeviceError(
            f"{what} on {where} failed: the connection broke or the answer was cut off "
            f"({type(error).__name__}: {message}).",
            serial=self.serial,
        )

    # -- adb operations ----------------------------------------------------------------------------

    def state(self) -> str:
        """adb's state of the phone, `"absent"` when the server does not list it."""
        infos = self.call("listing devices", lambda: self.client.list())
        for info in infos:
            if info.serial == self.serial:
                return info.state
        return "absent"

    def require_ready(self) -> None:
        state = self.state()
        if state == "device":
            return
        if state == "absent":
            raise DeviceUnavailableError(
                f"Phone {self.serial} is not connected to adb server {self.address} (not in its device "
                "list): is it plugged into that machine, with USB debugging on?",
                serial=self.serial,
            )
        hints = {
            "unauthorized": "unlock it and accept the 'Allow USB debugging?' prompt",
            "offline": "replug it or run `adb reconnect`",
        }
        raise DeviceUnavailableError(
            f"Phone {self.serial} is {state} on adb server {self.address}: {hints.get(state, 'check it')}.",
            serial=self.serial,
        )

    def shell(self, args: Sequence[str], *, timeout: float | None = None) -> _ShellResult:
        command = _command_line(args)
        seconds = self.call_timeout_s if timeout is None else timeout
        if self._features is None:
            features = self.call("reading adb features", lambda: self.device.get_features())
            self._features = set(features.split(","))
        v2 = "shell_v2" in self._features
        result = self.call(
            f"`{command}`", lambda: self.device.shell2(command, timeout=seconds, v2=v2), timeout=seconds
        )
        return _ShellResult(result.returncode, result.stdout, result.stderr, result.output)

    def getprops(self) -> dict[str, str]:
        if self.props is None:
            result = self.shell(["getprop"])
            props = _parse_props(result.stdout or result.output)
            if not props:
                raise DeviceError(
                    f"`getprop` on phone {self.serial} printed no properties.", serial=self.serial
                )
            self.props = props
        return self.props

    def abis(self) -> list[str]:
        props = self.getprops()
        listed = props.get("ro.product.cpu.abilist", "")
        abis = [a for a in listed.split(",") if a]
        for key in ("ro.product.cpu.abi", "ro.product.cpu.abi2"):
            if props.get(key) and props[key] not in abis:
                abis.append(props[key])
        return abis

    def cpu_max_khz(self) -> dict[int, int]:
        if self._cpu_max_khz is None:
            possible = self.shell(["cat", "/sys/devices/system/cpu/possible"])
            cpus = _parse_cpu_list(possible.stdout if possible.exit_code == 0 else "")
            paths = {f"/sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_max_freq": c for c in cpus}
            freqs: dict[int, int] = {}
            if paths:
                result = self.shell(["grep", "-sH", ".", *paths])
                for line in (result.stdout or result.output).splitlines():
                    path, _, value = line.partition(":")
                    if path in paths and value.strip().isdigit():
                        freqs[paths[path]] = int(value.strip())
            self._cpu_max_khz = freqs
        return self._cpu_max_khz

    def thermal(self) -> ThermalState:
        result = self.shell(["dumpsys", "thermalservice"])
        state = _parse_thermalservice(result.stdout or result.output)
        if state is not None:
            return state
        listing = self.shell(["ls", "/sys/class/thermal"])
        zones = sorted(n for n in listing.stdout.split() if re.fullmatch(r"thermal_zone\d+", n))
        if not zones:
            return ThermalState(None, {}, None, "none")
        files = [f"/sys/class/thermal/{z}/{leaf}" for z in zones for leaf in ("type", "temp")]
        values: dict[str, str] = {}
        for line in self.shell(["grep", "-sH", ".", *files]).stdout.splitlines():
            path, _, value = line.partition(":")
            values[path] = value.strip()
        temperatures: dict[str, float] = {}
        cpu = []
        for zone in zones:
            celsius = _zone_celsius(values.get(f"/sys/class/thermal/{zone}/temp", ""))
            if celsius is None:
                continue
            name = values.get(f"/sys/class/thermal/{zone}/type") or zone
            temperatures[name] = celsius
            if "cpu" in name.lower():
                cpu.append(celsius)
        if not cpu:
            cpu = list(temperatures.values())
        return ThermalState(None, temperatures, max(cpu) if cpu else None, "thermal_zones")

    def device_time(self) -> int:
        result = self.shell(["date", "+%s"])
        text = result.stdout.strip() or result.output.strip()
        if result.exit_code != 0 or not text.isdigit():
            raise DeviceError(f"`date +%s` on phone {self.serial} printed {text!r}.", serial=self.serial)
        return int(text)

    def stat(self, path: str):
        return self.call(f"stat {path}", lambda: self.device.sync.stat(path))

    def list_names(self, directory: str) -> list[str]:
        entries = self.call(f"listing {directory}", lambda: self.device.sync.list(directory))
        return [e.path for e in entries]

    def sha256(self, path: str) -> str | None:
        if self._has_sha256sum is False:
            return None
        result = self.shell(["sha256sum", path])
        token = (result.stdout or result.output).split()[:1]
        if result.exit_code == 0 and token and re.fullmatch(r"[0-9a-f]{64}", token[0]):
            self._has_sha256sum = True
            return token[0]
        if result.exit_code == 127 or "not found" in result.output:
            self._has_sha256sum = False
        return None

    def push(self, data: bytes, path: str, mode: int, what: str) -> None:
        # Big files need more than one call's deadline: allow for a slow USB 2 link (about 10 MB/s).
        timeout = self.call_timeout_s + len(data) / 5e6
        try:
            self.call(f"pushing {what}", lambda: self.device.sync.push(data, path, mode), timeout=timeout)
        except DeadlineExceededError:
            raise
        except DeviceUnavailableError:
            raise
        except DeviceError as e:
            free = ""
            try:
                df = self.shell(["df", os.path.dirname(path)])
                free = f" `df` on the phone says:\n{df.output.strip()}"
            except DeviceError:
                pass
            raise DeviceError(
                f"Pushing {what} ({len(data)} bytes) to {path} on phone {self.serial} failed (is its storage "
                f"full?): {e}.{free}",
                serial=self.serial,
            ) from e


# ----------------------------------------------------------------------------------------------------
# The lease: one measurement per phone, across processes and machines.


@dataclasses.dataclass(frozen=True)
class _LeaseRecord:
    generation: int
    state: str
    expires: int
    owner: str


class _Lease:
    """A lease on a phone, kept in symbolic links `DIR/keras_mnas.lease.N` on the phone itself.

    The lease of generation N is a symbolic link whose target text is
    `keras_mnas-lease|v1|STATE|EXPIRES|OWNER`: `ln -s` creates it atomically, content included, and fails if
    it exists. To take the phone a worker reads the highest generation: if it is released, or expired by the
    phone's own clock (the one clock all workers share), it creates generation N+1; of several workers
    trying, exactly one succeeds. Nothing is ever overwritten by anyone but its owner, so a stale lease is
    "broken" by superseding it, never by deleting it, and a worker that was presumed dead notices it lost
    the phone (a higher generation exists) before it trusts its figure. The holder renews the expiry before
    every benchmark process and releases the lease in `finally`; a killed worker's lease expires after
    `ttl_s`.
    """

    def __init__(self, phone: _Phone, directory: str, ttl_s: float, poll_s: float):
        self.phone = phone
        self.directory = directory
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.generation: int | None = None
        self.broke: str | None = None
        # The phone's clock minus this machine's, measured when the lease is taken; renewals use it instead
        # of asking the phone for the time again.
        self._clock_offset = 0.0

    def _path(self, generation: int) -> str:
        return f"{self.directory}/{_LEASE_PREFIX}{generation}"

    def _tmp_path(self) -> str:
        return f"{self.directory}/keras_mnas.lease-tmp.{self.owner.rsplit(':', 1)[-1]}"

    def _target(self, state: str, expires: int) -> str:
        return f"{_LEASE_TAG}|v1|{state}|{expires}|{self.owner}"

    def _generations(self) -> list[int]:
        names = self.phone.list_names(self.directory)
        return sorted(
            int(n[len(_LEASE_PREFIX) :]) for n in names if re.fullmatch(r"keras_mnas\.lease\.\d+", n)
        )

    def _read(self, generation: int) -> _LeaseRecord | None:
        result = self.phone.shell(["readlink", self._path(generation)])
        parts = result.stdout.strip().split("|", 4)
        if result.exit_code != 0 or len(parts) != 5 or parts[0] != _LEASE_TAG or not parts[3].isdigit():
            return None
        return _LeaseRecord(generation, parts[2], int(parts[3]), parts[4])

    def acquire(self, wait_s: float) -> None:
        give_up = time.monotonic() + wait_s
        while True:
            generations = self._generations()
            now = self.phone.device_time()
            self._clock_offset = now - time.time()
            candidate = 0
            if generations:
                top = generations[-1]
                record = self._read(top)
                free = record is None or record.state == "released" or record.expires < now
                if not free:
                    if time.monotonic() >= give_up:
                        raise DeviceBusyError(
                            f"Phone {self.phone.serial} is being used by another worker ({record.owner}, "
                            f"lease generation {top}, expires in {record.expires - now} s); waited "
                            f"{wait_s:g} s.",
                            serial=self.phone.serial,
                        )
                    time.sleep(min(self.poll_s, max(0.01, give_up - time.monotonic())))
                    continue
                if record is not None and record.state != "released":
                    self.broke = record.owner
                    logger.warning(
                        "Phone %s: taking over the expired lease of %s (expired %d s ago: did it die?).",
                        self.phone.serial,
                        record.owner,
                        now - record.expires,
                    )
                candidate = top + 1
            created = self.phone.shell(
                ["ln", "-s", self._target("held", now + math.ceil(self.ttl_s)), self._path(candidate)]
            )
            if created.exit_code == 0:
                self.generation = candidate
                stale = [self._path(g) for g in generations if g < candidate]
                if stale:
                    # Superseded generations are dead; the highest stays, so numbers are never reused.
                    self.phone.shell(["rm", "-f", *stale])
                return
            # Another worker created that generation first: look again.

    def verify(self) -> None:
        """Raises `DeviceError` if another worker superseded this lease."""
        generations = self._generations()
        if (
            self.generation is None
            or self.generation not in generations
            or generations[-1] != self.generation
        ):
            raise DeviceError(
                f"Lost the lease on phone {self.phone.serial} (held generation {self.generation}, the phone "
                f"now has {generations}): another worker took it over after it expired, so this measurement "
                "may overlap with theirs and is discarded.",
                serial=self.phone.serial,
            )

    def _rewrite(self, state: str, expires: int) -> None:
        tmp = self._tmp_path()
        # One shell call: write the new text under a private name, then rename it over the lease (atomic).
        result = self.phone.shell(
            [
                *("rm", "-f", tmp, _THEN),
                *("ln", "-s", self._target(state, expires), tmp, _AND),
                *("mv", "-f", tmp, self._path(self.generation)),
            ]
        )
        if result.exit_code != 0:
            raise DeviceError(
                f"Could not update the lease on phone {self.phone.serial}: {result.output.strip()}",
                serial=self.phone.serial,
            )

    def _device_now(self) -> int:
        return int(time.time() + self._clock_offset)

    def renew(self) -> None:
        self.verify()
        self._rewrite("held", self._device_now() + math.ceil(self.ttl_s))

    def release(self, verified: bool = False) -> None:
        if self.generation is None:
            return
        try:
            if not verified:
                self.verify()
            self._rewrite("released", self._device_now())
        except DeviceError as e:
            # It expires on its own; nothing else to do.
            logger.info("Phone %s: could not release the lease cleanly: %s", self.phone.serial, e)
        finally:
            self.generation = None


# ----------------------------------------------------------------------------------------------------
# The latency source.


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; received {value!r}.")


def _normalize_mask(core_mask) -> str | None:
    if core_mask is None or core_mask == "none":
        return None
    if core_mask == "auto":
        return "auto"
    if isinstance(core_mask, int) and not isinstance(core_mask, bool):
        if core_mask <= 0:
            raise ValueError(f"`core_mask` must select at least one CPU; received {core_mask!r}.")
        return format(core_mask, "x")
    if isinstance(core_mask, str):
        text = core_mask.lower().removeprefix("0x")
        if re.fullmatch(r"[0-9a-f]+", text) and int(text, 16) > 0:
            return text
    raise ValueError(
        "`core_mask` must be 'auto' (the fastest core(s) from cpufreq), None (no pinning), a positive int "
        f"or a hex string such as 'f0'; received {core_mask!r}."
    )


def _validate_tflite(tflite_bytes) -> bytes:
    if isinstance(tflite_bytes, (bytearray, memoryview)):
        tflite_bytes = bytes(tflite_bytes)
    if not isinstance(tflite_bytes, bytes) or len(tflite_bytes) < 8 or tflite_bytes[4:8] != b"TFL3":
        shown = tflite_bytes[:8] if isinstance(tflite_bytes, bytes) else type(tflite_bytes).__name__
        raise ValueError(
            "Expected the bytes of a TFLite model (a flatbuffer with the 'TFL3' identifier); "
            f"received {shown!r}."
        )
    interpreter = tflite_lib.load_interpreter(tflite_bytes, use_default_delegate=False)
    for detail in interpreter.get_input_details():
        signature = [int(d) for d in detail["shape_signature"]]
        if any(d < 0 for d in signature[1:]):
            raise ValueError(
                f"Cannot time a TFLite model whose input {detail['name']!r} has undefined dimensions (shape "
                f"signature {signature}): benchmark_model would run it at a placeholder shape and report a "
                "meaningless figure. Convert the model with a fixed input shape (batch size aside)."
            )
    return tflite_bytes


def convert_for_device(
    model, *, quantization: str, representative_data, conversion: str, calibration_samples: int
) -> tuple[bytes, dict[str, Any]]:
    """Converts a Keras model for a phone; returns the TFLite bytes and the provenance of the conversion."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}; received {quantization!r}.")
    start = time.perf_counter()
    tflite_bytes = tflite_lib.convert_to_tflite(
        model,
        quantization=quantization,
        representative_data=representative_data,
        method=conversion,
        calibration_samples=calibration_samples,
    )
    provenance = {
        "model": getattr(model, "name", type(model).__name__),
        "conversion": conversion,
        "conversion_seconds": round(time.perf_counter() - start, 3),
    }
    return tflite_bytes, provenance


class AndroidLatency(LatencySource):
    """Times TFLite models on one Android phone with TFLite's `benchmark_model`, through adb.

    For each measurement: the phone must be listed as `device` by the adb server; the `benchmark_model`
    binary (checked against the phone's ABI) and the model are pushed to `remote_dir` unless the phone already
    has the same bytes (SHA-256 compared on the phone); then, `repeats` times, in a fresh process each time,
    after the phone has cooled down:

    `taskset MASK benchmark_model --graph=MODEL --num_threads=T --warmup_runs=W --warmup_min_secs=0
    --num_runs=R --min_secs=S --use_xnnpack=...`

    with every argument shell-quoted. `MASK` pins the process to the `threads` fastest CPUs (highest
    `cpuinfo_max_freq`; among equals the highest-numbered), unless `core_mask` says otherwise. Each
    process's figure is the median of its runs when the tool prints percentiles (LiteRT), else their mean;
    the result's `median_ms` is the median over the processes. `mean_ms`, `std_ms` and `cv` pool all runs
    of all processes (so a process that ran slower counts). When the tool prints percentiles, `robust_cv` is
    the larger of the widest per-process 5th-95th percentile spread and the spread between the processes'
    figures; `unstable` flags it above 5% (`cv` when the tool prints no percentiles). benchmark_model
    prints no 90th percentile, so `p90_ms` holds the highest per-process 95th
    percentile when printed, else the highest per-process maximum: an upper bound of the 90th percentile,
    never an underestimate. The first unstable figure of a source is logged as a warning, later ones at INFO
    level.

    Before each process the phone must be at or below `max_thermal_status` (`dumpsys thermalservice`),
    or, on phones without the thermal service, its hottest CPU thermal zone at or below
    `max_temperature_c`; it is polled every `cool_poll_s` for up to `max_cool_wait_s`, then
    `DeviceTooHotError` is raised.

    Every adb call must finish within `call_timeout_s` (pushes get extra time per byte) and every
    benchmark process within `run_timeout_s`, wall-clock; otherwise `DeadlineExceededError`.

    With `lease=True` (default) the phone is leased for the whole measurement (see the module doc): other
    workers using keras-mnas, in this process or on other machines, wait for it (up to `lease_wait_s`, then
    `DeviceBusyError`). A worker that dies leaves a lease that expires after `lease_ttl_s` (default: the
    run deadline plus two call deadlines plus a minute; it is renewed before each process). Before each
    process the phone is also checked for a still-running benchmark_model left by such a worker.

    Args:
        serial: The phone's adb serial (`adb devices`); `None` uses the only phone the server lists.
        binary: Path of the `benchmark_model` executable built for the phone's ABI (see docs/phones.md).
        adb_host: Host of the adb server the phone is plugged into (this machine by default).
        adb_port: Port of that adb server.
        threads: `--num_threads` (1 by default, like the MnasNet paper's single big core).
        core_mask: `"auto"` (the `threads` fastest cores), `None` (no `taskset`), or a CPU mask as an int or
            a hex string such as `"80"`.
        runs: `--num_runs` per process: timed runs, at least.
        warmup_runs: `--warmup_runs` per process.
        min_seconds: `--min_secs` per process: timed runs continue past `runs` until they add up to this
            many seconds, so a single layer of a few microseconds is not timed over a few milliseconds only.
        repeats: Fresh benchmark processes per measurement.
        delegate: One of `DELEGATES`.
        extra_flags: More `--flag=value` arguments for benchmark_model.
        max_thermal_status: The highest acceptable `Thermal Status` (0: none).
        max_temperature_c: The highest acceptable CPU temperature when only thermal zones are available.
        max_cool_wait_s: How long to wait for the phone to cool before each process.
        cool_poll_s: Seconds between thermal readings while waiting.
        call_timeout_s: Total deadline of each adb call.
        run_timeout_s: Total deadline of each benchmark process.
        lease: Whether to lease the phone for each measurement.
        lease_ttl_s: How long a lease stays valid without renewal.
        lease_wait_s: How long to wait for a phone another worker is using.
        remote_dir: Where files and the lease go on the phone.
        conversion: The `convert_to_tflite` method for `measure`.
        calibration_samples: Samples of a representative array used for int8 calibration.

    Raises:
        SetupError: if `binary` is missing or not an Android executable.
        ValueError: for invalid settings.

    Example:

    ```python
    source = AndroidLatency("R5CT1234ABC", binary="android_aarch64_benchmark_model", repeats=5)
    result = source.measure(keras_mnas.applications.MnasNetA1(weights=None))
    print(f"{result.median_ms:.1f} ms, cv {result.cv:.1%}, {result.provenance['soc']}")
    ```
    """

    name = "android"

    def __init__(
        self,
        serial: str | None = None,
        *,
        binary: str | os.PathLike,
        adb_host: str = DEFAULT_ADB_HOST,
        adb_port: int = DEFAULT_ADB_PORT,
        threads: int = 1,
        core_mask: str | int | None = "auto",
        runs: int = 50,
        warmup_runs: int = 10,
        min_seconds: float = 0.1,
        repeats: int = 3,
        delegate: str = "xnnpack",
        extra_flags: Sequence[str] = (),
        max_thermal_status: int = 0,
        max_temperature_c: float = 45.0,
        max_cool_wait_s: float = 300.0,
        cool_poll_s: float = 5.0,
        call_timeout_s: float = 30.0,
        run_timeout_s: float = 300.0,
        lease: bool = True,
        lease_ttl_s: float | None = None,
        lease_wait_s: float = 600.0,
        remote_dir: str = DEFAULT_REMOTE_DIR,
        conversion: str = "concrete_function",
        calibration_samples: int = tflite_lib.DEFAULT_CALIBRATION_SAMPLES,
    ):
        _check_int("threads", threads, 1)
        _check_int("runs", runs, 1)
        _check_int("warmup_runs", warmup_runs, 1)
        _check_int("repeats", repeats, 1)
        _check_int("max_thermal_status", max_thermal_status, 0)
        _check_int("calibration_samples", calibration_samples, 1)
        _check_int("adb_port", adb_port, 1)
        for arg in ("min_seconds", "max_cool_wait_s", "lease_wait_s"):
            check_seconds(arg, locals()[arg], allow_zero=True)
        for arg in ("cool_poll_s", "call_timeout_s", "run_timeout_s"):
            check_seconds(arg, locals()[arg])
        if lease_ttl_s is not None:
            check_seconds("lease_ttl_s", lease_ttl_s)
        if delegate not in DELEGATES:
            raise ValueError(f"`delegate` must be one of {DELEGATES}; received {delegate!r}.")
        if conversion not in tflite_lib.CONVERSION_METHODS:
            raise ValueError(
                f"`conversion` must be one of {tflite_lib.CONVERSION_METHODS}; received {conversion!r}."
            )
        extra_flags = tuple(str(f) for f in extra_flags)
        for flag in extra_flags:
            if not re.fullmatch(r"--[A-Za-z0-9_]+=.*", flag):
                raise ValueError(f"`extra_flags` must be '--name=value' strings; received {flag!r}.")
        if not remote_dir.startswith("/") or remote_dir != remote_dir.rstrip("/"):
            raise ValueError(
                f"`remote_dir` must be an absolute path without a trailing '/'; received {remote_dir!r}."
            )
        if serial is not None and (not isinstance(serial, str) or not serial):
            raise ValueError(f"`serial` must be a non-empty string or None; received {serial!r}.")

        self.binary_path = os.path.abspath(os.path.expanduser(os.fspath(binary)))
        try:
            with open(self.binary_path, "rb") as f:
                self._binary = f.read()
        except FileNotFoundError:
            raise SetupError(
                f"benchmark_model binary not found at {self.binary_path}. Download the prebuilt binary for "
                "your phone's ABI (`adb shell getprop ro.product.cpu.abi`), e.g. "
                "android_aarch64_benchmark_model for arm64-v8a, or build it with bazel; see docs/phones.md."
            ) from None
        except OSError as e:
            raise SetupError(f"Cannot read the benchmark_model binary at {self.binary_path}: {e}.") from e
        self.binary_abi = elf_abi(self._binary)
        self.binary_sha256 = hashlib.sha256(self._binary).hexdigest()

        self.serial = serial
        self.adb_host = adb_host
        self.adb_port = adb_port
        self.threads = threads
        self.core_mask = _normalize_mask(core_mask)
        self.runs = runs
        self.warmup_runs = warmup_runs
        self.min_seconds = float(min_seconds)
        self.repeats = repeats
        self.delegate = delegate
        self.extra_flags = extra_flags
        self.max_thermal_status = max_thermal_status
        self.max_temperature_c = float(max_temperature_c)
        self.max_cool_wait_s = float(max_cool_wait_s)
        self.cool_poll_s = float(cool_poll_s)
        self.call_timeout_s = float(call_timeout_s)
        self.run_timeout_s = float(run_timeout_s)
        self.lease = lease
        self.lease_ttl_s = (
            float(lease_ttl_s)
            if lease_ttl_s is not None
            else self.run_timeout_s + 2 * self.call_timeout_s + 60
        )
        self.lease_wait_s = float(lease_wait_s)
        self.remote_dir = remote_dir
        self.conversion = conversion
        self.calibration_samples = calibration_samples
        self._phone: _Phone | None = None
        self._lock = threading.Lock()
        self._resolved_mask: tuple[str | None, list[int]] | None = None
        self._abi_checked = False

    # ----------------------------------------------------------------------------------------------
    # Settings and facts.

    @property
    def source_name(self) -> str:
        """`"android:SERIAL"`, the `source` of this source's results."""
        return f"android:{self.serial or '?'}"

    def config(self) -> dict[str, Any]:
        """The settings that change the measured figure.

        Example:

        ```python
        AndroidLatency("SERIAL", binary="benchmark_model").config()["threads"]  # 1
        ```
        """
        return {
            **super().config(),
            "serial": self.serial,
            "threads": self.threads,
            "core_mask": self.core_mask,
            "runs": self.runs,
            "warmup_runs": self.warmup_runs,
            "min_seconds": self.min_seconds,
            "repeats": self.repeats,
            "delegate": self.delegate,
            "extra_flags": list(self.extra_flags),
            "binary_sha256": self.binary_sha256,
            "max_thermal_status": self.max_thermal_status,
            "max_temperature_c": self.max_temperature_c,
            "conversion": self.conversion,
            "calibration_samples": self.calibration_samples,
        }

    def _get_phone(self) -> _Phone:
        if self._phone is None:
            serial = self.serial
            if serial is None:
                serial = _only_serial(self.adb_host, self.adb_port, self.call_timeout_s)
                self.serial = serial
            self._phone = _Phone(serial, self.adb_host, self.adb_port, self.call_timeout_s)
        return self._phone

    def device_info(self) -> AndroidDeviceInfo:
        """Facts about the phone: model, SoC, SDK, ABI, CPU frequencies, thermal state and health.

        Example:

        ```python
        info = AndroidLatency("SERIAL", binary="benchmark_model").device_info()
        print(info.model, info.soc, info.big_cores, info.health)
        ```
        """
        return _describe(self._get_phone(), self.max_thermal_status, self.max_temperature_c)

    def health_check(self) -> str | None:
        """Checks the phone is usable now: `None` when healthy, else the reason it is not.

        Healthy means listed as `device`, booted, answering shell commands within the call deadline, and not
        hotter than allowed.

        Example:

        ```python
        problem = source.health_check()
        if problem:
            print("phone not ready:", problem)
        ```
        """
        if not self._lock.acquire(blocking=False):
            return None  # Measuring right now: evidently usable.
        try:
            phone = self._get_phone()
            phone.forget()
            phone.require_ready()
            if phone.getprops().get("sys.boot_completed", "1") != "1":
                return "still booting"
            thermal = phone.thermal()
            if not self._cool_enough(thermal):
                return f"too hot ({_describe_thermal(thermal)})"
        except (DeviceError, SetupError) as e:
            return str(e)
        finally:
            self._lock.release()
        return None

    # ----------------------------------------------------------------------------------------------
    # Measuring.

    def measure(self, model, *, quantization: str = "float32", representative_data=None) -> LatencyResult:
        """Converts a Keras model to TFLite and times it on the phone.

        Args:
            model: A built Keras model with a fully defined input shape (batch size aside).
            quantization: `"float32"` or `"int8"` (full-integer post-training quantization).
            representative_data: For int8: an array of input samples, or a callable returning an iterable of
                input batches, used to calibrate the quantization ranges.

        Returns:
            A `LatencyResult` with `source="android:SERIAL"` and the provenance of the measurement.

        Raises:
            ModelError: the phone's runtime cannot run the model (do not retry).
            DeviceError: the phone or its connection failed (offline, unauthorized, hung, crashed, cut off,
                too hot, busy); no figure was produced.
            SetupError: the binary does not fit the phone, or the phone refuses the core mask.
            ValueError: for an undefined input shape or an unknown quantization.

        Example:

        ```python
        result = AndroidLatency(binary="benchmark_model").measure(model)
        ```
        """
        tflite_bytes, provenance = convert_for_device(
            model,
            quantization=quantization,
            representative_data=representative_data,
            conversion=self.conversion,
            calibration_samples=self.calibration_samples,
        )
        return self.measure_tflite(tflite_bytes, quantization=quantization, extra_provenance=provenance)

    def measure_tflite(
        self,
        tflite_bytes: bytes,
        *,
        quantization: str = "float32",
        extra_provenance: dict[str, Any] | None = None,
        lease_wait_s: float | None = None,
    ) -> LatencyResult:
        """Times a ready-made TFLite model on the phone.

        Args:
            tflite_bytes: The model, e.g. read from a `.tflite` file.
            quantization: What the model is, recorded in the result: `"float32"` or `"int8"`.
            extra_provenance: Extra facts recorded in `provenance`.
            lease_wait_s: Overrides `lease_wait_s` for this call (0: fail at once with `DeviceBusyError` if
                another worker holds the phone).

        Returns:
            A `LatencyResult`.

        Raises:
            ModelError, DeviceError, SetupError: as for `measure`.
            ValueError: for bytes that are not a TFLite model, or a model with an undefined input shape.

        Example:

        ```python
        with open("mnasnet_a1.tflite", "rb") as f:
            print(AndroidLatency(binary="benchmark_model").measure_tflite(f.read()).median_ms)
        ```
        """
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}; received {quantization!r}.")
        tflite_bytes = _validate_tflite(tflite_bytes)
        wait = self.lease_wait_s if lease_wait_s is None else lease_wait_s
        check_seconds("lease_wait_s", wait, allow_zero=True)
        with self._lock:
            phone = self._get_phone()
            try:
                return self._measure_locked(phone, tflite_bytes, quantization, extra_provenance or {}, wait)
            except DeviceError:
                # The phone may have rebooted or been swapped: learn about it afresh next time.
                phone.forget()
                self._resolved_mask = None
                self._abi_checked = False
                raise

    def _measure_locked(
        self, phone, tflite_bytes, quantization, extra_provenance, lease_wait_s
    ) -> LatencyResult:
        phone.require_ready()
        props = phone.getprops()
        self._check_abi(phone)
        mask, cores = self._core_mask(phone)
        lease = (
            _Lease(phone, self.remote_dir, self.lease_ttl_s, poll_s=self.cool_poll_s) if self.lease else None
        )
        if lease is not None:
            lease.acquire(lease_wait_s)
        verified = False
        try:
            binary_remote = f"{self.remote_dir}/{_REMOTE_BINARY}"
            model_remote = f"{self.remote_dir}/{_REMOTE_MODEL}"
            pushed_binary, binary_mode = self._sync_file(
                phone, self._binary, binary_remote, 0o755, "benchmark_model"
            )
            if pushed_binary or not binary_mode & 0o100:
                phone.shell(["chmod", "755", binary_remote])
            pushed_model, _ = self._sync_file(phone, tflite_bytes, model_remote, 0o644, "the model")
            command = self._command(binary_remote, model_remote, mask)

            outputs: list[BenchmarkOutput] = []
            waits: list[float] = []
            thermal_before = None
            for repeat in range(self.repeats):
                if lease is not None:
                    lease.renew()
                self._wait_for_idle(phone)
                waited, thermal = self._wait_for_cool(phone)
                waits.append(round(waited, 3))
                if thermal_before is None:
                    thermal_before = thermal
                outputs.append(self._run(phone, command, repeat))
            thermal_after = phone.thermal()
            if lease is not None:
                # A worker that lost its lease mid-measurement may have shared the phone: its figure is void.
                lease.verify()
                verified = True
        finally:
            if lease is not None:
                lease.release(verified=verified)

        return self._result(
            phone,
            props,
            tflite_bytes,
            quantization,
            outputs,
            mask=mask,
            cores=cores,
            command=command,
            waits=waits,
            thermal_before=thermal_before,
            thermal_after=thermal_after,
            pushed=(pushed_binary, pushed_model),
            lease=lease,
            extra=extra_provenance,
        )

    # -- steps -------------------------------------------------------------------------------------

    def _check_abi(self, phone: _Phone) -> None:
        if self._abi_checked:
            return
        abis = phone.abis()
        if not _abi_compatible(self.binary_abi, abis):
            primary = abis[0] if abis else "unknown"
            wanted = _PREBUILT_NAMES.get(primary, f"a benchmark_model built for {primary}")
            raise SetupError(
                f"benchmark_model at {self.binary_path} is built for {self.binary_abi}, but phone "
                f"{phone.serial} runs {','.join(abis) or 'an unknown ABI'} (ro.product.cpu.abi={primary}). "
                f"Use {wanted}.",
                serial=phone.serial,
            )
        self._abi_checked = True

    def _core_mask(self, phone: _Phone) -> tuple[str | None, list[int]]:
        if self._resolved_mask is None:
            if self.core_mask is None:
                self._resolved_mask = (None, [])
            elif self.core_mask != "auto":
                value = int(self.core_mask, 16)
                self._resolved_mask = (
                    self.core_mask,
                    [c for c in range(value.bit_length()) if value >> c & 1],
                )
            else:
                freqs = phone.cpu_max_khz()
                if not freqs:
                    logger.warning(
                        "Phone %s exposes no cpufreq information: running benchmark_model without pinning "
                        "it to a core (pass core_mask= to pin it).",
                        phone.serial,
                    )
                    self._resolved_mask = (None, [])
                else:
                    ranked = sorted(freqs, key=lambda c: (freqs[c], c), reverse=True)
                    cores = sorted(ranked[: self.threads])
                    self._resolved_mask = (format(sum(1 << c for c in cores), "x"), cores)
        return self._resolved_mask

    def _sync_file(self, phone: _Phone, data: bytes, remote: str, mode: int, what: str) -> tuple[bool, int]:
        """Makes the phone hold `data` at `remote`; returns whether it was pushed, and the file's mode."""
        digest = hashlib.sha256(data).hexdigest()
        info = phone.stat(remote)
        if stat.S_ISREG(info.mode) and info.size == len(data) and phone.sha256(remote) == digest:
            return False, info.mode
        phone.push(data, remote, mode, what)
        info = phone.stat(remote)
        if info.size != len(data):
            raise DeviceError(
                f"Pushing {what} to {remote} on phone {phone.serial} left {info.size} of {len(data)} bytes.",
                serial=phone.serial,
            )
        remote_digest = phone.sha256(remote)
        if remote_digest is not None and remote_digest != digest:
            raise DeviceError(
                f"{what} pushed to {remote} on phone {phone.serial} is corrupt (SHA-256 {remote_digest}, "
                f"expected {digest}).",
                serial=phone.serial,
            )
        return True, info.mode

    def _command(self, binary_remote: str, model_remote: str, mask: str | None) -> list[str]:
        delegate_flags = {
            "xnnpack": ["--use_xnnpack=true"],
            "none": ["--use_xnnpack=false"],
            "gpu": ["--use_gpu=true", "--use_xnnpack=false"],
            "nnapi": ["--use_nnapi=true", "--use_xnnpack=false"],
        }[self.delegate]
        command = [] if mask is None else ["taskset", mask]
        return [
            *command,
            binary_remote,
            f"--graph={model_remote}",
            f"--num_threads={self.threads}",
            f"--warmup_runs={self.warmup_runs}",
            "--warmup_min_secs=0",
            f"--num_runs={self.runs}",
            f"--min_secs={self.min_seconds:g}",
            *delegate_flags,
            *self.extra_flags,
        ]

    def _wait_for_idle(self, phone: _Phone) -> None:
        give_up = time.monotonic() + self.run_timeout_s
        while True:
            result = phone.shell(["pidof", _REMOTE_BINARY])
            if result.exit_code != 0 or not result.stdout.strip():
                return
            if time.monotonic() >= give_up:
                raise DeviceBusyError(
                    f"A benchmark_model process ({result.stdout.strip()}) is still running on phone "
                    f"{phone.serial} after {self.run_timeout_s:g} s (left by a worker that died or lost its "
                    "lease?); it would disturb the measurement.",
                    serial=phone.serial,
                )
            time.sleep(self.cool_poll_s)

    def _cool_enough(self, thermal: ThermalState) -> bool:
        if thermal.status is not None:
            return thermal.status <= self.max_thermal_status
        if thermal.cpu_max_c is not None:
            return thermal.cpu_max_c <= self.max_temperature_c
        return True  # The phone reports nothing to wait for.

    def _wait_for_cool(self, phone: _Phone) -> tuple[float, ThermalState]:
        start = time.monotonic()
        while True:
            thermal = phone.thermal()
            waited = time.monotonic() - start
            if self._cool_enough(thermal):
                if waited > 0.5:
                    logger.info("Phone %s cooled down in %.0f s.", phone.serial, waited)
                return waited, thermal
            if waited >= self.max_cool_wait_s:
                raise DeviceTooHotError(
                    f"Phone {phone.serial} did not cool down within {self.max_cool_wait_s:g} s "
                    f"({_describe_thermal(thermal)}; the limit is status <= {self.max_thermal_status}"
                    + (f" / CPU <= {self.max_temperature_c:g} C" if thermal.status is None else "")
                    + "). Let it rest, take its case off, or raise the limit.",
                    serial=phone.serial,
                )
            time.sleep(min(self.cool_poll_s, max(0.01, self.max_cool_wait_s - waited)))

    def _run(self, phone: _Phone, command: list[str], repeat: int) -> BenchmarkOutput:
        result = phone.shell(command, timeout=self.run_timeout_s)
        text = result.output
        if "sched_setaffinity" in text or (command[0] == "taskset" and result.exit_code == 127):
            raise SetupError(
                f"Phone {phone.serial} refused to pin benchmark_model with `taskset {command[1]}` "
                f"({text.strip()[:200]}). Pass another core_mask (its cpuset may exclude those CPUs) or "
                "core_mask=None.",
                serial=phone.serial,
            )
        if "Unconsumed cmdline flags" in text or "unrecognized flag" in text.lower():
            raise SetupError(
                f"benchmark_model on phone {phone.serial} does not understand some flags "
                f"({text.strip()[-300:]}); it is too old for these settings. Use a recent LiteRT build.",
                serial=phone.serial,
            )
        if result.exit_code in (126, 127) and "benchmark_model" in text:
            raise DeviceError(
                f"Phone {phone.serial} could not execute benchmark_model (exit status "
                f"{result.exit_code}): {text.strip()}",
                serial=phone.serial,
                output=text,
                exit_code=result.exit_code,
            )
        try:
            output = parse_benchmark_output(text, exit_code=result.exit_code)
        except LatencyMeasurementError as e:
            e.serial = phone.serial
            raise
        if output.runs is not None and output.runs.count < self.runs:
            logger.warning(
                "Phone %s: benchmark_model stopped after %d of %d runs in process %d (its --max_secs limit).",
                phone.serial,
                output.runs.count,
                self.runs,
                repeat,
            )
        return output

    def _result(
        self,
        phone: _Phone,
        props: dict[str, str],
        tflite_bytes: bytes,
        quantization: str,
        outputs: list[BenchmarkOutput],
        **info,
    ) -> LatencyResult:
        figures = [o.figure_ms for o in outputs]
        counts = [o.runs.count if o.runs is not None else self.runs for o in outputs]
        means = [o.inference_avg_us / 1000.0 for o in outputs]
        stds = [(o.runs.std_us or 0.0) / 1000.0 if o.runs is not None else 0.0 for o in outputs]
        total = sum(counts)
        mean = sum(n * m for n, m in zip(counts, means, strict=True)) / total
        # Pooled variance: within-process spread plus the spread between the processes' means.
        variance = (
            sum(n * (s * s + (m - mean) ** 2) for n, s, m in zip(counts, stds, means, strict=True)) / total
        )
        std = math.sqrt(variance)
        uppers = []
        for o in outputs:
            r = o.runs
            if r is not None and r.p95_us is not None:
                uppers.append(r.p95_us / 1000.0)
            elif r is not None and r.max_us is not None:
                uppers.append(r.max_us / 1000.0)
            else:
                uppers.append(o.inference_avg_us / 1000.0)
        median = float(statistics.median(figures))
        between_cv = statistics.pstdev(figures) / statistics.fmean(figures) if len(figures) > 1 else 0.0
        percentiles = [
            (o.runs.p5_us, o.runs.median_us, o.runs.p95_us)
            for o in outputs
            if o.runs is not None and None not in (o.runs.p5_us, o.runs.median_us, o.runs.p95_us)
        ]
        robust_cv = None
        if len(percentiles) == len(outputs) and all(m > 0 for _, m, _ in percentiles):
            robust_cv = max(between_cv, *(percentile_cv(*p) for p in percentiles))
        lease = info["lease"]
        provenance = {
            "serial": phone.serial,
            "adb_server": phone.address,
            "device_model": props.get("ro.product.model", ""),
            "manufacturer": props.get("ro.product.manufacturer", ""),
            "soc": _soc(props),
            "board": props.get("ro.board.platform", ""),
            "sdk": _int_or_none(props.get("ro.build.version.sdk")),
            "android_release": props.get("ro.build.version.release", ""),
            "fingerprint": props.get("ro.build.fingerprint", ""),
            "abi": props.get("ro.product.cpu.abi", ""),
            "core_mask": info["mask"],
            "cores": info["cores"],
            "cores_max_khz": [phone.cpu_max_khz().get(c) for c in info["cores"]] if info["cores"] else [],
            "threads": self.threads,
            "delegate": self.delegate,
            "command": shlex.join(info["command"]),
            "binary_sha256": self.binary_sha256,
            "binary_abi": self.binary_abi,
            "binary_path": self.binary_path,
            "repeats": self.repeats,
            "runs_per_process": counts,
            "per_process_ms": figures,
            "per_process_figure": outputs[0].figure_kind,
            "per_process_cv": [(s / m if m > 0 else 0.0) for s, m in zip(stds, means, strict=True)],
            "between_process_cv": between_cv,
            "p90_is_upper_bound": True,
            "output_generation": outputs[0].generation,
            "init_ms": [o.init_us / 1000.0 if o.init_us is not None else None for o in outputs],
            "memory_overall_mb": outputs[-1].memory_overall_mb,
            "thermal_before": info["thermal_before"].to_dict() if info["thermal_before"] else None,
            "thermal_after": info["thermal_after"].to_dict(),
            "thermal_wait_s": info["waits"],
            "pushed_binary": info["pushed"][0],
            "pushed_model": info["pushed"][1],
            "lease": None if lease is None else {"owner": lease.owner, "took_over_from": lease.broke},
            "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "worker": socket.gethostname(),
            **info["extra"],
        }
        result = LatencyResult(
            median_ms=median,
            mean_ms=mean,
            p90_ms=max(uppers),
            std_ms=std,
            cv=std / mean if mean > 0 else 0.0,
            runs=total,
            warmup_runs=self.warmup_runs,
            threads=self.threads,
            source=f"android:{phone.serial}",
            quantization=quantization,
            tflite_bytes=len(tflite_bytes),
            sha256=hashlib.sha256(tflite_bytes).hexdigest(),
            provenance=provenance,
            robust_cv=robust_cv,
        )
        if result.unstable:
            logger.log(
                self._unstable_log_level(),
                "Unstable latency on phone %s: median %.3f ms with a spread of %.1f%% (%s) "
                "over %d runs in %d processes (per process: %s ms). Is the phone busy, hot, or throttling?",
                phone.serial,
                result.median_ms,
                100 * result.spread,
                "coefficient of variation" if robust_cv is None else "5th-95th percentile range, as a cv",
                result.runs,
                self.repeats,
                ", ".join(f"{f:.3f}" for f in figures),
            )
        return result


# ----------------------------------------------------------------------------------------------------
# Discovery.


def _soc(props: dict[str, str]) -> str:
    model = props.get("ro.soc.model", "")
    maker = props.get("ro.soc.manufacturer", "")
    if model:
        return f"{maker} {model}".strip()
    return props.get("ro.board.platform") or props.get("ro.hardware", "")


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _describe_thermal(thermal: ThermalState) -> str:
    text = "no thermal service" if thermal.status is None else f"thermal status {thermal.status}"
    if thermal.cpu_max_c is not None:
        text += f", CPU {thermal.cpu_max_c:.1f} C"
    return text


def _describe(
    phone: _Phone, max_thermal_status: int = 0, max_temperature_c: float = 45.0
) -> AndroidDeviceInfo:
    state = phone.state()
    base = {"serial": phone.serial, "state": state, "adb_server": phone.address}
    if state != "device":
        hints = {
            "unauthorized": "accept the 'Allow USB debugging?' prompt on the phone",
            "offline": "replug the phone or run `adb reconnect`",
            "absent": "not listed by this adb server",
        }
        return AndroidDeviceInfo(**base, health=state, error=hints.get(state, f"adb state {state}"))
    try:
        props = phone.getprops()
        freqs = phone.cpu_max_khz()
        top = max(freqs.values()) if freqs else None
        facts = {
            "model": props.get("ro.product.model", ""),
            "manufacturer": props.get("ro.product.manufacturer", ""),
            "soc": _soc(props),
            "sdk": _int_or_none(props.get("ro.build.version.sdk")),
            "android_release": props.get("ro.build.version.release", ""),
            "abi": props.get("ro.product.cpu.abi", ""),
            "abilist": tuple(phone.abis()),
            "fingerprint": props.get("ro.build.fingerprint", ""),
            "cpu_max_khz": dict(sorted(freqs.items())),
            "big_cores": tuple(sorted(c for c, f in freqs.items() if f == top)),
        }
        thermal = phone.thermal()
    except DeviceError as e:
        return AndroidDeviceInfo(**base, health="error", error=str(e))
    if thermal.status is not None:
        hot = thermal.status > max_thermal_status
    else:
        hot = thermal.cpu_max_c is not None and thermal.cpu_max_c > max_temperature_c
    return AndroidDeviceInfo(
        **base,
        **facts,
        thermal=thermal,
        health="hot" if hot else "ok",
        error=f"too hot: {_describe_thermal(thermal)}" if hot else None,
    )


def _list_states(host: str, port: int, timeout_s: float) -> list[tuple[str, str]]:
    probe = _Phone("-", host, port, timeout_s)
    infos = probe.call(f"listing the phones of adb server {host}:{port}", lambda: probe.client.list())
    return [(i.serial, i.state) for i in infos]


def _only_serial(host: str, port: int, timeout_s: float) -> str:
    states = _list_states(host, port, timeout_s)
    ready = [s for s, state in states if state == "device"]
    if len(ready) == 1:
        return ready[0]
    listing = ", ".join(f"{s} ({state})" for s, state in states) or "none"
    if not ready:
        raise DeviceUnavailableError(
            f"No usable phone on adb server {host}:{port} (phones: {listing}). Plug one in with USB "
            "debugging on and accept the authorization prompt."
        )
    raise SetupError(f"Several phones are connected to adb server {host}:{port} ({listing}): pass `serial=`.")


def list_devices(
    adb_host: str = DEFAULT_ADB_HOST,
    adb_port: int = DEFAULT_ADB_PORT,
    *,
    timeout_s: float = 10.0,
    max_thermal_status: int = 0,
    max_temperature_c: float = 45.0,
) -> list[AndroidDeviceInfo]:
    """Describes every phone an adb server knows: model, SoC, SDK, ABI, big cores, temperature, health.

    Unusable phones (offline, unauthorized) are listed too, with the reason in `health` and `error`. A phone
    that fails while being described is listed with `health="error"`.

    Args:
        adb_host: Host of the adb server.
        adb_port: Port of the adb server.
        timeout_s: Total deadline of each adb call.
        max_thermal_status: Above this thermal status, a phone's health is `"hot"`.
        max_temperature_c: Without a thermal service: above this CPU temperature, a phone is `"hot"`.

    Returns:
        One `AndroidDeviceInfo` per phone, in the server's order.

    Raises:
        DeviceUnavailableError: when no adb server answers.

    Example:

    ```python
    for info in list_devices():
        print(info.serial, info.model, info.soc, info.sdk, info.abi, info.big_cores, info.health)
    ```
    """
    states = _list_states(adb_host, adb_port, timeout_s)
    return [
        _describe(_Phone(serial, adb_host, adb_port, timeout_s), max_thermal_status, max_temperature_c)
        for serial, _ in states
    ]
