"""The real adb server, on a private loopback port, with loopback phones connected to it.

`RealAdbServer` runs the installed `adb` program as a server it owns (`adb -L tcp:127.0.0.1:PORT server
nodaemon`, with its own `HOME` and no vendor keys, so it never touches a user's server on 5037 or their
keys) and connects an `AdbdDevice` for each phone with `adb connect 127.0.0.1:DEVPORT`. Each phone's serial
becomes that address, as with wireless debugging. Its interface is `AdbDouble`'s (`host`, `port`,
`add_phone`, `remove_phone`, `phone`, `phones`, a context manager), so a test written against the double runs
against the real server by swapping the fixture.

Example:

```python
from keras_mnas.testing import FakePhone, RealAdbServer, adb_program

if adb_program() is not None:
    with RealAdbServer([FakePhone("PHONE1")]) as server:
        serial = server.phones[0].serial  # "127.0.0.1:PORT"
```
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable

from keras_mnas.testing.adb_double import FakePhone
from keras_mnas.testing.adbd import A_VERSION, MAX_PAYLOAD, AdbdDevice
from keras_mnas.utils.checks import check_seconds


def adb_program() -> str | None:
    """The path of the installed `adb` program, or `None` when there is none."""
    return shutil.which("adb")


def adb_missing_reason() -> str | None:
    """Why tests of the real adb server cannot run here, or `None` when they can.

    Returns:
        A sentence naming what is missing and how to install it, or `None` when `adb` is installed.
    """
    if adb_program() is not None:
        return None
    return (
        "the real adb server is not installed: these tests need Debian's `adb` program on PATH "
        "(`apt-get install adb`)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RealAdbServer:
    """Debian's (or any installed) adb server on a private loopback port, with loopback phones connected.

    Args:
        phones: Phones connected at the start.
        adb: The `adb` program (default: the one on `PATH`).
        port: The server's port (0: a free one).
        timeout_s: How long to wait for the server to start and for a phone to reach its state.

    Raises:
        FileNotFoundError: When there is no `adb` program.
        TimeoutError: When the server does not answer, or a phone does not show up, within `timeout_s`.

    Example:

    ```python
    with RealAdbServer() as server:
        phone = server.add_phone(FakePhone("A"))
        server.adb("-s", phone.serial, "shell", "echo", "hi").stdout  # "hi\\n"
    ```
    """

    def __init__(
        self,
        phones: Iterable[FakePhone] = (),
        *,
        adb: str | None = None,
        port: int = 0,
        timeout_s: float = 10.0,
    ):
        check_seconds("timeout_s", timeout_s)
        program = adb or adb_program()
        if program is None:
            raise FileNotFoundError(
                "RealAdbServer needs the `adb` program; none is on PATH "
                "(Debian/Ubuntu: `apt-get install adb`)."
            )
        self.adb_path = program
        self.host = "127.0.0.1"
        self.port = port or _free_port()
        self.timeout_s = timeout_s
        self._initial = list(phones)
        self._devices: dict[str, AdbdDevice] = {}
        self._lock = threading.Lock()
        self._home: str | None = None
        self._process: subprocess.Popen | None = None
        self._log = None

    # -- life cycle -----------------------------------------------------------------------------------

    def start(self) -> RealAdbServer:
        """Starts the server and connects the initial phones; returns self."""
        if self._process is not None:
            return self
        self._home = tempfile.mkdtemp(prefix="keras-mnas-adb-")
        self._log = open(os.path.join(self._home, "server.log"), "wb")  # noqa: SIM115 (closed in stop)
        self._process = subprocess.Popen(
            # adb 29 refuses a host in `-L`; `tcp:PORT` listens on loopback only.
            [self.adb_path, "-L", f"tcp:{self.port}", "server", "nodaemon"],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_for_server()
            for phone in self._initial:
                self.add_phone(phone)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Disconnects every phone, stops the server and removes its private home."""
        with self._lock:
            devices, self._devices = list(self._devices.values()), {}
        for device in devices:
            device.stop()
        if self._process is not None:
            # The server is this object's child: kill it by its own id, and reap it.
            self._process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def __enter__(self) -> RealAdbServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # A private home: the server makes its own key there and never reads the user's.
        env.update(HOME=self._home, ANDROID_SDK_HOME=self._home, ANDROID_USER_HOME=self._home)
        env["ADB_VENDOR_KEYS"] = os.path.join(self._home, "no-vendor-keys")
        env.pop("ANDROID_SERIAL", None)
        env.pop("ANDROID_ADB_SERVER_PORT", None)
        return env

    def _wait_for_server(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"The adb server exited with status {self._process.returncode} at start: "
                    f"{self.server_log()[-500:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise TimeoutError(
            f"The adb server on {self.host}:{self.port} did not answer within {self.timeout_s} s."
        )

    def server_log(self) -> str:
        """What the server printed so far (for a failing test's message)."""
        if self._home is None:
            return ""
        with contextlib.suppress(OSError), open(os.path.join(self._home, "server.log"), "rb") as f:
            return f.read().decode(errors="replace")
        return ""

    # -- the adb program --------------------------------------------------------------------------------

    def adb(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Runs `adb -P PORT ARGS...` against this server; returns the completed process (text).

        Raises:
            RuntimeError: When the server is not running (the `adb` command would start a daemon of its own,
                which nobody would stop).
        """
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(
                f"The adb server on port {self.port} is not running; its log: {self.server_log()[-500:]!r}"
            )
        return subprocess.run(
            [self.adb_path, "-P", str(self.port), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout or self.timeout_s,
            check=False,
        )

    def states(self) -> dict[str, str]:
        """`adb devices`: serial to state."""
        listing = self.adb("devices").stdout.splitlines()[1:]
        return dict(line.split("\t", 1) for line in listing if "\t" in line)

    def wait_for_state(self, serial: str, state: str | None) -> None:
        """Waits until the server lists `serial` in `state` (`None`: not listed).

        Raises:
            TimeoutError: When it does not within `timeout_s`.
        """
        deadline = time.monotonic() + self.timeout_s
        seen: str | None = None
        while time.monotonic() < deadline:
            seen = self.states().get(serial)
            if seen == state:
                return
            time.sleep(0.05)
        raise TimeoutError(
            f"Phone {serial} did not become {state or 'absent'} on the adb server {self.host}:{self.port} "
            f"within {self.timeout_s} s; it is {seen or 'absent'}."
        )

    # -- phones -----------------------------------------------------------------------------------------

    def add_phone(self, phone: FakePhone, *, features: Iterable[str] | None = None) -> FakePhone:
        """Starts a loopback device for `phone` and connects it: returns it, its serial now `host:port`.

        Args:
            phone: The phone. Its `serial` is replaced by the address the server knows it by.
            features: What its adbd advertises (default: the phone profile's, see `AdbdDevice`).
        """
        if features is None:
            features = getattr(phone, "adb_features", None)
        device = AdbdDevice(
            phone,
            features=features,
            version=getattr(phone, "adb_transport_version", A_VERSION),
            max_payload=getattr(phone, "adb_max_payload", MAX_PAYLOAD),
        ).start()
        phone.serial = device.serial
        with self._lock:
            self._devices[device.serial] = device
        try:
            if phone.state == "offline":
                self._connect_offline(device.serial)
                return phone
            result = self.adb("connect", device.serial)
            # A phone that refuses the server's key is still listed, as unauthorized.
            expected = "failed to authenticate" if phone.state == "unauthorized" else "connected to"
            if expected not in result.stdout:
                output = f"{result.stdout}{result.stderr}".strip()
                raise RuntimeError(f"`adb connect {device.serial}` failed: {output}")
            self.wait_for_state(device.serial, phone.state)
        except BaseException:
            with self._lock:
                self._devices.pop(device.serial, None)
            device.stop()
            raise
        return phone

    def _connect_offline(self, serial: str) -> None:
        # `adb connect` waits for the handshake an offline phone never completes: the server lists the phone
        # as offline meanwhile, and keeps it after the waiting client is stopped.
        client = subprocess.Popen(
            [self.adb_path, "-P", str(self.port), "connect", serial],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.wait_for_state(serial, "offline")
        finally:
            client.kill()
            client.wait(timeout=5)

    def remove_phone(self, serial: str) -> None:
        """Disconnects a phone and stops its device: the server no longer lists it."""
        with self._lock:
            device = self._devices.pop(serial, None)
        self.adb("disconnect", serial)
        if device is not None:
            device.stop()
        self.wait_for_state(serial, None)

    def reconnect(self, serial: str) -> None:
        """Connects a phone again after it went away (its device still listening), as `adb connect` does."""
        self.adb("connect", serial)
        self.wait_for_state(serial, self.phone(serial).state)

    def device(self, serial: str) -> AdbdDevice:
        """The loopback device serving the phone with this serial."""
        with self._lock:
            return self._devices[serial]

    def phone(self, serial: str) -> FakePhone:
        """The connected phone with this serial."""
        return self.device(serial).phone

    @property
    def phones(self) -> list[FakePhone]:
        """The connected phones."""
        with self._lock:
            return [device.phone for device in self._devices.values()]
