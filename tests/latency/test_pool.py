"""AndroidDevicePool: concurrency, retries, quarantine, sharing phones.

Tests of what the pool does with phones go through the real adb server (`serve_real`, or `serve` for the
real server and the double; tests/latency/conftest.py). The quarantine and readmission tests, two adb
servers and the Keras-model tests stay on the in-process double: they check the pool's own bookkeeping
(over seconds-long intervals, where a phone answers the same through either server), and this file's time
would grow by a real server's reconnection delays and a second real server.
"""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

from keras_mnas.latency import LatencySource, TFLiteLatencySource
from keras_mnas.latency.android import AndroidLatency
from keras_mnas.latency.errors import (
    DeviceBusyError,
    DeviceError,
    DeviceUnavailableError,
    ModelError,
    SetupError,
)
from keras_mnas.latency.pool import AndroidDevicePool
from keras_mnas.testing import AdbDouble, FakeBenchmark, FakePhone, Fault, fake_benchmark_binary

# adbutils must never start a real adb server on the test machine.
pytestmark = pytest.mark.usefixtures("no_real_adb")

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TINY = (FIXTURES / "tiny.tflite").read_bytes()
TMP = "/data/local/tmp"
BENCH = "keras_mnas_benchmark_model --graph"

FAST = dict(
    runs=5,
    warmup_runs=1,
    repeats=1,
    call_timeout_s=3.0,
    run_timeout_s=3.0,
    cool_poll_s=0.02,
    max_cool_wait_s=0.5,
)
POOL = dict(readmit_after_s=0.2, wait_for_device_s=10.0, busy_retry_s=0.1)


@pytest.fixture
def binary(tmp_path):
    path = tmp_path / "android_aarch64_benchmark_model"
    path.write_bytes(fake_benchmark_binary())
    return path


def phones(*serials, **kwargs):
    return [
        FakePhone(s, benchmark=FakeBenchmark(latency_ms=10.0, relative_std=0.005), **kwargs) for s in serials
    ]


def make_pool(double, binary, devices, **kwargs):
    options = {**FAST, **POOL, **kwargs}
    return AndroidDevicePool(devices, binary=binary, adb_port=double.port, **options)


def overlap(runs):
    """The largest number of benchmark runs (on any phones) that were running at the same instant."""
    events = sorted([(r.started, 1) for r in runs] + [(r.finished, -1) for r in runs])
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


# --------------------------------------------------------------------------------------------------
# Basics.


def test_a_pool_is_a_latency_source(serve_real, binary):
    (a,) = phones("A")
    server = serve_real(a)
    pool = make_pool(server, binary, [a.serial])
    assert isinstance(pool, LatencySource)
    result = pool.measure_tflite(TINY)
    assert result.source == f"android:{a.serial}"
    assert result.median_ms == pytest.approx(10.0, rel=0.03)
    assert result.provenance["pool"] == {"attempts": 1, "failed_on": [], "phones": 1}


def test_several_phones_measure_at_once_one_job_per_phone(serve_real, binary):
    fleet = phones("A", "B", "C")
    for phone in fleet:
        phone.benchmark = FakeBenchmark(latency_ms=10.0, duration_s=0.3)
    server = serve_real(*fleet)
    pool = make_pool(server, binary, [phone.serial for phone in fleet])
    results = pool.measure_many_tflite([TINY] * 6)
    stats = pool.stats()
    assert len(results) == 6 and all(r.median_ms == pytest.approx(10.0, rel=0.05) for r in results)
    assert all(phone.max_concurrent_benchmarks == 1 for phone in fleet)
    assert overlap([run for phone in fleet for run in phone.benchmark_runs]) >= 2
    assert {serial: s.jobs for serial, s in stats.items()} == {phone.serial: 2 for phone in fleet}
    assert all(s.successes == 2 and s.failures == 0 and s.measuring_seconds > 0.3 for s in stats.values())
    json.dumps({k: v.to_dict() for k, v in stats.items()})


def test_discovery_takes_every_usable_phone(serve_real, binary):
    fleet = [*phones("A", "B"), FakePhone("C", state="unauthorized")]
    server = serve_real(*fleet)
    pool = AndroidDevicePool(binary=binary, adb_port=server.port, **FAST)
    assert sorted(pool.serials) == sorted(phone.serial for phone in fleet[:2])
    assert pool.measure_tflite(TINY).median_ms > 0


