"""`keras-mnas bench`: the latency of a .keras or .tflite model, on this CPU or on phones."""

from __future__ import annotations

import argparse
import os

from keras_mnas.cli import _format as fmt
from keras_mnas.cli._common import EXIT_OK, CliError, say
from keras_mnas.cli._measure import (
    add_int8_options,
    add_measure_options,
    calibration_data,
    check_int8_options,
    describe_source,
    make_source,
)


def register(commands: argparse._SubParsersAction) -> None:
    """Adds the `bench` command and its options to the `keras-mnas` parser's subcommands."""
    bench = commands.add_parser(
        "bench",
        help="time a .keras or .tflite model on this CPU or on phones",
        description="Time a model: converted to TFLite (a .keras file) or as it is (a .tflite file), on this "
        "machine's CPU with LiteRT or on Android phones with benchmark_model.",
    )
    bench.add_argument("model", metavar="MODEL", help="a .keras or .tflite file")
    add_int8_options(
        bench,
        int8_help="(.keras) full-integer post-training quantization; calibrated on random inputs unless "
        "--calibration-data is given (random calibration is fine for latency only)",
    )
    bench.add_argument("--json", action="store_true", help="print the full result as JSON")
    add_measure_options(bench, title="where and how to measure")
    bench.set_defaults(handler=run)



def _load_keras_model(path: str):
    import zipfile

    import keras

    if not zipfile.is_zipfile(path):
        raise CliError(f"{path} is not a Keras model file: a .keras file is a zip archive (model.save(...)).")
    try:
        return keras.saving.load_model(path, compile=False)
    except (
        Exception
    ) as error:  # Keras raises many kinds for a corrupt or foreign file: all mean "unreadable".
        raise CliError(f"Cannot load the Keras model {path}: {type(error).__name__}: {error}") from error


def _tflite_quantization(tflite_bytes: bytes) -> str:
    from keras_mnas.tflite import tflite_op_summary

    try:
        summary = tflite_op_summary(tflite_bytes)
    except ValueError as error:
        raise CliError(f"Not a readable TFLite model: {error}") from error
    dtypes = {tensor["dtype"] for tensor in summary["inputs"]}
    return "int8" if dtypes & {"int8", "uint8"} else "float32"


def _provenance_lines(result) -> list[tuple[str, str]]:
    p = result.provenance
    lines = []
    if result.source == "host":
        lines.append(
            ("machine", f"{p.get('cpu', '?')} ({p.get('machine', '?')}, {p.get('cpu_count', '?')} CPUs)")
        )
        lines.append(("software", f"LiteRT {p.get('litert', '?')}, TensorFlow {p.get('tensorflow', '?')}"))
        lines.append(("timing", f"{p.get('delegate', '')}; {p.get('timer', '')}"))
        if p.get("per_repeat_median_ms") and len(p["per_repeat_median_ms"]) > 1:
            medians = ", ".join(f"{m:.4g}" for m in p["per_repeat_median_ms"])
            lines.append(("per repeat", f"{medians} ms"))
    else:
        lines.append(
            (
                "phone",
                f"{p.get('manufacturer', '')} {p.get('device_model', '')} ({p.get('soc', '?')}), Android "
                f"{p.get('android_release', '?')} (SDK {p.get('sdk', '?')}), serial {p.get('serial', '?')} "
                f"on {p.get('adb_server', '?')}".strip(),
            )
        )
        lines.append(("build", str(p.get("fingerprint", "?"))))
        cores = ",".join(str(c) for c in p.get("cores") or []) or "any"
        lines.append(
            (
                "pinning",
                f"core mask {p.get('core_mask') or 'none'} (CPUs {cores}), {p.get('threads', '?')} "
                f"thread(s), delegate {p.get('delegate', '?')}",
            )
        )
        lines.append(
            (
                "binary",
                f"{p.get('binary_path', '?')} ({p.get('binary_abi', '?')}, sha256 "
                f"{str(p.get('binary_sha256', ''))[:16]}...), output format "
                f"{p.get('output_generation', '?')}",
            )
        )
        per_process = ", ".join(f"{m:.4g}" for m in p.get("per_process_ms") or [])
        lines.append(("per process", f"{per_process} ms ({p.get('per_process_figure', '?')} of each)"))
        before = (p.get("thermal_before") or {}).get("cpu_max_c")
        after = (p.get("thermal_after") or {}).get("cpu_max_c")
        waits = sum(p.get("thermal_wait_s") or [])
        lines.append(
            (
                "thermal",
                f"CPU {fmt.number(before, 3) or '?'} C before, {fmt.number(after, 3) or '?'} C after; waited "
                f"{waits:.1f} s to cool",
            )
        )
        if "pool" in p:
            pool = p["pool"]
            lines.append(("pool", f"{pool['attempts']} attempt(s), failed on {pool['failed_on'] or 'none'}"))
    return lines


def run(args: argparse.Namespace) -> int:
    """Times the model and prints the figures and where they were measured."""
    path = args.model
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".keras", ".tflite"):
        raise CliError(f"MODEL must be a .keras or .tflite file; received {path!r}.")
    if not os.path.isfile(path):
        raise CliError(f"No such model file: {path}")
    check_int8_options(args)
    source = make_source(args)
    quantization = "int8" if args.int8 else "float32"
    if suffix == ".tflite":
        if args.int8:
            raise CliError(
                "--int8 quantizes a .keras model while converting it; a .tflite file is already converted "
                "and is timed as it is."
            )
        try:
            with open(path, "rb") as f:
                tflite_bytes = f.read()
        except OSError as error:
            raise CliError(f"Cannot read {path}: {error}") from error
        quantization = _tflite_quantization(tflite_bytes)
        say(f"Timing {path} ({fmt.size(len(tflite_bytes))}, {quantization}) on {describe_source(source)}...")
        result = source.measure_tflite(
            tflite_bytes, quantization=quantization, extra_provenance={"model": os.path.basename(path)}
        )
    else:
        say(f"Loading {path}...")
        model = _load_keras_model(path)
        data = calibration_data(args.calibration_data, model) if args.int8 else None
        say(f"Converting ({quantization}) and timing on {describe_source(source)}...")
        result = source.measure(model, quantization=quantization, representative_data=data)

    if args.json:
        fmt.print_json({"model": path, **result.to_dict(), "unstable": result.unstable})
        return EXIT_OK
    stability = "UNSTABLE: above 5%, distrust this figure" if result.unstable else "stable"
    rows = [
        (
            "model",
            f"{path} ({quantization}, {fmt.size(result.tflite_bytes)} TFLite, "
            f"sha256 {result.sha256[:16]}...)",
        ),
        ("source", result.source),
        ("median", f"{result.median_ms:.4g} ms"),
        ("mean", f"{result.mean_ms:.4g} ms"),
        (
            "p90",
            f"{result.p90_ms:.4g} ms"
            + (" (upper bound)" if result.provenance.get("p90_is_upper_bound") else ""),
        ),
        (
            "spread",
            f"{100 * result.spread:.2f}% "
            + ("(5th-95th percentile range, as a cv; " if result.robust_cv is not None else "(cv; ")
            + f"{stability})",
        ),
        ("runs", f"{result.runs} timed, {result.warmup_runs} warm-up, {result.threads} thread(s)"),
        *_provenance_lines(result),
    ]
    width = max(len(key) for key, _ in rows)
    print("\n".join(f"{key.ljust(width)}  {value}" for key, value in rows))
    return EXIT_OK

