"""Talking to phones over adb: wall-clock deadlines, one phone's operations, and discovery.

Every adb call keras-mnas makes goes through `Phone.call`, which arms a `_Deadline` around it and maps
adbutils' errors to keras-mnas's (`DeviceUnavailableError`, `DeadlineExceededError`, `DeviceError`). The few
overrides of adbutils internals this needs are together below, under one comment. `list_states`,
`only_serial`, `describe` and `list_devices` find and describe the phones an adb server knows.

Example:

```python
for serial, state in list_states("127.0.0.1", 5037, timeout_s=10.0):
    print(serial, state)  # e.g. "R5CT1234ABC device"
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import adbutils
from adbutils.errors import AdbConnectionError

from keras_mnas.latency.android.device import (
    AndroidDeviceInfo,
    ThermalState,
    describe_thermal,
    int_or_none,
    parse_cpu_list,
    parse_props,
    parse_thermalservice,
    soc_name,
    zone_celsius,
)
from keras_mnas.latency.errors import (
    DeadlineExceededError,
    DeviceError,
    DeviceUnavailableError,
    SetupError,
)

T = TypeVar("T")

DEFAULT_ADB_HOST = "127.0.0.1"
DEFAULT_ADB_PORT = 5037

# The serial of a `Phone` that only asks the adb server for its phone list.
PROBE = "-"

# adb's sync protocol carries at most 64 KiB per DATA message.
_SYNC_CHUNK = 64 * 1024

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


# adbutils private API. Written against adbutils 2.12 (pyproject pins >=2.12,<3); every use of its internals
# is in this block: `AdbConnection._safe_connect` and `_create_socket` (overridden so that no adb server is
# ever started and every socket obeys the deadline), `AdbConnection.conn` (its socket, for the silence
# timeout and for pushing files in `_sync_send`), and `AdbClient.make_connection` / `server_version`
# (overridden to hand out those connections and to ask the server's version once). Check them when moving
# to another adbutils release.


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


def _sync_send(device: adbutils.AdbDevice, data: bytes, path: str, mode: int, refused: list[str]) -> None:
    """Pushes `data` with adb's sync protocol, keeping adbd's message when it refuses the file.

    adbutils' `sync.push` reports a refusal as a bare "FAIL"; adbd sends its reason after it (a 4-byte
    little-endian length, then the text), which is read here and appended to `refused`.
    """
    with device.open_transport() as connection:
        connection.send_command("sync:")
        connection.check_okay()
        target = f"{path},{stat.S_IFREG | mode}".encode()
        sock = connection.conn
        sock.sendall(b"SEND" + struct.pack("<I", len(target)) + target)
        for start in range(0, len(data), _SYNC_CHUNK):
            chunk = data[start : start + _SYNC_CHUNK]
            sock.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        sock.sendall(b"DONE" + struct.pack("<I", int(time.time())))
        status = connection.read_exact(4)
        if status == b"OKAY":
            return
        if status != b"FAIL":
            raise adbutils.AdbError(f"unexpected answer {status!r} to a push")
        length = struct.unpack("<I", connection.read_exact(4))[0]
        refused.append(connection.read_exact(length).decode("utf-8", errors="replace").strip())
        raise adbutils.AdbError(f"adbd refused the file: {refused[-1]}")


# ----------------------------------------------------------------------------------------------------
# One phone over adb.


class _ShellOperator(str):
    """A shell list operator (`;`, `&&`) passed through unquoted; every other argument is quoted."""


THEN = _ShellOperator(";")
AND = _ShellOperator("&&")


def _command_line(args: Sequence[str]) -> str:
    return " ".join(a if isinstance(a, _ShellOperator) else shlex.quote(str(a)) for a in args)


@dataclasses.dataclass(frozen=True)
class _ShellResult:
    exit_code: int
    stdout: str
    stderr: str
    output: str


class Phone:
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

    def call(
        self, what: str, fn: Callable[[], T], timeout: float | None = None, *, of_server: bool = False
    ) -> T:
        """Runs one adb request within its deadline, and turns its failure into a `DeviceError`.

        Args:
            what: The request, for messages ("listing the phones").
            fn: The request.
            timeout: Its deadline in seconds (default: `call_timeout_s`).
            of_server: Whether it asks the adb server itself (not a phone): a hang then says so.
        """
        seconds = self.call_timeout_s if timeout is None else timeout
        error: BaseException | None = None
        result = None
        with _Deadline(seconds) as deadline:
            try:
                result = fn()
            except (adbutils.AdbError, OSError, EOFError, ValueError) as e:
                # ValueError: adbutils' shell v1 fails to parse its exit marker when the output was cut.
                error = e
        # adbutils' own socket timeout may fire a moment before the deadline does: for a request to the
        # server itself, either is the same silence.
        server_silent = (of_server or self.serial == PROBE) and isinstance(error, adbutils.AdbTimeout)
        if deadline.expired or server_silent:
            if of_server or self.serial == PROBE:
                # A request to the server itself hangs: most often the port is a phone's (wireless
                # debugging), whose adbd never answers a client's request.
                where = "" if self.serial == PROBE else f" of adb server {self.address}"
                raise DeadlineExceededError(
                    f"{what}{where} did not finish within its {seconds:g} s deadline: what listens there "
                    "does not answer like an adb server (a phone's own port never does; an adb server "
                    "listens on 5037 unless told otherwise).",
                    serial=None if self.serial == PROBE else self.serial,
                ) from error
            raise DeadlineExceededError(
                f"{what} on {self._where()} did not finish within its {seconds:g} s deadline: the phone, "
                "the link or the command hangs.",
                serial=self.serial,
            ) from error
        if error is not None:
            raise self._translate(what, error) from error
        return result

    def _where(self) -> str:
        # A probe for the server's phone list has no phone: name the server alone.
        server = f"adb server {self.address}"
        return server if self.serial == PROBE else f"phone {self.serial} ({server})"

    def _translate(self, what: str, error: BaseException) -> DeviceError:
        message = str(error).rstrip(".")
        where = self._where()
        if isinstance(error, adbutils.AdbTimeout):
            return DeadlineExceededError(f"{what} on {where} went silent: {message}.", serial=self.serial)
        if isinstance(error, adbutils.AdbError):
            lowered = message.lower()
            if message.startswith("Unknown data:"):
                # adbutils got something other than OKAY/FAIL: whatever listens there is not an adb server.
                answer = message.removeprefix("Unknown data:").strip()
                return DeviceUnavailableError(
                    f"What answers at {self.address} is not an adb server (it answered {answer} where adb "
                    "answers OKAY or FAIL): check the port (an adb server listens on 5037 unless told "
                    "otherwise).",
                    serial=None if self.serial == PROBE else self.serial,
                )
            if "no adb server answers" in lowered or "connect to adb server" in lowered:
                # The connection error already names the address: give only its cause, once.
                reason = str(error.__cause__ or message)
                return DeviceUnavailableError(
                    f"No adb server answers at {self.address} ({reason}). Start one with `adb start-server` "
                    "on the machine the phone is plugged into; for a server on another machine, see "
                    "`keras-mnas devices --help`.",
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
        infos = self.call("listing the phones", lambda: self.client.list(), of_server=True)
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
        if v2:
            return _ShellResult(result.returncode, result.stdout, result.stderr, result.output)
        # Shell v1 has one stream: adbutils leaves `stdout` empty and puts everything in `output`, with the
        # exit status read from an `echo` it appends. Old adbd runs v1 commands on a pty, which turns "\n"
        # into "\r\n". Callers read `stdout`, so v1 output goes there (stderr merged in, as on the phone).
        text = result.output.replace("\r\n", "\n")
        return _ShellResult(result.returncode, text, "", text)

    def getprops(self) -> dict[str, str]:
        if self.props is None:
            result = self.shell(["getprop"])
            props = parse_props(result.stdout or result.output)
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
            cpus = parse_cpu_list(possible.stdout if possible.exit_code == 0 else "")
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
        state = parse_thermalservice(result.stdout or result.output)
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
            celsius = zone_celsius(values.get(f"/sys/class/thermal/{zone}/temp", ""))
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
        refused: list[str] = []
        try:
            self.call(f"pushing {what}", lambda: _sync_send(self.device, data, path, mode, refused), timeout)
        except (DeadlineExceededError, DeviceUnavailableError):
            raise
        except DeviceError as e:
            # adbd's own reason ("No space left on device") when it gave one, else the transport's.
            reason = refused[0] if refused else str(e)
            raise DeviceError(
                f"Pushing {what} ({len(data)} bytes) to {path} on phone {self.serial} failed (is its storage "
                f"full?): {reason.rstrip('.')}.{self.storage_report(os.path.dirname(path))}",
                serial=self.serial,
            ) from e

    def storage_report(self, directory: str) -> str:
        """What `df DIRECTORY` says on the phone, as a sentence to append to an error, or `""`."""
        try:
            df = self.shell(["df", directory])
        except DeviceError:
            return ""
        return f" `df` on the phone says:\n{df.output.strip()}" if df.output.strip() else ""


# ----------------------------------------------------------------------------------------------------
# Discovery.


def describe(
    phone: Phone, max_thermal_status: int = 0, max_temperature_c: float = 45.0
) -> AndroidDeviceInfo:
    """Describes one phone: its adb state, properties, CPU frequencies, thermal state and health."""
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
            "soc": soc_name(props),
            "sdk": int_or_none(props.get("ro.build.version.sdk")),
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
        error=f"too hot: {describe_thermal(thermal)}" if hot else None,
    )


def list_states(host: str, port: int, timeout_s: float) -> list[tuple[str, str]]:
    """The phones an adb server lists, with adb's state of each, without describing them.

    Args:
        host: Host of the adb server.
        port: Port of the adb server.
        timeout_s: Total deadline of the call.

    Returns:
        `(serial, state)` pairs in the server's order; `state` is `"device"` for a usable phone.

    Raises:
        DeviceUnavailableError: when no adb server answers.

    Example:

    ```python
    ready = [serial for serial, state in list_states("127.0.0.1", 5037, 10.0) if state == "device"]
    ```
    """
    probe = Phone(PROBE, host, port, timeout_s)
    infos = probe.call(f"listing the phones of adb server {host}:{port}", probe.client.list, of_server=True)
    return [(i.serial, i.state) for i in infos]


def only_serial(host: str, port: int, timeout_s: float) -> str:
    """The serial of the one usable phone of an adb server; raises when there is none, or several."""
    states = list_states(host, port, timeout_s)
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
    states = list_states(adb_host, adb_port, timeout_s)
    return [
        describe(Phone(serial, adb_host, adb_port, timeout_s), max_thermal_status, max_temperature_c)
        for serial, _ in states
    ]