def test_phones_on_two_machines(binary):
    with AdbDouble(phones("HERE")) as local, AdbDouble(phones("THERE")) as remote:
        devices = ["HERE", f"THERE@127.0.0.1:{remote.port}"]
        pool = make_pool(local, binary, devices)
        results = pool.measure_many_tflite([TINY] * 4)
        assert {r.source for r in results} == {"android:HERE", "android:THERE"}
        assert {r.provenance["adb_server"] for r in results} == {
            f"127.0.0.1:{local.port}",
            f"127.0.0.1:{remote.port}",
        }
        assert pool.config()["devices"] == sorted(devices)


def test_device_specs_are_validated(binary):
    for bad in ["", "A@host", "A@host:port", "@host:1"]:
        with pytest.raises(ValueError, match="SERIAL"):
            AndroidDevicePool([bad], binary=binary)
    with pytest.raises(ValueError, match="twice"):
        AndroidDevicePool(["A", "A"], binary=binary)
    with pytest.raises(ValueError, match="per-phone option"):
        AndroidDevicePool(["A"], binary=binary, serial="B")
    with pytest.raises(SetupError, match="binary"):
        AndroidDevicePool(["A"])


def test_no_phone_at_all(binary):
    with AdbDouble([]) as double, pytest.raises(DeviceUnavailableError, match="No usable phone"):
        AndroidDevicePool(binary=binary, adb_port=double.port, **FAST).measure_tflite(TINY)


# --------------------------------------------------------------------------------------------------
# Failures.


@pytest.mark.parametrize(
    "fault",
    [
        Fault(BENCH, "drop"),
        Fault(BENCH, "offline"),
        Fault(BENCH, "unauthorized"),
        Fault(BENCH, "disappear"),
        Fault(BENCH, "hang"),
        Fault(BENCH, "trickle", interval_s=0.02),
        Fault(BENCH, "exit", exit_code=134),
        Fault(BENCH, "truncate", keep_fraction=0.5),
    ],
    ids=lambda f: f.action + (str(f.exit_code) if f.exit_code else ""),
)
def test_a_failing_phone_hands_the_job_to_another(serve, binary, fault):
    a, b = phones("A", "B")
    a.benchmark = FakeBenchmark(latency_ms=99.0)  # a figure from A would be easy to spot
    a.add_fault(dataclasses.replace(fault))  # a fresh fault for each server
    server = serve(a, b)
    pool = make_pool(server, binary, [a.serial, b.serial], run_timeout_s=0.4)
    # A has fewer jobs than B after this warm-up, so the pool tries A first.
    pool.stats()
    pool._ensure_slots()[1].stats.jobs = 1
    result = pool.measure_tflite(TINY)
    stats = pool.stats()
    assert result.source == f"android:{b.serial}"
    assert result.median_ms == pytest.approx(10.0, rel=0.05)
    assert result.provenance["pool"]["failed_on"] == [a.serial]
    assert (stats[a.serial].failures, stats[a.serial].successes) == (1, 0)
    assert stats[a.serial].last_error


def test_a_model_error_is_reported_not_retried(serve_real, binary):
    fleet = [FakePhone(s, benchmark=FakeBenchmark(model_error="op-version")) for s in ("A", "B")]
    server = serve_real(*fleet)
    pool = make_pool(server, binary, [phone.serial for phone in fleet])
    with pytest.raises(ModelError, match="FULLY_CONNECTED"):
        pool.measure_tflite(TINY)
    stats = pool.stats()
    assert sum(len(p.benchmark_runs) for p in fleet) == 1
    assert sum(s.model_errors for s in stats.values()) == 1
    assert sum(s.failures for s in stats.values()) == 0
    assert all(s.state == "ready" for s in stats.values())


def test_gives_up_after_max_attempts_without_a_number(serve_real, binary):
    fleet = phones("A", "B", "C")
    for phone in fleet:
        phone.add_fault(Fault(BENCH, "exit", exit_code=134, times=-1))
    server = serve_real(*fleet)
    pool = make_pool(server, binary, [phone.serial for phone in fleet], max_attempts=2)
    with pytest.raises(DeviceError, match="failed on 2 attempt"):
        pool.measure_tflite(TINY)
    stats = pool.stats()
    assert sum(s.failures for s in stats.values()) == 2
    assert sum(s.successes for s in stats.values()) == 0


