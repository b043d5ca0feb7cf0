"""Calibration of a lookup table, and the figures that say how well it predicts.

A sum of per-layer entries misses what a whole network adds (caches, fusion across layers), so the table fits
a line `measured = scale * sum + intercept` on a few end-to-end measurements (`fit_line`, `Calibration`).
`prediction_report` and `spearman` judge predictions against measurements, as `keras-mnas lut eval` and
`benchmarks/latency.py` report them.

Example:

>>> fit_line([1.0, 2.0, 3.0], [2.5, 4.5, 6.5])
(2.0, 0.5)
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_mnas.utils.checks import check_number


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The fitted line from a sum of table entries to an end-to-end latency.

    `predicted_ms = scale * sum_of_entries_ms + intercept_ms`, fitted by least squares on the relative errors
    of `measurements` (each a dict with at least `lut_ms` and `measured_ms`), keeping `intercept_ms >= 0`.

    Attributes:
        scale: Multiplies the sum of entries.
        intercept_ms: Added to it (the whole network's fixed cost).
        measurements: What it was fitted on, with the architecture of each when known.
        fitted: When it was fitted (ISO 8601, UTC).

    Example:

    >>> calibration = Calibration(1.2, 0.3, ({"lut_ms": 2.0, "measured_ms": 2.5},))
    >>> round(calibration.apply(2.0), 6), [round(e, 6) for e in calibration.relative_errors]
    (2.7, [0.08])
    """

    scale: float
    intercept_ms: float
    measurements: tuple[dict[str, Any], ...] = ()
    fitted: str = ""

    def __post_init__(self):
        check_number("Calibration.scale", self.scale, low=0, low_open=True)
        check_number("Calibration.intercept_ms", self.intercept_ms)
        object.__setattr__(self, "measurements", tuple(dict(m) for m in self.measurements))

    def apply(self, lut_ms: float) -> float:
        """The calibrated latency for a sum of entries."""
        return self.scale * lut_ms + self.intercept_ms

    @property
    def relative_errors(self) -> list[float]:
        """`predicted / measured - 1` of every calibration measurement (in-sample)."""
        return [self.apply(m["lut_ms"]) / m["measured_ms"] - 1 for m in self.measurements]

    def to_dict(self) -> dict[str, Any]:
        """The calibration as a JSON-serialisable dict (what the table file holds)."""
        return {
            "scale": self.scale,
            "intercept_ms": self.intercept_ms,
            "fitted": self.fitted,
            "measurements": [dict(m) for m in self.measurements],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Reads a calibration back from `to_dict`'s output.

        Raises:
            ValueError: without `scale` and `intercept_ms`, or with values `Calibration` refuses.
        """
        if not isinstance(data, Mapping) or "scale" not in data or "intercept_ms" not in data:
            raise ValueError(f"A calibration needs 'scale' and 'intercept_ms'; received {data!r}.")
        return cls(
            scale=data["scale"],
            intercept_ms=data["intercept_ms"],
            measurements=tuple(data.get("measurements", ())),
            fitted=str(data.get("fitted", "")),
        )


def fit_line(
    x: Sequence[float], y: Sequence[float], *, nonnegative_intercept: bool = False
) -> tuple[float, float]:
    """Fits `y ~ scale * x + intercept` minimising the squared *relative* errors `(fit - y) / y`.

    Relative errors are what "within 10%" measures, and they keep the slowest models from dominating the fit.
    Used for the table's calibration and for the FLOPs proxy of the benchmark alike.

    Args:
        x: The predictor (a sum of table entries, or mult-adds).
        y: The measured latencies (positive).
        nonnegative_intercept: Constrain the intercept to be >= 0. A fixed cost cannot be negative; a negative
            fitted one (usually noise in a few measurements) predicts a negative latency for networks much
            smaller than the calibration ones. When the free fit's intercept is negative the line is refitted
            through the origin, the least-squares solution under the constraint.

    Returns:
        `(scale, intercept)`.

    Raises:
        ValueError: with fewer than two points, mismatched lengths, non-positive latencies, or when all `x`
            are equal (the line is then undetermined).

    Example:

    >>> fit_line([1.0, 2.0, 3.0], [2.5, 4.5, 6.5])
    (2.0, 0.5)
    >>> fit_line([1.0, 2.0], [1.0, 4.0], nonnegative_intercept=True)  # the free fit: (3.0, -2.0)
    (1.2, 0.0)
    """
    x_values = np.asarray(x, dtype=np.float64).ravel()
    y_values = np.asarray(y, dtype=np.float64).ravel()
    if x_values.size != y_values.size:
        raise ValueError(f"fit_line needs as many x as y; received {x_values.size} and {y_values.size}.")
    if x_values.size < 2:
        raise ValueError(
            f"Fitting a scale and an intercept needs at least 2 measurements; received {x_values.size}."
        )
    if not (np.all(np.isfinite(x_values)) and np.all(np.isfinite(y_values)) and np.all(y_values > 0)):
        raise ValueError("fit_line needs finite predictors and positive, finite measured latencies.")
    if np.ptp(x_values) <= 1e-12 * max(1.0, float(np.max(np.abs(x_values)))):
        raise ValueError(
            "All calibration models have the same predicted latency, so a scale cannot be fitted: calibrate "
            "on architectures of different sizes."
        )
    design = np.stack([x_values / y_values, 1.0 / y_values], axis=1)
    (scale, intercept), *_ = np.linalg.lstsq(design, np.ones_like(y_values), rcond=None)
    if nonnegative_intercept and intercept < 0:
        # The loss is convex, so with the free optimum outside the constraint the constrained one lies on its
        # boundary: intercept 0, and the one-parameter least squares of scale * x / y against 1.
        ratio = design[:, 0]
        scale, intercept = float(np.sum(ratio) / np.sum(ratio * ratio)), 0.0
    return round(float(scale), 12), round(float(intercept), 12)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2.0  # ties share their average rank
        start = end + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two equally long sequences; `None` when it is undefined.

    Example:

    >>> spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 40.0, 30.0])
    0.8
    """
    if len(a) != len(b):
        raise ValueError(f"spearman needs sequences of equal length; received {len(a)} and {len(b)}.")
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    mean_a, mean_b = sum(ra) / len(ra), sum(rb) / len(rb)
    covariance = sum((x - mean_a) * (y - mean_b) for x, y in zip(ra, rb, strict=True))
    spread = math.sqrt(sum((x - mean_a) ** 2 for x in ra) * sum((y - mean_b) ** 2 for y in rb))
    return round(covariance / spread, 12) if spread > 0 else None


def prediction_report(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """How well predicted latencies match measured ones: the figures `keras-mnas lut eval` prints.

    The error of one prediction is `|predicted / measured - 1|`.

    Args:
        predicted: Predicted latencies.
        measured: The measured latencies of the same models, in the same order (positive).

    Returns:
        A dict with `within_10_percent` and `within_5_percent` (the shares of predictions with an error of
        at most 10% and 5%), `spearman` (the rank correlation, `None` when undefined), `median_abs_error`
        and `max_abs_error`.

    Raises:
        ValueError: for sequences of different lengths, no measurement, or a measurement that is not a
            positive finite number.

    Example:

    >>> report = prediction_report([1.0, 2.1, 3.9, 3.0], [1.0, 2.0, 3.0, 4.0])
    >>> report["within_10_percent"], report["spearman"], round(report["max_abs_error"], 6)
    (0.5, 0.8, 0.3)
    """
    predicted, measured = [float(p) for p in predicted], [float(m) for m in measured]
    if len(predicted) != len(measured) or not measured:
        raise ValueError(
            "prediction_report needs as many predictions as measurements, at least one; received "
            f"{len(predicted)} and {len(measured)}."
        )
    for value in measured:
        check_number("measured", value, low=0, low_open=True)
    errors = [abs(p / m - 1) for p, m in zip(predicted, measured, strict=True)]
    return {
        "within_10_percent": sum(e <= 0.10 for e in errors) / len(errors),
        "within_5_percent": sum(e <= 0.05 for e in errors) / len(errors),
        "spearman": spearman(predicted, measured),
        "median_abs_error": statistics.median(errors),
        "max_abs_error": max(errors),
    }
