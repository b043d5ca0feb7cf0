import pathlib

import pytest

from keras_mnas.latency.benchmark_model import (
    BenchmarkOutput,
    OpTiming,
    classify_failure,
    parse_benchmark_output,
)
from keras_mnas.latency.errors import BenchmarkError, DeviceError, ModelError
from keras_mnas.testing import fake_benchmark_output

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "benchmark_model"


def fixture(name):
    return (FIXTURES / name).read_text()


# (file, generation, inference avg us, figure ms, figure kind, measured count, warm-up count)
GENERATION_CASES = [
    ("tf1_no_stats.txt", "tf1", 181377.0, 181.377, "mean", 50, 1),
    ("tf113_inference.txt", "tf1.13", 76512.9, 76.5129, "mean", 50, 7),
    ("tf22.txt", "tf2", 27786.5, 27.7865, "mean", 50, 10),
    ("tf212_info.txt", "litert", 11822.6, 11.8226, "mean", 50, 10),
    ("litert_percentiles_exponent.txt", "litert", 1240270.0, 1239.807, "median", 30, 2),
    ("litert_single_warmup.txt", "litert", 699438.0, 576.856, "median", 50, 1),
]


@pytest.mark.parametrize("name, generation, avg_us, figure_ms, kind, count, warmup_count", GENERATION_CASES)
def test_every_generation_parses_to_the_measured_runs(
    name, generation, avg_us, figure_ms, kind, count, warmup_count
):
    out = parse_benchmark_output(fixture(name), exit_code=0)
    assert isinstance(out, BenchmarkOutput)
    assert out.generation == generation
    assert out.inference_avg_us == pytest.approx(avg_us)
    assert out.figure_ms == pytest.approx(figure_ms)
    assert out.figure_kind == kind
    # The last statistics line is the measured runs, the first the warm-up.
    assert out.runs.count == count
    assert out.warmup.count == warmup_count
    assert out.runs.avg_us == pytest.approx(avg_us)


def test_exponent_notation_and_percentiles():
    out = parse_benchmark_output(fixture("litert_percentiles_exponent.txt"))
    assert out.warmup_avg_us == pytest.approx(1.35369e06)
    assert out.runs.p5_us == 1238753
    assert out.runs.median_us == 1239807
    assert out.runs.p95_us == 1247415
    assert out.runs.std_us == 2565
    assert out.first_inference_us == 1357602
    assert out.init_us == 5579
    assert out.peak_memory_mb == pytest.approx(113.375)
    assert out.session_init_ms == pytest.approx(5.579)


def test_a_single_warmup_run_prints_a_short_statistics_line():
    out = parse_benchmark_output(fixture("litert_single_warmup.txt"))
    assert out.warmup.count == 1
    assert out.warmup.curr_us == 670083
    assert out.warmup.avg_us is None and out.warmup.first_us is None


@pytest.mark.parametrize(
    "name, kind, init, overall",
    [
        ("tf22.txt", "peak", 3.71094, 29.5703),
        ("tf212_info.txt", "delta", 6.01953, 14.8828),
        ("tf1_no_stats.txt", None, None, None),
    ],
)
def test_both_memory_line_forms(name, kind, init, overall):
    out = parse_benchmark_output(fixture(name))
    assert out.memory_kind == kind
    assert out.memory_init_mb == (pytest.approx(init) if init is not None else None)
    assert out.memory_overall_mb == (pytest.approx(overall) if overall is not None else None)


def test_tf1_has_no_first_inference_and_tf2_has():
    assert parse_benchmark_output(fixture("tf1_no_stats.txt")).first_inference_us is None
    assert parse_benchmark_output(fixture("tf22.txt")).first_inference_us == 31244


def test_logcat_prefixed_lines_parse():
    text = fixture("tf212_info.txt").replace("INFO: ", "I tflite  : ")
    out = parse_benchmark_output(text)
    assert out.figure_ms == pytest.approx(11.8226)


def test_crlf_line_endings_from_a_pty_shell():
    out = parse_benchmark_output(fixture("tf212_info.txt").replace("\n", "\r\n"))
    assert out.figure_ms == pytest.approx(11.8226)


