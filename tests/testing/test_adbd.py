"""The loopback adbd device, through Debian's real adb server and its `adb` command.

Every test goes client -> real adb server -> transport protocol -> `AdbdDevice`, as with a phone connected
over Wi-Fi. Without `adb` installed the module is skipped with the reason shown; under CI=true it fails.
"""

import os
import time

import adbutils
import pytest

from keras_mnas.testing import PROFILES, FakePhone, Fault, RealAdbServer, adb_missing_reason

_MISSING = adb_missing_reason()
if _MISSING is not None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, but {_MISSING}; .ci/run installs it.", pytrace=False)
    pytest.skip(_MISSING, allow_module_level=True)

# adbutils must never start an adb server of its own.
pytestmark = pytest.mark.usefixtures("no_real_adb")


@pytest.fixture(scope="module")
def server():
    with RealAdbServer(timeout_s=10.0) as real:
        yield real


@pytest.fixture
def connect(server):
    """Connects phones for one test and disconnects them after it."""
    connected = []

    def add(phone):
        connected.append(server.add_phone(phone))
        return phone

    yield add
    for phone in connected:
        server.remove_phone(phone.serial)


def test_shell_v2_separates_the_streams_and_returns_the_exit_status(server, connect):
    phone = connect(PROFILES["android14"].phone("NEW"))
    ok = server.adb("-s", phone.serial, "shell", "echo", "hi")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "hi\n", "")
    failed = server.adb("-s", phone.serial, "shell", "cat /nope; echo after")
    assert failed.returncode == 0 and failed.stdout == "after\n" and "No such file" in failed.stderr
    failed = server.adb("-s", phone.serial, "shell", "cat /nope")
    assert failed.returncode == 1 and failed.stdout == "" and "/nope: No such file" in failed.stderr
    # The adb command asks for shell v2 because the banner advertised it.
    assert server.device(phone.serial).services[0].startswith("shell,v2,")


def test_shell_v1_merges_the_streams_and_has_no_exit_status(server, connect):
    phone = connect(PROFILES["android6"].phone("OLD"))
    failed = server.adb("-s", phone.serial, "shell", "cat /nope")
    # Android 6's adbd: stderr arrives on stdout, and the exit status is lost.
    assert failed.returncode == 0 and "/nope: No such file" in failed.stdout and failed.stderr == ""
    assert server.device(phone.serial).services == ["shell:cat /nope"]
    # Its shell runs on a pty, whose line discipline ends lines with CRLF (FakePhone.serve_shell); the adb
    # command strips the CR for such phones, adbutils does not.
    device = adbutils.AdbClient(port=server.port).device(phone.serial)
    assert device.shell("echo hi", rstrip=False) == "hi\r\n"
    assert server.adb("-s", phone.serial, "shell", "echo", "hi").stdout == "hi\n"
    # A client asking for shell v2 anyway is refused, as an old adbd refuses a service it does not know.
    client = adbutils.AdbClient(port=server.port)
    with client.device(phone.serial).open_transport() as connection:
        connection.send_command("shell,v2:echo hi")
        with pytest.raises(adbutils.AdbError):
            connection.check_okay()


def test_banner_and_features_reach_the_server(server, connect):
    old = connect(PROFILES["android6"].phone("OLD"))
    new = connect(PROFILES["android14"].phone("NEW"))
    listing = server.adb("devices", "-l").stdout
    assert f"{new.serial}" in listing and "product:panther model:Pixel_7 device:panther" in listing
    assert "product:bullhead model:Nexus_5X device:bullhead" in listing
    client = adbutils.AdbClient(port=server.port)
    assert client.device(old.serial).get_features() == ""
    features = set(client.device(new.serial).get_features().split(","))
    assert {"shell_v2", "stat_v2", "ls_v2"} <= features


