"""AndroidLatency through the real adb server to loopback phones: results, quality, no number on a fault."""

import contextlib
import functools
import hashlib
import json
import os
import pathlib
import re
import shlex
import shutil
import socket
import stat
import threading
import time

import adbutils
import pytest

from keras_mnas.latency import LatencyResult, TFLiteLatencySource
from keras_mnas.latency.android import (
    AndroidLatency,
    elf_abi,
    list_devices,
)
from keras_mnas.latency.errors import (
    BenchmarkError,
    DeadlineExceededError,
    DeviceBusyError,
    DeviceError,
    DeviceTooHotError,
    DeviceUnavailableError,
    ModelError,
    SetupError,
)
from keras_mnas.testing import AdbdDevice, AdbDouble, FakeBenchmark, FakePhone, Fault, fake_benchmark_binary

# adbutils must never start a real adb server on the test machine.
pytestmark = pytest.mark.usefixtures("no_real_adb")

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TINY = (FIXTURES / "tiny.tflite").read_bytes()
TMP = "/data/local/tmp"
REMOTE_BINARY = f"{TMP}/keras_mnas_benchmark_model"
REMOTE_MODEL = f"{TMP}/keras_mnas_model.tflite"

# Short deadlines and few runs keep the tests fast; the defaults are for real phones.
FAST = dict(
    runs=5,
    warmup_runs=1,
    repeats=3,
    call_timeout_s=3.0,
    run_timeout_s=3.0,
    cool_poll_s=0.02,
    max_cool_wait_s=0.5,
    lease_wait_s=0.5,
)


@pytest.fixture
def binary(tmp_path):
    path = tmp_path / "android_aarch64_benchmark_model"
    path.write_bytes(fake_benchmark_binary("arm64-v8a"))
    return path


@pytest.fixture
def phone():
    return FakePhone("PHONE1", benchmark=FakeBenchmark(latency_ms=12.0, relative_std=0.005))


@pytest.fixture
def server(phone, serve_real):
    """The real adb server with `phone` connected (its serial becomes `127.0.0.1:PORT`).

    Every test that talks to a phone goes through the real adb server (`serve_real`, or `serve` for both
    servers). Tests with no phone stay off it: no server at all at the port, or something else there.
    """
    return serve_real(phone)


def make_source(server, binary, serial=None, **kwargs):
    """An AndroidLatency with short deadlines, on `serial` (default: the server's first phone)."""
    serial = server.phones[0].serial if serial is None else serial
    return AndroidLatency(serial, binary=binary, adb_port=server.port, **{**FAST, **kwargs})


# --------------------------------------------------------------------------------------------------
# Results.


def test_measure_tflite_returns_a_complete_result(server, phone, binary):
    result = make_source(server, binary).measure_tflite(TINY)
    assert isinstance(result, LatencyResult)
    assert result.source == f"android:{phone.serial}"
    assert result.median_ms == pytest.approx(12.0, rel=0.03)
    # 3 processes of 5 runs at least, and of 0.1 s at least (--min_secs): 9 runs of 12 ms each.
    assert (result.runs, result.warmup_runs, result.threads) == (27, 1, 1)
    assert result.sha256 == hashlib.sha256(TINY).hexdigest()
    assert result.tflite_bytes == len(TINY)
    assert result.median_ms <= result.p90_ms
    assert not result.unstable
    # Three fresh processes, each pinned to the fastest core (cpu7 of the default phone).
    assert len(phone.benchmark_runs) == 3
    assert {run.core_mask for run in phone.benchmark_runs} == {"80"}
    # The phone holds exactly the bytes that were measured.
    assert phone.file(REMOTE_MODEL) == TINY
    assert phone.file(REMOTE_BINARY) == binary.read_bytes()
    assert phone.file_mode(REMOTE_BINARY) & 0o111
    # The result survives JSON.
    assert LatencyResult.from_dict(json.loads(result.to_json())) == result


def test_the_exact_command_line(server, phone, binary):
    make_source(server, binary, runs=7, warmup_runs=2, repeats=1).measure_tflite(TINY)
    command = [c for c in phone.commands if "keras_mnas_benchmark_model --graph" in c][-1]
    assert shlex.split(command) == [
        "taskset",
        "80",
        REMOTE_BINARY,
        f"--graph={REMOTE_MODEL}",
        "--num_threads=1",
        "--warmup_runs=2",
        "--warmup_min_secs=0",
        "--num_runs=7",
        "--min_secs=0.1",
        "--use_xnnpack=true",
    ]


def test_provenance_records_where_and_how(server, phone, binary):
    result = make_source(server, binary).measure_tflite(TINY, extra_provenance={"model": "tiny"})
    p = result.provenance
    assert p["model"] == "tiny"
    assert p["serial"] == phone.serial
    assert p["device_model"] == "Pixel 7"
    assert p["soc"] == "Google GS201"
    assert p["sdk"] == 34
    assert p["abi"] == "arm64-v8a"
    assert p["fingerprint"].startswith("google/pixel_7/")
    assert p["core_mask"] == "80" and p["cores"] == [7] and p["cores_max_khz"] == [2850000]
    assert p["threads"] == 1 and p["delegate"] == "xnnpack"
    assert p["binary_sha256"] == hashlib.sha256(binary.read_bytes()).hexdigest()
    assert p["thermal_before"]["status"] == 0 and p["thermal_after"]["source"] == "thermalservice"
    assert p["thermal_before"]["cpu_max_c"] == pytest.approx(39.2)
    assert p["output_generation"] == "litert" and p["per_process_figure"] == "median"
    assert len(p["per_process_ms"]) == 3
    assert p["adb_server"] == f"127.0.0.1:{server.port}"
    json.dumps(p)


@pytest.mark.parametrize("generation", ["tf1", "tf1.13", "tf2", "litert"])
def test_every_output_generation(serve_real, binary, generation):
    phone = FakePhone("G", benchmark=FakeBenchmark(generation=generation, latency_ms=7.5, relative_std=0.01))
    server = serve_real(phone)
    result = make_source(server, binary, serial=phone.serial, runs=20).measure_tflite(TINY)
    assert result.median_ms == pytest.approx(7.5, rel=0.05)
    assert result.provenance["output_generation"] == generation
    assert result.p90_ms >= result.median_ms


