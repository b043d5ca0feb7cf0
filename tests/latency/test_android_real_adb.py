"""The phone backend through Debian's real adb server, against loopback phones of Android 6, 10 and 14.

The path is the one a phone on Wi-Fi takes: AndroidLatency -> adbutils -> the real adb server -> the adb
transport protocol -> `AdbdDevice` -> the profile's `FakePhone`. Serials are `host:port`, as with wireless
debugging. Without `adb` installed each test is skipped with the reason shown; under CI=true it fails.
"""

import json
import pathlib
import threading

import pytest

from keras_mnas.cli import main
from keras_mnas.latency.android import AndroidLatency
from keras_mnas.latency.errors import (
    DeadlineExceededError,
    DeviceError,
    DeviceTooHotError,
    DeviceUnavailableError,
    LatencyMeasurementError,
)
from keras_mnas.latency.pool import AndroidDevicePool
from keras_mnas.testing import (
    PROFILES,
    FakeBenchmark,
    Fault,
    fake_benchmark_binary,
    fake_benchmark_output,
)

# adbutils must never start an adb server of its own.
pytestmark = pytest.mark.usefixtures("no_real_adb")

TINY = (pathlib.Path(__file__).parent / "fixtures" / "tiny.tflite").read_bytes()
FAST = dict(
    runs=5,
    warmup_runs=1,
    repeats=2,
    call_timeout_s=3.0,
    run_timeout_s=3.0,
    cool_poll_s=0.02,
    max_cool_wait_s=0.3,
)
POOL = dict(wait_for_device_s=10.0, busy_retry_s=0.1)


@pytest.fixture
def server(real_adb_server):
    """The session's real adb server (tests/latency/conftest.py: skipped without `adb`, failing under CI)."""
    return real_adb_server


@pytest.fixture
def connect(server):
    """Connects phones of a profile for one test, and disconnects them after it."""
    connected = []

    def add(profile, name="P", latency_ms=12.0, **kwargs):
        kwargs.setdefault("benchmark", FakeBenchmark(latency_ms=latency_ms, relative_std=0.005))
        phone = server.add_phone(PROFILES[profile].phone(name, **kwargs))
        connected.append(phone)
        return phone

    yield add
    for phone in connected:
        if phone.serial in server.states():
            server.remove_phone(phone.serial)


@pytest.fixture
def binary(tmp_path):
    path = tmp_path / "android_aarch64_benchmark_model"
    path.write_bytes(fake_benchmark_binary("arm64-v8a"))
    return path


def source(server, phone, binary, **kwargs):
    options = {**FAST, "lease_wait_s": 3.0, **kwargs}
    return AndroidLatency(phone.serial, binary=binary, adb_port=server.port, **options)


# --------------------------------------------------------------------------------------------------
# The happy path on each generation.


@pytest.mark.parametrize("profile", ["android10", "android14"])
def test_a_measurement_on_each_shell_v2_generation(server, connect, binary, profile):
    phone = connect(profile)
    result = source(server, phone, binary).measure_tflite(TINY)
    assert result.source == f"android:{phone.serial}" and ":" in phone.serial  # a wireless serial
    assert result.median_ms == pytest.approx(12.0, rel=0.03)
    p = result.provenance
    assert p["sdk"] == PROFILES[profile].sdk and p["device_model"] == PROFILES[profile].model
    # Pinned to the fastest core, gated on the thermal service's readings.
    fastest = max(PROFILES[profile].cpu_max_khz)
    assert p["cores_max_khz"] == [fastest] and all(run.core_mask for run in phone.benchmark_runs)
    assert p["thermal_before"]["source"] == "thermalservice" and p["thermal_before"]["cpu_max_c"] > 30
    assert len(phone.benchmark_runs) == 2 and phone.max_concurrent_benchmarks == 1


def test_android6_shell_v1_gives_the_right_number(server, connect, binary):
    phone = connect("android6")
    result = source(server, phone, binary).measure_tflite(TINY)
    assert result.median_ms == pytest.approx(12.0, rel=0.03)
    assert result.provenance["sdk"] == 23
    # No sha256sum on Android 6: the model was pushed and is the measured one.
    assert phone.file("/data/local/tmp/keras_mnas_model.tflite") == TINY


def test_android6_shell_v1_is_pinned_and_thermally_read(server, connect, binary):
    phone = connect("android6")
    result = source(server, phone, binary).measure_tflite(TINY)
    assert all(run.core_mask for run in phone.benchmark_runs)
    assert result.provenance["thermal_before"]["source"] == "thermal_zones"
    assert result.provenance["thermal_before"]["cpu_max_c"] == pytest.approx(41.0)


def test_android6_hot_phone_is_not_measured(server, connect, binary):
    hot = (("tsens_tz_sensor0", 70), ("tsens_tz_sensor5", 72))
    phone = connect("android6", thermal_zones=hot)
    with pytest.raises(DeviceTooHotError):
        source(server, phone, binary, max_temperature_c=45.0).measure_tflite(TINY)
    assert phone.benchmark_runs == []


# --------------------------------------------------------------------------------------------------
# Faults: no number.


def test_a_connection_dropped_mid_benchmark_gives_no_number_then_recovers(server, connect, binary):
    phone = connect("android14")
    phone.add_fault(Fault("keras_mnas_benchmark_model --graph", "offline", keep_fraction=0.6))
    # Without the lease: a lease taken before the cut stays until it expires (the phone may still be
    # running the benchmark), which is the lease's business, not this test's.
    latency = source(server, phone, binary, lease=False)
    with pytest.raises(DeviceError):
        latency.measure_tflite(TINY)
    phone.state = "device"  # back on Wi-Fi: the server reconnects by itself
    server.wait_for_state(phone.serial, "device")
    assert latency.measure_tflite(TINY).median_ms == pytest.approx(12.0, rel=0.03)