def test_quarantine_and_readmission(binary):
    a, b = phones("A", "B")
    crash = a.add_fault(Fault(BENCH, "exit", exit_code=134, times=-1))
    with AdbDouble([a, b]) as double:
        pool = make_pool(double, binary, ["A", "B"], quarantine_after=2, readmit_after_s=3.0)
        for _ in range(4):
            pool.measure_tflite(TINY)
            if pool.stats()["A"].quarantines:
                break
        stats = pool.stats()
        assert stats["A"].state == "quarantined"
        assert (stats["A"].failures, stats["A"].quarantines) == (2, 1)
        # While A is quarantined, B does everything.
        runs_on_a = len(a.benchmark_runs)
        assert all(r.source == "android:B" for r in pool.measure_many_tflite([TINY] * 2))
        assert len(a.benchmark_runs) == runs_on_a
        # A is repaired; after its health check it takes jobs again.
        crash.times = 0
        time.sleep(3.1)
        results = pool.measure_many_tflite([TINY] * 4)
        stats = pool.stats()
    assert stats["A"].state == "ready" and stats["A"].readmissions == 1
    assert any(r.source == "android:A" for r in results)


def test_a_readmitted_phone_that_fails_again_is_kept_out_longer(binary):
    a, b = phones("A", "B")
    a.add_fault(Fault(BENCH, "exit", exit_code=134, times=-1))  # never repaired
    with AdbDouble([a, b]) as double:
        pool = make_pool(double, binary, ["A", "B"], quarantine_after=1, readmit_after_s=1.0)
        slot_a = pool._ensure_slots()[0]
        pool.measure_tflite(TINY)
        assert pool.stats()["A"].quarantines == 1
        time.sleep(1.05)
        # The health check passes (it cannot run the benchmark), A gets a job, fails once, and is out again.
        for _ in range(4):
            pool.measure_tflite(TINY)
            if pool.stats()["A"].quarantines == 2:
                break
        stats = pool.stats()
    assert stats["A"].readmissions == 1
    assert stats["A"].quarantines == 2 and stats["A"].state == "quarantined"
    assert slot_a.quarantine_interval == pytest.approx(2.0)
    assert stats["A"].successes == 0 and stats["A"].failures == 2


def test_an_offline_phone_stays_out_until_healthy(binary):
    a, b = phones("A", "B")
    a.add_fault(Fault(BENCH, "offline"))
    with AdbDouble([a, b]) as double:
        pool = make_pool(double, binary, ["A", "B"], quarantine_after=1, readmit_after_s=0.1)
        pool._ensure_slots()[1].stats.jobs = 1  # try A first
        assert pool.measure_tflite(TINY).source == "android:B"
        assert pool.stats()["A"].state == "quarantined"
        time.sleep(0.3)
        pool.measure_tflite(TINY)  # A's health check fails: still offline
        stats = pool.stats()
        assert stats["A"].state == "quarantined" and "offline" in stats["A"].last_error
        a.state = "device"
        time.sleep(0.5)
        pool.measure_many_tflite([TINY] * 2)
        assert pool.stats()["A"].state == "ready"


def test_a_single_phone_pool_retries_on_the_same_phone(serve_real, binary):
    (a,) = phones("A")
    a.add_fault(Fault(BENCH, "drop"))
    server = serve_real(a)
    result = make_pool(server, binary, [a.serial]).measure_tflite(TINY)
    assert result.provenance["pool"]["attempts"] == 2


def test_a_phone_of_another_kind_is_retired(serve_real, binary):
    a = phones("A")[0]
    b = FakePhone("B", model="Galaxy S23", soc_manufacturer="Qualcomm", soc_model="SM8550")
    server = serve_real(a, b)
    pool = make_pool(server, binary, [a.serial, b.serial])
    results = pool.measure_many_tflite([TINY] * 4)
    stats = pool.stats()
    assert {r.source for r in results} == {f"android:{a.serial}"}
    assert stats[b.serial].state == "retired" and "not comparable" in stats[b.serial].last_error
    mixed = make_pool(server, binary, [a.serial, b.serial], allow_mixed_devices=True)
    sources = {r.source for r in mixed.measure_many_tflite([TINY] * 4)}
    assert sources == {f"android:{a.serial}", f"android:{b.serial}"}