@pytest.mark.parametrize("profile", ["android6", "android14"])
def test_push_and_pull_a_file_larger_than_a_payload(server, connect, tmp_path, profile):
    phone = connect(PROFILES[profile].phone("P"))
    data = os.urandom(300_000)  # more than one sync chunk and one transport payload
    (tmp_path / "up").write_bytes(data)
    pushed = server.adb("-s", phone.serial, "push", str(tmp_path / "up"), "/data/local/tmp/f")
    assert pushed.returncode == 0, pushed.stderr
    assert phone.file("/data/local/tmp/f") == data
    pulled = server.adb("-s", phone.serial, "pull", "/data/local/tmp/f", str(tmp_path / "down"))
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "down").read_bytes() == data
    missing = server.adb("-s", phone.serial, "pull", "/data/local/tmp/none", str(tmp_path / "x"))
    # stat_v2 carries the errno (ENOENT); the v1 stat only an all-zero answer.
    reason = "No such file or directory" if profile == "android14" else "does not exist"
    assert missing.returncode == 1 and reason in missing.stdout + missing.stderr
    requests = server.device(phone.serial).sync_requests
    # The v2 stat only where the phone advertises stat_v2.
    assert ("STA2" in requests) == (profile == "android14")


def test_adbutils_sync_stat_list_and_modes(server, connect):
    phone = connect(PROFILES["android10"].phone("P4"))
    device = adbutils.AdbClient(port=server.port).device(phone.serial)
    device.sync.push(b"#!/bin/sh\n", "/data/local/tmp/run", 0o755)
    assert phone.file_mode("/data/local/tmp/run") == 0o755
    info = device.sync.stat("/data/local/tmp/run")
    assert info.size == 10 and info.mode & 0o777 == 0o755
    assert [entry.path for entry in device.sync.list("/data/local/tmp")] == ["run"]
    with pytest.raises(adbutils.AdbError, match="No such file"):
        device.sync.read_bytes("/data/local/tmp/none")


def test_an_unauthorized_phone_becomes_usable_once_allowed(server, connect):
    phone = connect(FakePhone("LOCKED", state="unauthorized"))
    refused = server.adb("-s", phone.serial, "shell", "echo", "hi")
    assert refused.returncode != 0 and "unauthorized" in refused.stderr
    phone.state = "device"  # the user taps "Allow"
    server.wait_for_state(phone.serial, "device")
    assert server.adb("-s", phone.serial, "shell", "echo", "hi").stdout == "hi\n"


def test_a_phone_offline_from_the_start_comes_online(server, connect):
    phone = connect(FakePhone("SLOW", state="offline"))
    assert server.states()[phone.serial] == "offline"
    phone.state = "device"
    server.wait_for_state(phone.serial, "device")
    assert server.adb("-s", phone.serial, "shell", "echo", "up").stdout == "up\n"


def test_a_lost_connection_is_seen_and_the_phone_comes_back(server, connect):
    phone = connect(PROFILES["android14"].phone("WIFI"))
    phone.add_fault(Fault("getprop", "offline"))
    full = phone.run_shell("getprop").stdout.decode()
    cut = server.adb("-s", phone.serial, "shell", "getprop")
    assert 0 < len(cut.stdout) < len(full), (cut, server.states())  # half of it, then the transport died
    server.wait_for_state(phone.serial, "offline")
    phone.state = "device"
    server.wait_for_state(phone.serial, "device")  # the server reconnects by itself
    assert server.adb("-s", phone.serial, "shell", "echo", "back").stdout == "back\n"
    # A phone leaving Wi-Fi and coming back.
    server.device(phone.serial).disconnect()
    deadline = time.monotonic() + 10
    while server.adb("-s", phone.serial, "shell", "echo", "again").stdout != "again\n":
        assert time.monotonic() < deadline, server.states()
        time.sleep(0.1)


def test_a_disconnected_phone_is_connected_again(server, connect):
    phone = connect(PROFILES["android10"].phone("P4"))
    server.adb("disconnect", phone.serial)
    server.wait_for_state(phone.serial, None)
    server.reconnect(phone.serial)
    assert server.adb("-s", phone.serial, "shell", "echo", "again").stdout == "again\n"


def test_a_removed_phone_leaves_the_device_list(server):
    phone = server.add_phone(FakePhone("GONE"))
    assert server.phone(phone.serial) is phone and phone in server.phones
    server.remove_phone(phone.serial)
    assert phone.serial not in server.states()
    assert phone not in server.phones