@pytest.mark.parametrize(("profile", "action"), [("android14", "hang"), ("android6", "trickle")])
def test_a_benchmark_that_never_ends_hits_its_deadline(server, connect, binary, profile, action):
    phone = connect(profile)
    phone.add_fault(Fault("keras_mnas_benchmark_model --graph", action, interval_s=0.05))
    with pytest.raises(DeadlineExceededError):
        source(server, phone, binary, repeats=1, run_timeout_s=1.0).measure_tflite(TINY)


def test_an_offline_phone_is_reported_not_measured(server, connect, binary):
    phone = connect("android14", state="offline")
    with pytest.raises(DeviceUnavailableError, match="offline"):
        source(server, phone, binary).measure_tflite(TINY)
    assert phone.benchmark_runs == []


@pytest.mark.parametrize("profile", ["android6", "android14"])
def test_output_cut_short_gives_no_number(server, connect, binary, profile):
    phone = connect(profile)
    phone.add_fault(Fault("keras_mnas_benchmark_model --graph", "drop", keep_fraction=0.5))
    with pytest.raises(DeviceError):
        source(server, phone, binary, repeats=1).measure_tflite(TINY)


def test_a_phone_lost_mid_measurement_hands_its_job_to_its_twin(server, connect, binary):
    # Two phones of one model: the pool's identity check accepts them as one kind.
    lost = connect("android14", name="A")
    twin = connect("android14", name="B")
    lost.add_fault(Fault("keras_mnas_benchmark_model --graph", "disappear"))
    pool = AndroidDevicePool(
        [lost.serial, twin.serial], binary=binary, adb_port=server.port, **FAST, **POOL, readmit_after_s=30.0
    )
    results = pool.measure_many_tflite([TINY] * 3)
    assert all(r.median_ms == pytest.approx(12.0, rel=0.03) for r in results)
    stats = pool.stats()
    assert stats[twin.serial].successes >= 2 and stats[lost.serial].failures >= 1
    assert server.states()[lost.serial] == "offline"


def test_a_median_outside_its_own_statistics_gives_no_number(server, connect, binary):
    phone = connect("android14")
    good = fake_benchmark_output(
        "litert", graph="/data/local/tmp/keras_mnas_model.tflite", warmup_us=[12100],
        runs_us=[11900, 12000, 12100], init_us=15000,
    )
    bad = good.replace("median=12000", "median=99999")
    assert bad != good
    phone.add_fault(Fault("keras_mnas_benchmark_model --graph", "exit", times=-1, exit_code=0, output=bad))
    with pytest.raises(LatencyMeasurementError):
        source(server, phone, binary).measure_tflite(TINY)


# --------------------------------------------------------------------------------------------------
# Two phones of one model, the lease, the command.


def test_two_phones_of_one_model_share_the_work(server, connect, binary):
    phones = [connect("android10", name=n, latency_ms=10.0) for n in ("A", "B")]
    for phone in phones:
        phone.benchmark.duration_s = 0.2
    pool = AndroidDevicePool(
        [p.serial for p in phones], binary=binary, adb_port=server.port, **FAST, **POOL
    )
    results = pool.measure_many_tflite([TINY] * 4)
    assert all(r.median_ms == pytest.approx(10.0, rel=0.05) for r in results)
    assert all(p.benchmark_runs and p.max_concurrent_benchmarks == 1 for p in phones)
    assert {r.provenance["device_model"] for r in results} == {"Pixel 4"}


@pytest.mark.parametrize("profile", ["android14", "android6"])
def test_the_lease_keeps_one_measurement_per_phone(server, connect, binary, profile):
    phone = connect(profile)
    phone.benchmark.duration_s = 0.3
    errors = []

    def work():
        try:
            source(server, phone, binary, repeats=1).measure_tflite(TINY)
        except Exception as e:  # a failure is asserted below, with its message
            errors.append(e)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not errors, errors
    assert len(phone.benchmark_runs) == 2 and phone.max_concurrent_benchmarks == 1


def test_devices_command_lists_wireless_phones(server, connect, capsys):
    phones = [connect("android14", name=n) for n in ("A", "B")]
    assert main(["devices", "--adb-port", str(server.port), "--json"]) == 0
    infos = {info["serial"]: info for info in json.loads(capsys.readouterr().out)}
    for phone in phones:
        info = infos[phone.serial]
        assert info["health"] == "ok" and info["sdk"] == 34 and info["big_cores"] == [6, 7]
        assert info["thermal"]["status"] == 0


def test_devices_command_reads_an_android6_phone(server, connect, capsys):
    phone = connect("android6")
    assert main(["devices", "--adb-port", str(server.port), "--json"]) == 0
    info = {i["serial"]: i for i in json.loads(capsys.readouterr().out)}[phone.serial]
    assert info["big_cores"] == [4, 5] and info["thermal"]["cpu_max_c"] == pytest.approx(41.0)


# --------------------------------------------------------------------------------------------------
# Output checks and messages, end to end.


def test_a_single_run_slower_than_min_secs_is_measured(server, connect, binary):
    phone = connect("android14", latency_ms=150.0)  # one run already exceeds --min_secs
    result = source(server, phone, binary, runs=1, repeats=1).measure_tflite(TINY)
    assert result.median_ms == pytest.approx(150.0, rel=0.03)


def test_a_full_disk_is_reported_with_adbds_reason(server, connect, binary):
    phone = connect("android10", free_bytes=1000)
    with pytest.raises(DeviceError, match="No space left on device"):
        source(server, phone, binary).measure_tflite(TINY)
