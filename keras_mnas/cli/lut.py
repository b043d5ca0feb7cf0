"""`keras-mnas lut build` and `keras-mnas lut eval`: a lookup-table latency predictor for a search space."""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

from keras_mnas.cli import _format as fmt
from keras_mnas.cli._common import EXIT_OK, CliError, say
from keras_mnas.cli._measure import add_measure_options, describe_source, make_source, random_inputs
from keras_mnas.latency.lut.table import KERNEL_MEASUREMENTS


def register(commands: argparse._SubParsersAction) -> None:
    """Adds the `lut` command and its options to the `keras-mnas` parser's subcommands."""
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
        default=KERNEL_MEASUREMENTS,
        metavar="K",
        help=f"calibrate on K random architectures measured end to end ({KERNEL_MEASUREMENTS}; 0: none). "
        "Each costs one conversion and one measurement of a whole network (on a phone: a push and "
        f"--repeats benchmark runs). With {KERNEL_MEASUREMENTS} or more the calibration may be per kernel "
        "(chosen by cross-validation), the accurate one; with fewer it is a line",
    )
    lut_build.add_argument(
        "--calibration-pool",
        type=int,
        default=None,
        metavar="P",
        help="choose the K calibration architectures adaptively from P random ones (default: 4 x K from "
        f"K = {KERNEL_MEASUREMENTS} on, else K): half "
        "as drawn, then those the calibration is least sure of (its bootstrap fits disagree most). Only the "
        "K are measured end to end; the pool's entries are profiled. P = K: K random ones",
    )
    lut_build.add_argument(
        "--from-networks",
        type=int,
        default=0,
        metavar="K",
        help="phones: first measure K random architectures whole with benchmark_model's per-operator "
        "profile and take every entry they hold from it (one push and run per network instead of one per "
        "entry); the entries still missing are then profiled alone. Runs without a delegate "
        "(--delegate none)",
    )
    lut_build.add_argument("--int8", action="store_true", help="time int8 models (random-data calibration)")
    add_measure_options(lut_build, title="where and how to measure (default: this machine's CPU)")
    add_measure_options(lut_eval, title="where and how to measure (default: as the table was profiled)")
    lut_build.set_defaults(handler=run_build)
    lut_eval.set_defaults(handler=run_eval)
    lut.set_defaults(handler=None, subparser=lut)



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
    if calibration.terms:
        return (
            f"calibrated per kernel on {len(calibration.measurements)} architectures: "
            f"{len(calibration.terms)} feature weights and a fixed cost of {calibration.intercept_ms:.4g} ms"
            f"{worst}"
        )
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


def run_build(args: argparse.Namespace) -> int:
    """Profiles (and calibrates) the table, holding back per-measurement warnings."""
    with _PerMeasurementWarnings(args.verbose):
        return _lut_build(args)


