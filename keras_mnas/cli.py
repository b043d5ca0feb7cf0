"""The `keras-mnas` command: phones, latency measurements, lookup tables, search results and exports.

```text
keras-mnas devices [--adb-host H] [--adb-port P] [--json]
keras-mnas bench MODEL.keras|MODEL.tflite [--device SERIAL ...] [--binary PATH] [--int8] [--json]
keras-mnas lut build TABLE.json [--space SPACE] [--archs N] [--calibration K] [--device SERIAL ...]
keras-mnas lut eval TABLE.json [--space SPACE] [--archs N] [--json]
keras-mnas results DIR [--project NAME] [--sort reward|latency|accuracy] [--json]
keras-mnas export DIR --trial ID [--project NAME] [--out PATH] [--int8]
```

Results go to stdout (a table, or JSON with `--json`); progress and warnings go to stderr. Expected failures
(no adb server, no phone, an unknown serial, a missing or wrong-ABI `benchmark_model`, an unreadable model, a
directory that is not a search, an unknown trial) print one `keras-mnas: error: ...` line and exit with
status 1, without a traceback (`--debug` shows it); usage errors exit with status 2.

Example:

```python
from keras_mnas.cli import main

status = main(["results", "runs", "--project", "digits", "--sort", "reward"])
```
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

#: Exit statuses.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Random inputs used to calibrate int8 quantization when no data is given: enough for the converter to
# choose ranges, which only the model's accuracy (not its latency) depends on.
_RANDOM_CALIBRATION_SAMPLES = 16


class CliError(Exception):
    """An expected failure the command reports in one line (exit status 1)."""


def _say(message: str) -> None:
    """Progress and notes: stderr, so that stdout stays a clean table or JSON."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Formatting.


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain text table, columns left-aligned and separated by two spaces."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def _number(value: float | None, digits: int = 4) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return f"{value:.{digits}g}"


def _count(value: float | None) -> str | None:
    """A count with an SI suffix: 2706 -> 2.71K, 312_000_000 -> 312M."""
    if value is None:
        return None
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.0f}"


def _size(num_bytes: int) -> str:
    if num_bytes >= 1e6:
        return f"{num_bytes / 1e6:.2f} MB"
    return f"{num_bytes / 1e3:.1f} KB"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# --------------------------------------------------------------------------------------------------
# Latency sources from the command line.


def _add_measure_options(parser: argparse.ArgumentParser, *, title: str) -> None:
    from keras_mnas.latency.android import DELEGATES

    group = parser.add_argument_group(title)
    group.add_argument(
        "--device",
        action="append",
        metavar="SERIAL",
        help="measure on this Android phone (adb serial, or SERIAL@HOST:PORT for a phone plugged into "
        "another machine); repeat the option for a pool of phones. Default: this machine's CPU.",
    )
    group.add_argument("--adb-host", help="host of the adb server the phones are plugged into (127.0.0.1)")
    group.add_argument("--adb-port", type=int, help="port of that adb server (5037)")
    group.add_argument(
        "--binary",
        metavar="PATH",
        help="the benchmark_model executable built for the phone's ABI (needed with --device)",
    )
    group.add_argument("--threads", type=int, help="interpreter threads (1)")
    group.add_argument("--runs", type=int, help="timed runs per process (50)")
    group.add_argument("--warmup-runs", type=int, help="untimed runs first (10)")
    group.add_argument(
        "--min-seconds",
        type=float,
        help="keep timing past --runs until this many seconds, per process (0.1, as benchmark_model's "
        "--min_secs)",
    )
    group.add_argument(
        "--repeats", type=int, help="fresh processes (interpreters) per measurement (host 1, phone 3)"
    )
    group.add_argument("--delegate", choices=DELEGATES, help="phone only: the delegate (xnnpack)")
    group.add_argument(
        "--core-mask",
        help="phone only: 'auto' (the fastest cores, default), 'none' (no taskset) or a hex CPU mask "
        "such as 80",
    )


def _pick(explicit: Any, saved: dict[str, Any], key: str) -> Any:
    return explicit if explicit is not None else saved.get(key)


def _pick_min_seconds(args: argparse.Namespace, saved: dict[str, Any]) -> float | None:
    # Tables profiled before sources had a minimum time were timed for exactly --runs runs.
    if args.min_seconds is None and saved and "min_seconds" not in saved:
        return 0.0
    return _pick(args.min_seconds, saved, "min_seconds")


def _options(pairs: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in pairs.items() if value is not None}


