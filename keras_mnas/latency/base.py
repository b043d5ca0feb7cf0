"""The common interface every latency source implements.

A latency source turns a Keras model into a `LatencyResult`. The host CPU timer, the Android phone pool and
the lookup-table predictor all implement `LatencySource`, so the tuner and the command line can use any of
them without knowing which one they hold.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
from typing import Any

QUANTIZATIONS = ("float32", "int8")


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """One latency figure with the statistics and provenance behind it.

    All times are milliseconds. `median_ms` is *the* figure: the search, the reward and the tables use it.

    Attributes:
        median_ms: Median latency over the measured runs (or the predicted latency).
        mean_ms: Mean latency over the measured runs.
        p90_ms: 90th percentile of the measured runs.
        std_ms: Standard deviation of the measured runs.
        cv: Coefficient of variation (`std_ms / mean_ms`).
        runs: Number of timed runs behind the statistics (0 for a prediction).
        warmup_runs: Number of untimed warm-up runs.
        threads: Number of interpreter threads.
        source: Which latency source produced this, e.g. `"host"`, `"android:SERIAL"`, `"lut"`.
        quantization: `"float32"` or `"int8"`.
        tflite_bytes: Size of the TFLite flatbuffer that was timed (0 when none was built).
        sha256: SHA-256 of that flatbuffer (empty when none was built).
        provenance: Free-form facts about where and how it was measured (machine, device, versions).
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

    def __post_init__(self):
        for name in ("median_ms", "mean_ms", "p90_ms", "std_ms", "cv"):
            value = getattr(self, name)
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
    def unstable(self) -> bool:
        """True when the coefficient of variation is above 5%: the figure deserves suspicion."""
        return self.cv > 0.05

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