def run_eval(args: argparse.Namespace) -> int:
    """Compares the table's predictions with measurements, holding back per-measurement warnings."""
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
    pool_size = args.calibration_pool
    if pool_size is None:
        # Choosing adaptively uses per-kernel fits: worth it where the calibration can be per kernel.
        pool_size = 4 * args.calibration if args.calibration >= KERNEL_MEASUREMENTS else args.calibration
    pool_size = pool_size if args.calibration else 0
    if pool_size < args.calibration:
        raise CliError(
            f"--calibration-pool must hold at least the --calibration architectures ({args.calibration}); "
            f"received {args.calibration_pool}."
        )
    if args.from_networks < 0:
        raise CliError(
            f"--from-networks must be 0 (off) or a number of networks; received {args.from_networks}."
        )
    if args.from_networks:
        if not args.device:
            raise CliError(
                "--from-networks reads benchmark_model's per-operator profile of whole networks: it needs a "
                "phone (--device SERIAL)."
            )
        if args.delegate not in (None, "none"):
            raise CliError(
                f"--from-networks runs without a delegate; received --delegate {args.delegate}. A delegate "
                "runs the network as one node whose operators cannot be told apart by layer."
            )
        args.delegate = "none"
    space, network = _space_and_network(args)
    source = make_source(args, op_profile=True) if args.from_networks else make_source(args)
    quantization = "int8" if args.int8 else "float32"
    if os.path.exists(args.table):
        table = _load_table(args.table, profiler=source)
        if table.quantization != quantization:
            raise CliError(
                f"{args.table} holds {table.quantization} timings; this run asks for {quantization}. Use "
                "another file."
            )
        say(f"Extending {args.table} ({len(table)} entries).")
    else:
        table = LatencyLookupTable(profiler=source, quantization=quantization, path=args.table)
    say(f"Search space: {space!r}. Measuring on {describe_source(source)}.")

    start = time.monotonic()
    drawn = space.sample_architectures((args.archs or 0) + pool_size + args.from_networks, seed=args.seed)
    calibration_archs = drawn[:pool_size]
    network_archs = drawn[pool_size + (args.archs or 0) :]
    from_networks = 0
    try:
        if network_archs:
            say(
                f"Profiling {len(network_archs)} random architectures whole, with per-operator times "
                "(one measurement each)..."
            )
            from_networks = table.profile_from_networks(network_archs, progress=True, **network)
            say(f"The networks gave in-network times to {from_networks} entries.")
        if args.archs is None:
            from keras_mnas.search.latency_table import search_space_configs

            configs = search_space_configs(space, include_preprocessing=network["include_preprocessing"])
            say(
                f"Profiling every layer configuration of the space: {len(table.missing(configs))} of "
                f"{len(configs)} to measure."
            )
            profiled = table.profile(configs, progress=True)
        else:
            profile_archs = drawn[pool_size : pool_size + args.archs]
            if len(profile_archs) < args.archs:
                say(
                    f"The space has only {len(drawn)} distinct architectures; profiling {len(profile_archs)}."
                )
            from keras_mnas.latency import network_configs

            configs = [
                c for arch in profile_archs + calibration_archs for c in network_configs(arch, **network)
            ]
            say(
                f"Profiling the layer configurations of {len(profile_archs) + len(calibration_archs)} random "
                f"architectures: {len(table.missing(configs))} to measure."
            )
            profiled = table.profile(configs, progress=True)
        if calibration_archs:
            if len(calibration_archs) < 2:
                raise CliError(
                    "The space has fewer than two distinct architectures: nothing to calibrate on."
                )
            count = min(args.calibration, len(calibration_archs))
            if count < len(calibration_archs):
                say(
                    f"Calibrating on {count} architectures measured end to end: {max(2, count // 2)} drawn "
                    f"at random, the rest chosen from {len(calibration_archs)} where the calibration is "
                    "least sure..."
                )
            else:
                say(f"Calibrating on {count} random architectures measured end to end...")
            table.calibrate(calibration_archs, count=count, progress=True, **network)
    except KeyboardInterrupt:
        if table.baseline is not None:
            table.save(args.table)
            say(
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
        "networks_profiled": len(network_archs),
        "entries_from_networks": from_networks,
        "quantization": table.quantization,
        "source": table.source_config,
        "baseline_ms": (table.baseline or {}).get("median_ms"),
        "calibration": table.calibration.to_dict() if table.calibration else None,
        "unstable_entries": _unstable_entries(table),
        "seconds": round(elapsed, 1),
    }
    if args.json:
        fmt.print_json(summary)
        return EXIT_OK
    print(
        f"Wrote {args.table}: {len(table)} entries ({profiled} measured now), {table.quantization}, "
        f"{describe_source(source)}, in {elapsed:.0f} s."
    )
    if network_archs:
        print(f"{from_networks} entries from the operator profiles of {len(network_archs)} whole networks.")
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
    source = make_source(args, saved=plain.source_config)
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
        say(f"The space has only {len(archs)} architectures not used for calibration; evaluating on those.")
    if table.calibration is None:
        say("Note: the table is uncalibrated; predictions are the sum of entries plus one baseline.")
    missing = table.missing(c for arch in archs for c in network_configs(arch, **network))
    if missing:
        say(
            f"Profiling the {len(missing)} layer configurations these architectures need that the table "
            "lacks..."
        )
        table.profile(missing, progress=True)
        say(f"Saved them in {args.table}.")
    say(f"Measuring {len(archs)} architectures end to end on {describe_source(source)}:")
    rows = []
    data = None
    if table.quantization == "int8":
        data = random_inputs(space.input_shape)  # the ranges it sets do not change the timing
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
        say(
            f"  [{index}/{len(archs)}] measured {measured:.4g} ms, predicted {predicted:.4g} ms "
            f"({100 * error:+.1f}%)"
        )
    from keras_mnas.latency.lut import prediction_report

    report = prediction_report([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])
    summary = {
        "table": args.table,
        "architectures": len(rows),
        "seed": args.seed,
        **report,
        "source": table.source_config,
        "calibrated": table.calibration is not None,
        "rows": rows,
    }
    if args.json:
        fmt.print_json(summary)
        return EXIT_OK
    print(
        f"Lookup table {args.table}: {len(table)} entries, {table.quantization}; "
        f"{_calibration_summary(table)}."
    )
    print(
        f"Evaluated on {len(rows)} random architectures of {space!r} (seed {args.seed}), none used for "
        f"calibration, measured on {describe_source(source)}:"
    )
    count = len(rows)
    within_10 = round(report["within_10_percent"] * count)
    within_5 = round(report["within_5_percent"] * count)
    rho = report["spearman"]
    print(f"  within +-10% of measured: {100 * within_10 / count:.1f}% ({within_10}/{count})")
    print(f"  within +-5% of measured:  {100 * within_5 / count:.1f}% ({within_5}/{count})")
    print(f"  Spearman rank correlation: {'n/a' if rho is None else f'{rho:.3f}'}")
    print(
        f"  absolute error: median {100 * summary['median_abs_error']:.1f}%, "
        f"worst {100 * summary['max_abs_error']:.1f}%"
    )
    print(f"  signed error (predicted against measured): median {100 * report['median_error']:+.1f}%")
    if report["shift"] is not None:
        pace = "slower" if report["shift"] < 0 else "faster"
        print(
            f"  The predictions are {100 * report['shift']:+.1f}% off across the board: "
            f"{describe_source(source)} now runs {pace} than when the table was calibrated (other load, "
            "clock, temperature or software). Calibrate it again on an idle device: `keras-mnas lut build "
            f"{args.table}` with the same space options keeps the entries and measures a new calibration."
        )
    unstable = sum(r["measured_unstable"] for r in rows)
    if unstable:
        print(
            f"  {unstable} of {count} measurements had a spread above 5%: the measured "
            "figures themselves are noisy (a busy machine or a throttling phone)."
        )
    return EXIT_OK

