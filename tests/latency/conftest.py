import contextlib
import os

import pytest

from keras_mnas import tflite as tflite_lib
from keras_mnas.testing import AdbDouble, RealAdbServer, adb_missing_reason


@pytest.fixture
def count_conversions(monkeypatch):
    """Records the quantization of each `convert_to_tflite` call: every source converts through it."""
    calls = []
    real = tflite_lib.convert_to_tflite

    def counting(model, **kwargs):
        calls.append(kwargs.get("quantization"))
        return real(model, **kwargs)

    monkeypatch.setattr(tflite_lib, "convert_to_tflite", counting)
    return calls


# --------------------------------------------------------------------------------------------------
# Servers for the phone tests. A test that talks to a phone takes `serve_real` (the real adb server only)
# or `serve` (the real server and the in-process double). A test stays on `AdbDouble` alone only when the
# real server cannot express what it checks: a fault of the host protocol itself (no server, an old
# server's protocol version, something else at the port), or the double's own behaviour.


@pytest.fixture(scope="session")
def real_adb_server():
    """Debian's adb server on a private loopback port, shared by the session; phones come and go per test.

    Skips with the reason where the `adb` program is missing, and fails under CI=true (CI installs it).
    """
    missing = adb_missing_reason()
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, but {missing}; .ci/run installs it.", pytrace=False)
        pytest.skip(missing)
    with RealAdbServer(timeout_s=10.0) as server:
        yield server


@pytest.fixture
def serve_real(real_adb_server):
    """`serve(*phones)`: connects the phones to the real adb server and returns it; they leave after the test.

    Each phone's serial becomes its `host:port` address, so tests name phones by `phone.serial`.
    """
    added = []

    def serve(*phones, server_version=None):
        del server_version  # the double's host-protocol version: the real server is the installed one
        for phone in phones:
            added.append(real_adb_server.add_phone(phone))
        return real_adb_server

    yield serve
    for phone in added:
        real_adb_server.remove_phone(phone.serial)


@pytest.fixture(params=["double", "real"])
def serve(request):
    """`serve(*phones, **double_options)`: a server with these phones, the in-process double or the real one.

    The same test runs on both, so the double cannot drift from what the real server and adbd do.
    """
    if request.param == "real":
        yield request.getfixturevalue("serve_real")
        return
    with contextlib.ExitStack() as stack:
        yield lambda *phones, **kwargs: stack.enter_context(AdbDouble(list(phones), **kwargs))
