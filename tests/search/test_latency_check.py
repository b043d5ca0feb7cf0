"""A latency that is not a finite number of milliseconds > 0 fails its trial before any training."""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_mnas.latency import LatencyResult, LatencySource
from keras_mnas.search import MnasSearchSpace, MnasTuner


class UncheckedResult(LatencyResult):
    """A source's own result type that skips LatencyResult's checks, as a careless subclass may."""

    def __post_init__(self):
        pass


class BadLatency(LatencySource):
    """Returns the scripted results in call order."""

    name = "bad"

    def __init__(self, results):
        self.results = list(results)

    def measure(self, model, *, quantization="float32", representative_data=None):
        return self.results.pop(0)

    def config(self):
        return {"name": self.name}


class TrainingLog(keras.callbacks.Callback):
    """Counts trainings on the class: KerasTuner gives each trial a deep copy of the callbacks."""

    started = 0

    def on_train_begin(self, logs=None):
        type(self).started += 1


def unchecked(ms: float) -> LatencyResult:
    fields = dict(mean_ms=1.0, p90_ms=1.0, std_ms=0.0, cv=0.0, runs=5, warmup_runs=1, threads=1, source="bad")
    return UncheckedResult(median_ms=ms, **fields)


BAD = [
    (unchecked(math.nan), "median_ms=nan"),
    (unchecked(math.inf), "median_ms=inf"),
    (unchecked(0.0), "median_ms=0.0"),
    (unchecked(-2.0), "median_ms=-2.0"),
    (2.5, "returned 2.5"),  # a bare number is not a LatencyResult
]


def test_a_bad_latency_fails_the_trial_before_training(tmp_path):
    space = MnasSearchSpace(
        [(1, 16, 1, 1), (6, 24, 1, 2)],
        input_shape=(8, 8, 1),
        classes=3,
        depth_multiplier=0.25,
        head_filters=16,
    )
    rng = np.random.default_rng(0)
    x, y = rng.random((24, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 24)
    TrainingLog.started = 0
    tuner = MnasTuner(
        space=space,
        latency=BadLatency([result for result, _ in BAD]),
        target_latency_ms=1.0,
        max_trials=len(BAD),
        max_consecutive_failed_trials=len(BAD) + 1,
        seed=0,
        directory=str(tmp_path),
        project_name="bad_latency",
    )
    tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=8, callbacks=[TrainingLog()], verbose=0)
    assert TrainingLog.started == 0, "no candidate may be trained with a latency the reward cannot read"
    trials = [tuner.oracle.get_trial(t) for t in tuner.oracle.start_order]
    assert [t.status for t in trials] == ["FAILED"] * len(BAD)
    for trial, (_, shown) in zip(trials, BAD, strict=True):
        reason = trial.message.strip().splitlines()[-1]
        assert "The latency source 'bad' returned" in reason and shown in reason, reason
        assert "finite number of milliseconds > 0" in reason and "not trained" in reason