def test_a_phone_of_the_wrong_abi_is_retired(serve_real, binary):
    a, x86 = phones("A")[0], FakePhone("X86", abi="x86_64")
    server = serve_real(a, x86)
    pool = make_pool(server, binary, [x86.serial, a.serial], allow_mixed_devices=True)
    assert {r.source for r in pool.measure_many_tflite([TINY] * 3)} == {f"android:{a.serial}"}
    assert pool.stats()[x86.serial].state == "retired"
    assert "x86_64" in pool.stats()[x86.serial].last_error


# --------------------------------------------------------------------------------------------------
# Sharing phones between workers.


def test_two_pools_share_phones_without_overlap(serve_real, binary):
    fleet = phones("A", "B")
    for phone in fleet:
        phone.benchmark = FakeBenchmark(latency_ms=10.0, duration_s=0.15)
    server = serve_real(*fleet)
    # Two workers (think: two machines) with their own pools over the same phones.
    pools = [make_pool(server, binary, [phone.serial for phone in fleet]) for _ in range(2)]
    results = {}

    def work(i):
        results[i] = pools[i].measure_many_tflite([TINY] * 4)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(len(r) for r in results.values()) == 8
    assert all(phone.max_concurrent_benchmarks == 1 for phone in fleet)
    busy = sum(s.busy_elsewhere for pool in pools for s in pool.stats().values())
    assert busy > 0  # they did meet on a phone, and one of them waited


def test_a_phone_leased_by_another_worker_is_skipped(serve_real, binary):
    a, b = phones("A", "B")
    far_future = int(time.time()) + 3600
    a.put_symlink(f"{TMP}/keras_mnas.lease.0", f"keras_mnas-lease|v1|held|{far_future}|elsewhere:9:x")
    server = serve_real(a, b)
    pool = make_pool(server, binary, [a.serial, b.serial])
    results = pool.measure_many_tflite([TINY] * 3)
    stats = pool.stats()
    assert {r.source for r in results} == {f"android:{b.serial}"}
    assert stats[a.serial].busy_elsewhere >= 1 and stats[a.serial].failures == 0
    assert a.benchmark_runs == []


def test_waiting_for_phones_busy_elsewhere_has_a_limit(serve_real, binary):
    (a,) = phones("A")
    far_future = int(time.time()) + 3600
    a.put_symlink(f"{TMP}/keras_mnas.lease.0", f"keras_mnas-lease|v1|held|{far_future}|elsewhere:9:x")
    server = serve_real(a)
    pool = make_pool(server, binary, [a.serial], wait_for_device_s=0.5)
    start = time.monotonic()
    with pytest.raises(DeviceBusyError, match="became free"):
        pool.measure_tflite(TINY)
    assert time.monotonic() - start < 5


DEAD_WORKER = """
import sys
from keras_mnas.latency.android import AndroidLatency
port, binary, model, serial = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
source = AndroidLatency(serial, binary=binary, adb_port=port, runs=5, warmup_runs=1, repeats=1,
                        cool_poll_s=0.02, lease_ttl_s=1.0)
print("measuring", flush=True)
source.measure_tflite(open(model, "rb").read())
"""