def test_a_phone_without_shell_v2(serve, binary):
    phone = FakePhone("OLD", sdk=23, shell_v2=False, soc_model=None, soc_manufacturer=None)
    # On the double, an older adb server's host protocol too (no `host:tport`).
    server = serve(phone, server_version=40)
    result = make_source(server, binary, serial=phone.serial).measure_tflite(TINY)
    assert result.median_ms == pytest.approx(5.0, rel=0.05)
    assert result.provenance["soc"] == "gs201"  # ro.board.platform before Android 12


def test_median_of_processes_and_the_cv_flag(serve_real, binary):
    # Three processes at 10, 12 and 14 ms: the median is the middle one and the spread is flagged.
    latencies = [10.0, 12.0, 14.0]
    phone = FakePhone(
        "P", benchmark=FakeBenchmark(latency_ms=lambda run: latencies[run.index], relative_std=0.001)
    )
    server = serve_real(phone)
    # Equal run counts (no minimum time), so that the pooled mean is the mean of the three.
    result = make_source(server, binary, serial=phone.serial, min_seconds=0).measure_tflite(TINY)
    assert result.median_ms == pytest.approx(12.0, rel=0.01)
    assert result.mean_ms == pytest.approx(12.0, rel=0.01)
    assert result.cv > 0.05 and result.unstable
    assert result.provenance["between_process_cv"] == pytest.approx(0.136, abs=0.01)
    # Each process is steady; the processes disagree, and that alone makes the figure unstable.
    assert result.robust_cv == pytest.approx(result.provenance["between_process_cv"])
    assert result.provenance["per_process_ms"] == pytest.approx(latencies, rel=0.01)


def test_a_source_warns_once_then_logs_later_unstable_figures_at_info(serve_real, binary, caplog):
    # Processes at 10, 12 and 14 ms: every figure is unstable; a search would otherwise repeat the warning.
    phone = FakePhone(
        "P", benchmark=FakeBenchmark(latency_ms=lambda run: 10.0 + 2 * (run.index % 3), relative_std=0.001)
    )
    server = serve_real(phone)
    source = make_source(server, binary, serial=phone.serial, min_seconds=0)
    with caplog.at_level("INFO", logger="keras_mnas.latency"):
        results = [source.measure_tflite(TINY) for _ in range(3)]
    assert all(result.unstable for result in results)  # every figure stays flagged
    records = [r for r in caplog.records if f"Unstable latency on phone {phone.serial}" in r.getMessage()]
    assert [r.levelname for r in records] == ["WARNING", "INFO", "INFO"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="keras_mnas.latency"):
        # A new source warns on its own.
        make_source(server, binary, serial=phone.serial, min_seconds=0).measure_tflite(TINY)
    assert f"Unstable latency on phone {phone.serial}" in caplog.text


def test_a_few_preempted_runs_do_not_flag_a_steady_phone(serve_real, binary):
    # 1% of the runs pre-empted: the pooled cv is large, the percentiles LiteRT prints are steady.
    phone = FakePhone("P", benchmark=FakeBenchmark(latency_ms=2.0, preempted_share=0.01))
    server = serve_real(phone)
    result = make_source(server, binary, serial=phone.serial, runs=500).measure_tflite(TINY)
    assert result.cv > 0.5
    assert result.robust_cv < 0.05 and not result.unstable


def test_without_printed_percentiles_the_cv_decides(serve_real, binary):
    phone = FakePhone("P", benchmark=FakeBenchmark(generation="tf2", latency_ms=2.0, preempted_share=0.01))
    server = serve_real(phone)
    result = make_source(server, binary, serial=phone.serial, runs=500).measure_tflite(TINY)
    assert result.robust_cv is None
    assert result.spread == result.cv > 0.5 and result.unstable


def test_pushes_only_what_changed(server, phone, binary):
    source = make_source(server, binary, repeats=1)
    source.measure_tflite(TINY)
    assert phone.pushes == [REMOTE_BINARY, REMOTE_MODEL]
    source.measure_tflite(TINY)
    assert phone.pushes == [REMOTE_BINARY, REMOTE_MODEL]  # nothing changed, nothing pushed
    other = TINY[:-1] + bytes([TINY[-1] ^ 1])
    source.measure_tflite(other, quantization="float32")
    assert phone.pushes[2:] == [REMOTE_MODEL]
    # Someone replaced the binary on the phone (same size, other bytes): it is pushed again.
    phone.put_file(REMOTE_BINARY, bytes(len(binary.read_bytes())), mode=0o755)
    source.measure_tflite(other)
    assert phone.pushes[3:] == [REMOTE_BINARY]
    assert phone.file(REMOTE_BINARY) == binary.read_bytes()


def test_every_argument_is_quoted(serve_real, binary):
    phone = FakePhone("Q")
    server = serve_real(phone)
    remote = "/data/local/tmp/it's a $dir"
    phone.run_shell(shlex.join(["mkdir", "-p", remote]))  # the lease needs the directory to exist
    source = make_source(server, binary, serial=phone.serial, remote_dir=remote, repeats=1)
    result = source.measure_tflite(TINY)
    assert result.median_ms > 0
    assert phone.file(f"{remote}/keras_mnas_model.tflite") == TINY
    assert phone.benchmark_runs[0].flags["graph"] == f"{remote}/keras_mnas_model.tflite"


@pytest.mark.parametrize(
    "cpus, threads, core_mask, expected_mask, expected_cores",
    [
        ((1000, 2000, 3000, 3000), 1, "auto", "8", [3]),
        ((1000, 2000, 3000, 3000), 2, "auto", "c", [2, 3]),
        ((3000, 1000, 1000, 1000), 1, "auto", "1", [0]),
        ((1000, 2000, 3000, 3000), 1, "f", "f", [0, 1, 2, 3]),
        ((1000, 2000, 3000, 3000), 1, 0x4, "4", [2]),
        ((1000, 2000, 3000, 3000), 1, None, None, []),
    ],
)
def test_core_selection(serve_real, binary, cpus, threads, core_mask, expected_mask, expected_cores):
    phone = FakePhone("C", cpu_max_khz=cpus)
    server = serve_real(phone)
    source = make_source(server, binary, serial=phone.serial, threads=threads, core_mask=core_mask, repeats=1)
    result = source.measure_tflite(TINY)
    assert result.provenance["core_mask"] == expected_mask
    assert result.provenance["cores"] == expected_cores
    assert phone.benchmark_runs[0].core_mask == expected_mask
    assert phone.benchmark_runs[0].flags["num_threads"] == str(threads)