@pytest.mark.parametrize(
    "name",
    ["error_op_version.txt", "error_delegate_rejects.txt", "error_xnnpack_reshape.txt"],
)
def test_model_errors_are_model_errors_not_device_errors(name):
    with pytest.raises(ModelError) as info:
        parse_benchmark_output(fixture(name), exit_code=1)
    assert not info.value.retryable
    assert not isinstance(info.value, DeviceError)
    assert info.value.exit_code == 1
    assert "ERROR" in info.value.output


def test_op_version_error_names_the_op():
    with pytest.raises(ModelError, match="FULLY_CONNECTED' version '12'"):
        parse_benchmark_output(fixture("error_op_version.txt"), exit_code=1)


def test_a_tool_error_is_a_retryable_device_error():
    with pytest.raises(BenchmarkError) as info:
        parse_benchmark_output(fixture("error_mmap.txt"), exit_code=1)
    assert info.value.retryable
    assert info.value.reason == "error"
    assert "Failed to mmap model" in str(info.value)


def test_error_lines_fail_even_with_exit_status_zero_and_a_summary():
    text = fixture("tf212_info.txt") + "ERROR: Something went wrong after the summary.\n"
    with pytest.raises(BenchmarkError, match="Something went wrong"):
        parse_benchmark_output(text, exit_code=0)


def test_a_non_zero_exit_fails_even_with_a_complete_summary():
    with pytest.raises(BenchmarkError) as info:
        parse_benchmark_output(fixture("tf212_info.txt"), exit_code=1)
    assert info.value.reason == "exit"


@pytest.mark.parametrize("exit_code, signal_name", [(134, "SIGABRT"), (139, "SIGSEGV")])
def test_a_crash_is_a_crash(exit_code, signal_name):
    with pytest.raises(BenchmarkError, match=signal_name) as info:
        parse_benchmark_output(fixture("crash_abort.txt"), exit_code=exit_code)
    assert info.value.reason == "crash"
    assert info.value.exit_code == exit_code


def test_a_crash_after_a_complete_summary_is_still_no_number():
    with pytest.raises(BenchmarkError, match="crashed"):
        parse_benchmark_output(fixture("tf212_info.txt"), exit_code=134)


def test_legacy_benchmarking_failed_line_without_prefix():
    text = "STARTING!\nLoaded model /data/local/tmp/m.tflite\nBenchmarking failed.\n"
    with pytest.raises(BenchmarkError):
        parse_benchmark_output(text)


def test_missing_summary_is_no_number():
    with pytest.raises(BenchmarkError) as info:
        parse_benchmark_output(fixture("truncated_after_stats.txt"), exit_code=0)
    assert info.value.reason == "no-summary"
    assert "2 statistics line(s)" in str(info.value)


def test_empty_output_is_no_number():
    with pytest.raises(BenchmarkError, match="no summary"):
        parse_benchmark_output("", exit_code=0)


def test_summary_cut_in_the_middle_of_the_line():
    text = fixture("tf212_info.txt")
    cut = text[: text.index("Warmup (avg)") + 5]
    with pytest.raises(BenchmarkError) as info:
        parse_benchmark_output(cut)
    assert info.value.reason == "truncated"


@pytest.mark.parametrize("name", [n for n, *_ in GENERATION_CASES])
def test_summary_cut_inside_the_last_number_never_yields_a_number(name):
    text = fixture(name)
    line_start = text.index("nference timings in us")
    line_end = text.index("\n", line_start)
    # The number at the end of the summary line loses its last digits; the rest is gone.
    cut = text[: line_end - 3]
    with pytest.raises(BenchmarkError):
        parse_benchmark_output(cut)


def test_an_unterminated_summary_without_statistics_is_refused():
    text = "Average inference timings in us: Warmup: 187654, Init: 4017, no stats: 181377"
    with pytest.raises(BenchmarkError, match="unterminated"):
        parse_benchmark_output(text)
    # The same line, complete, is accepted.
    assert parse_benchmark_output(text + "\n").figure_ms == pytest.approx(181.377)


def test_summary_and_statistics_disagreeing_is_refused():
    text = fixture("tf212_info.txt").replace("Inference (avg): 11822.6", "Inference (avg): 9822.6")
    with pytest.raises(BenchmarkError) as info:
        parse_benchmark_output(text)
    assert info.value.reason == "inconsistent"