def _make_source(args: argparse.Namespace, saved: dict[str, Any] | None = None):
    """The latency source the options describe; `saved` is a lookup table's source config to default to.

    Options given on the command line win; settings they leave out come from `saved` (so that `lut eval`
    measures exactly as the table was profiled), then from the sources' own defaults.
    """
    saved = dict(saved or {})
    saved_name = saved.get("name")
    devices = list(args.device or [])
    if not devices and saved_name == "android" and saved.get("serial"):
        devices = [saved["serial"]]
    elif not devices and saved_name == "android-pool":
        devices = list(saved.get("devices") or [])
        if not devices:
            raise CliError(
                "The table was profiled on every phone of adb server(s) "
                f"{', '.join(saved.get('adb_servers') or [])}: name the phones with --device SERIAL."
            )
        phone_settings = saved.get("phone_settings")
        saved = dict(phone_settings) if isinstance(phone_settings, dict) else {}
        saved["name"] = "android-pool"

    if not devices:
        if args.binary or args.delegate or args.core_mask:
            raise CliError("--binary, --delegate and --core-mask apply to phones: add --device SERIAL.")
        from keras_mnas.latency import HostLatency

        return HostLatency(
            **_options(
                {
                    "threads": _pick(args.threads, saved, "threads"),
                    "runs": _pick(args.runs, saved, "runs"),
                    "warmup_runs": _pick(args.warmup_runs, saved, "warmup_runs"),
                    "repeats": _pick(args.repeats, saved, "repeats"),
                    "min_seconds": _pick_min_seconds(args, saved),
                    "conversion": saved.get("conversion"),
                    "calibration_samples": saved.get("calibration_samples"),
                    "seed": saved.get("seed"),
                }
            )
        )

    if not args.binary:
        raise CliError(
            "Measuring on a phone needs --binary PATH: TensorFlow Lite's benchmark_model built for the "
            "phone's ABI (`adb shell getprop ro.product.cpu.abi`; e.g. android_aarch64_benchmark_model for "
            "arm64-v8a). See docs/phones.md."
        )
    core_mask = args.core_mask
    if core_mask is not None and core_mask.lower() == "none":
        core_mask = "none"
    phone_options = _options(
        {
            "threads": _pick(args.threads, saved, "threads"),
            "runs": _pick(args.runs, saved, "runs"),
            "warmup_runs": _pick(args.warmup_runs, saved, "warmup_runs"),
            "repeats": _pick(args.repeats, saved, "repeats"),
            "min_seconds": _pick_min_seconds(args, saved),
            "delegate": _pick(args.delegate, saved, "delegate"),
            "core_mask": _pick(core_mask, saved, "core_mask"),
            "extra_flags": saved.get("extra_flags"),
            "max_thermal_status": saved.get("max_thermal_status"),
            "max_temperature_c": saved.get("max_temperature_c"),
            "conversion": saved.get("conversion"),
            "calibration_samples": saved.get("calibration_samples"),
        }
    )
    if phone_options.get("core_mask") == "none" or (
        core_mask is None and "core_mask" in saved and saved["core_mask"] is None
    ):
        phone_options["core_mask"] = None  # no taskset: given as 'none', or recorded so in the table
    server = _options({"adb_host": args.adb_host, "adb_port": args.adb_port})
    if len(devices) == 1 and "@" not in devices[0] and saved.get("name") != "android-pool":
        from keras_mnas.latency import AndroidLatency

        return AndroidLatency(devices[0], binary=args.binary, **server, **phone_options)
    from keras_mnas.latency import AndroidDevicePool

    return AndroidDevicePool(devices, binary=args.binary, **server, **phone_options)


def _describe_source(source) -> str:
    config = source.config()
    name = config.get("name")
    if name == "host":
        # Timing goes on past `runs` for `min_seconds`, so both bound the work (old tables lack the latter).
        floor = f" and {config['min_seconds']:g} s" if config.get("min_seconds") else ""
        return (
            f"host CPU ({config['threads']} thread(s), at least {config['runs']} runs{floor} "
            f"x {config['repeats']} repeat(s))"
        )
    if name == "android":
        return f"phone {config['serial'] or '(the only one connected)'}"
    if name == "android-pool":
        return f"phones {', '.join(config.get('devices') or [])}"
    return str(name)


def _random_inputs(shape: Sequence[int], count: int = _RANDOM_CALIBRATION_SAMPLES, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)


def _calibration_data(path: str | None, model):
    """int8 calibration samples: the given .npy file, else random inputs (said loudly)."""
    import numpy as np

    from keras_mnas.latency.tflite import model_input_specs

    specs = model_input_specs(model)
    if len(specs) != 1:
        raise CliError(f"--int8 handles single-input models; this one has {len(specs)} inputs.")
    shape, _ = specs[0]
    if path is None:
        _say(
            f"int8: calibrating the quantization on {_RANDOM_CALIBRATION_SAMPLES} random inputs of shape "
            f"{tuple(shape)}. Random-data calibration is good for measuring latency only: the int8 model's "
            "accuracy is meaningless. Pass --calibration-data samples.npy (real inputs) for a usable int8 "
            "model."
        )
        return _random_inputs(shape)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CliError(f"Cannot read --calibration-data {path}: {error}") from error
    if not isinstance(data, np.ndarray) or data.shape[1:] != tuple(shape):
        raise CliError(
            f"--calibration-data must hold an array of samples of shape (N, {', '.join(map(str, shape))}) "
            f"matching the model's input; {path} holds shape {getattr(data, 'shape', None)}."
        )
    _say(f"int8: calibrating the quantization on {min(len(data), 100)} samples of {path}.")
    return data


# --------------------------------------------------------------------------------------------------
# keras-mnas devices