def test_no_cpufreq_runs_unpinned(serve_real, binary):
    phone = FakePhone("E", cpu_max_khz=())
    server = serve_real(phone)
    result = make_source(server, binary, serial=phone.serial, repeats=1).measure_tflite(TINY)
    assert result.provenance["core_mask"] is None
    assert phone.benchmark_runs[0].core_mask is None


def test_a_refused_core_mask_is_a_setup_error(serve_real, binary):
    phone = FakePhone("R", allowed_cpus=range(4))
    server = serve_real(phone)
    with pytest.raises(SetupError, match="refused to pin"):
        make_source(server, binary, serial=phone.serial).measure_tflite(TINY)


@pytest.mark.parametrize(
    "delegate, flags",
    [
        ("none", {"use_xnnpack": "false"}),
        ("gpu", {"use_gpu": "true", "use_xnnpack": "false"}),
        ("nnapi", {"use_nnapi": "true", "use_xnnpack": "false"}),
    ],
)
def test_delegates_and_extra_flags(server, phone, binary, delegate, flags):
    source = make_source(server, binary, delegate=delegate, extra_flags=["--use_caching=false"], repeats=1)
    source.measure_tflite(TINY)
    run_flags = phone.benchmark_runs[0].flags
    assert {k: run_flags[k] for k in flags} == flags
    assert run_flags["use_caching"] == "false"


def test_settings_are_validated(binary):
    for kwargs, message in [
        ({"threads": 0}, "threads"),
        ({"repeats": 0}, "repeats"),
        ({"delegate": "tpu"}, "delegate"),
        ({"core_mask": "xyz"}, "core_mask"),
        ({"core_mask": 0}, "core_mask"),
        ({"call_timeout_s": 0}, "call_timeout_s"),
        ({"extra_flags": ["rm -rf /"]}, "extra_flags"),
        ({"remote_dir": "relative"}, "remote_dir"),
    ]:
        with pytest.raises(ValueError, match=message):
            AndroidLatency("S", binary=binary, **kwargs)


def test_config_names_what_changes_the_figure(binary):
    config = AndroidLatency("S", binary=binary, threads=2, runs=30, delegate="none").config()
    assert config["name"] == "android"
    assert config["serial"] == "S"
    assert (config["threads"], config["runs"], config["delegate"]) == (2, 30, "none")
    assert config["binary_sha256"] == hashlib.sha256(binary.read_bytes()).hexdigest()
    json.dumps(config)


def test_measure_a_keras_model(server, phone, binary):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs)))
    model = keras.Model(inputs, outputs, name="keras_tiny")
    result = make_source(server, binary, repeats=1).measure(model)
    assert result.provenance["model"] == "keras_tiny"
    assert phone.file(REMOTE_MODEL)[4:8] == b"TFL3"
    assert result.sha256 == hashlib.sha256(phone.file(REMOTE_MODEL)).hexdigest()


def keras_tiny(name="keras_tiny", filters=4):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(filters, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(2)(x), name=name)


def test_a_phone_shares_conversion_and_cache_only_when_asked(server, phone, binary, count_conversions):
    assert AndroidLatency.measure is TFLiteLatencySource.measure
    model = keras_tiny()
    # By default a phone measures every time: a user asking a phone expects the phone to run the model.
    source = make_source(server, binary, repeats=1)
    assert not source.cache
    first = source.measure(model)
    source.measure(model)
    assert count_conversions == ["float32", "float32"] and len(phone.benchmark_runs) == 2
    assert "cache_key" not in first.provenance
    # With the cache on: one conversion and one run for the same model...
    cached = make_source(server, binary, repeats=1, cache=True)
    first = cached.measure(model)
    assert cached.measure(model) is first
    assert len(count_conversions) == 3 and len(phone.benchmark_runs) == 3
    # ...and a fresh one for another model or another quantization.
    cached.measure(keras_tiny(filters=8))
    data = [[[[0.5, 0.25, 0.75]] * 8] * 8] * 4
    cached.measure(model, quantization="int8", representative_data=data)
    assert count_conversions == ["float32"] * 4 + ["int8"] and len(phone.benchmark_runs) == 5


def test_a_phone_disk_cache_is_keyed_by_its_settings(server, phone, binary, tmp_path, count_conversions):
    model = keras_tiny()
    first = make_source(server, binary, repeats=1, cache_dir=tmp_path).measure(model)
    again = make_source(server, binary, repeats=1, cache_dir=tmp_path).measure(model)
    assert again == first and len(phone.benchmark_runs) == 1 and len(count_conversions) == 1
    # Other timing settings are another figure.
    make_source(server, binary, repeats=1, runs=6, cache_dir=tmp_path).measure(model)
    assert len(phone.benchmark_runs) == 2
    with pytest.raises(ValueError, match="cache_dir"):
        make_source(server, binary, cache=False, cache_dir=tmp_path)


def test_without_a_serial_the_cache_key_names_the_phone_found(server, phone, binary):
    source = make_source(server, binary, serial=None, repeats=1, cache=True)
    model = keras_tiny()
    first = source.measure(model)
    assert source.measure(model) is first and len(phone.benchmark_runs) == 1
    assert source.cache_environment()["serial"] == phone.serial


# --------------------------------------------------------------------------------------------------
# Bad input and setup errors.


def test_bytes_that_are_not_tflite(server, binary):
    with pytest.raises(ValueError, match="TFL3"):
        make_source(server, binary).measure_tflite(b"not a model")


def test_undefined_input_shape_is_refused(server, phone, binary):
    with pytest.raises(ValueError, match="undefined dimensions"):
        make_source(server, binary).measure_tflite((FIXTURES / "dynamic_shape.tflite").read_bytes())
    assert phone.benchmark_runs == []


def test_missing_binary(tmp_path):
    with pytest.raises(SetupError, match="binary not found") as info:
        AndroidLatency("S", binary=tmp_path / "nope")
    assert "ro.product.cpu.abi" in str(info.value)


