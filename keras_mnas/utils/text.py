"""Plain-text tables and numbers, shared by the `keras-mnas` commands and `MnasTuner.results_summary`.

Example:

>>> print(table([["0", distinct_numbers([0.02312, 0.02348])[0], count(97_200)]], ["TRIAL", "MS", "PARAMS"]))
TRIAL  MS       PARAMS
0      0.02312  97.2K
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: The most significant digits `distinct_numbers` will print: beyond them two figures are the same number.
MAX_DIGITS = 12


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain text table, columns left-aligned and separated by two spaces; `None` shows as `-`.

    Args:
        rows: The rows, each as many cells as `headers`.
        headers: The column titles.

    Returns:
        The table, one line per row after the header line, without a final newline.

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


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: float | None, digits: int = 4) -> str | None:
    """`value` to `digits` significant digits; None for a missing value or NaN.

    Args:
        value: The number, or None.
        digits: Significant digits.

    Returns:
        The text, or None.

    Example:

    >>> number(3.14159), number(float("nan"))
    ('3.142', None)
    """
    if _missing(value):
        return None
    return f"{value:.{digits}g}"


def distinct_numbers(values: Sequence[float | None], digits: int = 4) -> list[str | None]:
    """Every value to the same number of significant digits: `digits`, or more when two would look alike.

    Two different figures never print the same (up to `MAX_DIGITS` digits): latencies of tens of
    microseconds such as 0.02312 and 0.02348 ms both read `0.023` at three decimals, yet the reward told them
    apart. Equal values print equal.

    Args:
        values: The numbers of one column; None or NaN for a missing one.
        digits: The fewest significant digits.

    Returns:
        One text per value, None for a missing one.

    Example:

    >>> distinct_numbers([0.0231204, 0.0231267, 1.5, None])
    ['0.02312', '0.02313', '1.5', None]
    >>> distinct_numbers([12.34512, 12.34519])
    ['12.3451', '12.3452']
    """
    present = sorted({float(v) for v in values if not _missing(v)})
    shown = digits
    for shown in range(digits, MAX_DIGITS + 1):
        texts = {f"{v:.{shown}g}" for v in present}
        if len(texts) == len(present):
            break
    return [None if _missing(v) else f"{v:.{shown}g}" for v in values]


def count(value: float | None) -> str | None:
    """A count with an SI suffix.

    Args:
        value: The count, or None.

    Returns:
        Three significant digits and `K`, `M` or `G`; None for a missing value.

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