def test_a_worker_killed_mid_measurement_never_shares_the_phone(serve_real, binary, tmp_path):
    (a,) = phones("A")
    a.benchmark = FakeBenchmark(latency_ms=10.0, duration_s=2.5)
    model = tmp_path / "tiny.tflite"
    model.write_bytes(TINY)
    server = serve_real(a)
    worker = subprocess.Popen(
        [sys.executable, "-c", DEAD_WORKER, str(server.port), str(binary), str(model), a.serial],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        give_up = time.monotonic() + 60
        while not a.benchmark_runs and time.monotonic() < give_up and worker.poll() is None:
            time.sleep(0.05)
        assert a.benchmark_runs, worker.communicate(timeout=10)
        os.kill(worker.pid, signal.SIGKILL)  # the worker dies; its benchmark keeps running on the phone
        worker.wait(10)
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
    a.benchmark = FakeBenchmark(latency_ms=10.0)
    pool = make_pool(server, binary, [a.serial])
    result = pool.measure_tflite(TINY)
    # The dead worker's lease was taken over only after it expired, and only once its process was gone.
    assert f":{worker.pid}:" in result.provenance["lease"]["took_over_from"]
    assert a.max_concurrent_benchmarks == 1
    first, second = a.benchmark_runs[0], a.benchmark_runs[-1]
    assert second.started >= first.finished


# --------------------------------------------------------------------------------------------------
# Keras models and configuration.


def test_measure_keras_models(binary):
    import keras

    keras.utils.set_random_seed(0)

    def tiny(name, filters):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(filters, 3)(inputs))
        return keras.Model(inputs, keras.layers.Dense(2)(x), name=name)

    with AdbDouble(phones("A", "B")) as double:
        pool = make_pool(double, binary, ["A", "B"])
        single = pool.measure(tiny("one", 4))
        many = pool.measure_many([tiny("two", 4), tiny("three", 8)])
    assert single.provenance["model"] == "one"
    assert [r.provenance["model"] for r in many] == ["two", "three"]


def keras_tiny(name, filters):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(filters, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(2)(x), name=name)


def test_a_pool_shares_the_conversion_path_and_caches_only_when_asked(binary, count_conversions):
    assert AndroidDevicePool.measure is TFLiteLatencySource.measure
    model = keras_tiny("one", 4)
    pool_phones = phones("A", "B")
    with AdbDouble(pool_phones) as double:
        fresh = make_pool(double, binary, ["A", "B"])
        assert not fresh.cache
        fresh.measure(model)
        fresh.measure(model)
        assert len(count_conversions) == 2 and sum(len(p.benchmark_runs) for p in pool_phones) == 2
        pool = make_pool(double, binary, ["A", "B"], cache=True)
        first = pool.measure(model)
        assert pool.measure(model) is first
        assert len(count_conversions) == 3 and sum(len(p.benchmark_runs) for p in pool_phones) == 3
        # measure_many goes through the same path and cache: only the new model is converted and timed.
        again, other = pool.measure_many([model, keras_tiny("two", 8)])
        assert again is first and other.provenance["model"] == "two"
        assert len(count_conversions) == 4 and sum(len(p.benchmark_runs) for p in pool_phones) == 4
        pool.measure(model, quantization="int8", representative_data=[[[[0.5, 0.25, 0.75]] * 8] * 8] * 4)
        assert count_conversions[-1] == "int8" and sum(len(p.benchmark_runs) for p in pool_phones) == 5


def test_config(binary):
    pool = AndroidDevicePool(["A", "B@10.0.0.2:5037"], binary=binary, threads=2, runs=30)
    config = pool.config()
    assert config["name"] == "android-pool"
    assert config["devices"] == ["A", "B@10.0.0.2:5037"]
    assert config["phone_settings"]["threads"] == 2 and config["phone_settings"]["runs"] == 30
    json.dumps(config)
    given = AndroidDevicePool([AndroidLatency("S", binary=binary, repeats=4)])
    assert given.config()["phone_settings"][0]["repeats"] == 4


def test_return_exceptions(binary):
    (a,) = phones("A")
    with AdbDouble([a]) as double:
        pool = make_pool(double, binary, ["A"])
        outcomes = pool.measure_many_tflite([TINY, b"not a model"], return_exceptions=True)
    assert outcomes[0].median_ms > 0
    assert isinstance(outcomes[1], ValueError)


@pytest.mark.parametrize("shell_v2", [True, False])
def test_a_phone_failing_its_identity_check_records_a_job_and_a_failure(serve, binary, shell_v2):
    # `serve` (tests/latency/conftest.py): the real adb server and the double.
    gone, (a,) = FakePhone("GONE", state="offline"), phones("A", shell_v2=shell_v2)
    server = serve(gone, a)
    pool = make_pool(server, binary, [gone.serial, a.serial])
    result = pool.measure_tflite(TINY)
    stats = pool.stats()
    assert result.source == f"android:{a.serial}" and result.provenance["pool"]["failed_on"] == [gone.serial]
    assert (stats[gone.serial].jobs, stats[gone.serial].failures) == (1, 1)
    assert (stats[a.serial].jobs, stats[a.serial].successes, stats[a.serial].failures) == (1, 1, 0)