def test_a_binary_that_is_not_elf(tmp_path):
    path = tmp_path / "benchmark_model"
    path.write_bytes(b"\xcf\xfa\xed\xfe" + bytes(100))
    with pytest.raises(SetupError, match="macOS"):
        AndroidLatency("S", binary=path)


def test_wrong_abi_is_caught_before_anything_runs(tmp_path, server, phone):
    path = tmp_path / "linux_x86-64_benchmark_model"
    path.write_bytes(fake_benchmark_binary("x86_64"))
    with pytest.raises(SetupError, match="android_aarch64_benchmark_model") as info:
        make_source(server, path).measure_tflite(TINY)
    assert "x86_64" in str(info.value)
    assert phone.pushes == [] and phone.benchmark_runs == []


def test_a_32_bit_arm_binary_runs_on_a_64_bit_phone(tmp_path, server):
    path = tmp_path / "android_arm_benchmark_model"
    path.write_bytes(fake_benchmark_binary("armeabi-v7a"))
    assert make_source(server, path, repeats=1).measure_tflite(TINY).provenance["binary_abi"] == "armeabi-v7a"


def test_elf_abi():
    assert elf_abi(fake_benchmark_binary("arm64-v8a")) == "arm64-v8a"
    assert elf_abi(fake_benchmark_binary("x86")) == "x86"
    with pytest.raises(SetupError, match="ELF"):
        elf_abi(b"#!/bin/sh\necho hi\n" + bytes(20))


def test_the_only_phone_is_used_when_no_serial_is_given(server, phone, binary):
    source = AndroidLatency(binary=binary, adb_port=server.port, **{**FAST, "repeats": 1})
    assert source.measure_tflite(TINY).source == f"android:{phone.serial}"


def test_several_phones_need_a_serial(serve_real, binary):
    server = serve_real(FakePhone("A"), FakePhone("B"))
    with pytest.raises(SetupError, match=r"pass `serial=`"):
        AndroidLatency(binary=binary, adb_port=server.port, **FAST).measure_tflite(TINY)


def test_no_usable_phone(serve_real, binary):
    phone = FakePhone("A", state="unauthorized")
    server = serve_real(phone)
    with pytest.raises(DeviceUnavailableError, match=rf"{re.escape(phone.serial)} \(unauthorized\)"):
        AndroidLatency(binary=binary, adb_port=server.port, **FAST).measure_tflite(TINY)


def test_no_adb_server_is_a_clear_error_and_starts_no_adb(binary, no_real_adb):
    double = AdbDouble()
    port = double.port
    double.stop()
    with pytest.raises(DeviceUnavailableError, match="adb start-server"):
        AndroidLatency("S", binary=binary, adb_port=port, **FAST).measure_tflite(TINY)
    with pytest.raises(DeviceUnavailableError, match="No adb server"):
        list_devices(adb_port=port)
    assert not no_real_adb.exists()


# --------------------------------------------------------------------------------------------------
# Faults: never a number.


def test_model_error_is_reported_once_and_not_retried(serve_real, binary):
    phone = FakePhone("M", benchmark=FakeBenchmark(model_error="op-version"))
    server = serve_real(phone)
    with pytest.raises(ModelError, match="FULLY_CONNECTED") as info:
        make_source(server, binary, serial=phone.serial).measure_tflite(TINY)
    assert info.value.serial == phone.serial
    assert not info.value.retryable
    assert len(phone.benchmark_runs) == 1  # the remaining repeats were not attempted


@pytest.mark.parametrize("v2", [True, False])
def test_connection_dropped_mid_benchmark(serve_real, binary, v2):
    phone = FakePhone("D", shell_v2=v2)
    phone.add_fault(Fault("keras_mnas_benchmark_model --graph", "drop", keep_fraction=0.7))
    server = serve_real(phone)
    with pytest.raises(DeviceError) as info:
        make_source(server, binary, serial=phone.serial).measure_tflite(TINY)
    assert info.value.retryable
    assert not isinstance(info.value, ModelError)


@pytest.mark.parametrize("code, reason", [(1, "error"), (134, "crash")])
def test_exit_status_faults(serve_real, binary, code, reason):
    phone = FakePhone("X")
    phone.add_fault(Fault("keras_mnas_benchmark_model --graph", "exit", exit_code=code))
    server = serve_real(phone)
    source = make_source(server, binary, serial=phone.serial)
    with pytest.raises(BenchmarkError) as info:
        source.measure_tflite(TINY)
    assert info.value.reason == reason
    assert info.value.exit_code == code
    # The fault was one process; the next measurement is fine.
    assert source.measure_tflite(TINY).median_ms > 0


def summary_fraction(double, serial):
    """Where the summary line starts in the phone's benchmark output, as a fraction of its length."""
    device = adbutils.AdbClient(port=double.port).device(serial)
    out = device.shell2(
        shlex.join([REMOTE_BINARY, f"--graph={REMOTE_MODEL}", "--num_runs=5"]), v2=True
    ).stdout
    start = out.index("Inference timings in us")
    number = out.index("Inference (avg): ") + len("Inference (avg): ")
    return start / len(out), number / len(out), (number + 2) / len(out)


@pytest.mark.parametrize("where", ["early", "before-summary", "inside-summary", "inside-number"])
def test_truncated_output(serve_real, binary, where):
    phone = FakePhone("T")
    server = serve_real(phone)
    source = make_source(server, binary, serial=phone.serial)
    source.measure_tflite(TINY)
    start, before_number, inside_number = summary_fraction(server, phone.serial)
    keep = {
        "early": 0.2,
        "before-summary": start - 0.01,
        "inside-summary": before_number,
        "inside-number": inside_number,  # "Inference (avg): 12" of "12003.4": a plausible, wrong number
    }[where]
    phone.add_fault(Fault("keras_mnas_benchmark_model --graph", "truncate", keep_fraction=keep))
    with pytest.raises(BenchmarkError) as info:
        source.measure_tflite(TINY)
    assert info.value.reason in ("no-summary", "truncated", "inconsistent")