def _cmd_devices(args: argparse.Namespace) -> int:
    from keras_mnas.latency.android import DEFAULT_ADB_HOST, DEFAULT_ADB_PORT, list_devices

    host = args.adb_host or DEFAULT_ADB_HOST
    port = args.adb_port or DEFAULT_ADB_PORT
    infos = list_devices(host, port, timeout_s=args.timeout)
    if args.json:
        _print_json([info.to_dict() for info in infos])
    if not infos:
        raise CliError(
            f"No phone on adb server {host}:{port}. Plug one in with USB debugging on and accept the "
            "'Allow USB debugging?' prompt (see docs/phones.md)."
        )
    if args.json:
        return EXIT_OK
    rows = []
    for info in infos:
        thermal = info.thermal
        temperature = None
        if thermal is not None:
            parts = []
            if thermal.cpu_max_c is not None:
                parts.append(f"{thermal.cpu_max_c:.1f} C")
            if thermal.status is not None:
                parts.append(f"status {thermal.status}")
            temperature = ", ".join(parts) or None
        reason = (info.error or "").removeprefix("too hot: ")
        health = f"{info.health}: {reason}" if reason else info.health
        rows.append(
            [
                info.serial,
                info.model or None,
                info.soc or None,
                info.sdk,
                info.abi or None,
                ",".join(str(c) for c in info.big_cores) or None,
                temperature,
                health,
            ]
        )
    print(_table(rows, ["SERIAL", "MODEL", "SOC", "SDK", "ABI", "BIG CORES", "TEMPERATURE", "HEALTH"]))
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# keras-mnas bench


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
    from keras_mnas.latency.tflite import tflite_op_summary

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
                f"CPU {_number(before, 3) or '?'} C before, {_number(after, 3) or '?'} C after; waited "
                f"{waits:.1f} s to cool",
            )
        )
        if "pool" in p:
            pool = p["pool"]
            lines.append(("pool", f"{pool['attempts']} attempt(s), failed on {pool['failed_on'] or 'none'}"))
    return lines