def test_two_summaries_are_refused():
    text = fixture("tf212_info.txt")
    with pytest.raises(BenchmarkError, match="2 summary lines"):
        parse_benchmark_output(text + text)


def test_a_zero_average_is_refused():
    text = "count=5 first=0 curr=0 min=0 max=0 avg=0 std=0\nInference timings in us: Init: 1, "
    text += "First inference: 0, Warmup (avg): 0, Inference (avg): 0\n"
    with pytest.raises(BenchmarkError, match="a real run takes time"):
        parse_benchmark_output(text)


def test_classify_failure():
    assert classify_failure("ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'")
    assert classify_failure("ERROR: Op builtin_code out of range: 150. Are you using old TFLite binary")
    assert classify_failure("ERROR: Encountered unresolved custom op: Erf.")
    assert not classify_failure("ERROR: Failed to mmap model /data/local/tmp/m.tflite")
    assert not classify_failure("/system/bin/sh: /data/local/tmp/benchmark_model: not executable: 64-bit ELF")


def test_non_text_input_is_a_type_error():
    with pytest.raises(TypeError, match="as a str"):
        parse_benchmark_output(b"INFO: ...")


# --------------------------------------------------------------------------------------------------
# Statistics lines are checked against themselves.

MEASURED = "count=30 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565"
PERCENTILES = "p5=1238753 median=1239807 p95=1247415"


@pytest.mark.parametrize(
    "replacement, reason",
    [
        # A median outside min..max.
        (f"{MEASURED} p5=1238753 median=99999000 p95=1247415", "inconsistent"),
        # Percentiles out of order.
        (f"{MEASURED} p5=1247415 median=1239807 p95=1238753", "inconsistent"),
        # The line cut inside the median, its end lost.
        (f"{MEASURED} p5=1238753 median=12", "truncated"),
        # The line cut before its percentiles end.
        (f"{MEASURED} p5=1238753 median=1239807", "truncated"),
        # The line cut before its average.
        ("count=30 first=1249964 curr=1240143 min=1238588", "truncated"),
    ],
)
def test_an_inconsistent_or_cut_statistics_line_is_no_number(replacement, reason):
    text = fixture("litert_percentiles_exponent.txt").replace(f"{MEASURED} {PERCENTILES}", replacement)
    assert replacement in text
    with pytest.raises(BenchmarkError) as info:
        parse_benchmark_output(text, exit_code=0)
    assert info.value.reason == reason
    assert info.value.retryable  # a device fault: the job may succeed on another try


LONE_RUN = (
    "INFO: count=1 curr=2500000 p5=2500000 median=2500000 p95=2500000\n\n"
    "INFO: Running benchmark for at least 1 iterations and at least 0.1 seconds but terminate if "
    "exceeding 150 seconds.\n"
    "INFO: {runs}\n\n"
    "INFO: Inference timings in us: Init: 5579, First inference: 2500000, Warmup (avg): 2.5e+06, "
    "Inference (avg): {avg}\n"
)


@pytest.mark.parametrize(
    "runs, avg, count, figure_ms",
    [
        # runs=1 on a model slower than --min_secs: one run, no average printed.
        ("count=1 curr=2400000 p5=2400000 median=2400000 p95=2400000", "2.4e+06", 1, 2400.0),
        # Every run alike: "(all same)", no average either.
        ("count=3 curr=2400000(all same) p5=2400000 median=2400000 p95=2400000", "2.4e+06", 3, 2400.0),
        ("count=3 curr=2400000(all same)", "2.4e+06", 3, 2400.0),
    ],
)
def test_statistics_lines_without_an_average(runs, avg, count, figure_ms):
    out = parse_benchmark_output(LONE_RUN.format(runs=runs, avg=avg), exit_code=0)
    assert out.runs.count == count
    assert out.runs.mean_us == 2400000
    assert out.figure_ms == pytest.approx(figure_ms)


def test_a_line_without_an_average_must_agree_with_the_summary():
    text = LONE_RUN.format(runs="count=1 curr=24", avg="2.4e+06")  # the line cut inside its number
    with pytest.raises(BenchmarkError) as info:
        parse_benchmark_output(text, exit_code=0)
    assert info.value.reason == "inconsistent"