def test_only_the_trailing_memory_lines_lost_still_gives_the_right_figure(serve_real, binary):
    # Output that ends after a complete, cross-checked summary line is a complete measurement: what is
    # missing (the memory note) is not part of it. Cuts inside the summary are refused (test above).
    phone = FakePhone("T", benchmark=FakeBenchmark(latency_ms=9.0, relative_std=0.001))
    phone.add_fault(Fault("keras_mnas_benchmark_model --graph", "truncate", keep_fraction=0.97, times=-1))
    server = serve_real(phone)
    assert make_source(server, binary, serial=phone.serial).measure_tflite(TINY).median_ms == pytest.approx(
        9.0, rel=0.01
    )


@pytest.mark.parametrize("action", ["hang", "trickle"])
def test_a_hung_benchmark_hits_the_wall_clock_deadline(serve_real, binary, action):
    phone = FakePhone("H")
    phone.add_fault(Fault("keras_mnas_benchmark_model --graph", action, interval_s=0.02))
    server = serve_real(phone)
    source = make_source(server, binary, serial=phone.serial, run_timeout_s=0.4)
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError, match=r"0\.4 s deadline"):
        source.measure_tflite(TINY)
    elapsed = time.monotonic() - start
    # A trickle never goes silent, so only a real deadline stops it. The bound is loose because the setup
    # calls before the benchmark take seconds on a loaded machine; without a deadline this never ends.
    assert elapsed < 10.0


def test_a_hung_ordinary_call_hits_its_deadline(serve_real, binary):
    phone = FakePhone("H")
    phone.add_fault(Fault("dumpsys thermalservice", "trickle", interval_s=0.02))
    server = serve_real(phone)
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        make_source(server, binary, serial=phone.serial, call_timeout_s=0.3).measure_tflite(TINY)
    assert time.monotonic() - start < 10.0
    assert phone.benchmark_runs == []


def test_a_slow_but_finished_call_past_the_deadline_is_still_no_number(serve_real, binary):
    phone = FakePhone("S")
    phone.add_fault(Fault("keras_mnas_benchmark_model --graph", "delay", delay_s=0.6))
    server = serve_real(phone)
    with pytest.raises(DeadlineExceededError):
        make_source(server, binary, serial=phone.serial, run_timeout_s=0.3).measure_tflite(TINY)


@pytest.mark.parametrize(
    "action, state, later",
    [
        ("offline", "offline", "offline"),
        ("unauthorized", "unauthorized", "Allow USB debugging"),
        # A phone on Wi-Fi that went away stays listed, offline, while the server tries to reach it again.
        ("disappear", "offline", "offline"),
    ],
)
def test_phone_lost_mid_measurement(serve_real, binary, action, state, later):
    phone = FakePhone("L")
    phone.add_fault(Fault("keras_mnas_benchmark_model --graph", action))
    server = serve_real(phone)
    source = make_source(server, binary, serial=phone.serial)
    with pytest.raises(DeviceError):
        source.measure_tflite(TINY)
    server.wait_for_state(phone.serial, state)  # the server reconnects a phone on Wi-Fi by itself
    with pytest.raises(DeviceUnavailableError, match=later):
        source.measure_tflite(TINY)


@pytest.mark.parametrize(
    "state, message", [("offline", "adb reconnect"), ("unauthorized", "Allow USB debugging")]
)
def test_unusable_phone_from_the_start(serve_real, binary, state, message):
    phone = FakePhone("U", state=state)
    server = serve_real(phone)
    with pytest.raises(DeviceUnavailableError, match=message):
        make_source(server, binary, serial=phone.serial).measure_tflite(TINY)


def test_full_disk(serve_real, binary):
    phone = FakePhone("F", free_bytes=2000)
    server = serve_real(phone)
    with pytest.raises(DeviceError, match="storage full") as info:
        make_source(server, binary, serial=phone.serial).measure_tflite(TINY)
    assert "df" in str(info.value)
    assert phone.benchmark_runs == []


def test_a_phone_that_stays_hot(serve_real, binary):
    phone = FakePhone("HOT", thermal_status=2)
    server = serve_real(phone)
    start = time.monotonic()
    with pytest.raises(DeviceTooHotError, match="thermal status 2"):
        make_source(server, binary, serial=phone.serial, max_cool_wait_s=0.3).measure_tflite(TINY)
    assert time.monotonic() - start < 3.0
    assert phone.benchmark_runs == []


def test_waits_for_the_phone_to_cool(serve_real, binary):
    phone = FakePhone("WARM", thermal_status=[2, 1, 0])
    server = serve_real(phone)
    result = make_source(
        server, binary, serial=phone.serial, cool_poll_s=0.05, max_cool_wait_s=2
    ).measure_tflite(TINY)
    assert result.provenance["thermal_wait_s"][0] >= 0.09
    assert result.provenance["thermal_before"]["status"] == 0


@pytest.mark.parametrize("zone_temp, ok", [(38000, True), (61000, False)])
def test_thermal_zone_fallback(serve_real, binary, zone_temp, ok):
    zones = [("cpu-big", zone_temp), ("battery", 30000), ("bogus", -273000)]
    phone = FakePhone("Z", thermal_status=None, thermal_zones=zones)
    server = serve_real(phone)
    source = make_source(server, binary, serial=phone.serial, max_temperature_c=45.0, max_cool_wait_s=0.2)
    if ok:
        thermal = source.measure_tflite(TINY).provenance["thermal_before"]
        assert thermal["source"] == "thermal_zones"
        assert thermal["temperatures_c"] == {"cpu-big": 38.0, "battery": 30.0}
    else:
        with pytest.raises(DeviceTooHotError, match=r"CPU 61\.0 C"):
            source.measure_tflite(TINY)


# --------------------------------------------------------------------------------------------------
# Sharing a phone.


def lease_names(phone):
    return [n for n in phone.listdir(TMP) if n.startswith("keras_mnas.lease.")]


def test_the_lease_is_taken_and_released(server, phone, binary):
    source = make_source(server, binary, repeats=1)
    source.measure_tflite(TINY)
    assert lease_names(phone) == ["keras_mnas.lease.0"]
    assert "|released|" in phone.symlink_target(f"{TMP}/keras_mnas.lease.0")
    source.measure_tflite(TINY)
    # A new generation each time; superseded ones are cleaned up.
    assert lease_names(phone) == ["keras_mnas.lease.1"]


