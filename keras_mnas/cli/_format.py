"""Plain-text tables, numbers, counts, sizes and JSON for the commands' output."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain text table, columns left-aligned and separated by two spaces; `None` shows as `-`.

    Example:

    >>> print(table([["0", None]], ["TRIAL", "REWARD"]))
    TRIAL  REWARD
    0      -
    """
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def number(value: float | None, digits: int = 4) -> str | None:
    """`value` to `digits` significant digits; None for a missing value or NaN.

    Example:

    >>> number(3.14159), number(float("nan"))
    ('3.142', None)
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return f"{value:.{digits}g}"


def count(value: float | None) -> str | None:
    """A count with an SI suffix.

    Example:

    >>> count(2706), count(312_000_000), count(None)
    ('2.71K', '312M', None)
    """
    if value is None:
        return None
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.0f}"


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
