"""`keras-mnas export`: a trial's model rebuilt from its project directory, written as .keras and .tflite."""

from __future__ import annotations

import argparse

from keras_mnas.cli import _format as fmt
from keras_mnas.cli._common import EXIT_OK, CliError, say
from keras_mnas.cli._measure import add_int8_options, calibration_data, check_int8_options
from keras_mnas.cli.results import open_project


def register(commands: argparse._SubParsersAction) -> None:
    """Adds the `export` command and its options to the `keras-mnas` parser's subcommands."""
    export = commands.add_parser(
        "export",
        help="write a trial's model as .keras and .tflite",
        description="Rebuild a trial's architecture with the weights of its best epoch (untrained when the "
        "search kept no checkpoint, which is said) and write OUT.keras, OUT.tflite and OUT.arch.json.",
    )
    export.add_argument("directory", metavar="DIR", help="the project directory, or the tuner's directory")
    export.add_argument(
        "--trial",
        required=True,
        metavar="ID",
        help="the trial id (see `keras-mnas results`), or `best`: the completed trial of highest reward",
    )
    export.add_argument("--project", help="the project name inside DIR (when it holds several)")
    export.add_argument(
        "--out", metavar="PATH", help="output path without suffix (default: PROJECT_trial_ID)"
    )
    add_int8_options(
        export,
        int8_help="write a full-integer int8 .tflite (random-data calibration unless --calibration-data: "
        "for latency only)",
    )
    export.add_argument("--json", action="store_true", help="print JSON")
    export.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Rebuilds the trial's model and writes it; says loudly when its weights are untrained."""
    from keras_mnas.search.project import SearchProjectError
    from keras_mnas.search.results import export_model
    from keras_mnas.tflite import convert_to_tflite

    check_int8_options(args)
    project = open_project(args.directory, args.project)
    if project.search_config.get("quantization") == "int8" and not args.int8:
        say(
            "Note: this search timed int8 models; add --int8 (with --calibration-data) to export the int8 "
            "model whose latency it measured."
        )
    try:
        if args.trial.strip().lower() == "best":
            trial = project.best_trial()
            say(f"The best trial is {trial.trial_id}, of reward {trial.score:.4f}.")
        else:
            trial = project.trial(args.trial)
        say(f"Rebuilding trial {trial.trial_id} ({trial.status}) of {project.path}...")
        model, trained = project.build_model(trial)
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
        say("Warning: " + weights)
    quantization = "int8" if args.int8 else "float32"
    data = calibration_data(args.calibration_data, model) if args.int8 else None
    say(f"Converting to TFLite ({quantization})...")
    tflite_bytes = convert_to_tflite(model, quantization=quantization, representative_data=data)
    arch = project.architecture(trial)
    paths = export_model(
        model, args.out or f"{project.name}_trial_{trial.trial_id}", tflite_bytes=tflite_bytes, arch=arch
    )
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
        fmt.print_json(summary)
        return EXIT_OK
    print(f"Trial {trial.trial_id}: {arch}")
    print(f"Weights: {weights}")
    print(f"Wrote {paths['keras']}")
    note = ""
    if args.int8 and not args.calibration_data:
        note = " (int8 calibrated on random inputs: for latency only)"
    print(f"Wrote {paths['tflite']} ({fmt.size(len(tflite_bytes))}, {quantization}){note}")
    print(f"Wrote {paths['architecture']}")
    return EXIT_OK

