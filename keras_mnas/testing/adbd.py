"""A loopback Android device: adbd's side of the adb transport protocol, answering for one `FakePhone`.

`AdbdDevice` listens on 127.0.0.1 like a phone with wireless debugging on. A real adb server reaches it with
`adb connect 127.0.0.1:PORT`, so the whole path is exercised: a client (adbutils, the `adb` command) talks to
the real server, and the server talks to this device over the transport protocol, as it talks to a phone.

The transport protocol (AOSP's `protocol.txt`): every message is a 24-byte little-endian header (command,
arg0, arg1, payload length, payload checksum, command ^ 0xffffffff) and its payload.

- `CNXN`: the server connects; the device answers with its banner
  `device::ro.product.name=..;ro.product.model=..;ro.product.device=..;features=..`. A phone whose state is
  `"unauthorized"` answers `AUTH` tokens instead and refuses every signature, like a phone whose user never
  accepted the key; an `"offline"` phone never answers.
- `OPEN`/`OKAY`/`WRTE`/`CLSE`: one stream per service, each side naming it by its own id; every `WRTE` waits
  for the `OKAY` of the previous one, and no payload exceeds the size both sides agreed in `CNXN`.
- Services: `shell:CMD` (shell v1: the output of both streams, no exit status), `shell,v2[,raw]:CMD` (only
  when `shell_v2` is advertised: packets of 1-byte id, 4-byte length and data, for stdout, stderr and the exit
  status), and `sync:` (`STAT`, `LIST`, `SEND`, `RECV`, `QUIT`; `STA2`/`LST2` with `stat_v2`, `LIS2` with
  `ls_v2`). An unknown service is refused with `CLSE`, as adbd refuses it.

The phone's `Fault`s act as they do on a phone: `"drop"` ends the stream mid-output, `"offline"` and
`"unauthorized"` cut the transport (the server reconnects, and lists the phone in that state), `"disappear"`
cuts it and stops answering (the server lists the phone as offline while it retries, as for a phone that
left the Wi-Fi), `"hang"` and `"trickle"` go on until the client gives up. Setting `phone.state` to
`"offline"` or `"unauthorized"` cuts the transport too; back to `"device"`, a waiting handshake completes.

Example:

```python
from keras_mnas.testing import AdbdDevice, FakePhone

with AdbdDevice(FakePhone("PHONE1")) as device:
    print(device.serial)  # 127.0.0.1:PORT, the serial `adb connect` gives it
```
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterable

from keras_mnas.testing.adb_double import FakePhone, Fault, close_socket

A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_WRTE = 0x45545257
A_CLSE = 0x45534C43

#: The transport protocol version adbd has spoken since Android 7 (checksums are no longer checked).
A_VERSION = 0x01000001
#: The transport protocol version of Android 6 and older (payload checksums checked).
A_VERSION_MIN = 0x01000000
#: The largest payload adbd accepts since Android 9 (older phones: 256 KiB).
MAX_PAYLOAD = 1024 * 1024

_AUTH_TOKEN = 1
_AUTH_SIGNATURE = 2
_AUTH_RSAPUBLICKEY = 3

_NAMES = {A_CNXN: "CNXN", A_AUTH: "AUTH", A_OPEN: "OPEN", A_OKAY: "OKAY", A_WRTE: "WRTE", A_CLSE: "CLSE"}
_HEADER = struct.Struct("<6I")
_SYNC_CHUNK = 64 * 1024
# How often the device looks at its phone's state, so that a test setting `phone.state` is seen at once.
_STATE_POLL_S = 0.05

#: The features an Android 10 phone's adbd advertises. The device speaks `shell_v2` and `stat_v2`; the
#: services the others name (`abb`, `abb_exec`: package installs) are refused, as keras-mnas never uses them.
ANDROID_10_FEATURES = (
    "shell_v2",
    "cmd",
    "stat_v2",
    "fixed_push_mkdir",
    "apex",
    "abb",
    "fixed_push_symlink_timestamp",
    "abb_exec",
)


def _checksum(data: bytes) -> int:
    # adbd's "crc" is the byte sum; servers skip it from A_VERSION on, but older ones check it.
    return sum(data) & 0xFFFFFFFF


class _TransportClosedError(Exception):
    pass


class _Stream:
    """One open service: bytes the server wrote to it, and the flow control of what it writes back."""

    def __init__(self, transport: _Transport, local_id: int, remote_id: int):
        self.transport = transport
        self.local_id = local_id
        self.remote_id = remote_id
        self._inbound = bytearray()
        self._cond = threading.Condition()
        self._acked = True
        self.closed = False
        self._sent_close = False

    # -- called by the transport's reader -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._inbound += data
            self._cond.notify_all()

    def ack(self) -> None:
        with self._cond:
            self._acked = True
            self._cond.notify_all()

    def peer_closed(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # -- called by the service ------------------------------------------------------------------------

    def _wait(self, predicate, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not predicate():
                if self.closed or self.transport.dead:
                    return False
                remaining = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def recv_exact(self, n: int) -> bytes:
        if not self._wait(lambda: len(self._inbound) >= n):
            with self._cond:
                if len(self._inbound) < n:
                    raise _TransportClosedError
        with self._cond:
            data = bytes(self._inbound[:n])
            del self._inbound[:n]
        return data

    def send(self, data: bytes) -> None:
        size = self.transport.max_payload
        for start in range(0, len(data), size):
            # The server acknowledges every WRTE with OKAY; adbd sends nothing more until it has.
            if not self._wait(lambda: self._acked):
                raise _TransportClosedError
            with self._cond:
                self._acked = False
            self.transport.send(A_WRTE, self.local_id, self.remote_id, data[start : start + size])

    def flush(self, seconds: float = 2.0) -> None:
        """Waits until the server acknowledged the last WRTE: it has read it."""
        self._wait(lambda: self._acked, timeout=seconds)

    def wait_closed(self, seconds: float) -> bool:
        """Waits up to `seconds`; True once the server closed the stream or the transport died."""
        return not self._wait(lambda: False, timeout=seconds) and (self.closed or self.transport.dead)

    def close(self) -> None:
        with self._cond:
            if self._sent_close:
                return
            self._sent_close = True
        if not self.closed:
            with contextlib.suppress(_TransportClosedError, OSError):
                self.transport.send(A_CLSE, self.local_id, self.remote_id)
        self.transport.forget(self)


class _Transport:
    """One TCP connection from the adb server: the handshake, then streams."""

    def __init__(self, device: AdbdDevice, conn: socket.socket):
        self.device = device
        self.conn = conn
        self.max_payload = 4096
        self.greeted = False  # the server's CNXN arrived
        self.online = False  # the device answered it
        self.dead = False
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._lock = threading.Lock()
        self._next_id = 1

    def send(self, command: int, arg0: int, arg1: int, payload: bytes = b"") -> None:
        header = _HEADER.pack(
            command, arg0, arg1, len(payload), _checksum(payload), command ^ 0xFFFFFFFF
        )
        with self._send_lock:
            if self.dead:
                raise _TransportClosedError
            try:
                self.conn.sendall(header + payload)
            except OSError as e:
                self.kill()
                raise _TransportClosedError from e

    def accept(self) -> None:
        """Answers the server's CNXN: the phone is online (at once, or once its user allowed the key)."""
        if self.greeted and not self.online:
            self.online = True
            self.send(A_CNXN, self.device.version, self.device.max_payload, self.device.banner().encode())

    def kill(self) -> None:
        """Cuts the connection: to the server, the phone is gone."""
        self.dead = True
        close_socket(self.conn)
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.peer_closed()

    def forget(self, stream: _Stream) -> None:
        with self._lock:
            self._streams.pop(stream.local_id, None)

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            if not chunk:
                raise _TransportClosedError
            data += chunk
        return data

    def serve(self) -> None:
        try:
            while not self.dead:
                command, arg0, arg1, length, _check, magic = _HEADER.unpack(self._recv_exact(_HEADER.size))
                if magic != command ^ 0xFFFFFFFF:
                    raise _TransportClosedError  # not an adb server: adbd drops the connection too
                payload = self._recv_exact(length) if length else b""
                self._handle(command, arg0, arg1, payload)
        except (_TransportClosedError, OSError):
            pass
        finally:
            self.kill()

    def _handle(self, command: int, arg0: int, arg1: int, payload: bytes) -> None:
        phone = self.device.phone
        self.device.messages.append(_NAMES.get(command, hex(command)))
        if command == A_CNXN:
            self.max_payload = max(256, min(arg1, self.device.max_payload))
            self.greeted = True
            if phone.state == "device":
                self.accept()
            elif phone.state == "unauthorized":
                self.send(A_AUTH, _AUTH_TOKEN, 0, os.urandom(20))
            # An offline phone never answers: the server keeps it listed as offline.
        elif command == A_AUTH:
            if arg0 == _AUTH_SIGNATURE:
                # No key is ever accepted: a new token, as adbd sends after a signature it cannot verify.
                self.send(A_AUTH, _AUTH_TOKEN, 0, os.urandom(20))
            # A public key (_AUTH_RSAPUBLICKEY) would raise the "Allow USB debugging?" dialog: nobody taps it.
        elif not self.online:
            return  # adbd ignores streams before the handshake
        elif command == A_OPEN:
            self._open(arg0, payload.rstrip(b"\0").decode("utf-8", errors="replace"))
        elif command == A_OKAY:
            stream = self._stream(arg1)
            if stream is not None:
                stream.ack()
        elif command == A_WRTE:
            stream = self._stream(arg1)
            if stream is None:
                self.send(A_CLSE, 0, arg0)
                return
            stream.feed(payload)
            self.send(A_OKAY, arg1, arg0)
        elif command == A_CLSE:
            stream = self._stream(arg1)
            if stream is not None:
                stream.peer_closed()
                self.forget(stream)

    def _stream(self, local_id: int) -> _Stream | None:
        with self._lock:
            return self._streams.get(local_id)

    def _open(self, remote_id: int, service: str) -> None:
        handler = self.device.service_handler(service)
        if handler is None:
            self.send(A_CLSE, 0, remote_id)  # adbd's answer to a service it does not know
            return
        with self._lock:
            local_id = self._next_id
            self._next_id += 1
            stream = _Stream(self, local_id, remote_id)
            self._streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id)
        thread = threading.Thread(target=self._run, args=(stream, handler), name="adbd-service", daemon=True)
        thread.start()

    def _run(self, stream: _Stream, handler) -> None:
        try:
            handler(stream)
        except (_TransportClosedError, OSError):
            pass
        finally:
            stream.close()