def test_a_live_lease_of_another_worker_blocks(server, phone, binary):
    expires = int(time.time()) + 3600
    phone.put_symlink(f"{TMP}/keras_mnas.lease.4", f"keras_mnas-lease|v1|held|{expires}|otherhost:77:abc")
    with pytest.raises(DeviceBusyError, match="otherhost:77:abc"):
        make_source(server, binary, lease_wait_s=0.2).measure_tflite(TINY)
    assert phone.benchmark_runs == []


def test_a_dead_workers_lease_expires_and_is_taken_over(server, phone, binary):
    # A worker died mid-measurement two minutes ago and left its lease (expired a minute ago).
    expired = int(time.time()) - 60
    phone.put_symlink(f"{TMP}/keras_mnas.lease.7", f"keras_mnas-lease|v1|held|{expired}|deadhost:1:dead")
    result = make_source(server, binary, repeats=1).measure_tflite(TINY)
    assert result.provenance["lease"]["took_over_from"] == "deadhost:1:dead"
    assert lease_names(phone) == ["keras_mnas.lease.8"]


def test_waits_for_a_lease_that_expires_soon(server, phone, binary):
    expires = int(time.time()) + 1
    phone.put_symlink(f"{TMP}/keras_mnas.lease.0", f"keras_mnas-lease|v1|held|{expires}|slow:2:w")
    start = time.monotonic()
    result = make_source(server, binary, repeats=1, lease_wait_s=5, cool_poll_s=0.1).measure_tflite(TINY)
    assert time.monotonic() - start >= 0.5
    assert result.provenance["lease"]["took_over_from"] == "slow:2:w"


def test_a_measurement_that_lost_its_lease_is_discarded(serve_real, binary):
    phone = FakePhone("LOST")

    def takeover(run):
        # While this process runs, another worker decides our lease expired and supersedes it.
        phone.put_symlink(f"{TMP}/keras_mnas.lease.99", "keras_mnas-lease|v1|held|9999999999|thief:3:x")
        return 5.0

    phone.benchmark = FakeBenchmark(latency_ms=takeover)
    server = serve_real(phone)
    with pytest.raises(DeviceError, match="Lost the lease"):
        make_source(server, binary, serial=phone.serial).measure_tflite(TINY)
    # The thief's lease was left alone.
    assert "thief" in phone.symlink_target(f"{TMP}/keras_mnas.lease.99")


def measure_beside_a_stray_benchmark(server, phone, binary) -> None:
    """Measures while a benchmark process started outside any lease runs on `phone`."""
    source = make_source(server, binary, serial=phone.serial, repeats=1)
    source.measure_tflite(TINY)  # installs the binary and the model
    # A process started outside any lease (a worker that lost its lease, or a person at a shell).
    device = adbutils.AdbClient(port=server.port).device(phone.serial)
    stray = threading.Thread(
        target=device.shell, args=(shlex.join([REMOTE_BINARY, f"--graph={REMOTE_MODEL}", "--num_runs=2"]),)
    )
    stray.start()
    time.sleep(0.1)
    source.measure_tflite(TINY)
    stray.join()


def test_a_stray_benchmark_process_is_waited_for(server, phone, binary):
    phone.benchmark = FakeBenchmark(latency_ms=5.0, duration_s=0.4)
    measure_beside_a_stray_benchmark(server, phone, binary)
    assert phone.max_concurrent_benchmarks == 1


def test_two_workers_never_share_a_phone(server, phone, binary):
    phone.benchmark = FakeBenchmark(latency_ms=5.0, duration_s=0.1)
    workers = [make_source(server, binary, repeats=2, lease_wait_s=10) for _ in range(2)]
    results, errors = [], []

    def work(source):
        try:
            results.extend(source.measure_tflite(TINY) for _ in range(2))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(results) == 4
    assert phone.max_concurrent_benchmarks == 1
    assert len(phone.benchmark_runs) == 8


def test_without_a_lease_nothing_is_written(server, phone, binary):
    make_source(server, binary, lease=False, repeats=1).measure_tflite(TINY)
    assert lease_names(phone) == []


# --------------------------------------------------------------------------------------------------
# Discovery and health.


def test_list_devices_describes_every_phone(serve_real, binary):
    phones = [
        FakePhone("OK1", model="Pixel 7"),
        FakePhone(
            "HOT1", thermal_status=3, model="Galaxy S23", soc_manufacturer="Qualcomm", soc_model="SM8550"
        ),
        FakePhone("OFF1", state="offline"),
        FakePhone("UNA1", state="unauthorized"),
    ]
    named = {phone.serial: phone for phone in phones}  # the server knows each by its address instead
    server = serve_real(*phones)
    by_serial = {i.serial: i for i in list_devices(adb_port=server.port)}
    infos = {name: by_serial[phone.serial] for name, phone in named.items()}
    ok = infos["OK1"]
    assert (ok.model, ok.soc, ok.sdk, ok.abi, ok.health) == ("Pixel 7", "Google GS201", 34, "arm64-v8a", "ok")
    assert ok.big_cores == (6, 7)
    assert ok.cpu_max_khz[7] == 2850000
    assert ok.thermal.status == 0 and ok.thermal.cpu_max_c == pytest.approx(39.2)
    assert "armeabi-v7a" in ok.abilist
    assert infos["HOT1"].health == "hot" and infos["HOT1"].soc == "Qualcomm SM8550"
    assert infos["OFF1"].health == "offline" and "reconnect" in infos["OFF1"].error
    assert infos["UNA1"].health == "unauthorized" and "Allow USB debugging" in infos["UNA1"].error
    json.dumps([i.to_dict() for i in infos.values()])


def test_device_info_and_health_check(server, phone, binary):
    source = make_source(server, binary)
    assert source.device_info().model == "Pixel 7"
    assert source.health_check() is None
    phone.thermal_status = 4
    assert "too hot" in source.health_check()
    phone.thermal_status = 0
    phone.state = "offline"
    server.wait_for_state(phone.serial, "offline")  # the server notices a cut transport in its own time
    assert "offline" in source.health_check()


def test_env_keeps_adbutils_from_real_adb():
    # The autouse fixture points adbutils at a harmless program.
    assert os.environ["ADBUTILS_ADB_PATH"].endswith("fake-adb")
    assert shutil.which("true")
    assert stat.S_IMODE(os.stat(os.environ["ADBUTILS_ADB_PATH"]).st_mode) & 0o100


