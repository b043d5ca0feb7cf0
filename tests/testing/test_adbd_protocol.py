"""The loopback adbd device at the message level, and the phone profiles; no adb program needed.

A small host side written here speaks the transport protocol to `AdbdDevice`, to pin down what the real
server relies on: the handshake, authentication, stream ids, flow control, payload limits, checksums.
"""

import socket
import struct

import pytest

from keras_mnas.latency.android.device import parse_thermalservice
from keras_mnas.testing import PROFILES, AdbdDevice, FakePhone
from keras_mnas.testing.adbd import A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION, A_WRTE

HEADER = struct.Struct("<6I")


class Host:
    """The server's side of one transport, by hand."""

    def __init__(self, device):
        self.sock = socket.create_connection(("127.0.0.1", device.port), timeout=3)

    def send(self, command, arg0, arg1, payload=b""):
        self.sock.sendall(HEADER.pack(command, arg0, arg1, len(payload), sum(payload), command ^ 0xFFFFFFFF))
        self.sock.sendall(payload)

    def recv(self):
        header = self._exact(HEADER.size)
        command, arg0, arg1, length, check, magic = HEADER.unpack(header)
        assert magic == command ^ 0xFFFFFFFF
        payload = self._exact(length)
        assert check == sum(payload) & 0xFFFFFFFF  # the byte sum, which servers before A_VERSION check
        return command, arg0, arg1, payload

    def _exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def connect(self, max_payload=1 << 20):
        self.send(A_CNXN, A_VERSION, max_payload, b"host::features=shell_v2,cmd,stat_v2\0")
        return self.recv()


@pytest.fixture
def device():
    with AdbdDevice(PROFILES["android14"].phone("P"), features=PROFILES["android14"].features) as d:
        yield d


def test_handshake_answers_with_the_banner(device):
    command, version, max_payload, banner = Host(device).connect()
    assert (command, version, max_payload) == (A_CNXN, A_VERSION, 1 << 20)
    assert banner.decode().startswith("device::ro.product.name=panther;ro.product.model=Pixel 7;")
    assert banner.decode().endswith("features=" + ",".join(PROFILES["android14"].features))


def test_a_stream_is_flow_controlled_and_split_to_the_agreed_payload(device):
    device.phone.put_file("/data/local/tmp/big", b"x" * 700)
    host = Host(device)
    host.connect(max_payload=256)  # the server's limit wins when it is smaller
    host.send(A_OPEN, 7, 0, b"shell:cat /data/local/tmp/big\0")
    command, local, remote, _ = host.recv()
    assert (command, remote) == (A_OKAY, 7) and local != 0
    received = b""
    while True:
        command, arg0, arg1, payload = host.recv()
        if command == A_CLSE:
            break
        assert (command, arg0, arg1) == (A_WRTE, local, 7) and len(payload) <= 256
        received += payload
        host.send(A_OKAY, 7, local)  # the next WRTE only comes after this
    assert received == b"x" * 700


def test_unknown_services_and_shell_v2_without_the_feature_are_refused():
    with AdbdDevice(FakePhone("OLD", shell_v2=False), features=()) as old:
        host = Host(old)
        _, _, _, banner = host.connect()
        assert b"features=" not in banner
        for service in (b"shell,v2:echo hi\0", b"reboot:\0"):
            host.send(A_OPEN, 9, 0, service)
            assert host.recv()[:3] == (A_CLSE, 0, 9)


def test_an_unauthorized_phone_only_sends_tokens():
    phone = FakePhone("LOCKED", state="unauthorized")
    with AdbdDevice(phone) as locked:
        host = Host(locked)
        command, kind, _, token = host.connect()
        assert (command, kind, len(token)) == (A_AUTH, 1, 20)
        host.send(A_AUTH, 2, 0, b"\1" * 256)  # a signature it cannot verify: another token
        assert host.recv()[:2] == (A_AUTH, 1)
        host.send(A_OPEN, 3, 0, b"shell:echo hi\0")  # ignored before the handshake
        phone.state = "device"  # the user allows the key: the handshake completes
        assert host.recv()[0] == A_CNXN


def test_a_bad_magic_drops_the_connection(device):
    host = Host(device)
    host.sock.sendall(HEADER.pack(A_CNXN, A_VERSION, 4096, 0, 0, 0))
    with pytest.raises((EOFError, ConnectionResetError)):
        host.recv()


def test_device_listens_on_loopback_only():
    with pytest.raises(ValueError, match=r"loopback only.*received host='0.0.0.0'"):
        AdbdDevice(FakePhone("P"), host="0.0.0.0")


# --------------------------------------------------------------------------------------------------
# Profiles.


@pytest.mark.parametrize(("profile", "hal"), [("android10", "ThermalHAL 2.0 connected"),
                                              ("android14", "ThermalHAL AIDL 1  connected")])
def test_thermal_service_text_of_each_generation_is_read(profile, hal):
    phone = PROFILES[profile].phone("P", thermal_status=2)
    text = phone.run_shell("dumpsys thermalservice").stdout.decode()
    assert hal in text and "ThermalStatusListeners:" in text
    state = parse_thermalservice(text)
    cpu = [celsius for _, kind, celsius in phone.hal_temperatures if kind == 0]  # type 0: CPU
    assert state.status == 2 and state.cpu_max_c == max(cpu)


def test_android6_has_the_old_tools_and_no_thermal_service():
    phone = PROFILES["android6"].phone("OLD")
    assert phone.run_shell("dumpsys thermalservice").stdout == b"Can't find service: thermalservice\n"
    assert phone.run_shell("sha256sum /system/bin/sh").exit_code == 127
    assert phone.run_shell("df /data").stdout.decode().split()[:5] == [
        "Filesystem", "Size", "Used", "Free", "Blksize"
    ]
    # One cpufreq directory per CPU, no policyN: the kernels of that generation.
    assert phone.listdir("/sys/devices/system/cpu") == [f"cpu{n}" for n in range(6)] + ["possible"]
    assert not phone.shell_v2 and phone.adb_features == ()


def test_newer_profiles_have_cpufreq_policies_per_cluster():
    phone = PROFILES["android10"].phone("P4")
    assert phone.listdir("/sys/devices/system/cpu/cpufreq") == ["policy0", "policy4", "policy7"]
    assert phone.file("/sys/devices/system/cpu/cpufreq/policy4/related_cpus") == b"4 5 6\n"
    assert phone.run_shell("df /data").stdout.decode().split()[1] == "1K-blocks"


def test_two_phones_of_one_profile_differ_only_in_serial():
    a, b = (PROFILES["android14"].phone(s) for s in ("A", "B"))
    assert {k: v for k, v in a.props.items() if k != "ro.serialno"} == {
        k: v for k, v in b.props.items() if k != "ro.serialno"
    }
    assert (a.props["ro.serialno"], b.props["ro.serialno"]) == ("A", "B")