def test_a_short_line_of_several_runs_needs_its_all_same_mark():
    text = LONE_RUN.format(runs="count=3 curr=2400000", avg="2.4e+06")
    with pytest.raises(BenchmarkError, match="incomplete"):
        parse_benchmark_output(text, exit_code=0)


# --------------------------------------------------------------------------------------------------
# --enable_op_profiling.

NODES = [("conv", "CONV_2D", 600.0), ("dw", "DEPTHWISE_CONV_2D", 250.0), ("fc", "FULLY_CONNECTED", 150.0)]


def test_op_profiling_output_gives_the_run_statistics_and_the_operator_times():
    text = fake_benchmark_output(
        "litert", graph="/data/local/tmp/m.tflite", warmup_us=[1100], runs_us=[1000, 1010, 990, 1000],
        init_us=3000, op_profile=NODES,
    )
    assert "Timings (microseconds): count=" in text and "Memory (bytes): count=0" in text
    out = parse_benchmark_output(text, exit_code=0)
    assert out.runs.count == 4 and out.warmup.count == 1
    assert out.figure_ms == pytest.approx(1.0)
    profile = out.op_profile
    expected = {"CONV_2D": 0.6, "DEPTHWISE_CONV_2D": 0.25, "FULLY_CONNECTED": 0.15}
    assert profile.by_type == pytest.approx(expected)
    assert profile.by_node["dw"] == OpTiming("DEPTHWISE_CONV_2D", 0.25, 1)
    assert list(profile.by_node) == ["conv", "dw", "fc"]  # run order; the initialisation is left out
    assert profile.to_dict()["by_node"]["fc"]["avg_ms"] == pytest.approx(0.15)


def test_without_op_profiling_there_is_no_profile():
    assert parse_benchmark_output(fixture("tf212_info.txt")).op_profile is None


def test_older_profile_tables_with_a_start_column_and_delegate_internals():
    # TF 2.x before the [start] column was dropped, XNNPACK reporting its own operators.
    row = "\t{:>24}\t{:>17}\t{:>9}\t{:>9}\t{:>7}%\t{:>7}%\t{:>10}\t{:>9}\t{}"
    columns = ["[node type]", "[start]", "[first]", "[avg ms]", "[%]", "[cdf%]", "[mem KB]"]
    header = row.replace("%", "").format(*columns, "[times called]", "[Name]")
    text = fixture("tf212_info.txt") + "\n".join(
        [
            "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:",
            "============================== Run Order ==============================",
            header,
            row.format(
                "TfLiteXNNPackDelegate", "0.000", "11.700", "11.800", "100.000", "100.000", "0.000", 1,
                "[StatefulPartitionedCall:0]:12",
            ),
            "",
            "Timings (microseconds): count=50 first=11801 curr=11764 min=11690 max=12211 avg=11822.6 std=96",
            "Memory (bytes): count=0",
            "1 nodes observed",
            "",
            "Delegate internal: ",
            "============================== Run Order ==============================",
            header,
            row.format(
                "Convolution (NHWC, F32) IGEMM", "0.000", "9.000", "9.100", "77.000", "77.000", "0.000", 1,
                "Delegate/Convolution (NHWC, F32) IGEMM:0",
            ),
            "",
            "Timings (microseconds): count=50 first=9000 curr=9100 min=9000 max=9200 avg=9100 std=20",
            "",
        ]
    ) + "\n"
    out = parse_benchmark_output(text, exit_code=0)
    assert out.runs.count == 50 and out.figure_ms == pytest.approx(11.8226)
    node = out.op_profile.by_node["[StatefulPartitionedCall:0]:12"]
    assert node.node_type == "TfLiteXNNPackDelegate" and node.avg_ms == pytest.approx(11.8)
    internal = out.op_profile.delegate_by_node["Delegate/Convolution (NHWC, F32) IGEMM:0"]
    assert internal.avg_ms == pytest.approx(9.1)


def test_failure_messages_end_in_one_period():
    with pytest.raises(BenchmarkError) as info:
        parse_benchmark_output(fixture("error_mmap.txt"), exit_code=1)
    assert ".." not in str(info.value)
    assert str(info.value).endswith("Benchmarking failed.")