def _cmd_bench(args: argparse.Namespace) -> int:
    path = args.model
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".keras", ".tflite"):
        raise CliError(f"MODEL must be a .keras or .tflite file; received {path!r}.")
    if not os.path.isfile(path):
        raise CliError(f"No such model file: {path}")
    if args.calibration_data and not args.int8:
        raise CliError("--calibration-data calibrates int8 quantization: add --int8.")
    source = _make_source(args)
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
        _say(f"Timing {path} ({_size(len(tflite_bytes))}, {quantization}) on {_describe_source(source)}...")
        result = source.measure_tflite(
            tflite_bytes, quantization=quantization, extra_provenance={"model": os.path.basename(path)}
        )
    else:
        _say(f"Loading {path}...")
        model = _load_keras_model(path)
        data = _calibration_data(args.calibration_data, model) if args.int8 else None
        _say(f"Converting ({quantization}) and timing on {_describe_source(source)}...")
        result = source.measure(model, quantization=quantization, representative_data=data)

    if args.json:
        _print_json({"model": path, **result.to_dict(), "unstable": result.unstable})
        return EXIT_OK
    stability = "UNSTABLE: above 5%, distrust this figure" if result.unstable else "stable"
    rows = [
        (
            "model",
            f"{path} ({quantization}, {_size(result.tflite_bytes)} TFLite, sha256 {result.sha256[:16]}...)",
        ),
        ("source", result.source),
        ("median", f"{result.median_ms:.4g} ms"),
        ("mean", f"{result.mean_ms:.4g} ms"),
        (
            "p90",
            f"{result.p90_ms:.4g} ms"
            + (" (upper bound)" if result.provenance.get("p90_is_upper_bound") else ""),
        ),
        ("cv", f"{100 * result.cv:.2f}%"),
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


# --------------------------------------------------------------------------------------------------
# Search spaces and random architectures.


def _space_from_option(spec: str | None, project: str | None, resolution: int | None):
    """The search space `--space` names: a JSON file of MnasSearchSpace settings, or a search directory."""
    from keras_mnas.search.space import MnasSearchSpace

    if spec is None:
        if project is not None:
            raise CliError("--project selects a search project of --space DIR: add --space.")
        space = MnasSearchSpace()
    elif os.path.isdir(spec):
        from keras_mnas.search.project import SearchProject, SearchProjectError

        try:
            space = SearchProject.open(spec, project).space
        except SearchProjectError as error:
            raise CliError(str(error)) from error
        if space is None:
            raise CliError(f"The search in {spec} recorded no MnasSearchSpace.")
    else:
        from keras_mnas.utils.io import read_json

        try:
            settings = read_json(spec)
        except (OSError, ValueError) as error:
            raise CliError(f"Cannot read the search space file {spec}: {error}") from error
        if not isinstance(settings, dict):
            raise CliError(
                f"{spec} must hold a JSON object of MnasSearchSpace settings, e.g. "
                '{"input_shape": [96, 96, 3], "classes": 10}.'
            )
        settings = dict(settings)
        if "skeleton" in settings:
            settings["skeleton"] = [tuple(row) for row in settings["skeleton"]]
        if "fixed_blocks" in settings and isinstance(settings["fixed_blocks"], dict):
            settings["fixed_blocks"] = {int(i): block for i, block in settings["fixed_blocks"].items()}
        if "input_shape" in settings:
            settings["input_shape"] = tuple(settings["input_shape"])
        try:
            space = MnasSearchSpace(**settings)
        except TypeError as error:
            raise CliError(f"{spec}: not a MnasSearchSpace setting ({error}).") from error
    if resolution is not None:
        config = space.get_config()
        config["input_shape"] = [resolution, resolution, config["input_shape"][2]]
        space = MnasSearchSpace.from_config(config)
    return space


def _space_and_network(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The space of `--space` and how the search builds its candidates, as `build_model` keyword arguments.

    `include_preprocessing` is a search project's recorded `MnasHyperModel` setting, else
    `--include-preprocessing`; a flag that contradicts the recording is refused.
    """
    space = _space_from_option(args.space, args.project, args.resolution)
    include_preprocessing = args.include_preprocessing
    if args.space is not None and os.path.isdir(args.space):
        from keras_mnas.search.project import SearchProject

        recorded = SearchProject.open(args.space, args.project).build_settings.get("include_preprocessing")
        if recorded is not None and include_preprocessing not in (None, recorded):
            raise CliError(
                f"The search in {args.space} built its candidates with include_preprocessing={recorded}; "
                f"--{'' if include_preprocessing else 'no-'}include-preprocessing contradicts it. Leave "
                "the option out."
            )
        if recorded is not None:
            include_preprocessing = recorded
    network = {
        "input_shape": space.input_shape,
        "classes": space.classes,
        "depth_multiplier": space.depth_multiplier,
        "include_preprocessing": bool(include_preprocessing),
    }
    return space, network


# --------------------------------------------------------------------------------------------------
# keras-mnas lut build / eval


def _load_table(path: str, **kwargs):
    from keras_mnas.latency import LatencyLookupTable

    try:
        return LatencyLookupTable.load(path, **kwargs)
    except FileNotFoundError:
        raise CliError(f"No latency table at {path}: make one with `keras-mnas lut build {path}`.") from None
    except (OSError, ValueError) as error:
        raise CliError(f"Cannot use the latency table {path}: {error}") from error


def _calibration_summary(table) -> str:
    calibration = table.calibration
    if calibration is None:
        return "uncalibrated (sum of entries plus one baseline)"
    errors = [abs(e) for e in calibration.relative_errors]
    worst = f", in-sample errors up to {100 * max(errors):.1f}%" if errors else ""
    return (
        f"calibrated on {len(calibration.measurements)} architectures: measured = "
        f"{calibration.scale:.4g} x sum {'+' if calibration.intercept_ms >= 0 else '-'} "
        f"{abs(calibration.intercept_ms):.4g} ms{worst}"
    )


class _PerMeasurementWarnings:
    """Holds back the latency sources' per-measurement warnings (unless --verbose) while a table is made.

    Profiling makes hundreds of measurements of tiny models; one "unstable" line each would bury the
    progress. The commands report the unstable share once at the end instead.
    """

    def __init__(self, verbose: bool):
        self.logger = logging.getLogger("keras_mnas.latency")
        self.verbose = verbose
        self.level = self.logger.level

    def __enter__(self) -> _PerMeasurementWarnings:
        if not self.verbose:
            self.logger.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.setLevel(self.level)


def _unstable_entries(table) -> list[str]:
    """Keys of the table's entries measured with a spread above 5% (as `LatencyResult.unstable` judges)."""
    from keras_mnas.latency.base import is_unstable, judged_spread

    return [
        key
        for key, entry in table.to_dict()["entries"].items()
        if is_unstable(judged_spread(entry.get("cv", 0.0), entry.get("robust_cv")))
    ]


def _cmd_lut_build(args: argparse.Namespace) -> int:
    with _PerMeasurementWarnings(args.verbose):
        return _lut_build(args)


def _cmd_lut_eval(args: argparse.Namespace) -> int:
    with _PerMeasurementWarnings(args.verbose):
        return _lut_eval(args)


def _lut_build(args: argparse.Namespace) -> int:
    from keras_mnas.latency import LatencyLookupTable

    if args.archs is not None and args.archs < 1:
        raise CliError(f"--archs must be at least 1; received {args.archs}.")
    if args.calibration < 0 or args.calibration == 1:
        raise CliError(
            "--calibration needs 0 (none) or at least 2 architectures (a scale and an intercept are "
            f"fitted); received {args.calibration}."
        )
    space, network = _space_and_network(args)
    source = _make_source(args)
    quantization = "int8" if args.int8 else "float32"
    if os.path.exists(args.table):
        table = _load_table(args.table, profiler=source)
        if table.quantization != quantization:
            raise CliError(
                f"{args.table} holds {table.quantization} timings; this run asks for {quantization}. Use "
                "another file."
            )
        _say(f"Extending {args.table} ({len(table)} entries).")
    else:
        table = LatencyLookupTable(profiler=source, quantization=quantization, path=args.table)
    _say(f"Search space: {space!r}. Measuring on {_describe_source(source)}.")

    start = time.monotonic()
    drawn = space.sample_architectures((args.archs or 0) + args.calibration, seed=args.seed)
    calibration_archs = drawn[: args.calibration]
    try:
        if args.archs is None:
            from keras_mnas.search.latency_table import search_space_configs

            configs = search_space_configs(space, include_preprocessing=network["include_preprocessing"])
            _say(
                f"Profiling every layer configuration of the space: {len(table.missing(configs))} of "
                f"{len(configs)} to measure."
            )
            profiled = table.profile(configs, progress=True)
        else:
            profile_archs = drawn[args.calibration :]
            if len(profile_archs) < args.archs:
                _say(
                    f"The space has only {len(drawn)} distinct architectures; profiling {len(profile_archs)}."
                )
            from keras_mnas.latency import network_configs

            configs = [
                c for arch in profile_archs + calibration_archs for c in network_configs(arch, **network)
            ]
            _say(
                f"Profiling the layer configurations of {len(profile_archs) + len(calibration_archs)} random "
                f"architectures: {len(table.missing(configs))} to measure."
            )
            profiled = table.profile(configs, progress=True)
        if calibration_archs:
            if len(calibration_archs) < 2:
                raise CliError(
                    "The space has fewer than two distinct architectures: nothing to calibrate on."
                )
            _say(f"Calibrating on {len(calibration_archs)} random architectures measured end to end...")
            table.calibrate(calibration_archs, progress=True, **network)
    except KeyboardInterrupt:
        if table.baseline is not None:
            table.save(args.table)
            _say(
                f"Interrupted: the {len(table)} entries measured so far are saved in {args.table}; run the "
                "same command again to continue."
            )
        raise
    table.save(args.table)
    elapsed = time.monotonic() - start
    summary = {
        "table": args.table,
        "entries": len(table),
        "profiled_now": profiled,
        "quantization": table.quantization,
        "source": table.source_config,
        "baseline_ms": (table.baseline or {}).get("median_ms"),
        "calibration": table.calibration.to_dict() if table.calibration else None,
        "unstable_entries": _unstable_entries(table),
        "seconds": round(elapsed, 1),
    }
    if args.json:
        _print_json(summary)
        return EXIT_OK
    print(
        f"Wrote {args.table}: {len(table)} entries ({profiled} measured now), {table.quantization}, "
        f"{_describe_source(source)}, in {elapsed:.0f} s."
    )
    print(f"Baseline (one invocation): {summary['baseline_ms']:.4g} ms; {_calibration_summary(table)}.")
    unstable = summary["unstable_entries"]
    if unstable:
        print(
            f"{len(unstable)} of {len(table)} entries were measured with a spread above 5% "
            "(a busy machine or a throttling phone): their figures are less certain."
        )
    return EXIT_OK


def _lut_eval(args: argparse.Namespace) -> int:
    from keras_mnas.architecture import ArchSpec
    from keras_mnas.latency import network_configs

    if args.archs < 1:
        raise CliError(f"--archs must be at least 1; received {args.archs}.")
    plain = _load_table(args.table)
    source = _make_source(args, saved=plain.source_config)
    table = _load_table(args.table, profiler=source)
    space, network = _space_and_network(args)
    used = []
    if table.calibration is not None:
        for measurement in table.calibration.measurements:
            if isinstance(measurement.get("architecture"), dict):
                used.append(ArchSpec.from_dict(measurement["architecture"]))
    archs = space.sample_architectures(args.archs, seed=args.seed, exclude=used)
    if not archs:
        raise CliError(
            "Every architecture of the space was used for calibration: nothing left to evaluate on."
        )
    if len(archs) < args.archs:
        _say(f"The space has only {len(archs)} architectures not used for calibration; evaluating on those.")
    if table.calibration is None:
        _say("Note: the table is uncalibrated; predictions are the sum of entries plus one baseline.")
    missing = table.missing(c for arch in archs for c in network_configs(arch, **network))
    if missing:
        _say(
            f"Profiling the {len(missing)} layer configurations these architectures need that the table "
            "lacks..."
        )
        table.profile(missing, progress=True)
        _say(f"Saved them in {args.table}.")
    _say(f"Measuring {len(archs)} architectures end to end on {_describe_source(source)}:")
    rows = []
    data = None
    if table.quantization == "int8":
        data = _random_inputs(space.input_shape)  # the ranges it sets do not change the timing
    for index, arch in enumerate(archs, start=1):
        predicted = table.predict(arch, **network)
        model = space.build(arch, include_preprocessing=network["include_preprocessing"])
        result = source.measure(model, quantization=table.quantization, representative_data=data)
        del model
        measured = result.median_ms
        error = predicted / measured - 1
        rows.append(
            {
                "architecture": arch.to_dict(),
                "predicted_ms": predicted,
                "measured_ms": measured,
                "measured_cv": result.cv,
                "measured_unstable": result.unstable,
                "error": error,
            }
        )
        _say(
            f"  [{index}/{len(archs)}] measured {measured:.4g} ms, predicted {predicted:.4g} ms "
            f"({100 * error:+.1f}%)"
        )
    errors = [abs(r["error"]) for r in rows]
    within_10 = sum(e <= 0.10 for e in errors)
    within_5 = sum(e <= 0.05 for e in errors)
    from keras_mnas.latency.lut import spearman

    rho = spearman([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])
    summary = {
        "table": args.table,
        "architectures": len(rows),
        "seed": args.seed,
        "within_10_percent": within_10 / len(rows),
        "within_5_percent": within_5 / len(rows),
        "spearman": rho,
        "median_abs_error": statistics.median(errors),
        "max_abs_error": max(errors),
        "source": table.source_config,
        "calibrated": table.calibration is not None,
        "rows": rows,
    }
    if args.json:
        _print_json(summary)
        return EXIT_OK
    print(
        f"Lookup table {args.table}: {len(table)} entries, {table.quantization}; "
        f"{_calibration_summary(table)}."
    )
    print(
        f"Evaluated on {len(rows)} random architectures of {space!r} (seed {args.seed}), none used for "
        f"calibration, measured on {_describe_source(source)}:"
    )
    count = len(rows)
    print(f"  within +-10% of measured: {100 * within_10 / count:.1f}% ({within_10}/{count})")
    print(f"  within +-5% of measured:  {100 * within_5 / count:.1f}% ({within_5}/{count})")
    print(f"  Spearman rank correlation: {'n/a' if rho is None else f'{rho:.3f}'}")
    print(
        f"  absolute error: median {100 * summary['median_abs_error']:.1f}%, "
        f"worst {100 * summary['max_abs_error']:.1f}%"
    )
    unstable = sum(r["measured_unstable"] for r in rows)
    if unstable:
        print(
            f"  {unstable} of {count} measurements had a spread above 5%: the measured "
            "figures themselves are noisy (a busy machine or a throttling phone)."
        )
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# keras-mnas results / export


def _open_project(directory: str, project: str | None):
    from keras_mnas.search.project import SearchProject, SearchProjectError

    try:
        return SearchProject.open(directory, project)
    except SearchProjectError as error:
        raise CliError(str(error)) from error


def _architecture_summary(record: dict[str, Any], space) -> str | None:
    arch = record.get("architecture")
    if not arch:
        values = record.get("values") or {}
        return ", ".join(f"{k}={v}" for k, v in values.items()) or None
    blocks = arch["blocks"]
    if space is not None:
        blocks = [blocks[i] for i in space.searched_blocks if i < len(blocks)]
    return " ".join(blocks)


_SORT_KEYS: dict[str, tuple[str, bool]] = {
    "reward": ("reward", True),
    "latency": ("latency_ms", False),
    "accuracy": ("accuracy", True),
}


def _sorted_records(records: list[dict[str, Any]], sort: str | None) -> list[dict[str, Any]]:
    if sort is None:
        return records
    key, descending = _SORT_KEYS[sort]
    present = [r for r in records if r.get(key) is not None]
    absent = [r for r in records if r.get(key) is None]
    return sorted(present, key=lambda r: r[key], reverse=descending) + absent


def _flagged(record: dict[str, Any]) -> bool:
    """Whether a trial's latency was measured unstable (as `LatencyResult.unstable` judges)."""
    from keras_mnas.latency.base import is_unstable

    return is_unstable(record.get("latency_spread"))


def _flagged_number(record: dict[str, Any]) -> str | None:
    """The trial's latency for the results table, marked `(!)` when it was measured unstable."""
    shown = _number(record["latency_ms"])
    return f"{shown} (!)" if shown is not None and _flagged(record) else shown


def _cmd_results(args: argparse.Namespace) -> int:
    project = _open_project(args.directory, args.project)
    records = _sorted_records(project.records(), args.sort)
    front = project.pareto_front()
    config = project.search_config
    if args.json:
        _print_json(
            {
                "project": project.path,
                "metric": project.metric,
                "search_config": config,
                "trials": records,
                "pareto_front": [r["trial_id"] for r in front],
            }
        )
        return EXIT_OK
    try:
        space = project.space
    except ValueError as error:
        _say(f"Warning: {error}")
        space = None
    statuses: dict[str, int] = {}
    for record in records:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    counts = ", ".join(f"{n} {status.lower()}" for status, n in sorted(statuses.items())) or "no trials yet"
    header = f"Search project {project.path}: {len(records)} trials ({counts})."
    details = []
    if config:
        reward = config.get("reward") or {}
        latency = config.get("latency") or {}
        details.append(
            f"reward reads {project.metric}, target {_number(reward.get('target_latency_ms'))} ms, "
            f"alpha {reward.get('alpha')}, beta {reward.get('beta')}"
        )
        details.append(f"latency from {latency.get('name', '?')}, {config.get('quantization', 'float32')}")
    print(header)
    if details:
        print("Search: " + "; ".join(details) + ".")
    if not records:
        return EXIT_OK
    print()

    def row(record):
        accuracy = None if record["accuracy"] is None else f"{record['accuracy']:.4f}"
        if record["skipped"] and accuracy is None:
            accuracy = "skipped"
        return [
            record["trial_id"],
            record["status"],
            accuracy,
            _flagged_number(record),
            None if record["reward"] is None else f"{record['reward']:.4f}",
            _count(record["params"]),
            _count(record["macs"]),
            _architecture_summary(record, space),
        ]

    headers = ["TRIAL", "STATUS", project.metric.upper(), "LATENCY_MS", "REWARD", "PARAMS", "MACS"]
    headers.append("SEARCHED BLOCKS" if space is not None else "HYPERPARAMETERS")
    print(_table([row(r) for r in records], headers))
    flagged = [r for r in records if _flagged(r)]
    if flagged:
        counted = "1 latency was" if len(flagged) == 1 else f"{len(flagged)} latencies were"
        print(
            f"  (!) {counted} measured with a spread above 5% (unstable); see docs/latency.md before "
            "trusting small differences between such figures."
        )
    failed = [r for r in records if r["status"] == "FAILED" and r["message"]]
    for record in failed:
        reason = record["message"].strip().splitlines()[-1]
        print(f"  trial {record['trial_id']} failed: {reason}")
    print()
    if front:
        print("Pareto front (not dominated in accuracy and latency), fastest first:")
        print(_table([row(r) for r in front], headers))
    else:
        print("Pareto front: no completed trial with both an accuracy and a latency yet.")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from keras_mnas.latency import convert_to_tflite
    from keras_mnas.search.project import SearchProjectError
    from keras_mnas.utils.io import atomic_write_bytes, atomic_write_json

    if args.calibration_data and not args.int8:
        raise CliError("--calibration-data calibrates int8 quantization: add --int8.")
    project = _open_project(args.directory, args.project)
    if project.search_config.get("quantization") == "int8" and not args.int8:
        _say(
            "Note: this search timed int8 models; add --int8 (with --calibration-data) to export the int8 "
            "model whose latency it measured."
        )
    try:
        trial = project.trial(args.trial)
        _say(f"Rebuilding trial {trial.trial_id} ({trial.status}) of {project.path}...")
        model, trained = project.build_model(trial, include_preprocessing=args.include_preprocessing)
    except SearchProjectError as error:
        raise CliError(str(error)) from error
    if trained:
        weights = f"trained: the best epoch's weights of trial {trial.trial_id} ({trial.checkpoint})"
    else:
        weights = (
            "UNTRAINED: the search kept no checkpoint for this trial "
            f"({'it ' + trial.status.lower() if trial.status != 'COMPLETED' else 'skipped before training'})"
            ", "
            "so the weights are the initial random ones. Train the model before use."
        )
        _say("Warning: " + weights)
    base = args.out or f"{project.name}_trial_{trial.trial_id}"
    for suffix in (".keras", ".tflite"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    paths = {"keras": base + ".keras", "tflite": base + ".tflite", "architecture": base + ".arch.json"}
    directory = os.path.dirname(os.path.abspath(base))
    os.makedirs(directory, exist_ok=True)
    quantization = "int8" if args.int8 else "float32"
    data = _calibration_data(args.calibration_data, model) if args.int8 else None
    _say(f"Converting to TFLite ({quantization})...")
    tflite_bytes = convert_to_tflite(model, quantization=quantization, representative_data=data)
    tmp = os.path.join(directory, "." + os.path.basename(base) + ".partial.keras")
    model.save(tmp)
    os.replace(tmp, paths["keras"])
    atomic_write_bytes(paths["tflite"], tflite_bytes)
    arch = project.architecture(trial)
    atomic_write_json(paths["architecture"], arch.to_dict())
    summary = {
        "trial_id": trial.trial_id,
        "status": trial.status,
        "trained": trained,
        "quantization": quantization,
        "calibration": None if not args.int8 else (args.calibration_data or "random inputs"),
        "architecture": arch.to_dict(),
        "paths": paths,
        "tflite_bytes": len(tflite_bytes),
    }
    if args.json:
        _print_json(summary)
        return EXIT_OK
    print(f"Trial {trial.trial_id}: {arch}")
    print(f"Weights: {weights}")
    print(f"Wrote {paths['keras']}")
    note = ""
    if args.int8 and not args.calibration_data:
        note = " (int8 calibrated on random inputs: for latency only)"
    print(f"Wrote {paths['tflite']} ({_size(len(tflite_bytes))}, {quantization}){note}")
    print(f"Wrote {paths['architecture']}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# The parser and the entry point.


def build_parser() -> argparse.ArgumentParser:
    """The `keras-mnas` argument parser (one subparser per command).

    Example:

    ```python
    build_parser().parse_args(["results", "runs"]).command  # "results"
    ```
    """
    parser = argparse.ArgumentParser(
        prog="keras-mnas",
        description="MnasNet platform-aware architecture search: phones, latency, lookup tables, results.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of expected failures too")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does (INFO)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    devices = commands.add_parser(
        "devices",
        help="list the Android phones of an adb server",
        description="List the phones an adb server "
        "knows: model, SoC, SDK, ABI, big cores, temperature and health.",
    )
    devices.add_argument("--adb-host", help="host of the adb server (127.0.0.1)")
    devices.add_argument("--adb-port", type=int, help="port of the adb server (5037)")
    devices.add_argument(
        "--timeout", type=float, default=10.0, help="deadline of each adb call, seconds (10)"
    )
    devices.add_argument("--json", action="store_true", help="print JSON")
    devices.set_defaults(handler=_cmd_devices)

    bench = commands.add_parser(
        "bench",
        help="time a .keras or .tflite model on this CPU or on phones",
        description="Time a model: converted to TFLite (a .keras file) or as it is (a .tflite file), on this "
        "machine's CPU with LiteRT or on Android phones with benchmark_model.",
    )
    bench.add_argument("model", metavar="MODEL", help="a .keras or .tflite file")
    bench.add_argument(
        "--int8",
        action="store_true",
        help="(.keras) full-integer post-training quantization; calibrated on random inputs unless "
        "--calibration-data is given (random calibration is fine for latency only)",
    )
    bench.add_argument(
        "--calibration-data", metavar="FILE.npy", help="int8 calibration samples, shape (N, H, W, C)"
    )
    bench.add_argument("--json", action="store_true", help="print the full result as JSON")
    _add_measure_options(bench, title="where and how to measure")
    bench.set_defaults(handler=_cmd_bench)

    lut = commands.add_parser(
        "lut",
        help="build or evaluate a lookup-table latency predictor",
        description="Lookup-table latency "
        "predictor: per-layer timings summed and calibrated on end-to-end measurements.",
    )
    lut_commands = lut.add_subparsers(dest="lut_command", metavar="{build,eval}")
    lut_build = lut_commands.add_parser(
        "build",
        help="profile a search space's layers and calibrate",
        description="Profile the layer configurations of a search space (all of them, or those N random "
        "architectures need), calibrate on K random architectures measured end to end, and write the table. "
        "An existing TABLE is extended (it must come from the same source); an interrupted run keeps what it "
        "measured.",
    )
    lut_build.add_argument("table", metavar="TABLE.json", help="the table to write (or extend)")
    lut_eval = lut_commands.add_parser(
        "eval",
        help="compare a table's predictions with measurements",
        description="Predict and measure N random architectures of the space (none of the calibration ones) "
        "and print the share predicted within +-10% of measured and Spearman's rank correlation. It "
        "measures with the table's own source settings unless options override them, and adds any missing "
        "entries to the table.",
    )
    lut_eval.add_argument("table", metavar="TABLE.json", help="the table to evaluate")
    for sub, archs_default, archs_help, seed in (
        (lut_build, None, "profile only the layers of N random architectures (default: the whole space)", 0),
        (lut_eval, 20, "evaluate on N random architectures (20)", 1),
    ):
        sub.add_argument(
            "--space",
            metavar="FILE.json|DIR",
            help="the search space: a JSON object of MnasSearchSpace settings (e.g. "
            '{"input_shape": [96, 96, 3]}) or a search project directory (its recorded space). Default: '
            "MnasNet's space at 224x224.",
        )
        sub.add_argument("--project", help="with --space DIR: the project name inside DIR")
        sub.add_argument("--resolution", type=int, help="override the space's input resolution (square)")
        sub.add_argument(
            "--include-preprocessing",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="candidates normalise their inputs themselves, as "
            "MnasHyperModel(include_preprocessing=True) builds them (default: a --space DIR project's "
            "recorded setting, else no)",
        )
        sub.add_argument("--archs", type=int, default=archs_default, metavar="N", help=archs_help)
        sub.add_argument("--seed", type=int, default=seed, help=f"seed of the random architectures ({seed})")
        sub.add_argument("--json", action="store_true", help="print JSON")
    lut_build.add_argument(
        "--calibration",
        type=int,
        default=10,
        metavar="K",
        help="calibrate on K random architectures (10; 0: none)",
    )
    lut_build.add_argument("--int8", action="store_true", help="time int8 models (random-data calibration)")
    _add_measure_options(lut_build, title="where and how to measure (default: this machine's CPU)")
    _add_measure_options(lut_eval, title="where and how to measure (default: as the table was profiled)")
    lut_build.set_defaults(handler=_cmd_lut_build)
    lut_eval.set_defaults(handler=_cmd_lut_eval)
    lut.set_defaults(handler=None, subparser=lut)

    results = commands.add_parser(
        "results",
        help="the trials and Pareto front of a search",
        description="Print the trials (accuracy, latency, reward, size, architecture) and the Pareto front "
        "of a search, read from its project directory; the script that ran it is not needed.",
    )
    results.add_argument("directory", metavar="DIR", help="the project directory, or the tuner's directory")
    results.add_argument("--project", help="the project name inside DIR (when it holds several)")
    results.add_argument(
        "--sort", choices=sorted(_SORT_KEYS), help="order the trials (default: as they started)"
    )
    results.add_argument("--json", action="store_true", help="print JSON")
    results.set_defaults(handler=_cmd_results)

    export = commands.add_parser(
        "export",
        help="write a trial's model as .keras and .tflite",
        description="Rebuild a trial's architecture with the weights of its best epoch (untrained when the "
        "search kept no checkpoint, which is said) and write OUT.keras, OUT.tflite and OUT.arch.json.",
    )
    export.add_argument("directory", metavar="DIR", help="the project directory, or the tuner's directory")
    export.add_argument(
        "--trial", required=True, metavar="ID", help="the trial id (see `keras-mnas results`)"
    )
    export.add_argument("--project", help="the project name inside DIR (when it holds several)")
    export.add_argument(
        "--out", metavar="PATH", help="output path without suffix (default: PROJECT_trial_ID)"
    )
    export.add_argument(
        "--int8",
        action="store_true",
        help="write a full-integer int8 .tflite (random-data calibration unless --calibration-data: for "
        "latency only)",
    )
    export.add_argument(
        "--calibration-data", metavar="FILE.npy", help="int8 calibration samples, shape (N, H, W, C)"
    )
    export.add_argument(
        "--include-preprocessing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only for projects that predate recording it: the search's "
        "MnasHyperModel(include_preprocessing=...) (recorded projects use their own setting)",
    )
    export.add_argument("--json", action="store_true", help="print JSON")
    export.set_defaults(handler=_cmd_export)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    from keras_mnas.latency.errors import LatencyMeasurementError

    return (CliError, LatencyMeasurementError, ValueError, LookupError, OSError, RuntimeError)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `keras-mnas` command; returns its exit status.

    Args:
        argv: The arguments after the program name (default: `sys.argv[1:]`).

    Returns:
        0 on success, 1 for an expected failure (reported in one line on stderr), 2 for a usage error,
        130 when interrupted.

    Example:

    ```python
    import sys
    from keras_mnas.cli import main

    sys.exit(main(["devices", "--json"]))
    ```
    """
    # Before anything imports TensorFlow: its C++ start-up chatter is not for the command's users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        return int(exit_.code or 0)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s: %(message)s",
        )
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        (getattr(args, "subparser", None) or parser).print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except KeyboardInterrupt:
        _say("keras-mnas: interrupted.")
        return EXIT_INTERRUPTED
    except _expected_errors() as error:
        if args.debug:
            raise
        message = str(error).strip() or type(error).__name__
        print(f"keras-mnas: error: {message}", file=sys.stderr, flush=True)
        return EXIT_ERROR
