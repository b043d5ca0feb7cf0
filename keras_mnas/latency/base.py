"""The common interface every latency source implements.

A latency source turns a Keras model into a `LatencyResult`. The host CPU timer, the Android phone pool and
the lookup-table predictor all implement `LatencySource`, so the tuner and the command line can use any of
them without knowing which one they hold.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import math
import threading
from typing import Any

QUANTIZATIONS = ("float32", "int8")

# Above this spread (see `LatencyResult.spread`) a figure is flagged unstable.
UNSTABLE_SPREAD = 0.05

# Guards every source's "already warned of an unstable figure" flag (rarely taken: only for unstable figures).
_WARNED_LOCK = threading.Lock()

# The 95th percentile of the standard normal: (p95 - p5) / (2 * this) estimates a normal sigma.
_Z95 = 1.6448536269514722


def percentile_cv(p5: float, median: float, p95: float) -> float:
    """The coefficient of variation implied by the 5th-95th percentile range of a set of runs.

    `(p95 - p5) / (2 * 1.645 * median)`: for normally distributed times it equals `std / mean`; unlike it,
    up to 5% of outliers on either side leave it unchanged.

    Example:

    ```python
    percentile_cv(p5=9.0, median=10.0, p95=11.0)  # about 0.061
    ```
    """
    if not median > 0:
        raise ValueError(f"`median` must be positive; received {median!r}.")
    return max(0.0, (p95 - p5) / (2 * _Z95 * median))


def judged_spread(cv: float, robust_cv: float | None) -> float:
    """The spread the unstable flag judges: `robust_cv` when known, else `cv`.

    `LatencyResult.spread` applies it to a result; a lookup table's saved entries keep the same two numbers.
    """
    return cv if robust_cv is None else robust_cv


def is_unstable(spread: float | None) -> bool:
    """Whether a spread (see `judged_spread`) is above 5%, the *unstable* flag; `None` (none known) is not.

    `LatencyResult.unstable` applies it to a result; a trial's recorded `latency_spread` is judged the same.
    """
    return spread is not None and spread > UNSTABLE_SPREAD


def check_seconds(name: str, value, *, allow_zero: bool = False) -> None:
    """Raises `ValueError` naming `name` unless `value` is a finite number of seconds (> 0, or >= 0)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be a finite number of seconds {bound}; received {value!r}.")


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """One latency figure with the statistics and provenance behind it.

    All times are milliseconds. `median_ms` is *the* figure: the search, the reward and the tables use it.

    Attributes:
        median_ms: Median latency over the measured runs (or the predicted latency).
        mean_ms: Mean latency over the measured runs.
        p90_ms: 90th percentile of the measured runs.
        std_ms: Standard deviation of the measured runs.
        cv: Coefficient of variation (`std_ms / mean_ms`), as benchmark_model's `std` gives it. Over
            thousands of runs of a small model, a handful of runs pre-empted by the OS dominate it.
        runs: Number of timed runs behind the statistics (0 for a prediction).
        warmup_runs: Number of untimed warm-up runs.
        threads: Number of interpreter threads.
        source: Which latency source produced this, e.g. `"host"`, `"android:SERIAL"`, `"lut"`.
        quantization: `"float32"` or `"int8"`.
        tflite_bytes: Size of the TFLite flatbuffer that was timed (0 when none was built).
        sha256: SHA-256 of that flatbuffer (empty when none was built).
        provenance: Free-form facts about where and how it was measured (machine, device, versions).
        robust_cv: The spread of the middle 90% of the runs as a coefficient of variation,
            `(p95 - p5) / (2 * 1.645 * median)`: equal to `cv` for normally distributed times, and unmoved
            by a few outliers. `None` when the runs' percentiles are unknown (benchmark_model before
            LiteRT prints none; results cached before keras-mnas recorded it).
    """

    median_ms: float
    mean_ms: float
    p90_ms: float
    std_ms: float
    cv: float
    runs: int
    warmup_runs: int
    threads: int
    source: str
    quantization: str = "float32"
    tflite_bytes: int = 0
    sha256: str = ""
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    robust_cv: float | None = None

    def __post_init__(self):
        for name in ("median_ms", "mean_ms", "p90_ms", "std_ms", "cv", "robust_cv"):
            value = getattr(self, name)
            if value is None and name == "robust_cv":
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"LatencyResult.{name} must be a finite, non-negative number; received {value!r}."
                )
        if self.median_ms <= 0:
            raise ValueError(
                f"LatencyResult.median_ms must be positive; received {self.median_ms!r}. A zero latency "
                "means nothing was measured."
            )
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"LatencyResult.quantization must be one of {QUANTIZATIONS}; received {self.quantization!r}."
            )

    @property
    def spread(self) -> float:
        """`robust_cv` when known, else `cv`: the spread `unstable` judges."""
        return judged_spread(self.cv, self.robust_cv)

    @property
    def unstable(self) -> bool:
        """True when `spread` is above 5%: the runs disagree and the figure deserves suspicion.

        The robust spread is judged when known, so that a few pre-empted runs among thousands (the usual
        case for a model of microseconds on a desktop OS) do not flag every figure, while a machine busy
        for much of the measurement still does.
        """
        return is_unstable(self.spread)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict (the inverse of `from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyResult:
        """Rebuilds a result written by `to_dict`; unknown keys are an error."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(
                f"Unknown LatencyResult fields {sorted(unknown)}; expected a subset of {sorted(fields)}."
            )
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


class LatencySource(abc.ABC):
    """Something that can tell how long a model takes to run.

    Subclasses implement `measure`. A source must raise (never return a made-up number) when it cannot
    measure: an unconvertible model, a device error, an undefined input shape.

    Example:

    ```python
    source = keras_mnas.latency.HostLatency()
    result = source.measure(keras_mnas.applications.MnasNetA1(weights=None))
    print(result.median_ms)
    ```
    """

    #: Short name recorded in results, e.g. "host".
    name: str = "latency"

    @abc.abstractmethod
    def measure(self, model, *, quantization: str = "float32", representative_data=None) -> LatencyResult:
        """Measures (or predicts) the latency of one Keras model.

        Args:
            model: A built Keras model with a fully defined input shape (batch size aside).
            quantization: `"float32"` or `"int8"` (full-integer post-training quantization).
            representative_data: For int8: an array of input samples, or a callable returning an iterable of
                input batches, used to calibrate the quantization ranges.

        Returns:
            A `LatencyResult`.
        """

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings that change the measured figure (recorded with a search)."""
        return {"name": self.name}

    def _unstable_log_level(self) -> int:
        """The level to log an unstable figure at: WARNING for this source's first, INFO for later ones.

        The figure itself is returned flagged, and a search's progress line shows each trial's; repeating the
        warning would print it for nearly every candidate of a search on a noisy host or a hot phone.
        """
        with _WARNED_LOCK:
            first = not getattr(self, "_warned_unstable", False)
            self._warned_unstable = True
        return logging.WARNING if first else logging.INFO
