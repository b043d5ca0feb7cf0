"""What every `keras-mnas` command shares: exit statuses, the one-line error, and progress on stderr."""

from __future__ import annotations

import sys

#: Exit statuses.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An expected failure the command reports in one line (exit status 1)."""


def say(message: str) -> None:
    """Progress and notes: stderr, so that stdout stays a clean table or JSON."""
    print(message, file=sys.stderr, flush=True)