class AdbdDevice:
    """One loopback phone speaking adbd's side of the adb transport protocol.

    A real adb server reaches it with `adb connect 127.0.0.1:PORT`; `serial` is then its serial there. The
    `FakePhone` behind it answers the shell and holds the files; `features` are what its banner advertises
    and decide which protocols the server may use.

    Args:
        phone: The phone that answers.
        features: The banner's features (default: Android 10's, without `shell_v2` when `phone.shell_v2` is
            False). Only `shell_v2`, `stat_v2` and `ls_v2` change what the device speaks.
        host: Address to listen on: loopback only.
        port: Port to listen on (0: a free one).
        version: The transport protocol version it answers `CNXN` with.
        max_payload: The largest payload it accepts (the server's own limit can make it smaller).

    Raises:
        ValueError: For an address that is not loopback.

    Example:

    ```python
    from keras_mnas.testing import AdbdDevice, FakePhone

    device = AdbdDevice(FakePhone("A", shell_v2=False), features=()).start()
    print(device.banner())
    device.stop()
    ```
    """

    def __init__(
        self,
        phone: FakePhone,
        *,
        features: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        version: int = A_VERSION,
        max_payload: int = MAX_PAYLOAD,
    ):
        if not host.startswith("127."):
            raise ValueError(f"AdbdDevice listens on loopback only (127.x.x.x); received host={host!r}.")
        if features is None:
            features = [f for f in ANDROID_10_FEATURES if phone.shell_v2 or f != "shell_v2"]
        self.phone = phone
        self.features = tuple(features)
        self.version = version
        self.max_payload = max_payload
        self.host = host
        #: Commands of the messages received, in order ("CNXN", "OPEN", ...), for tests of the protocol.
        self.messages: list[str] = []
        #: Services opened, in order.
        self.services: list[str] = []
        #: Sync requests received, in order ("STAT", "STA2", "SEND", ...).
        self.sync_requests: list[str] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._transports: list[_Transport] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._last_state = phone.state

    @property
    def serial(self) -> str:
        """The serial a server that ran `adb connect` lists the phone under: `host:port`."""
        return f"{self.host}:{self.port}"

    def banner(self) -> str:
        """The `CNXN` banner: the phone's product properties and the advertised features."""
        props = self.phone.props
        text = (
            f"device::ro.product.name={props['ro.product.name']};ro.product.model={props['ro.product.model']};"
            f"ro.product.device={props['ro.product.device']};"
        )
        if self.features:
            text += "features=" + ",".join(self.features)
        return text

    # -- life cycle -----------------------------------------------------------------------------------

    def start(self) -> AdbdDevice:
        """Starts answering; returns self."""
        if not self._threads:
            for target, name in ((self._accept_loop, "adbd-accept"), (self._watch_state, "adbd-state")):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stops listening and cuts every connection."""
        self._stopping.set()
        close_socket(self._listener)
        self.disconnect()
        for thread in self._threads:
            thread.join(timeout=5)

    def disconnect(self) -> None:
        """Cuts the connections to the server, as a phone leaving Wi-Fi does; it may connect again."""
        with self._lock:
            transports, self._transports = self._transports, []
        for transport in transports:
            transport.kill()

    def __enter__(self) -> AdbdDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = _Transport(self, conn)
            with self._lock:
                self._transports.append(transport)
            threading.Thread(target=transport.serve, name="adbd-transport", daemon=True).start()

    def _watch_state(self) -> None:
        # A test that sets `phone.state` expects the server to see it: the transport is cut, and the next
        # handshake answers according to the new state.
        while not self._stopping.wait(_STATE_POLL_S):
            state = self.phone.state
            if state != self._last_state:
                self._last_state = state
                if state != "device":
                    self.disconnect()
                    continue
                # Back to "device": a connection still waiting (unauthorized, offline) completes, as when
                # the user taps "Allow".
                with self._lock:
                    transports = list(self._transports)
                for transport in transports:
                    with contextlib.suppress(_TransportClosedError):
                        transport.accept()

    # -- services ---------------------------------------------------------------------------------------

    def service_handler(self, service: str):
        """The function serving `service` on a stream, or `None` for a service this phone's adbd refuses."""
        self.services.append(service)
        name, _, command = service.partition(":")
        if name == "sync" and not command:
            return self._sync
        kind, *options = name.split(",")
        if kind != "shell":
            return None
        if options and "shell_v2" not in self.features:
            return None  # an adbd without shell v2 knows only `shell:`
        v2 = "v2" in options
        return lambda stream: self._shell(stream, command, v2)

    def _shell(self, stream: _Stream, command: str, v2: bool) -> None:
        self.phone.serve_shell(command, _StreamChannel(self, stream), v2=v2)

    def _cut(self, stream: _Stream, fault: Fault, partial: bytes) -> None:
        if partial:
            stream.send(partial)
            # Closing a socket with unread input resets it, and the server may lose what it had not read.
            stream.flush()
        if fault.action == "drop":
            return  # the stream ends without an exit status; the phone stays
        self.phone.state = "offline" if fault.action == "disappear" else fault.action
        self._last_state = self.phone.state
        if fault.action == "disappear":
            # Unplugged: nothing answers at the address any more.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
        self.disconnect()

    def _sync(self, stream: _Stream) -> None:
        phone = self.phone
        while True:
            header = stream.recv_exact(8)
            request, length = header[:4], struct.unpack("<I", header[4:])[0]
            path = stream.recv_exact(length).decode("utf-8", errors="replace")
            self.sync_requests.append(request.decode("ascii", errors="replace"))
            if request == b"QUIT":
                return
            if request == b"STAT":
                stream.send(b"STAT" + struct.pack("<III", *phone.sync_stat(path)))
            elif request in (b"STA2", b"LST2") and "stat_v2" in self.features:
                stream.send(request + self._stat_v2(path))
            elif request == b"LIST":
                data = b""
                for name, mode, size, mtime in phone.sync_list(path):
                    encoded = name.encode()
                    data += b"DENT" + struct.pack("<IIII", mode, size, mtime, len(encoded)) + encoded
                stream.send(data + b"DONE" + bytes(16))
            elif request == b"LIS2" and "ls_v2" in self.features:
                data = b""
                for name, *_ in phone.sync_list(path):
                    encoded = name.encode()
                    entry = self._stat_v2(path.rstrip("/") + "/" + name)
                    data += b"DNT2" + entry + struct.pack("<I", len(encoded)) + encoded
                stream.send(data + b"DONE" + bytes(len(self._stat_v2("/")) + 4))
            elif request == b"RECV":
                content = phone.sync_read(path)
                if content is None:
                    stream.send(b"FAIL" + _le_text(f"open failed: No such file or directory: {path}"))
                    continue
                data = b""
                for start in range(0, len(content), _SYNC_CHUNK):
                    chunk = content[start : start + _SYNC_CHUNK]
                    data += b"DATA" + struct.pack("<I", len(chunk)) + chunk
                stream.send(data + b"DONE" + bytes(4))
            elif request == b"SEND":
                self._receive_file(stream, path)
            else:
                # adbd ends the sync session on a request it does not know.
                stream.send(b"FAIL" + _le_text(f"unknown sync request {request!r}"))
                return

    def _receive_file(self, stream: _Stream, argument: str) -> None:
        path, _, mode_text = argument.rpartition(",")
        mode = int(mode_text) if mode_text.isdigit() else 0o644
        chunks = []
        while True:
            header = stream.recv_exact(8)
            kind, value = header[:4], struct.unpack("<I", header[4:])[0]
            if kind == b"DATA":
                if value > _SYNC_CHUNK:
                    stream.send(b"FAIL" + _le_text(f"sync data chunk of {value} bytes is too large"))
                    raise _TransportClosedError
                chunks.append(stream.recv_exact(value))
            elif kind == b"DONE":
                break
            else:
                stream.send(b"FAIL" + _le_text(f"unexpected sync message {kind!r}"))
                raise _TransportClosedError
        error = self.phone.sync_write(path, b"".join(chunks), mode, value)
        stream.send(b"OKAY" + bytes(4) if error is None else b"FAIL" + _le_text(error))

    def _stat_v2(self, path: str) -> bytes:
        # error, dev, ino, mode, nlink, uid, gid, size, atime, mtime, ctime: the layout of adbd's stat_v2.
        mode, size, mtime = self.phone.sync_stat(path)
        if not mode:
            return struct.pack("<IQQIIIIQqqq", 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # ENOENT
        nlink = 2 if stat.S_ISDIR(mode) else 1
        inode = hash(path) & 0xFFFFFFFF
        uid = gid = 2000  # the shell user, who owns what adb pushes
        return struct.pack("<IQQIIIIQqqq", 0, 0xFD00, inode, mode, nlink, uid, gid, size, mtime, mtime, mtime)


class _StreamChannel:
    """A shell service's output on a transport stream (a `ShellChannel`)."""

    def __init__(self, device: AdbdDevice, stream: _Stream):
        self.device, self.stream = device, stream

    def send(self, data: bytes) -> None:
        self.stream.send(data)

    def wait_closed(self, seconds: float) -> bool:
        return self.stream.wait_closed(seconds) or self.device._stopping.is_set()

    def cut(self, fault: Fault, partial: bytes) -> None:
        self.device._cut(self.stream, fault, partial)


def _le_text(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<I", len(data)) + data
