"""Calibration of a lookup table, and the figures that say how well it predicts.

An entry timed alone runs with hot caches and pays no neighbour's writes; inside a network the same kernels
cost more, and by an amount that depends on the kernel type. The table is therefore calibrated on end-to-end
measurements in one of two ways (`Calibration`):

- **per kernel** (`fit_terms`): each entry's in-network cost is a non-negative weighted sum of its features
  (`kernels.entry_features`: its time alone under its kernel type, a count of that type, the bytes it moves),
  one weight per feature fitted on dozens of measured networks; the network adds a fixed cost.
- **a line** (`fit_line`): `measured = scale * sum + intercept`, two numbers, for a handful of measurements.

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

from keras_mnas.utils.checks import check_int, check_number


@dataclasses.dataclass(frozen=True)
class Calibration:
    """How a table's entries become an end-to-end latency: a line, or one weight per kernel feature.

    Without `terms` it is a line, `predicted_ms = scale * sum_of_entries_ms + intercept_ms`, fitted by least
    squares on the relative errors of `measurements` (each a dict with at least `lut_ms` and `measured_ms`),
    keeping `intercept_ms >= 0`.

    With `terms` (`{feature: weight}`, see `kernels.entry_features`) it is per kernel: each entry costs the
    weighted sum of its features, and `predicted_ms = intercept_ms + sum of the entries' costs`; `scale` is
    then 1. Each measurement holds the summed `features` of its network.

    Attributes:
        scale: Multiplies the sum of entries (a line); 1 with `terms`.
        intercept_ms: Added to it (the whole network's fixed cost).
        measurements: What it was fitted on, with the architecture of each when known.
        fitted: When it was fitted (ISO 8601, UTC).
        terms: The weight of each entry feature; empty for a line.

    Example:

    >>> calibration = Calibration(1.2, 0.3, ({"lut_ms": 2.0, "measured_ms": 2.5},))
    >>> round(calibration.apply(2.0), 6), [round(e, 6) for e in calibration.relative_errors]
    (2.7, [0.08])
    >>> per_kernel = Calibration(1.0, 0.3, ({"features": {"conv:ms": 2.0}, "measured_ms": 2.5},),
    ...                          terms={"conv:ms": 1.1})
    >>> per_kernel.method, round(per_kernel.apply_features({"conv:ms": 2.0}), 6)
    ('kernels', 2.5)
    """

    scale: float
    intercept_ms: float
    measurements: tuple[dict[str, Any], ...] = ()
    fitted: str = ""
    terms: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check_number("Calibration.scale", self.scale, low=0, low_open=True)
        check_number("Calibration.intercept_ms", self.intercept_ms)
        object.__setattr__(self, "measurements", tuple(dict(m) for m in self.measurements))
        if not isinstance(self.terms, Mapping):
            raise ValueError(
                f"Calibration.terms must be a dict of feature -> weight; received {self.terms!r}."
            )
        terms = {}
        for name, weight in self.terms.items():
            terms[str(name)] = check_number(f"Calibration.terms[{name!r}]", weight, low=0)
        object.__setattr__(self, "terms", terms)
        if terms and self.scale != 1:
            raise ValueError(
                f"A per-kernel calibration (with terms) has scale 1; received scale={self.scale!r}."
            )

    @property
    def method(self) -> str:
        """`"kernels"` with per-feature `terms`, `"line"` without."""
        return "kernels" if self.terms else "line"

    def apply(self, lut_ms: float) -> float:
        """The calibrated latency for a sum of entries (a line only).

        Raises:
            ValueError: for a per-kernel calibration, which needs the entries' features (`apply_features`).
        """
        if self.terms:
            raise ValueError(
                "A per-kernel calibration predicts from the entries' features (apply_features, or the "
                "table's predict), not from their sum."
            )
        return self.scale * lut_ms + self.intercept_ms

    def apply_features(self, features: Mapping[str, float]) -> float:
        """The calibrated latency of a network whose entries' features add up to `features`."""
        return self.intercept_ms + sum(
            weight * features.get(name, 0.0) for name, weight in self.terms.items()
        )

    def entry_cost(self, features: Mapping[str, float]) -> float:
        """One entry's in-network cost from its features (what a per-kernel prediction adds for it)."""
        return sum(weight * features.get(name, 0.0) for name, weight in self.terms.items())

    @property
    def relative_errors(self) -> list[float]:
        """`predicted / measured - 1` of every calibration measurement (in-sample)."""
        if self.terms:
            return [self.apply_features(m["features"]) / m["measured_ms"] - 1 for m in self.measurements]
        return [self.apply(m["lut_ms"]) / m["measured_ms"] - 1 for m in self.measurements]

    def to_dict(self) -> dict[str, Any]:
        """The calibration as a JSON-serialisable dict (what the table file holds)."""
        return {
            "method": self.method,
            "scale": self.scale,
            "intercept_ms": self.intercept_ms,
            "terms": dict(self.terms),
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
            terms=data.get("terms") or {},
        )


def fit_terms(
    features: Sequence[Mapping[str, float]],
    measured: Sequence[float],
    *,
    prior: Mapping[str, float] | None = None,
    ridge: float = 0.01,
) -> tuple[dict[str, float], float]:
    """Fits non-negative feature weights and a fixed cost: `measured ~ intercept + sum(weight * feature)`.

    As in `fit_line`, the squared *relative* errors are minimised. Weights and the intercept are kept >= 0 (a
    kernel cannot save time by running), by non-negative least squares. A ridge penalty pulls each weight
    towards `prior` (e.g. 1 for an entry's time alone: a kernel inside a network costs what it costs alone
    unless the measurements say otherwise), which keeps the fit stable when a feature is rare or two are
    nearly collinear. Features are scaled to a common size first, so one `ridge` suits them all.

    Args:
        features: For each measured network, its summed entry features (`{name: value}`).
        measured: The measured latencies (positive), in the same order.
        prior: The weight each feature is pulled towards (0 for those not named).
        ridge: The strength of that pull, relative to one measurement's squared relative error (>= 0).

    Returns:
        `({feature: weight}, intercept_ms)`, over the features that occur in `features` and, with
        `ridge > 0`, those with a non-zero `prior` (one no measurement holds keeps its prior weight).

    Raises:
        ValueError: for mismatched lengths, fewer than two measurements, non-positive latencies or no
            feature at all.

    Example:

    >>> rows = [{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 1.0}]
    >>> terms, intercept = fit_terms(rows, [2.5, 3.5, 5.5], ridge=0.0)
    >>> {name: round(weight, 6) for name, weight in terms.items()}, round(intercept, 6)
    ({'a': 2.0, 'b': 3.0}, 0.5)
    """
    from scipy.optimize import nnls  # here: predictions never need it

    rows = [dict(f) for f in features]
    y = np.asarray(measured, dtype=np.float64).ravel()
    if len(rows) != y.size:
        raise ValueError(
            f"fit_terms needs as many feature rows as measurements; received {len(rows)} and {y.size}."
        )
    if y.size < 2:
        raise ValueError(f"Fitting a calibration needs at least 2 measurements; received {y.size}.")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ValueError("fit_terms needs positive, finite measured latencies.")
    check_number("ridge", ridge, low=0)
    names = {name for row in rows for name, value in row.items() if value}
    if not names:
        raise ValueError("fit_terms needs at least one non-zero feature.")
    if ridge > 0:
        # A feature no measurement holds keeps its prior weight (what the ridge alone says): a kernel type
        # missing from the calibration networks costs what the prior says, not nothing.
        names |= {name for name, weight in (prior or {}).items() if weight}
    names = sorted(names)
    x = np.array([[row.get(name, 0.0) for name in names] + [1.0] for row in rows], dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("fit_terms needs finite features.")
    design = x / y[:, None]
    size = np.sqrt(np.mean(design * design, axis=0))
    size[size == 0] = 1.0
    target = np.ones_like(y)
    if ridge > 0:
        pulled = np.array([(prior or {}).get(name, 0.0) for name in names] + [0.0]) * size
        penalty = math.sqrt(ridge) * np.eye(len(size))
        penalty[-1, -1] = 0.0  # the fixed cost has no prior: the measurements alone decide it
        design = np.vstack([design / size, penalty])
        target = np.concatenate([target, math.sqrt(ridge) * pulled])
    else:
        design = design / size
    weights, _ = nnls(design, target)
    weights = weights / size
    terms = {name: round(float(w), 12) for name, w in zip(names, weights[:-1], strict=True)}
    return terms, round(float(weights[-1]), 12)


def bootstrap_spread(
    features: Sequence[Mapping[str, float]],
    measured: Sequence[float],
    candidates: Sequence[Mapping[str, float]],
    *,
    fits: int = 16,
    seed: int = 0,
    prior: Mapping[str, float] | None = None,
    ridge: float = 0.01,
    prior_spread: float = 0.5,
) -> list[float]:
    """How unsure a per-kernel calibration is of each candidate: the spread of its bootstrap predictions.

    `fit_terms` is fitted `fits` times, each time on a resample (with replacement) of the measurements and
    with each prior weight drawn around its value (log-normal, `prior_spread`), and each candidate is
    predicted by every fit. Where the fits disagree, the measurements say little about the candidate's mix of
    kernels: measuring it there teaches the calibration most. The drawn priors matter for a kernel type no
    measurement holds yet: resampling alone would give it the same weight in every fit, and no spread.

    This is how a table chooses its calibration architectures adaptively
    (`LatencyLookupTable.choose_calibration`): it samples where the error is likely high, as nn-Meter
    samples kernel configurations.

    Args:
        features: For each measured network, its summed entry features.
        measured: The measured latencies, in the same order.
        candidates: The summed entry features of each network that could be measured next.
        fits: How many bootstrap fits (at least 2).
        seed: Seeds the resampling.
        prior: As for `fit_terms`.
        ridge: As for `fit_terms`.
        prior_spread: The standard deviation of the log of each drawn prior weight (>= 0).

    Returns:
        For each candidate, the standard deviation of its predictions over the mean prediction.

    Raises:
        ValueError: as `fit_terms`, or for `fits < 2`.

    Example:

    >>> rows = [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}, {"a": 4.0, "b": 1.0}]
    >>> near, far = bootstrap_spread(rows, [1.0, 2.1, 2.9, 5.0], [{"a": 2.5}, {"b": 3.0}], ridge=0.0)
    >>> near < far
    True
    """
    check_int("fits", fits, minimum=2)
    check_number("prior_spread", prior_spread, low=0)
    rows = [dict(f) for f in features]
    y = list(measured)
    if len(rows) != len(y):
        raise ValueError(
            f"bootstrap_spread needs as many feature rows as measurements; received {len(rows)} and {len(y)}."
        )
    rng = np.random.default_rng(seed)
    predictions = []
    for _ in range(int(fits)):
        picked = rng.integers(0, len(rows), len(rows))
        drawn = {name: w * math.exp(rng.normal(0, prior_spread)) for name, w in (prior or {}).items()}
        try:
            terms, intercept = fit_terms(
                [rows[i] for i in picked], [y[i] for i in picked], prior=drawn, ridge=ridge
            )
        except ValueError:
            continue  # a resample without a single non-zero feature: another draw decides
        calibration = Calibration(1.0, intercept, terms=terms)
        predictions.append([calibration.apply_features(c) for c in candidates])
    if len(predictions) < 2:
        raise ValueError("bootstrap_spread needs measurements with non-zero features to fit on.")
    values = np.asarray(predictions, dtype=np.float64)
    mean = np.mean(values, axis=0)
    spread = np.std(values, axis=0) / np.where(mean > 0, mean, 1.0)
    return [float(s) for s in spread]


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


#: A median signed error this large, with most predictions on the same side, says the device no longer
#: runs as fast as when the table was calibrated (another load, clock, thermal state or software): a
#: measurement's own noise moves a median over processes by 2-3% on the host.
SHIFT_THRESHOLD = 0.05
_SHIFT_SHARE = 0.8
_SHIFT_MIN_NETWORKS = 5  # fewer are too easily all on one side by chance


def prediction_report(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """How well predicted latencies match measured ones: the figures `keras-mnas lut eval` prints.

    The error of one prediction is `|predicted / measured - 1|`.

    Args:
        predicted: Predicted latencies.
        measured: The measured latencies of the same models, in the same order (positive).

    Returns:
        A dict with `within_10_percent` and `within_5_percent` (the shares of predictions with an error of
        at most 10% and 5%), `spearman` (the rank correlation, `None` when undefined), `median_abs_error`,
        `max_abs_error`, `median_error` (the median of `predicted / measured - 1`, signed: how far the
        predictions sit above or below the measurements as a whole) and `shift`: that median when the
        predictions are off across the board (by `SHIFT_THRESHOLD` or more, four in five of them on the
        same side, over at least five networks), else `None`.

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
    signed = [p / m - 1 for p, m in zip(predicted, measured, strict=True)]
    errors = [abs(e) for e in signed]
    median_error = statistics.median(signed)
    same_side = sum(e * median_error > 0 for e in signed) / len(signed)
    shifted = (
        len(signed) >= _SHIFT_MIN_NETWORKS
        and abs(median_error) >= SHIFT_THRESHOLD
        and same_side >= _SHIFT_SHARE
    )
    return {
        "within_10_percent": sum(e <= 0.10 for e in errors) / len(errors),
        "within_5_percent": sum(e <= 0.05 for e in errors) / len(errors),
        "spearman": spearman(predicted, measured),
        "median_abs_error": statistics.median(errors),
        "max_abs_error": max(errors),
        "median_error": median_error,
        "shift": median_error if shifted else None,
    }
