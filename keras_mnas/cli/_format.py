"""Plain-text tables, numbers, counts, sizes and JSON for the commands' output."""

from __future__ import annotations

import json
from typing import Any

# The commands and MnasTuner.results_summary print through the same helpers.
from keras_mnas.utils.text import count, distinct_numbers, number, table

__all__ = ["count", "distinct_numbers", "number", "print_json", "size", "table"]


def size(num_bytes: int) -> str:
    """A file size in KB or MB.

    Example:

    >>> size(2048), size(3_500_000)
    ('2.0 KB', '3.50 MB')
    """
    if num_bytes >= 1e6:
        return f"{num_bytes / 1e6:.2f} MB"
    return f"{num_bytes / 1e3:.1f} KB"


def print_json(data: Any) -> None:
    """Prints `data` as indented JSON with sorted keys (what `--json` gives)."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