# --------------------------------------------------------------------------------------------------
# Tests that take `serve` (tests/latency/conftest.py) run on the real adb server and on the double.


def old_phone(serial="OLD", **kwargs):
    """An Android 6 phone: no shell v2 (adbd answers v1 through a pty), no thermal service."""
    options = dict(sdk=23, release="6.0.1", shell_v2=False, soc_model=None, soc_manufacturer=None)
    return FakePhone(serial, **{**options, "thermal_status": None, **kwargs})


def finishes(fn, seconds=10.0):
    """Runs `fn` in a thread; returns what it raised, failing the test if it is still running."""
    outcome = {}

    def run():
        try:
            fn()
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds:g} s"
    return outcome.get("error")


def ln_commands(phone):
    return [c for c in phone.commands if c.startswith("ln -s ") and "lease-tmp" not in c]


@pytest.mark.parametrize(
    "phone_options, remote_dir, adbd_says, hint",
    [
        ({}, "/data/local/tmp/missing", "No such file or directory", "does not exist"),
        ({}, "/sdcard", "Operation not permitted", "does not allow symbolic links"),
        ({"free_bytes": 1000}, TMP, "No space left on device", "storage full"),
    ],
)
@pytest.mark.parametrize("make_phone", [FakePhone, old_phone], ids=["android14", "android6-shell-v1"])
def test_a_lease_the_phone_refuses_is_an_error_at_once(
    serve, binary, make_phone, phone_options, remote_dir, adbd_says, hint
):
    phone = make_phone("L", **phone_options)
    server = serve(phone)
    source = make_source(server, binary, serial=phone.serial, remote_dir=remote_dir, lease_wait_s=600.0)
    error = finishes(lambda: source.measure_tflite(TINY))
    assert isinstance(error, DeviceError) and not isinstance(error, DeviceBusyError), error
    message = str(error)
    # The phone, the path and adbd's own message.
    assert f"phone {phone.serial}" in message and f"{remote_dir}/keras_mnas.lease.0" in message
    assert adbd_says in message
    assert hint in message
    assert len(ln_commands(phone)) == 1
    assert phone.benchmark_runs == []


@pytest.mark.parametrize("make_phone", [FakePhone, old_phone], ids=["android14", "android6-shell-v1"])
def test_losing_the_lease_race_keeps_the_deadline_without_busy_looping(serve, binary, make_phone):
    phone = make_phone("R")
    server = serve(phone)
    # Every attempt finds the link already made (as when another worker keeps winning the race).
    exists = f"ln: cannot create symbolic link from 'x' to '{TMP}/keras_mnas.lease.0': File exists\n"
    phone.add_fault(Fault(f"{TMP}/keras_mnas.lease.0", "exit", times=-1, exit_code=1, output=exists))
    start = time.monotonic()
    source = make_source(server, binary, serial=phone.serial, lease_wait_s=0.5)
    error = finishes(lambda: source.measure_tflite(TINY))
    assert isinstance(error, DeviceBusyError), error
    assert 0.5 <= time.monotonic() - start < 3.0
    # At most one attempt per 0.1 s, and more than one: losing a race is retried.
    assert 2 <= len(ln_commands(phone)) <= 8
    assert phone.benchmark_runs == []


# Shell v1: every call site that reads shell output.


def test_a_v1_phone_is_pinned_to_its_fastest_core(serve, binary):
    phone = old_phone()
    server = serve(phone, server_version=40)
    result = make_source(server, binary, serial=phone.serial, repeats=1).measure_tflite(TINY)
    assert {run.core_mask for run in phone.benchmark_runs} == {"80"}
    assert result.provenance["cores"] == [7] and result.provenance["cores_max_khz"] == [2850000]
    assert result.provenance["thermal_before"]["source"] == "thermal_zones"


def test_thermal_gating_holds_a_hot_v1_phone(serve, binary):
    phone = old_phone(thermal_zones=[("cpu-big", 71500), ("battery", 30000)])
    server = serve(phone)
    with pytest.raises(DeviceTooHotError, match=r"CPU 71\.5 C"):
        options = dict(max_temperature_c=45.0, max_cool_wait_s=0.2)
        make_source(server, binary, serial=phone.serial, **options).measure_tflite(TINY)
    assert phone.benchmark_runs == []


def test_the_lease_blocks_a_second_worker_on_a_v1_phone(serve, binary):
    phone = old_phone()
    server = serve(phone)
    expires = int(time.time()) + 3600
    phone.put_symlink(f"{TMP}/keras_mnas.lease.4", f"keras_mnas-lease|v1|held|{expires}|otherhost:77:abc")
    with pytest.raises(DeviceBusyError, match="otherhost:77:abc"):
        make_source(server, binary, serial=phone.serial, lease_wait_s=0.2).measure_tflite(TINY)
    assert phone.benchmark_runs == []


def test_a_leftover_benchmark_process_is_seen_on_a_v1_phone(serve, binary):
    phone = old_phone(benchmark=FakeBenchmark(latency_ms=5.0, duration_s=0.4))
    measure_beside_a_stray_benchmark(serve(phone), phone, binary)
    assert phone.max_concurrent_benchmarks == 1


