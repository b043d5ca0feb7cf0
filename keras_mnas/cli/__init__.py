"""The `keras-mnas` command: phones, latency measurements, lookup tables, search results and exports.

```text
keras-mnas devices [--adb-host H] [--adb-port P] [--json]
keras-mnas bench MODEL.keras|MODEL.tflite [--device SERIAL ...] [--binary PATH] [--int8] [--json]
keras-mnas lut build TABLE.json [--space SPACE] [--archs N] [--calibration K] [--device SERIAL ...]
keras-mnas lut eval TABLE.json [--space SPACE] [--archs N] [--json]
keras-mnas results DIR [--project NAME] [--sort reward|latency|accuracy] [--json]
keras-mnas export DIR --trial ID|best [--project NAME] [--out PATH] [--int8]
```

Results go to stdout (a table, or JSON with `--json`); progress and warnings go to stderr. Expected failures
(no adb server, no phone, an unknown serial, a missing or wrong-ABI `benchmark_model`, an unreadable model, a
directory that is not a search, an unknown trial) print one `keras-mnas: error: ...` line and exit with
status 1, without a traceback (`--debug` shows it); usage errors exit with status 2.

Each command is one module of this package (`devices`, `bench`, `lut`, `results`, `export`) with a
`register(commands)` that adds its options and a `run(args)` that carries it out; a new command is a new
module added to `_COMMANDS`. Commands import what they need when they run: `--help` and `results` start
without TensorFlow.

Example:

```python
from keras_mnas.cli import main

status = main(["results", "runs", "--project", "digits", "--sort", "reward"])
```
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from keras_mnas.cli import bench, devices, export, lut, results
from keras_mnas.cli._common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError, say
from keras_mnas.utils.quiet import quiet_tensorflow_startup

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CliError", "build_parser", "main"]

# One module per command; each adds its own subparser and options (`register`) and handles it (`run`).
_COMMANDS = (devices, bench, lut, results, export)
# The commands that import TensorFlow (the others start without it, and stay quick).
_TENSORFLOW_COMMANDS = ("bench", "lut", "export")


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
    for command in _COMMANDS:
        command.register(commands)
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
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        return int(exit_.code or 0)
    if args.command in _TENSORFLOW_COMMANDS:
        # Before anything imports TensorFlow: its C++ start-up lines are not for the command's users.
        quiet_tensorflow_startup()
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
        say("keras-mnas: interrupted.")
        return EXIT_INTERRUPTED
    except _expected_errors() as error:
        if args.debug:
            raise
        message = str(error).strip() or type(error).__name__
        print(f"keras-mnas: error: {message}", file=sys.stderr, flush=True)
        return EXIT_ERROR
