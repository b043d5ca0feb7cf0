"""Latency sources and int8 calibration data from command-line options (`bench`, `lut`, `export`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from keras_mnas.cli._common import CliError, say

# Random inputs used to calibrate int8 quantization when no data is given: enough for the converter to
# choose ranges, which only the model's accuracy (not its latency) depends on.
RANDOM_CALIBRATION_SAMPLES = 16


def add_measure_options(parser: argparse.ArgumentParser, *, title: str) -> None:
    """Adds the options that choose a latency source (`--device`, `--binary`, `--runs`, ...) to `parser`."""
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


def _options(pairs: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in pairs.items() if value is not None}


def make_source(args: argparse.Namespace, saved: dict[str, Any] | None = None, *, op_profile: bool = False):
    """The latency source the options describe; `saved` is a lookup table's source config to default to.

    Options given on the command line win; settings they leave out come from `saved` (so that `lut eval`
    measures exactly as the table was profiled), then from the sources' own defaults. `op_profile` asks
    phones for per-operator times (as does a `saved` config that has them).
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
                    "min_seconds": _pick(args.min_seconds, saved, "min_seconds"),
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
            "arm64-v8a). See 'Measuring on your phone' in the keras-mnas documentation."
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
            "min_seconds": _pick(args.min_seconds, saved, "min_seconds"),
            "delegate": _pick(args.delegate, saved, "delegate"),
            "core_mask": _pick(core_mask, saved, "core_mask"),
            "extra_flags": saved.get("extra_flags"),
            "max_thermal_status": saved.get("max_thermal_status"),
            "max_temperature_c": saved.get("max_temperature_c"),
            "conversion": saved.get("conversion"),
            "calibration_samples": saved.get("calibration_samples"),
            "op_profile": True if op_profile or saved.get("op_profile") else None,
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


def describe_source(source) -> str:
    """The source in a few words for progress lines, e.g. `phone PHONE1`."""
    config = source.config()
    name = config.get("name")
    if name == "host":
        # Timing goes on past `runs` for `min_seconds`, so both bound the work.
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


def add_int8_options(parser: argparse.ArgumentParser, *, int8_help: str) -> None:
    """Adds `--int8` (described by `int8_help`) and `--calibration-data` to a command's parser."""
    parser.add_argument("--int8", action="store_true", help=int8_help)
    parser.add_argument(
        "--calibration-data", metavar="FILE.npy", help="int8 calibration samples, shape (N, H, W, C)"
    )


def check_int8_options(args: argparse.Namespace) -> None:
    """Refuses `--calibration-data` without `--int8`."""
    if args.calibration_data and not args.int8:
        raise CliError("--calibration-data calibrates int8 quantization: add --int8.")


def random_inputs(shape: Sequence[int], count: int = RANDOM_CALIBRATION_SAMPLES, seed: int = 0):
    """`count` uniform random inputs of `shape`, float32: int8 calibration fit for timing only."""
    import numpy as np

    return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)


def calibration_data(path: str | None, model):
    """int8 calibration samples: the given .npy file, else random inputs (said loudly)."""
    import numpy as np

    from keras_mnas.tflite import model_input_specs

    specs = model_input_specs(model)
    if len(specs) != 1:
        raise CliError(f"--int8 handles single-input models; this one has {len(specs)} inputs.")
    shape, _ = specs[0]
    if path is None:
        say(
            f"int8: calibrating the quantization on {RANDOM_CALIBRATION_SAMPLES} random inputs of shape "
            f"{tuple(shape)}. Random-data calibration is good for measuring latency only: the int8 model's "
            "accuracy is meaningless. Pass --calibration-data samples.npy (real inputs) for a usable int8 "
            "model."
        )
        return random_inputs(shape)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CliError(f"Cannot read --calibration-data {path}: {error}") from error
    if not isinstance(data, np.ndarray) or data.shape[1:] != tuple(shape):
        raise CliError(
            f"--calibration-data must hold an array of samples of shape (N, {', '.join(map(str, shape))}) "
            f"matching the model's input; {path} holds shape {getattr(data, 'shape', None)}."
        )
    say(f"int8: calibrating the quantization on {min(len(data), 100)} samples of {path}.")
    return data