def test_devices_shows_the_cores_and_temperature_of_a_v1_phone(serve, capsys):
    from keras_mnas.cli import main

    phone = old_phone(thermal_zones=[("cpu-big", 38500), ("battery", 30000)])
    server = serve(phone)
    [info] = list_devices(adb_port=server.port)
    assert info.big_cores == (6, 7) and info.thermal.cpu_max_c == pytest.approx(38.5)
    assert info.health == "ok"
    assert main(["devices", "--adb-port", str(server.port)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(phone.serial))
    assert "6,7" in row and "38.5 C" in row


# benchmark_model's output, end to end.


def test_runs_1_on_a_model_slower_than_min_secs(serve, binary):
    phone = FakePhone("SLOW", benchmark=FakeBenchmark(latency_ms=150.0, relative_std=0.0))
    server = serve(phone)
    result = make_source(server, binary, serial=phone.serial, runs=1, repeats=1).measure_tflite(TINY)
    assert result.median_ms == pytest.approx(150.0) and result.runs == 1


@pytest.mark.parametrize("make_phone", [FakePhone, old_phone], ids=["android14", "android6-shell-v1"])
def test_op_profile_of_a_measurement(serve, binary, make_phone):
    phone = make_phone("P", benchmark=FakeBenchmark(latency_ms=10.0, relative_std=0.0))
    server = serve(phone)
    source = make_source(server, binary, serial=phone.serial, op_profile=True)
    result = source.measure_tflite(TINY)
    assert all(run.flags["enable_op_profiling"] == "true" for run in phone.benchmark_runs)
    assert result.median_ms == pytest.approx(10.0)
    profile = result.provenance["op_profile"]
    assert profile["by_type"] == pytest.approx(
        {"CONV_2D": 6.5, "DEPTHWISE_CONV_2D": 2.0, "FULLY_CONNECTED": 1.0, "MEAN": 0.5}
    )
    dw = {"node_type": "DEPTHWISE_CONV_2D", "avg_ms": 2.0, "times_called": 1}
    assert profile["by_node"]["block1_dw"] == dw
    assert source.config()["op_profile"] is True
    assert "op_profile" not in make_source(server, binary, serial=phone.serial).config()
    json.dumps(result.provenance)


@functools.lru_cache(maxsize=1)
def _small_network() -> bytes:
    import keras_mnas
    from keras_mnas.latency import convert_to_tflite

    arch = ["r1_k3_s22_e3_i16_o16", "r1_k5_s22_i16_o24_se0.25"]
    return convert_to_tflite(keras_mnas.build_model(arch, input_shape=(32, 32, 3), classes=10))


def test_op_profile_of_the_model_pushed(serve, binary):
    # A phone whose operators cost their output's size profiles the model it was given, named as LiteRT
    # names operators: "[output tensor]:index". With XNNPACK, the model is one delegate node.
    from keras_mnas.testing import model_op_profile

    costs = (20.0, 5.0)
    phone = FakePhone("OPS", benchmark=FakeBenchmark(latency_ms=0.5, relative_std=0.0, model_op_costs=costs))
    server = serve(phone)
    network = _small_network()
    expected = model_op_profile(network, costs)
    assert expected[0][0].startswith("[") and "stem_conv" in expected[0][0]
    source = make_source(server, binary, serial=phone.serial, op_profile=True, delegate="none")
    result = source.measure_tflite(network)
    by_node = result.provenance["op_profile"]["by_node"]
    assert list(by_node) == [name for name, _, _ in expected]
    assert [node["avg_ms"] for node in by_node.values()] == pytest.approx(
        [us / 1000 for _, _, us in expected], abs=0.0006
    )
    assert result.median_ms == pytest.approx(0.5 + sum(us for _, _, us in expected) / 1000, abs=0.002)
    delegated = make_source(server, binary, serial=phone.serial, op_profile=True).measure_tflite(network)
    (node,) = delegated.provenance["op_profile"]["by_node"].values()
    assert node["node_type"] == "TfLiteXNNPackDelegate"


# Messages.


def test_no_adb_server_names_its_address_once(binary):
    # A port nothing listens on.
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    for call in (
        lambda: AndroidLatency("S", binary=binary, adb_port=port, **FAST).measure_tflite(TINY),
        lambda: list_devices(adb_port=port),
    ):
        with pytest.raises(DeviceUnavailableError) as info:
            call()
        assert str(info.value).count(address) == 1, str(info.value)


def test_a_port_that_is_not_adb_says_so(binary):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer():
            with contextlib.suppress(OSError):
                for _ in range(4):
                    conn, _ = listener.accept()
                    with conn:
                        conn.recv(64)
                        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer, daemon=True).start()
        for call in (
            lambda: list_devices(adb_port=port, timeout_s=2.0),
            lambda: AndroidLatency("S", binary=binary, adb_port=port, **FAST).measure_tflite(TINY),
        ):
            with pytest.raises(DeviceUnavailableError, match="is not an adb server") as info:
                call()
            assert "phone -" not in str(info.value) and "b'HTTP'" in str(info.value)


def test_a_phones_own_port_is_not_taken_for_an_adb_server(binary):
    # `--adb-port 5555`: the port of a phone's adbd (wireless debugging), which never answers a client.
    with AdbdDevice(FakePhone("W")) as device:
        address = f"127.0.0.1:{device.port}"
        options = {**FAST, "call_timeout_s": 0.5}
        for call in (
            lambda: list_devices(adb_port=device.port, timeout_s=0.5),
            lambda: AndroidLatency("S", binary=binary, adb_port=device.port, **options).measure_tflite(TINY),
        ):
            with pytest.raises(DeadlineExceededError, match="does not answer like an adb server") as info:
                call()
            message = str(info.value)
            assert "phone -" not in message and message.count(address) == 1, message


def test_a_server_request_cut_by_adbutils_own_timeout_says_the_same():
    # adbutils' socket timeout equals the call's deadline and may fire a moment first (it did under load):
    # the same silence of the server gets the same words, not "went silent" on a phone.
    from keras_mnas.latency.android.adb import Phone

    def silent():
        raise adbutils.AdbTimeout("adb read timeout")

    phone = Phone("S", "127.0.0.1", 5555, call_timeout_s=5.0)
    with pytest.raises(DeadlineExceededError, match="does not answer like an adb server") as info:
        phone.call("listing the phones", silent, of_server=True)
    assert "127.0.0.1:5555" in str(info.value) and "went silent" not in str(info.value)
    # A phone's own request cut the same way is the phone's silence.
    with pytest.raises(DeadlineExceededError, match="went silent"):
        phone.call("running the benchmark", silent)


def test_a_full_disk_keeps_adbds_reason(serve, binary):
    # Room for the lease, not for the files.
    phone = FakePhone("F", free_bytes=len(binary.read_bytes()) + 100)
    server = serve(phone)
    with pytest.raises(DeviceError, match="storage full") as info:
        make_source(server, binary, serial=phone.serial).measure_tflite(TINY)
    message = str(info.value)
    assert "No space left on device" in message and "AdbError: FAIL" not in message
    assert ".." not in message.replace("...", "")
    assert phone.benchmark_runs == []
