"""Argument checks shared by every public entry point.

Each check returns the value in its canonical type (an `int`, a `float`, a `tuple`) or raises with one message
shape: "`name` must be <what was expected>; received <repr of the value>." Booleans are never numbers here
(`True` is an `int` to Python, but `units=True` is a mistake), NumPy scalars are, and a number too large to be
a float is refused with `ValueError`, not `OverflowError`.

Example:

```python
check_int("units", 64, minimum=1)                       # 64
check_number("alpha", -0.07, high=0)                    # -0.07
check_choice("quantization", "int8", ("float32", "int8"))  # 'int8'
```
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _refuse(name: str, expected: str, value: Any, error: type[Exception] = ValueError) -> Exception:
    shown = repr(value)
    if len(shown) > 200:
        shown = f"{shown[:100]}...{shown[-40:]} ({len(shown)} characters)"
    return error(f"`{name}` must be {expected}; received {shown}.")


def _bounds_text(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return " and ".join(parts)


def is_integer(value: Any) -> bool:
    """Whether `value` is an integer (Python or NumPy), booleans excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether `value` is a finite real number (Python or NumPy), booleans excluded."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """Returns `value` as an `int`, or raises `ValueError` unless it is an integer within the bounds.

    Args:
        name: The argument's name, as the caller spells it.
        value: What was received.
        minimum: The smallest value allowed, or None.
        maximum: The largest value allowed, or None.
        allow_none: Whether None is accepted (and returned).

    Example:

    >>> check_int("runs", 5, minimum=1)
    5
    """
    if value is None and allow_none:
        return None
    if not is_integer(value) or (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        # The message is built only on failure: this check runs thousands of times per second in predictions.
        bounds = _bounds_text(minimum, maximum, False, False)
        expected = ("None or " if allow_none else "") + "an integer" + (f" {bounds}" if bounds else "")
        raise _refuse(name, expected, value)
    return int(value)


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """Returns `value` as a `float`, or raises `ValueError` unless it is a finite number within the bounds.

    Args:
        name: The argument's name, as the caller spells it.
        value: What was received.
        low: The lower bound, or None.
        high: The upper bound, or None.
        low_open: Whether `low` itself is excluded.
        high_open: Whether `high` itself is excluded.
        allow_none: Whether None is accepted (and returned).

    Example:

    >>> check_number("clip_ratio", 0.2, low=0, high=1, low_open=True, high_open=True)
    0.2
    """
    if value is None and allow_none:
        return None
    bounds = _bounds_text(low, high, low_open, high_open)
    expected = ("None or " if allow_none else "") + "a finite number" + (f" {bounds}" if bounds else "")
    if not is_number(value):
        raise _refuse(name, expected, value)
    number = float(value)
    if low is not None and (number < low or (low_open and number == low)):
        raise _refuse(name, expected, value)
    if high is not None and (number > high or (high_open and number == high)):
        raise _refuse(name, expected, value)
    return number


def check_seconds(
    name: str, value: Any, *, allow_zero: bool = False, allow_none: bool = False
) -> float | None:
    """Returns a duration in seconds as a `float`: finite and > 0 (>= 0 with `allow_zero`).

    Example:

    >>> check_seconds("timeout_s", 30)
    30.0
    """
    if value is None and allow_none:
        return None
    bound = ">= 0" if allow_zero else "> 0"
    expected = ("None or " if allow_none else "") + f"a finite number of seconds {bound}"
    if not is_number(value) or value < 0 or (value == 0 and not allow_zero):
        raise _refuse(name, expected, value)
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """Returns `value` if it is a `bool` (a NumPy bool included); refuses `"no"`, `0` and other stand-ins.

    Example:

    >>> check_bool("overwrite", False)
    False
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise _refuse(name, "True or False", value, TypeError)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Returns `value` if it is one of `choices`.

    Example:

    >>> check_choice("quantization", "int8", ("float32", "int8"))
    'int8'
    """
    try:
        known = value in choices
    except TypeError:  # an unhashable value asked of a set or dict
        known = False
    if not known or isinstance(value, bool) != any(isinstance(c, bool) and c == value for c in choices):
        raise _refuse(name, f"one of {tuple(choices)!r}", value)
    return value


def check_choices(name: str, values: Any, check: Callable[[Any], bool], expected: str) -> tuple:
    """Returns `values` as a tuple if it is a non-empty sequence of distinct items, each passing `check`.

    Args:
        name: The argument's name.
        values: What was received.
        check: Tells whether one item is acceptable.
        expected: What one item should be, in words ("odd integers").

    Example:

    >>> check_choices("kernel_sizes", [3, 5], lambda k: is_integer(k) and k % 2 == 1, "odd integers")
    (3, 5)
    """
    whole = f"a non-empty list of {expected}"
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise _refuse(name, whole, values)
    for value in values:
        if not check(value):
            raise _refuse(name, whole, values)
    try:
        distinct = len(set(values)) == len(values)
    except TypeError:
        distinct = all(a != b for i, a in enumerate(values) for b in values[i + 1 :])
    if not distinct:
        raise _refuse(name, f"{whole} without repeats", values)
    return tuple(values)


def check_type(name: str, value: Any, types: type | tuple[type, ...], expected: str) -> Any:
    """Returns `value` if it is an instance of `types`, else raises `TypeError` saying `expected`.

    Example:

    >>> check_type("space", 3, int, "an int")
    3
    """
    if not isinstance(value, types):
        raise _refuse(name, expected, value, TypeError)
    return value


def check_input_shape(input_shape: Any, purpose: str) -> tuple[int, int, int]:
    """Returns a concrete `(height, width, channels)` as ints, else raises `ValueError` naming `purpose`.

    Example:

    >>> check_input_shape([96, 96, 3], "count_cost")
    (96, 96, 3)
    """
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(is_integer(d) and d > 0 for d in input_shape)
    ):
        raise ValueError(
            f"{purpose} needs a concrete input_shape (height, width, channels) of positive integers; "
            f"received {input_shape!r}."
        )
    return (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
