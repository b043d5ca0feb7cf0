"""The lookup-table latency predictor against measured host latency, beside a mult-adds proxy.

    python benchmarks/latency.py [--archs 200] [--calibration 20] [--resolution 128] [--table lut.json]
                                 [--repeat-models 10 --repeats 3] [--markdown out.md] [--json out.json]

Draws random architectures of the default MnasNet search space (`MnasSearchSpace`, 1000 classes) at
`--resolution`, `--calibration` for calibration and `--archs` others for evaluation (never the same
architecture twice). Profiles the lookup-table entries they need on this CPU (`HostLatency`), measures every
architecture end to end, fits the table's calibration and a linear latency-on-mult-adds proxy on the same
calibration set, and reports on the evaluation set: the share predicted within +-10% (and +-5%) of measured,
Spearman's rank correlation and the median and worst relative error, for both predictors. It also reports the
host's repeatability (coefficient of variation of the median over fresh interpreters, same model), end-to-end
measurements per minute and lookup-table predictions per second. Prints markdown tables.

With `--table PATH` the table is read from (and saved to) PATH, so a second run, or a run interrupted while
profiling, does not profile again. Timings on a busy machine are slower and noisier: run it on a quiet one,
and check the "wall-clock over CPU time" row (well above 1.00 means other processes took the CPU).

Duration: conversion dominates, and it hardly depends on the resolution; the run prints how long profiling
took, and `docs/benchmarks.md` gives the figures of a full run. 128x128 is the default because its models run
for a few milliseconds, long against the timer and dispatch overheads yet quick to time 50 times;
`--resolution 224` (the paper's) is allowed and costs more for its longer timed runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from keras_mnas.latency import HostLatency, LatencyLookupTable, convert_to_tflite
from keras_mnas.latency.host import host_provenance
from keras_mnas.latency.lut import fit_line, prediction_report
from keras_mnas.search import MnasSearchSpace
from keras_mnas.search.latency_table import predict_candidate
from keras_mnas.tflite import load_interpreter
from keras_mnas.utils.io import atomic_write_json


def wall_over_cpu_time(tflite_bytes: bytes, runs: int) -> float:
    """Median wall-clock time of an invoke over its median thread CPU time (1.0 when nothing pre-empts it)."""
    interpreter = load_interpreter(tflite_bytes, num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(
        detail["index"], np.random.default_rng(0).random(detail["shape"], dtype=np.float32)
    )
    for _ in range(5):
        interpreter.invoke()
    wall, cpu = [], []
    for _ in range(runs):
        start_wall, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        interpreter.invoke()
        cpu.append(time.thread_time_ns() - start_cpu)
        wall.append(time.perf_counter_ns() - start_wall)
    return float(np.median(wall) / max(np.median(cpu), 1))


def signed(value: float) -> str:
    return f"{'-' if value < 0 else '+'} {abs(value):.4f}"


def accuracy_row(name: str, predicted, measured) -> str:
    report = prediction_report(predicted, measured)
    rho = "n/a" if report["spearman"] is None else f"{report['spearman']:.3f}"
    return (
        f"| {name} | {report['within_10_percent']:.1%} | {report['within_5_percent']:.1%} | {rho} | "
        f"{report['median_abs_error']:.1%} | {report['max_abs_error']:.1%} |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=200, help="evaluation architectures (default 200)")
    parser.add_argument("--calibration", type=int, default=20, help="calibration architectures (default 20)")
    parser.add_argument("--resolution", type=int, default=128, help="input height and width (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the architecture sampling")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per measurement")
    parser.add_argument("--warmup-runs", type=int, default=10, help="untimed runs per measurement")
    parser.add_argument(
        "--min-seconds", type=float, default=0.1, help="timed runs continue past --runs for this long (0.1)"
    )
    parser.add_argument("--table", help="lookup-table JSON to reuse and extend (created when missing)")
    parser.add_argument("--repeat-models", type=int, default=10, help="models measured repeatedly for the CV")
    parser.add_argument("--repeats", type=int, default=3, help="fresh interpreters per repeated model")
    parser.add_argument("--markdown", help="also write the tables to this file")
    parser.add_argument("--json", help="write every architecture's figures to this JSON file")
    args = parser.parse_args(argv)
    for name in ("archs", "calibration", "resolution", "runs", "repeats"):
        if getattr(args, name.replace("-", "_")) < (2 if name == "calibration" else 1):
            parser.error(f"--{name} is too small")

    started = time.monotonic()
    load_before = os.getloadavg()
    space = MnasSearchSpace(input_shape=(args.resolution, args.resolution, 3))
    network = space.network_kwargs()
    host = HostLatency(runs=args.runs, warmup_runs=args.warmup_runs, min_seconds=args.min_seconds)
    if args.table and os.path.exists(args.table):
        lut = LatencyLookupTable.load(args.table, profiler=host)
    else:
        lut = LatencyLookupTable(profiler=host, path=args.table)

    samples = space.sample_values(args.calibration + args.archs, seed=args.seed)
    archs = [space.decode(values) for values in samples]
    calibration_archs, evaluation_archs = archs[: args.calibration], archs[args.calibration :]

    # 1. Profile the entries these architectures need.
    space_entries = len(space.layer_configs())
    before = len(lut)
    start = time.monotonic()
    profiled = lut.profile_architectures(archs, **network)
    profile_seconds = time.monotonic() - start
    print(
        f"Profiled {profiled} entries in {profile_seconds / 60:.1f} min ({len(lut)} in the table, "
        f"{space_entries} in the space; {before} were already there).",
        file=sys.stderr,
    )

    # 2. Measure every architecture end to end.
    def measure_all(which, label):
        rows = []
        start = time.monotonic()
        for i, arch in enumerate(which, start=1):
            keras.backend.clear_session()
            result = host.measure(space.build(arch))
            rows.append(
                {
                    "architecture": list(arch.block_strings),
                    "measured_ms": result.median_ms,
                    "cv": result.cv,
                    "lut_ms": lut.lut_ms(arch, **network),
                    "macs": space.cost(arch).macs,
                }
            )
            if i % 10 == 0 or i == len(which):
                print(f"{label}: measured {i}/{len(which)}", file=sys.stderr, flush=True)
        return rows, time.monotonic() - start

    calibration_rows, calibration_seconds = measure_all(calibration_archs, "calibration")
    evaluation_rows, evaluation_seconds = measure_all(evaluation_archs, "evaluation")
    calibration = lut.fit_calibration(
        [{**row, "network": {"input_shape": list(space.input_shape)}} for row in calibration_rows]
    )
    if args.table:
        lut.save(args.table)
    macs_scale, macs_intercept = fit_line(
        [row["macs"] for row in calibration_rows], [row["measured_ms"] for row in calibration_rows]
    )
    measured = [row["measured_ms"] for row in evaluation_rows]
    lut_calibrated = [calibration.apply(row["lut_ms"]) for row in evaluation_rows]
    baseline = lut.baseline["median_ms"] if lut.baseline else 0.0
    lut_raw = [row["lut_ms"] + baseline for row in evaluation_rows]
    macs_proxy = [macs_scale * row["macs"] + macs_intercept for row in evaluation_rows]
    for row, a, b in zip(evaluation_rows, lut_calibrated, macs_proxy, strict=True):
        row["lut_predicted_ms"], row["macs_predicted_ms"] = a, b

    # 3. Repeatability: the same converted model timed in fresh interpreters. And how much of the wall-clock
    # time other processes took: a busy machine pre-empts a multi-millisecond invoke, inflating it, while the
    # sub-millisecond pieces of the table mostly run between pre-emptions.
    repeat_cvs, preemption = [], []
    for arch in evaluation_archs[: args.repeat_models]:
        keras.backend.clear_session()
        tflite_bytes = convert_to_tflite(space.build(arch))
        medians = [host.measure_tflite(tflite_bytes).median_ms for _ in range(args.repeats)]
        repeat_cvs.append(statistics.pstdev(medians) / statistics.fmean(medians))
        preemption.append(wall_over_cpu_time(tflite_bytes, args.runs))

    # 4. Prediction speed, without building anything (from values: decode + sum) and from built models.
    def rate(function, items, seconds=2.0):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for item in items:
                function(item)
            done += len(items)
        return done / (time.perf_counter() - start)

    from_values = rate(lambda values: predict_candidate(lut, space, values), samples[args.calibration :])
    from_arch = rate(lambda arch: lut.predict(arch, **network), evaluation_archs)
    keras.backend.clear_session()
    built = [space.build(arch) for arch in evaluation_archs[:5]]
    from_model = rate(lambda model: lut.measure(model), built, seconds=1.0)
    del built

    elapsed = time.monotonic() - started
    measured_count = len(calibration_rows) + len(evaluation_rows)
    host_info = host_provenance()
    lines = [
        f"Lookup-table predictor vs measured host latency: {len(evaluation_rows)} random architectures of "
        f"the MnasNet space at {args.resolution}x{args.resolution} (1000 classes), calibrated on "
        f"{len(calibration_rows)} others (seed {args.seed}).",
        "",
        "| predictor | within +-10% | within +-5% | Spearman | median abs. error | worst abs. error |",
        "|---|---|---|---|---|---|",
        accuracy_row("lookup table, calibrated", lut_calibrated, measured),
        accuracy_row("lookup table, uncalibrated (sum + baseline)", lut_raw, measured),
        accuracy_row("mult-adds, linear fit", macs_proxy, measured),
        "",
        f"Calibration: measured = {calibration.scale:.4f} x sum(entries) "
        f"{signed(calibration.intercept_ms)} ms; "
        f"mult-adds proxy: measured = {macs_scale * 1e6:.5f} ms/M x mult-adds {signed(macs_intercept)} ms. "
        f"Measured latencies: {min(measured):.2f}-{max(measured):.2f} ms (median {np.median(measured):.2f}).",
        "",
        "| host measurement | value |",
        "|---|---|",
        f"| repeatability: CV of the median over {args.repeats} fresh interpreters, median of "
        f"{len(repeat_cvs)} models (worst) | {np.median(repeat_cvs):.2%} ({max(repeat_cvs):.2%}) |",
        f"| wall-clock over CPU time of an invoke, median of the same models (1.00: nothing pre-empted "
        f"it) | {np.median(preemption):.2f} |",
        f"| within-run CV of the timed runs (at least {args.runs} and {args.min_seconds:g} s), median over "
        "the evaluation models | "
        f"{np.median([row['cv'] for row in evaluation_rows]):.2%} |",
        f"| end-to-end measurements per minute (build, convert, {args.warmup_runs} warm-up and the timed "
        "runs) | "
        f"{60 * measured_count / (calibration_seconds + evaluation_seconds):.1f} |",
        f"| table entries profiled (space has {space_entries}) | "
        + (
            f"{profiled} in {profile_seconds / 60:.1f} min ({profile_seconds / profiled:.2f} s each) |"
            if profiled
            else f"none: {args.table} already held them |"
        ),
        f"| lookup-table predictions per second, from hyperparameter values | {from_values:,.0f} |",
        f"| lookup-table predictions per second, from an ArchSpec | {from_arch:,.0f} |",
        f"| lookup-table predictions per second, from a built model (`measure`) | {from_model:,.0f} |",
        "",
        f"Host: {host_info['cpu']} ({host_info['cpu_count']} cores), {platform.system()}, LiteRT "
        f"{host_info['litert']}, TensorFlow {host_info['tensorflow']}, one thread; load average "
        f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; run took {elapsed / 60:.1f} min.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    if args.json:
        atomic_write_json(
            args.json,
            {
                "resolution": args.resolution,
                "seed": args.seed,
                "calibration": calibration.to_dict(),
                "macs_fit": {"scale_ms_per_mac": macs_scale, "intercept_ms": macs_intercept},
                "evaluation": evaluation_rows,
                "repeat_cvs": repeat_cvs,
                "wall_over_cpu_time": preemption,
                "host": host_info,
            },
        )
    if from_arch < 1000:
        # The tuner asks for one prediction per trial, a filter for thousands: a regression here matters.
        sys.exit(
            f"Lookup-table predictions are too slow: {from_arch:.0f}/s from an ArchSpec (expected > 1000/s)."
        )


if __name__ == "__main__":
    main()
