"""The lookup-table predictor against measured host latency, beside the host's own noise and mult-adds.

    python benchmarks/latency.py [--resolutions 128,224] [--archs 60] [--calibration 40] [--pool 80]
                                 [--seed 0] [--processes 3] [--choice-processes 1] [--table-dir DIR]
                                 [--markdown out.md] [--json out.json]

For each resolution, draws `--archs` held-out random architectures of the default MnasNet search space
(`MnasSearchSpace`, 1000 classes) with `--seed`, and a pool of `--pool` other ones with another seed.
Profiles the lookup-table entries they all need on this CPU (`HostLatency`). The calibration uses
`--calibration` of the pool, chosen as `keras-mnas lut build` chooses them: half as drawn, the rest a few at
a time where per-kernel fits on bootstrap resamples disagree most (`LatencyLookupTable.choose_calibration`),
on figures from `--choice-processes` fresh processes. Then every file, calibration and held-out alike, is
timed in the same `2 x --processes` fresh processes, each in its own random order, so that a drift of the
machine during the run touches both alike: a measurement is the median of the even ones (`HostLatency` in
each; one process's figure moves by several percent with its memory layout), the re-measurement that of the
odd ones. On the calibration
architectures it fits the table's per-kernel calibration, its two-number line and a line on mult-adds, and
says which of the first two `method="auto"` picks; the pool's first `--calibration` architectures, all
drawn at random, give a second per-kernel calibration to compare.
Then, on the same held-out architectures, side by side:

- **predicted vs measured** for the four predictors;
- **measured vs re-measured**: the same TFLite files timed again in as many other fresh processes, the
  noise floor a predictor is judged against (a prediction cannot agree with one measurement better than a
  second measurement does); and one process against another, the noise of a single-process figure;

each as the share within +-10% and +-5%, Spearman's rank correlation, and the median, 95th-percentile and
worst relative error. It also prints the profiling time, the number of end-to-end measurements the
calibration used, an estimate of profiling and calibrating the whole space, and predictions per second from
hyperparameter values. Prints markdown tables.

With `--table-dir DIR`, the tables are read from and saved to DIR (`lut-host-<resolution>.json`), so a rerun
does not profile again. Timings on a busy machine are slower and noisier: run it on an idle one; the load
average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Imported by every --remeasure process too: a figure is timed as in a search's process, TensorFlow loaded.
# A process with LiteRT alone starts faster, but its figures moved more from one process to the next (4% at
# 128x128 against 2.5%) and drifted apart between groups of processes.
import keras
import numpy as np

from keras_mnas.latency import HostLatency, LatencyLookupTable, convert_to_tflite
from keras_mnas.latency.host import host_provenance
from keras_mnas.latency.lut import fit_line, network_keys, prediction_report
from keras_mnas.search import MnasSearchSpace
from keras_mnas.search.latency_table import predict_candidate
from keras_mnas.utils.io import atomic_write_json

# A different seed for the calibration architectures than for the held-out ones.
_CALIBRATION_SEED_OFFSET = 1000


def _host(args) -> HostLatency:
    return HostLatency(
        runs=args.runs, warmup_runs=args.warmup_runs, min_seconds=args.min_seconds, cache=False
    )


def remeasure(directory: str, args) -> None:
    """Times every `.tflite` file of `directory` and prints `{name: median_ms}` as JSON.

    The files are timed in an order shuffled with `--order-seed`: the machine drifts by a few percent over
    the minutes one process takes, and in a fixed order that drift would bias the files timed last (the
    calibration's, say) against those timed first (the held-out ones).
    """
    host = _host(args)
    names = sorted(name for name in os.listdir(directory) if name.endswith(".tflite"))
    figures = {}
    for index in np.random.default_rng(args.order_seed).permutation(len(names)):
        with open(os.path.join(directory, names[index]), "rb") as f:
            figures[names[index]] = host.measure_tflite(f.read()).median_ms
    print(json.dumps(dict(sorted(figures.items()))))


def accuracy_row(name: str, predicted, measured) -> str:
    report = prediction_report(predicted, measured)
    errors = np.abs(np.asarray(predicted) / np.asarray(measured) - 1)
    rho = "n/a" if report["spearman"] is None else f"{report['spearman']:.3f}"
    return (
        f"| {name} | {report['within_10_percent']:.1%} | {report['within_5_percent']:.1%} | {rho} | "
        f"{report['median_abs_error']:.1%} | {np.quantile(errors, 0.95):.1%} | "
        f"{report['max_abs_error']:.1%} |"
    )


def rate(function, items, seconds=2.0) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for item in items:
            function(item)
        done += len(items)
    return done / (time.perf_counter() - start)


def run_resolution(resolution: int, args) -> tuple[list[str], dict]:
    """Profiles, measures, fits and compares at one resolution; returns the markdown lines and the data."""
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    space = MnasSearchSpace(input_shape=(resolution, resolution, 3))
    network = space.network_kwargs()
    host = _host(args)
    path = os.path.join(args.table_dir, f"lut-host-{resolution}.json") if args.table_dir else None
    if path and os.path.exists(path):
        lut = LatencyLookupTable.load(path, profiler=host)
    else:
        lut = LatencyLookupTable(profiler=host, path=path)

    held_out = space.sample_architectures(args.archs, seed=args.seed)
    # The calibration pool, in random order: its first --calibration architectures are the random
    # calibration; the adaptive one starts from their first half and chooses the rest from the whole pool.
    pool = space.sample_architectures(
        max(args.pool, args.calibration), seed=args.seed + _CALIBRATION_SEED_OFFSET, exclude=held_out
    )

    # 1. Profile the entries these architectures need.
    space_entries = len(space.layer_configs())
    start = time.monotonic()
    profiled = lut.profile_architectures([*pool, *held_out], **network)
    profile_seconds = time.monotonic() - start

    # 2. Convert architectures; time the files end to end in fresh processes (the figure of one process
    # moves with its memory layout: the median of several is the measurement).
    def convert(arch, path):
        keras.backend.clear_session()
        with open(path, "wb") as f:
            f.write(convert_to_tflite(space.build(arch)))
        return {
            "architecture": arch.to_dict(),
            "network": {"input_shape": list(space.input_shape)},
            "lut_ms": lut.lut_ms(arch, **network),
            "macs": space.cost(arch).macs,
        }

    order_seeds: list[int] = []  # one per process started, so that no two processes time in the same order

    def time_in_processes(directory, count):
        """`{file name: [its figure in each process]}`, one fresh process after another."""
        runs = []
        for _ in range(count):
            command = [sys.executable, os.path.abspath(__file__), "--remeasure", directory]
            command += ["--order-seed", str(len(order_seeds))]
            order_seeds.append(len(order_seeds))
            command += ["--runs", str(args.runs), "--warmup-runs", str(args.warmup_runs)]
            command += ["--min-seconds", str(args.min_seconds)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(output))
        return {name: [run[name] for run in runs] for name in runs[0]}

    with tempfile.TemporaryDirectory() as work:
        every_file = os.path.join(work, "all")
        os.makedirs(every_file)
        pool_rows: dict[int, dict] = {}  # pool index -> its row
        first_figures: dict[int, float] = {}  # pool index -> the figure the choice was made on

        def measure_pool(indices):
            indices = [i for i in indices if i not in pool_rows]
            if not indices:
                return
            batch = tempfile.mkdtemp(dir=work)
            for i in indices:
                pool_rows[i] = convert(pool[i], os.path.join(batch, f"pool{i:05d}.tflite"))
            print(f"{resolution}: calibration: measured {len(pool_rows)}", file=sys.stderr, flush=True)
            for name, timings in time_in_processes(batch, args.choice_processes).items():
                first_figures[int(name[4:9])] = float(np.median(timings))
                os.replace(os.path.join(batch, name), os.path.join(every_file, name))

        position = {json.dumps(arch.to_dict(), sort_keys=True): i for i, arch in enumerate(pool)}

        def measure_architectures(archs):
            indices = [position[json.dumps(arch.to_dict(), sort_keys=True)] for arch in archs]
            measure_pool(indices)
            return [first_figures[i] for i in indices]

        # 3. The calibration architectures: the random ones, then the adaptive ones as
        # `LatencyLookupTable.calibrate(pool, count=...)` (and `keras-mnas lut build`) chooses them, measured
        # here in fresh processes. These first figures only choose; every file is timed again below.
        start = time.monotonic()
        measure_pool(range(args.calibration))
        choice = lut.calibrate(
            pool, count=args.calibration, progress=False, measure=measure_architectures, **network
        )
        adaptive = [position[json.dumps(row["architecture"], sort_keys=True)] for row in choice.measurements]
        drawn = sum(row["chosen"] == "as given" for row in choice.measurements)
        choice_seconds = time.monotonic() - start

        held_out_rows = []
        for i, arch in enumerate(held_out):
            held_out_rows.append(convert(arch, os.path.join(every_file, f"held{i:05d}.tflite")))
        print(f"{resolution}: held-out: converted {len(held_out)}", file=sys.stderr, flush=True)
        # 4. Every file, calibration and held-out alike, timed in the same fresh processes: the measurement
        # is the median of the even ones, the re-measurement (the noise floor) that of the odd ones. So a
        # drift of the machine during the run touches the calibration and the held-out figures alike.
        figures = time_in_processes(every_file, 2 * args.processes)
    for i, row in pool_rows.items():
        row["measured_ms"] = float(np.median(figures[f"pool{i:05d}.tflite"][0::2]))
        row["chosen_on_ms"] = first_figures[i]
    for i, row in enumerate(held_out_rows):
        row["process_ms"] = figures[f"held{i:05d}.tflite"]
        row["measured_ms"] = float(np.median(row["process_ms"][0::2]))
        row["remeasured_ms"] = float(np.median(row["process_ms"][1::2]))
    random_rows = [pool_rows[i] for i in range(args.calibration)]
    calibration_rows = [pool_rows[i] for i in adaptive]

    # 5. Fit on calibration architectures only: the random ones for one row, the adaptive ones for the rest.
    lut.fit_calibration(random_rows, method="kernels")
    random_predicted = [lut.predict(arch, **network) for arch in held_out]
    start = time.monotonic()
    line = lut.fit_calibration(calibration_rows, method="line")
    line_predicted = [line.apply(row["lut_ms"]) for row in held_out_rows]
    kernels = lut.fit_calibration(calibration_rows, method="kernels")
    fit_seconds = time.monotonic() - start
    predicted = [lut.predict(arch, **network) for arch in held_out]
    # A sparse table: every third layer entry only the held-out architectures use is dropped, and estimated
    # from its configuration (on_missing="estimate") under the same per-kernel calibration.
    calibration_keys = {
        key for row in calibration_rows for key in network_keys(row["architecture"], **network)
    }
    held_out_keys = {key for arch in held_out for key in network_keys(arch, **network)}
    dropped = sorted(k for k in held_out_keys - calibration_keys if k.startswith("layer:"))[::3]
    data = lut.to_dict()
    for key in dropped:
        del data["entries"][key]
    sparse = LatencyLookupTable.from_dict(data, on_missing="estimate")
    sparse_predicted = [sparse.predict(arch, **network) for arch in held_out]
    chosen = lut.fit_calibration(calibration_rows).method  # what a user's table keeps, saved with it
    macs_scale, macs_intercept = fit_line(
        [row["macs"] for row in calibration_rows], [row["measured_ms"] for row in calibration_rows]
    )
    macs_predicted = [macs_scale * row["macs"] + macs_intercept for row in held_out_rows]
    measured = [row["measured_ms"] for row in held_out_rows]
    figures = zip(predicted, random_predicted, sparse_predicted, line_predicted, macs_predicted, strict=True)
    names = ("predicted_ms", "random_calibration_predicted_ms", "sparse_table_predicted_ms")
    names += ("line_predicted_ms", "macs_predicted_ms")
    for row, values in zip(held_out_rows, figures, strict=True):
        row.update(zip(names, values, strict=True))

    # 6. Prediction speed from hyperparameter values (decode and look up, nothing built).
    values = space.sample_values(args.archs, seed=args.seed)  # the held-out architectures' values
    per_second = rate(lambda v: predict_candidate(lut, space, v), values)
    if path:
        lut.save(path)

    per_entry = profile_seconds / profiled if profiled else float("nan")
    per_measurement = choice_seconds / max(len(pool_rows), 1)
    whole_space_minutes = (space_entries * per_entry + len(calibration_rows) * per_measurement) / 60
    n = len(held_out_rows)
    lines = [
        f"### {resolution}x{resolution}",
        "",
        f"{n} held-out random architectures of the MnasNet space (1000 classes, seed {args.seed}). The "
        f"calibrations are fitted on {len(calibration_rows)} other architectures measured end to end, "
        f"{drawn} drawn at random "
        f"and the rest chosen adaptively from a pool of {len(pool)} (where bootstrap fits disagree most); "
        f"one row uses {len(random_rows)} random ones instead. "
        f'`method="auto"` picks the {"per-kernel calibration" if chosen == "kernels" else "line"} here.',
        "",
        "| predicted or re-measured, against measured | within +-10% | within +-5% | Spearman | median error "
        "| 95th percentile | worst |",
        "|---|---|---|---|---|---|---|",
        accuracy_row("lookup table, per-kernel calibration (adaptive)", predicted, measured),
        accuracy_row(
            f"lookup table, per-kernel calibration on {len(random_rows)} random architectures",
            random_predicted,
            measured,
        ),
        accuracy_row(
            f"lookup table, per-kernel calibration, {len(dropped)} of its {len(held_out_keys)} entries "
            'estimated (`on_missing="estimate"`)',
            sparse_predicted,
            measured,
        ),
        accuracy_row("lookup table, line on the sum", line_predicted, measured),
        accuracy_row("mult-adds, line", macs_predicted, measured),
        accuracy_row(
            f"re-measured: the median of {args.processes} other fresh processes (noise floor)",
            [r["remeasured_ms"] for r in held_out_rows],
            measured,
        ),
        accuracy_row(
            "one fresh process against another (a single process's noise)",
            [r["process_ms"][1] for r in held_out_rows],
            [r["process_ms"][0] for r in held_out_rows],
        ),
        "",
        "| cost | value |",
        "|---|---|",
        (
            f"| table entries profiled for these architectures | {profiled} in "
            f"{profile_seconds / 60:.1f} min ({per_entry:.2f} s each) |"
            if profiled
            else f"| table entries profiled for these architectures | none: {path} already held them |"
        ),
        f"| end-to-end measurements the calibration used | {len(calibration_rows)}, chosen on the median of "
        f"{args.choice_processes} process(es) ({per_measurement:.1f} s each with its conversion; fit "
        f"{fit_seconds:.1f} s); {len(pool_rows)} with the random calibration's; all then timed again with "
        "the held-out ones |",
        f"| profiling the whole space ({space_entries} entries) and calibrating, estimated from the two "
        f"rows above | "
        + (f"{whole_space_minutes:.0f} min |" if profiled else "n/a (nothing profiled in this run) |"),
        f"| predictions per second, from hyperparameter values | {per_second:,.0f} |",
        f"| measured latencies of the held-out architectures | {min(measured):.2f}-{max(measured):.2f} ms "
        f"(median {np.median(measured):.2f}) |",
        f"| load average before / after; minutes this resolution took | {load_before:.2f} / "
        f"{os.getloadavg()[0]:.2f}; {(time.monotonic() - started) / 60:.1f} |",
        "",
    ]
    data = {
        "resolution": resolution,
        "calibration": kernels.to_dict(),
        "random_calibration": random_rows,
        "auto_method": chosen,
        "line": {"scale": line.scale, "intercept_ms": line.intercept_ms},
        "macs_fit": {"scale_ms_per_mac": macs_scale, "intercept_ms": macs_intercept},
        "held_out": held_out_rows,
        "predictions_per_second": per_second,
        "profile_seconds": profile_seconds,
        "profiled": profiled,
    }
    if per_second < 2000:
        # The tuner asks for one prediction per trial, a filter for thousands: a regression here matters.
        print(
            f"Predictions are too slow: {per_second:.0f}/s from values (expected >= 2000/s).", file=sys.stderr
        )
        data["too_slow"] = True
    return lines, data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="128,224", help="input sizes, comma-separated (128,224)")
    parser.add_argument("--archs", type=int, default=60, help="held-out architectures per resolution (60)")
    parser.add_argument("--calibration", type=int, default=40, help="calibration architectures (40)")
    parser.add_argument(
        "--pool", type=int, default=80, help="random architectures the adaptive calibration chooses from (80)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out architectures (0)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per measurement (50)")
    parser.add_argument("--warmup-runs", type=int, default=10, help="untimed runs per measurement (10)")
    parser.add_argument("--min-seconds", type=float, default=0.1, help="timed runs last at least this long")
    parser.add_argument(
        "--processes", type=int, default=3, help="fresh processes whose median is a measurement (3)"
    )
    parser.add_argument(
        "--choice-processes",
        type=int,
        default=1,
        help="fresh processes whose median the adaptive calibration chooses on (1)",
    )
    parser.add_argument("--table-dir", help="directory of lookup-table JSON files to reuse and extend")
    parser.add_argument("--markdown", help="also write the tables to this file")
    parser.add_argument("--json", help="write every architecture's figures to this JSON file")
    parser.add_argument("--remeasure", help=argparse.SUPPRESS)  # a fresh process timing a directory
    parser.add_argument("--order-seed", type=int, default=0, help=argparse.SUPPRESS)  # its files' order
    args = parser.parse_args(argv)
    if args.remeasure:
        remeasure(args.remeasure, args)
        return
    try:
        resolutions = [int(r) for r in args.resolutions.split(",")]
    except ValueError:
        parser.error(f"--resolutions expects comma-separated integers; received {args.resolutions!r}")
    counts = (args.runs, args.processes, args.choice_processes)
    if args.archs < 2 or args.calibration < 4 or min(counts) < 1 or min(resolutions) < 32:
        parser.error(
            "expected --archs >= 2, --calibration >= 4, --runs, --processes and --choice-processes >= 1 "
            "and resolutions >= 32"
        )
    if args.table_dir:
        os.makedirs(args.table_dir, exist_ok=True)

    started = time.monotonic()
    host_info = host_provenance()
    lines = [
        "Lookup-table predictor against measured host latency (LiteRT, one thread), on held-out "
        "architectures.",
        "",
    ]
    results = []
    for resolution in resolutions:
        section, data = run_resolution(resolution, args)
        lines += section
        results.append(data)
    lines.append(
        f"Host: {host_info['cpu']} ({host_info['cpu_count']} cores), {platform.system()}, LiteRT "
        f"{host_info['litert']}, TensorFlow {host_info['tensorflow']}; the run took "
        f"{(time.monotonic() - started) / 60:.1f} min."
    )
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    if args.json:
        atomic_write_json(args.json, {"seed": args.seed, "host": host_info, "resolutions": results})
    if any(data.get("too_slow") for data in results):
        sys.exit("Predictions from hyperparameter values are slower than 2,000 per second.")


if __name__ == "__main__":
    main()
