"""A latency source that answers from a script, for fast and exact tests of search code."""

from __future__ import annotations

from collections.abc import Iterable

import keras_tuner

from keras_mnas.latency.base import LatencyResult, LatencySource
from keras_mnas.utils.checks import is_number


class ScriptedLatency(LatencySource):
    """Returns scripted latencies in call order instead of timing anything.

    A test of a search script wants the reward's latency term exact and the trials fast; timing a TFLite model
    gives neither. The n-th `measure` call returns the n-th scripted value (the last one once the script runs
    out); a `None` entry makes that call raise `keras_tuner.errors.FailedTrialError`, as a source does when it
    cannot measure a model.

    Args:
        latencies: Milliseconds per call, in order; `None` for a call that fails.
        spreads: Optional, one per latency: how far that call's timed runs disagreed, as the result's
            `robust_cv` (its `spread`; above 0.05 the figure is flagged unstable). By default every figure
            is perfectly stable.

    Attributes:
        calls: How many times `measure` has been called.

    Example:

    ```python
    latency = keras_mnas.testing.ScriptedLatency([2.0, 1.0, None])
    tuner = keras_mnas.search.MnasTuner(space=space, latency=latency, target_latency_ms=2.0, max_trials=3)
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=1)
    # Trial 1 took 2 ms, trial 2 took 1 ms, trial 3 failed in its latency measurement.

    # The second figure's runs disagreed: its trial is marked "(unstable: 8.0% spread)".
    latency = keras_mnas.testing.ScriptedLatency([2.0, 1.0], spreads=[0.01, 0.08])
    ```
    """

    name = "scripted"

    def __init__(self, latencies: Iterable[float | None], spreads: Iterable[float] | None = None):
        self.latencies = list(latencies)
        if not self.latencies:
            raise ValueError("ScriptedLatency needs at least one scripted latency; received an empty list.")
        for value in self.latencies:
            if value is not None and not (is_number(value) and value > 0):
                raise ValueError(
                    "ScriptedLatency expects positive milliseconds or None; "
                    f"received {value!r} in {self.latencies}."
                )
        self.spreads = None if spreads is None else list(spreads)
        if self.spreads is not None:
            if len(self.spreads) != len(self.latencies):
                raise ValueError(
                    f"ScriptedLatency needs one spread per latency: {len(self.latencies)} latencies, "
                    f"received {len(self.spreads)} spreads ({self.spreads})."
                )
            for value in self.spreads:
                if not (is_number(value) and value >= 0):
                    raise ValueError(
                        "ScriptedLatency expects spreads that are finite numbers >= 0 (0.05 is 5%); "
                        f"received {value!r} in {self.spreads}."
                    )
        self.calls = 0

    def measure(self, model, *, quantization: str = "float32", representative_data=None) -> LatencyResult:
        index = min(self.calls, len(self.latencies) - 1)
        value = self.latencies[index]
        self.calls += 1
        if value is None:
            raise keras_tuner.errors.FailedTrialError(
                f"the scripted latency source refuses call {self.calls} (scripted None)"
            )
        return LatencyResult(
            median_ms=float(value),
            mean_ms=float(value),
            p90_ms=float(value),
            std_ms=0.0,
            cv=0.0,
            runs=1,
            warmup_runs=0,
            threads=1,
            source=self.name,
            quantization=quantization,
            robust_cv=None if self.spreads is None else float(self.spreads[index]),
        )
