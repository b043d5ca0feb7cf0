"""The `keras-mnas` command: every subcommand, phones through the loopback adb double, a real tiny search."""

import doctest
import importlib
import json
import os
import pathlib
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_mnas import cli
from keras_mnas.architecture import ArchSpec
from keras_mnas.cli import build_parser, main
from keras_mnas.cli._measure import make_source
from keras_mnas.cli.lut import _space_from_option
from keras_mnas.latency import LatencyLookupTable, LatencyResult
from keras_mnas.latency.lut import spearman
from keras_mnas.search import MnasSearchSpace, MnasTuner
from keras_mnas.search.latency_table import predict_candidate, search_space_configs
from keras_mnas.testing import AdbDouble, FakeBenchmark, FakePhone, ScriptedLatency, fake_benchmark_binary
from keras_mnas.tflite import load_interpreter, tflite_op_summary

# adbutils must never start a real adb server on the test machine.
pytestmark = pytest.mark.usefixtures("no_real_adb")

TINY_TFLITE = pathlib.Path(__file__).parent.parent / "latency" / "fixtures" / "tiny.tflite"
CLI_MODULES = ("_common", "_format", "_measure", "devices", "bench", "lut", "results", "export")
REMOTE_MODEL = "/data/local/tmp/keras_mnas_model.tflite"


def run(capsys, *argv):
    """Runs the command in-process; returns (exit status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_clean_failure(status, err, *fragments):
    assert status == 1, err
    assert "keras-mnas: error:" in err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def binary(tmp_path):
    path = tmp_path / "android_aarch64_benchmark_model"
    path.write_bytes(fake_benchmark_binary("arm64-v8a"))
    return path


@pytest.fixture
def phones():
    return [
        FakePhone("PHONE1", benchmark=FakeBenchmark(latency_ms=12.0, relative_std=0.005)),
        FakePhone("PHONE2", benchmark=FakeBenchmark(latency_ms=12.0, relative_std=0.005)),
        FakePhone("LOCKED", state="unauthorized"),
        FakePhone("HOT", model="Pixel 6", soc_model="Tensor", thermal_status=3),
    ]


@pytest.fixture
def server(phones):
    with AdbDouble(phones) as double:
        yield double


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_keras_model(path, input_shape=(16, 16, 3)):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(path)
    return path


# --------------------------------------------------------------------------------------------------
# Usage.


def test_usage_errors_exit_2_and_module_entry_point_runs(capsys):
    assert run(capsys)[0] == 2
    assert run(capsys, "lut")[0] == 2
    status, _, err = run(capsys, "results")
    assert status == 2 and "DIR" in err
    status, _, err = run(capsys, "bench", "m.keras", "--runs", "many")
    assert status == 2 and "invalid int value" in err
    process = subprocess.run(
        [sys.executable, "-m", "keras_mnas", "--help"], capture_output=True, text=True, timeout=120
    )
    assert process.returncode == 0
    for command in ("devices", "bench", "lut", "results", "export"):
        assert command in process.stdout


@pytest.mark.parametrize(
    "command", [[], ["devices"], ["bench"], ["lut", "build"], ["lut", "eval"], ["results"], ["export"]]
)
def test_every_help_text_renders_as_written(capsys, command):
    status, out, _ = run(capsys, *command, "--help")
    assert status == 0 and out.startswith("usage: keras-mnas")
    # argparse formats help strings but prints descriptions as they are: no escapes may show.
    assert "%%" not in out and "%(" not in out


def test_docstring_examples_of_the_commands_and_spearman():
    for module in (cli, *(importlib.import_module(f"keras_mnas.cli.{name}") for name in CLI_MODULES)):
        assert doctest.testmod(module).failed == 0, module.__name__
    assert doctest.testmod(importlib.import_module("keras_mnas.cli._format")).attempted > 0
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0
    assert spearman([1, 1, 2], [5, 5, 9]) == 1.0  # ties share their rank
    assert spearman([1.0], [2.0]) is None
    assert spearman([1, 1], [2, 3]) is None


# --------------------------------------------------------------------------------------------------
# keras-mnas devices


def test_devices_lists_every_phone_with_its_health(capsys, server):
    status, out, _ = run(capsys, "devices", "--adb-port", server.port)
    assert status == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {"PHONE1", "PHONE2", "LOCKED", "HOT"}
    for field in ("Pixel 7", "Google GS201", "34", "arm64-v8a", "6,7", "39.2 C", "ok"):
        assert field in lines["PHONE1"]
    assert "unauthorized" in lines["LOCKED"] and "Allow USB debugging" in lines["LOCKED"]
    assert "hot" in lines["HOT"] and "status 3" in lines["HOT"]

    status, out, _ = run(capsys, "devices", "--adb-port", server.port, "--json")
    assert status == 0
    infos = {info["serial"]: info for info in json.loads(out)}
    assert infos["PHONE1"]["big_cores"] == [6, 7] and infos["PHONE1"]["sdk"] == 34
    assert infos["PHONE1"]["thermal"]["status"] == 0
    assert infos["LOCKED"]["health"] == "unauthorized" and infos["HOT"]["health"] == "hot"


def test_devices_without_server_or_phone_fails_clearly(capsys, no_real_adb):
    port = free_port()
    status, out, err = run(capsys, "devices", "--adb-port", port)
    assert_clean_failure(status, err, "No adb server answers")
    assert out == ""
    assert not no_real_adb.exists(), "adbutils started a real adb server"
    with AdbDouble([]) as empty:
        status, _, no_phone = run(capsys, "devices", "--adb-port", empty.port)
    assert_clean_failure(status, no_phone, "No phone on adb server")
    # The address once; the pointer is to what every pip install has, not to the repository's docs/.
    assert err.count(f"127.0.0.1:{port}") == 1, err
    for message in (err, no_phone):
        assert "docs/" not in message and "`keras-mnas devices --help`" in message, message
    status, help_text, _ = run(capsys, "devices", "--help")
    assert status == 0 and "ssh -N -L 15037:127.0.0.1:5037" in help_text and "--adb-port 15037" in help_text


# --------------------------------------------------------------------------------------------------
# keras-mnas bench


def test_bench_tflite_on_a_phone(capsys, server, phones, binary):
    status, out, err = run(
        capsys, "bench", TINY_TFLITE, "--device", "PHONE1", "--adb-port", server.port, "--binary", binary,
        "--runs", 5, "--warmup-runs", 2,
    )  # fmt: skip
    assert status == 0, err
    assert "Timing" in err  # progress goes to stderr
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["source"] == "android:PHONE1"
    assert float(fields["median"].split()[0]) == pytest.approx(12.0, rel=0.03)
    assert "percentile range" in fields["spread"]  # the fake tool prints percentiles, as LiteRT's does
    assert "stable" in fields["spread"] and "UNSTABLE" not in fields["spread"]
    assert "Google Pixel 7 (Google GS201)" in fields["phone"] and "core mask 80" in fields["pinning"]
    runs = phones[0].benchmark_runs
    assert len(runs) == 3 and {r.flags["num_runs"] for r in runs} == {"5"}
    assert {r.flags["warmup_runs"] for r in runs} == {"2"}
    assert phones[0].file(REMOTE_MODEL) == TINY_TFLITE.read_bytes()

    status, out, _ = run(
        capsys, "bench", TINY_TFLITE, "--device", "PHONE2", "--adb-port", server.port, "--binary", binary,
        "--repeats", 2, "--json",
    )  # fmt: skip
    assert status == 0
    data = json.loads(out)
    result = LatencyResult.from_dict({k: v for k, v in data.items() if k not in ("model", "unstable")})
    assert result.source == "android:PHONE2" and result.median_ms == pytest.approx(12.0, rel=0.03)
    assert data["unstable"] is False and len(phones[1].benchmark_runs) == 2


def test_bench_keras_int8_on_a_pool_of_phones(capsys, server, phones, binary, tmp_path):
    model = tiny_keras_model(tmp_path / "tiny.keras")
    status, out, err = run(
        capsys, "bench", model, "--int8", "--device", "PHONE1", "--device", "PHONE2",
        "--adb-port", server.port, "--binary", binary, "--runs", 3, "--json",
    )  # fmt: skip
    assert status == 0, err
    assert "random inputs" in err and "latency" in err  # random calibration is said to be for timing only
    data = json.loads(out)
    assert data["quantization"] == "int8" and data["provenance"]["pool"]["attempts"] == 1
    measured_on = next(p for p in phones if p.serial == data["source"].split(":")[1])
    pushed = measured_on.file(REMOTE_MODEL)
    assert tflite_op_summary(pushed)["inputs"][0]["dtype"] == "int8"

    calibration = tmp_path / "samples.npy"
    np.save(calibration, np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32))
    status, _, err = run(
        capsys, "bench", model, "--int8", "--calibration-data", calibration, "--device", "PHONE1",
        "--adb-port", server.port, "--binary", binary, "--runs", 3,
    )  # fmt: skip
    assert status == 0 and "samples.npy" in err and "random" not in err
    np.save(calibration, np.zeros((8, 32, 32, 3), np.float32))
    status, _, err = run(capsys, "bench", model, "--int8", "--calibration-data", calibration)
    assert_clean_failure(status, err, "(N, 16, 16, 3)", "(8, 32, 32, 3)")


def test_bench_phone_failures_are_one_line_errors(capsys, server, phones, binary, tmp_path, no_real_adb):
    port = server.port
    status, _, err = run(capsys, "bench", TINY_TFLITE, "--device", "PHONE1", "--adb-port", port)
    assert_clean_failure(status, err, "needs --binary", "android_aarch64_benchmark_model")
    status, _, err = run(
        capsys, "bench", TINY_TFLITE, "--device", "PHONE1", "--adb-port", port, "--binary", tmp_path / "none"
    )
    assert_clean_failure(status, err, "benchmark_model binary not found")
    x86 = tmp_path / "android_x86_benchmark_model"
    x86.write_bytes(fake_benchmark_binary("x86"))
    status, _, err = run(
        capsys, "bench", TINY_TFLITE, "--device", "PHONE1", "--adb-port", port, "--binary", x86
    )
    assert_clean_failure(status, err, "built for x86", "Use android_aarch64_benchmark_model")
    status, _, err = run(
        capsys, "bench", TINY_TFLITE, "--device", "NOSUCH", "--adb-port", port, "--binary", binary
    )
    assert_clean_failure(status, err, "NOSUCH is not connected")
    status, _, err = run(
        capsys, "bench", TINY_TFLITE, "--device", "LOCKED", "--adb-port", port, "--binary", binary
    )
    assert_clean_failure(status, err, "LOCKED is unauthorized")
    status, _, err = run(
        capsys, "bench", TINY_TFLITE, "--device", "PHONE1", "--adb-port", free_port(), "--binary", binary
    )
    assert_clean_failure(status, err, "No adb server answers")
    assert not no_real_adb.exists()
    status, _, err = run(capsys, "bench", TINY_TFLITE, "--binary", binary)
    assert_clean_failure(status, err, "add --device")
    # No phone ever ran anything for these failures: no number came out of them.
    assert all(not p.benchmark_runs for p in phones)


def test_bench_on_the_host_and_bad_model_files(capsys, tmp_path):
    model = tiny_keras_model(tmp_path / "tiny.keras")
    status, out, err = run(
        capsys, "bench", model, "--runs", 5, "--warmup-runs", 1, "--min-seconds", 0, "--json"
    )
    assert status == 0, err
    data = json.loads(out)
    assert data["source"] == "host" and data["runs"] == 5 and data["median_ms"] > 0
    assert data["provenance"]["model"]  # the provenance travels with the figure
    # A model of microseconds is timed for --min-seconds, not just --runs.
    status, out, err = run(capsys, "bench", model, "--runs", 5, "--min-seconds", 0.02, "--json")
    assert status == 0, err
    assert json.loads(out)["runs"] > 5
    status, out, _ = run(capsys, "bench", TINY_TFLITE, "--runs", 5, "--repeats", 2)
    assert status == 0
    assert "median" in out and "per repeat" in out and "LiteRT" in out

    status, _, err = run(capsys, "bench", TINY_TFLITE, "--int8")
    assert_clean_failure(status, err, "already converted")
    status, _, err = run(capsys, "bench", tmp_path / "missing.keras")
    assert_clean_failure(status, err, "No such model file")
    status, _, err = run(capsys, "bench", tmp_path / "model.onnx")
    assert_clean_failure(status, err, ".keras or .tflite")
    (tmp_path / "broken.keras").write_text("not a zip")
    status, _, err = run(capsys, "bench", tmp_path / "broken.keras")
    assert_clean_failure(status, err, "is not a Keras model file")
    (tmp_path / "broken.tflite").write_bytes(b"\x00" * 64)
    status, _, err = run(capsys, "bench", tmp_path / "broken.tflite")
    assert_clean_failure(status, err, "Not a readable TFLite model")


# --------------------------------------------------------------------------------------------------
# keras-mnas lut build / eval


def write_tiny_space(path, **overrides):
    # Four architectures, eight layer configurations: small enough to profile in a test.
    settings = {
        "skeleton": [[1, 16, 1, 1], [6, 24, 1, 2]],
        "fixed_blocks": {"0": "r1_k3_s11_e1_i32_o16_noskip"},
        "conv_ops": ["dconv", "mbconv3"],
        "kernel_sizes": [3, 5],
        "se_ratios": [0.0],
        "skip_ops": ["none"],
        "filter_multipliers": [1.0],
        "layer_deltas": [0],
        "input_shape": [16, 16, 3],
        "classes": 10,
        "head_filters": 64,
        **overrides,
    }
    path.write_text(json.dumps(settings))
    return path


def build_host_table(capsys, tmp_path, calibration=("--calibration", 2), **space_overrides):
    """`lut build` on the host over a tiny space at 32x32 (conv and dconv, widths x1 and x3), calibrated on 2
    (or with the `calibration` options given).

    Returns the space file, the table's path, and the command's standard output and error.
    """
    space_file = write_tiny_space(
        tmp_path / "space.json",
        input_shape=[32, 32, 3],
        conv_ops=["dconv", "conv"],
        filter_multipliers=[1.0, 3.0],
        **space_overrides,
    )
    table_path = tmp_path / "lut.json"
    status, out, err = run(
        capsys, "lut", "build", table_path, "--space", space_file, *calibration, "--runs", 10,
        "--warmup-runs", 2,
    )  # fmt: skip
    assert status == 0, err
    return space_file, table_path, out, err


def test_lut_build_chooses_part_of_its_calibration_from_a_pool(capsys, tmp_path):
    pool = ("--calibration", 3, "--calibration-pool", 5)
    _, table_path, _, err = build_host_table(capsys, tmp_path, calibration=pool)
    assert "3 architectures measured end to end: 2 drawn at random, the rest chosen from 5" in err
    chosen = [m["chosen"] for m in LatencyLookupTable.load(table_path).calibration.measurements]
    assert chosen == ["as given", "as given", "least certain"]


def test_lut_build_then_eval_on_the_host(capsys, tmp_path):
    # Four architectures 3 to 100 times apart in mult-adds, and big enough that a pre-empted run does not
    # swamp them: a calibration on any two of them, timed on a busy machine, sees latency grow with the
    # table's sums.
    space_file, table_path, out, err = build_host_table(capsys, tmp_path, kernel_sizes=[5])
    space = _space_from_option(str(space_file), None, None)
    configs = len(search_space_configs(space))
    assert f"Profiling layer configurations: {configs}/{configs}" in err  # progress, on stderr
    assert "Wrote" in out and "calibrated on 2 architectures" in out
    table = LatencyLookupTable.load(table_path)
    assert set(table.keys) == {c.key for c in search_space_configs(space)}
    assert table.source_config["name"] == "host" and table.source_config["runs"] == 10
    calibration_archs = {tuple(m["architecture"]["blocks"]) for m in table.calibration.measurements}
    assert len(calibration_archs) == 2

    # The same source settings come from the table: no --runs needed to evaluate it.
    status, out, err = run(capsys, "lut", "eval", table_path, "--space", space_file, "--archs", 5, "--json")
    assert status == 0, err
    assert "only 2 architectures not used for calibration" in err
    report = json.loads(out)
    assert report["architectures"] == 2 and report["calibrated"]
    evaluated = {tuple(r["architecture"]["blocks"]) for r in report["rows"]}
    assert len(evaluated) == 2 and not evaluated & calibration_archs
    for row in report["rows"]:
        arch = ArchSpec.from_dict(row["architecture"])
        assert row["predicted_ms"] == pytest.approx(predict_candidate(table, space, arch))
        assert row["error"] == pytest.approx(row["predicted_ms"] / row["measured_ms"] - 1)
    errors = [abs(r["error"]) for r in report["rows"]]
    assert report["within_10_percent"] == sum(e <= 0.1 for e in errors) / 2
    assert report["max_abs_error"] == pytest.approx(max(errors))

    status, out, _ = run(capsys, "lut", "eval", table_path, "--space", space_file, "--archs", 2)
    assert status == 0 and "within +-10% of measured" in out and "Spearman rank correlation" in out
    assert "signed error" in out and "off across the board" not in out  # two networks are too few to tell

    # Another source configuration cannot extend or evaluate this table.
    status, _, err = run(capsys, "lut", "eval", table_path, "--space", space_file, "--runs", 11)
    assert_clean_failure(status, err, "One table describes one source")
    status, _, err = run(capsys, "lut", "build", table_path, "--space", space_file, "--int8", "--runs", 10,
                         "--warmup-runs", 2)  # fmt: skip
    assert_clean_failure(status, err, "float32 timings")
    status, _, err = run(capsys, "lut", "eval", tmp_path / "none.json")
    assert_clean_failure(status, err, "No latency table", "lut build")
    status, _, err = run(capsys, "lut", "build", table_path, "--calibration", 1)
    assert_clean_failure(status, err, "--calibration needs 0")
    status, _, err = run(capsys, "lut", "build", table_path, "--calibration", 2, "--calibration-pool", 1)
    assert_clean_failure(status, err, "--calibration-pool must hold at least", "received 1")
    (tmp_path / "bad_space.json").write_text('{"input_size": 3}')
    status, _, err = run(capsys, "lut", "build", tmp_path / "t.json", "--space", tmp_path / "bad_space.json")
    assert_clean_failure(status, err, "not a MnasSearchSpace setting")


def test_lut_eval_says_when_a_calibration_no_longer_matches_the_machine(capsys, tmp_path):
    space_file, table_path, _, _ = build_host_table(capsys, tmp_path)  # eight architectures
    # As if the machine had become half again as fast since: every prediction is high.
    data = json.loads(table_path.read_text())
    data["calibration"]["scale"] *= 1.5
    data["calibration"]["intercept_ms"] *= 1.5
    table_path.write_text(json.dumps(data))
    status, out, err = run(capsys, "lut", "eval", table_path, "--space", space_file, "--archs", 5)
    assert status == 0, err
    assert "off across the board" in out and "now runs faster" in out
    assert f"keras-mnas lut build {table_path}" in out
    status, out, _ = run(capsys, "lut", "eval", table_path, "--space", space_file, "--archs", 5, "--json")
    report = json.loads(out)
    assert report["shift"] == pytest.approx(report["median_error"]) and report["shift"] > 0.2


def test_an_interrupted_lut_build_keeps_what_it_measured(capsys, tmp_path, monkeypatch):
    from keras_mnas.latency import HostLatency

    space_file = write_tiny_space(tmp_path / "space.json")
    table_path = tmp_path / "lut.json"
    calls = []
    interrupt_at = [4]

    def measure(self, model, **kwargs):
        calls.append(model.name)
        if len(calls) == interrupt_at[0]:
            interrupt_at[0] = None
            raise KeyboardInterrupt
        return LatencyResult(0.5, 0.5, 0.5, 0.0, 0.0, 10, 1, 1, "host")

    monkeypatch.setattr(HostLatency, "measure", measure)
    status, _, err = run(capsys, "lut", "build", table_path, "--space", space_file, "--calibration", 0)
    assert status == 130
    assert "saved in" in err and "run the same command again" in err
    assert len(LatencyLookupTable.load(table_path)) == 2  # the baseline, then two entries, then ^C
    calls.clear()
    status, out, _ = run(capsys, "lut", "build", table_path, "--space", space_file, "--calibration", 0)
    assert status == 0 and "8 entries (6 measured now)" in out
    assert len(calls) == 6  # only what was missing


def test_lut_commands_time_candidates_with_the_input_preprocessing_the_search_builds(
    capsys, tmp_path, monkeypatch
):
    from keras_mnas.latency import HostLatency
    from keras_mnas.search import MnasHyperModel

    normalizes = []  # for each model timed: whether it normalises its inputs

    def measure(self, model, **kwargs):
        normalizes.append(any(layer.name == "normalization" for layer in model.layers))
        ms = 0.6 if normalizes[-1] else 0.5
        return LatencyResult(ms, ms, ms, 0.0, 0.0, 10, 1, 1, "host")

    monkeypatch.setattr(HostLatency, "measure", measure)
    space_file = write_tiny_space(tmp_path / "space.json")
    table_path = tmp_path / "lut.json"
    lut = ("lut", "build", table_path, "--space", space_file, "--calibration", 0)
    status, _, err = run(capsys, *lut, "--include-preprocessing")
    assert status == 0, err
    assert "preprocessing:i3@16x16" in LatencyLookupTable.load(table_path)
    normalizes.clear()
    status, out, err = run(capsys, "lut", "eval", table_path, "--space", space_file, "--archs", 2,
                           "--include-preprocessing", "--json")  # fmt: skip
    assert status == 0, err
    assert normalizes == [True, True]  # the networks measured end to end are the search's candidates
    # The baseline (0.5 ms) plus the normalisation's entry (0.1 ms): every other entry is 0 on this device.
    assert [row["predicted_ms"] for row in json.loads(out)["rows"]] == pytest.approx([0.6, 0.6])

    # A search project records the setting: it is used, and a flag contradicting it is refused.
    space = _space_from_option(str(space_file), None, None)
    hypermodel = MnasHyperModel(space, include_preprocessing=True)
    tuner = MnasTuner(hypermodel, latency=ScriptedLatency([1.0]), target_latency_ms=1.0,
                      directory=str(tmp_path / "search"), project_name="rgb")  # fmt: skip
    tuner.save()  # writes the oracle's state, search settings included
    project_table = tmp_path / "project_lut.json"
    status, _, err = run(capsys, "lut", "build", project_table, "--space", tmp_path / "search", "--archs", 1,
                         "--calibration", 0)  # fmt: skip
    assert status == 0, err
    assert "preprocessing:i3@16x16" in LatencyLookupTable.load(project_table)
    status, _, err = run(capsys, "lut", "eval", project_table, "--space", tmp_path / "search", "--archs", 1,
                         "--no-include-preprocessing")  # fmt: skip
    assert_clean_failure(status, err, "built its candidates with include_preprocessing=True", "contradicts")


def test_lut_build_and_eval_on_a_phone(capsys, server, phones, binary, tmp_path):
    space_file = write_tiny_space(tmp_path / "space.json")
    table_path = tmp_path / "phone.json"
    status, out, err = run(
        capsys, "lut", "build", table_path, "--space", space_file, "--archs", 1, "--calibration", 0,
        "--device", "PHONE1", "--adb-port", server.port, "--binary", binary, "--runs", 3, "--repeats", 1,
        "--core-mask", "none",
    )  # fmt: skip
    assert status == 0, err
    table = LatencyLookupTable.load(table_path)
    assert table.source_config["name"] == "android" and table.source_config["serial"] == "PHONE1"
    assert table.source_config["core_mask"] is None
    assert {run.core_mask for run in phones[0].benchmark_runs} == {None}  # no taskset, as asked
    assert table.calibration is None and "uncalibrated" in out
    # One baseline plus one benchmark process per entry, all on the phone.
    assert len(phones[0].benchmark_runs) == len(table) + 1
    # The table names its phone and settings (no core mask included): only the binary is needed to
    # evaluate it.
    status, out, err = run(
        capsys, "lut", "eval", table_path, "--space", space_file, "--archs", 2, "--adb-port", server.port,
        "--binary", binary, "--json",
    )  # fmt: skip
    assert status == 0, err
    report = json.loads(out)
    assert report["architectures"] == 2 and report["source"]["serial"] == "PHONE1"
    # The fake phone takes 12 ms for any model: entries net of the baseline are 0 and the sum plus one
    # baseline predicts exactly what it measures.
    assert report["within_10_percent"] == 1.0
    status, _, err = run(capsys, "lut", "eval", table_path, "--space", space_file, "--adb-port", server.port)
    assert_clean_failure(status, err, "needs --binary")


def test_lut_build_from_networks_on_a_phone(capsys, tmp_path, binary):
    # A phone whose operators each cost their output's size: the profile of a network says what each entry
    # costs in it.
    costs = FakeBenchmark(latency_ms=0.4, relative_std=0.0, model_op_costs=(20.0, 5.0))
    phone = FakePhone("OPS", benchmark=costs)
    space_file = write_tiny_space(tmp_path / "space.json")
    table_path = tmp_path / "phone.json"
    with AdbDouble([phone]) as server:
        phone_options = ("--device", "OPS", "--adb-port", server.port, "--binary", binary, "--runs", 3,
                         "--repeats", 1, "--min-seconds", 0)  # fmt: skip
        status, out, err = run(capsys, "lut", "build", table_path, "--space", space_file,
                               "--from-networks", 2, "--calibration", 2, *phone_options)  # fmt: skip
        assert status == 0, err
        assert "entries from the operator profiles of 2 whole networks" in out
        table = LatencyLookupTable.load(table_path)
        assert table.source_config["op_profile"] is True and table.source_config["delegate"] == "none"
        assert {run.flags["use_xnnpack"] for run in phone.benchmark_runs} == {"false"}
        # Every entry of the space is in the table: from the networks, or profiled alone after them.
        assert len(table) == 8
        # lut eval measures as the table was made: without a delegate, with operator profiles.
        status, out, err = run(capsys, "lut", "eval", table_path, "--space", space_file, "--archs", 2,
                               "--json", "--adb-port", server.port, "--binary", binary)  # fmt: skip
        assert status == 0, err
        assert json.loads(out)["max_abs_error"] < 0.02
        assert phone.benchmark_runs[-1].flags["enable_op_profiling"] == "true"
        status, _, err = run(capsys, "lut", "build", tmp_path / "x.json", "--from-networks", 2,
                             "--delegate", "xnnpack", *phone_options)  # fmt: skip
        assert_clean_failure(status, err, "runs without a delegate")
    status, _, err = run(capsys, "lut", "build", tmp_path / "x.json", "--from-networks", 2)
    assert_clean_failure(status, err, "needs a phone (--device SERIAL)")


# --------------------------------------------------------------------------------------------------
# keras-mnas results / export, on a real tiny search


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    data = load_digits()
    x = np.kron(data.images.astype("float32") / 16.0, np.ones((2, 2), "float32"))[..., None]  # 16x16x1
    space = MnasSearchSpace(
        [(1, 16, 1, 1), (6, 24, 1, 2)],
        input_shape=(16, 16, 1),
        classes=10,
        depth_multiplier=0.5,
        head_filters=32,
        fixed_blocks={0: "r1_k3_s11_e1_i32_o16_noskip"},
    )
    directory = tmp_path_factory.mktemp("search")
    tuner = MnasTuner(
        space=space,
        # Two trained trials (the 1 ms one timed unstable), one failure, one so slow that the hard
        # constraint skips its training.
        latency=ScriptedLatency([2.0, 1.0, None, 1000.0], spreads=[0.01, 0.08, 0.01, 0.01]),
        target_latency_ms=2.0,
        reward="hard",
        max_trials=4,
        seed=1,
        directory=str(directory),
        project_name="tiny",
    )
    tuner.search(x[:200], data.target[:200], validation_data=(x[1600:], data.target[1600:]), epochs=1,
                 batch_size=100, verbose=0)  # fmt: skip
    return {"directory": directory, "tuner": tuner, "x_val": x[1500:1510]}


def test_results_table_matches_the_tuner(capsys, search):
    tuner = search["tuner"]
    status, out, err = run(capsys, "results", search["directory"], "--json")
    assert status == 0, err
    report = json.loads(out)
    trials = {t["trial_id"]: t for t in report["trials"]}
    assert len(trials) == 4
    statuses = sorted(t["status"] for t in trials.values())
    assert statuses == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]
    for record in tuner.trial_records():
        mine = trials[record["trial_id"]]
        for key in (
            "accuracy",
            "latency_ms",
            "latency_spread",
            "reward",
            "params",
            "macs",
            "skipped",
            "architecture",
        ):
            assert mine[key] == record[key], key
    assert report["pareto_front"] == [r["trial_id"] for r in tuner.pareto_front()]
    failed = next(t for t in trials.values() if t["status"] == "FAILED")
    assert "refuses call 3" in failed["message"]
    skipped = next(t for t in trials.values() if t["skipped"])
    assert skipped["latency_ms"] == 1000.0 and skipped["checkpoint"] is None

    status, out, _ = run(capsys, "results", search["directory"], "--project", "tiny")
    assert status == 0
    table, _, front = out.partition("Pareto front")
    assert "4 trials (3 completed, 1 failed)" in table and "target 2 ms" in table
    assert "skipped" in table and "failed: " in table and "refuses call 3" in table
    rows = [line.split() for line in table.splitlines() if line[:1].isdigit()]
    assert sorted(row[0] for row in rows) == sorted(trials)
    # The unstable latency is marked in its row, and only there.
    assert [row[3:5] for row in rows if "(!)" in row] == [["1", "(!)"]]
    assert "(!) 1 latency was measured with a spread above 5%" in table
    front_ids = [line.split()[0] for line in front.splitlines() if line[:1].isdigit()]
    assert front_ids == report["pareto_front"]
    arch = ArchSpec.from_dict(trials[front_ids[0]]["architecture"])
    assert str(arch.blocks[1]) in front  # the searched block's string

    status, out, _ = run(capsys, "results", search["directory"], "--sort", "latency", "--json")
    latencies = [t["latency_ms"] for t in json.loads(out)["trials"]]
    assert latencies[:3] == [1.0, 2.0, 1000.0] and latencies[3] is None
    status, out, _ = run(capsys, "results", search["directory"], "--sort", "reward", "--json")
    rewards = [t["reward"] for t in json.loads(out)["trials"] if t["reward"] is not None]
    assert rewards == sorted(rewards, reverse=True)


def test_results_summary_prints_the_results_table(capsys, search):
    tuner = search["tuner"]
    capsys.readouterr()
    tuner.results_summary(2)
    summary = capsys.readouterr().out
    # Not KerasTuner's summary: no hyperparameter lines, no bare score.
    assert "Score" not in summary and "block2_kernel" not in summary
    assert summary.startswith("Results summary: the 2 best of 4 trials (3 completed, 1 failed) of ")
    assert "target 2 ms" in summary
    best = [t.trial_id for t in tuner.oracle.get_best_trials(2)]
    table, _, front = summary.partition("Pareto front")
    mine = [line.split() for line in table.splitlines() if line[:1].isdigit()]
    assert [row[0] for row in mine] == best
    # Row for row what `keras-mnas results` prints for the same trials: one formatter for both.
    status, out, _ = run(capsys, "results", search["directory"], "--sort", "reward")
    assert status == 0
    theirs = {line.split()[0]: line.split() for line in out.partition("Pareto front")[0].splitlines()
              if line[:1].isdigit()}  # fmt: skip
    assert mine == [theirs[trial_id] for trial_id in best]
    record = next(r for r in tuner.trial_records() if r["trial_id"] == best[0])
    assert f"{record['accuracy']:.4f}" in mine[0] and f"{record['reward']:.4f}" in mine[0]
    assert ArchSpec.from_dict(record["architecture"]).block_strings[1] in mine[0]
    assert [line.split()[0] for line in front.splitlines() if line[:1].isdigit()] == [
        r["trial_id"] for r in tuner.pareto_front()
    ]
    with pytest.raises(ValueError, match="`num_trials` must be an integer >= 1; received 0"):
        tuner.results_summary(0)


def test_results_errors(capsys, search, tmp_path):
    status, _, err = run(capsys, "results", tmp_path)
    assert_clean_failure(status, err, "is not a search directory")
    status, _, err = run(capsys, "results", tmp_path / "missing")
    assert_clean_failure(status, err, "is not a directory")
    status, _, err = run(capsys, "results", search["directory"], "--project", "other")
    assert_clean_failure(status, err, "No search project 'other'", "tiny")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "oracle.json").write_text("{}")
    status, _, err = run(capsys, "results", tmp_path)
    assert_clean_failure(status, err, "several search projects (a, b)")
    (tmp_path / "a" / "oracle.json").write_text("{not json")
    status, _, err = run(capsys, "results", tmp_path, "--project", "a")
    assert_clean_failure(status, err, "not valid JSON")


def test_export_a_trained_trial(capsys, search, tmp_path):
    tuner = search["tuner"]
    best = tuner.oracle.get_best_trials(1)[0]
    out_base = tmp_path / "exports" / "best"
    status, out, err = run(capsys, "export", search["directory"], "--trial", best.trial_id, "--out", out_base)
    assert status == 0, err
    assert "trained: the best epoch's weights" in out
    exported = keras.saving.load_model(f"{out_base}.keras")
    reference = tuner.load_model(best)  # KerasTuner's own reload of the trial's checkpoint
    x = search["x_val"]
    expected = keras.ops.convert_to_numpy(reference(x, training=False))
    got = keras.ops.convert_to_numpy(exported(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    interpreter = load_interpreter((tmp_path / "exports" / "best.tflite").read_bytes())
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], x[:1])
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(output, expected[:1], rtol=1e-4, atol=1e-5)
    build = json.loads((tmp_path / "exports" / "best.arch.json").read_text())
    assert build["arch"] == tuner.best_architectures(1)[0].to_dict()

    status, out, err = run(capsys, "export", search["directory"], "--trial", int(best.trial_id), "--int8",
                           "--out", tmp_path / "int8", "--json")  # fmt: skip
    assert status == 0, err
    assert "random inputs" in err
    summary = json.loads(out)
    assert summary["quantization"] == "int8" and summary["calibration"] == "random inputs"
    assert tflite_op_summary((tmp_path / "int8.tflite").read_bytes())["inputs"][0]["dtype"] == "int8"


def test_export_the_best_trial(capsys, search, tmp_path):
    tuner = search["tuner"]
    best = tuner.oracle.get_best_trials(1)[0]
    status, out, err = run(capsys, "export", search["directory"], "--trial", "best", "--out", tmp_path / "b",
                           "--json")  # fmt: skip
    assert status == 0, err
    assert f"The best trial is {best.trial_id}, of reward {best.score:.4f}." in err
    summary = json.loads(out)
    assert summary["trial_id"] == best.trial_id and summary["trained"]
    assert summary["architecture"] == tuner.best_architectures(1)[0].to_dict()


def test_export_untrained_and_unknown_trials(capsys, search, tmp_path, monkeypatch):
    tuner = search["tuner"]
    skipped = next(r for r in tuner.trial_records() if r["skipped"])
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "export", search["directory"], "--trial", skipped["trial_id"])
    assert status == 0, err
    assert "UNTRAINED" in err and "UNTRAINED" in out and "skipped before training" in out
    base = f"tiny_trial_{skipped['trial_id']}"
    assert os.path.isfile(f"{base}.keras") and os.path.isfile(f"{base}.tflite")
    assert json.loads(pathlib.Path(f"{base}.arch.json").read_text())["arch"] == skipped["architecture"]

    status, _, err = run(capsys, "export", search["directory"], "--trial", "99")
    assert_clean_failure(status, err, "No trial '99'", "trials: ")
    status, _, err = run(capsys, "export", tmp_path, "--trial", "0")
    assert_clean_failure(status, err, "is not a search directory")


def test_a_table_is_measured_with_its_recorded_settings_unless_options_override_them():
    args = build_parser().parse_args(["lut", "eval", "table.json"])
    assert make_source(args, None).min_seconds == 0.1  # no table: the default
    assert make_source(args, {"name": "host", "runs": 10, "min_seconds": 0.3}).min_seconds == 0.3
    # A setting the table does not record takes the source's default.
    unrecorded = make_source(args, {"name": "host", "runs": 10})
    assert (unrecorded.runs, unrecorded.min_seconds) == (10, 0.1)
    args = build_parser().parse_args(["lut", "eval", "table.json", "--min-seconds", "0.2"])
    assert make_source(args, {"name": "host", "runs": 10}).min_seconds == 0.2
