"""MnasTuner: MnasNet's platform-aware search as a KerasTuner Tuner.

Every trial: build the candidate, measure its latency (host CPU TFLite by default), train it, evaluate it, and
report `val_accuracy` (or the chosen metric), `latency_ms`, `reward`, `params` and `macs`, and
`latency_spread` (how far the timed runs disagreed) when the latency was measured rather than predicted. The
reward is added to the training logs at every epoch by a callback, so KerasTuner's own machinery (best-epoch
checkpoints, `get_best_models`, TensorBoard scalars) treats it as an ordinary metric.

With `quantization="int8"` the latency is the full-integer int8 model's; with `evaluate_int8=True` as well,
every epoch also logs `int8_val_accuracy` (the int8 TFLite model run on the validation data) and the reward
reads it, so the search scores the model that ships.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

import keras
import keras_tuner
import numpy as np

from keras_mnas.architecture import ArchSpec
from keras_mnas.counting import count_model_macs
from keras_mnas.latency import (
    HostLatency,
    LatencyLookupTable,
    LatencyResult,
    LatencySource,
    MissingEntryError,
)
from keras_mnas.latency.base import is_unstable
from keras_mnas.quantization import (
    evaluate_tflite,
    export_int8,
    quantize_aware_train,
    representative_sample,
)
from keras_mnas.search.distributed import ChiefOracleClient, WorkProgress
from keras_mnas.search.hypermodel import MnasHyperModel
from keras_mnas.search.latency_table import Prefilter, check_table_source
from keras_mnas.search.oracle import MnasOracle
from keras_mnas.search.results import (
    INT8_METRIC,
    best_metric_values,
    describe_search,
    export_model,
    format_results,
    pareto_front,
    plot_pareto,
    trial_record,
)
from keras_mnas.search.reward import AbsoluteReward, MnasReward
from keras_mnas.search.space import MnasSearchSpace
from keras_mnas.search.tensorboard import SearchLogger, tensorboard_dir_from_callbacks
from keras_mnas.tflite import convert_to_tflite
from keras_mnas.utils.checks import (
    check_bool,
    check_choice,
    check_int,
    check_seconds,
    check_type,
    is_number,
)
from keras_mnas.utils.io import atomic_write_json
from keras_mnas.utils.tf_memory import custom_gradient_names, forget_custom_gradients

REPORTED_METRICS = ("latency_ms", "reward", "params", "macs", "latency_spread")
EXPORT_QUANTIZATIONS = ("float32", "int8", "qat")
DISTRIBUTED_TRIAL_TIMEOUT = 600.0


class SearchTerminated(KeyboardInterrupt):
    """The search process got SIGTERM (a `kill`, a job scheduler's stop): an interruption, like Ctrl-C."""


@contextlib.contextmanager
def _sigterm_interrupts():
    """Within it, SIGTERM raises `SearchTerminated` in the main thread, so it unwinds as Ctrl-C does.

    Its trial is then recorded as interrupted, not crashed. Only where SIGTERM would otherwise kill the
    process outright: a handler the program installed itself is left alone, and so is any thread but the
    main one (which cannot receive signals).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum, frame):
        raise SearchTerminated("The search process received SIGTERM; the running trial runs again on resume.")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class TrialTimeoutError(keras_tuner.errors.FailedTrialError, TimeoutError):
    """A trial ran past its `trial_deadline`: it fails (a `FailedTrialError`) and the search goes on."""


class TrialWatch(keras.callbacks.Callback):
    """Counts a trial's training work for its worker's heartbeats, and stops the trial at its deadline.

    Every training, validation and prediction batch, and every epoch, advances `progress`. Past `deadline_at`
    (on `time.monotonic()`'s clock) the next batch end raises `TrialTimeoutError`: the trial fails as timed
    out rather than being scored as if a partly trained candidate were complete.

    Args:
        progress: The worker's `WorkProgress` (deep copies of this callback share it).
        trial_id: The trial, for the error message.
        deadline_at: When the trial's time is up, or None for no limit.
        deadline: The `trial_deadline` in seconds, for the error message.
    """

    def __init__(
        self, progress: WorkProgress, trial_id: str, deadline_at: float | None, deadline: float | None
    ):
        super().__init__()
        self.progress = progress
        self.trial_id = trial_id
        self.deadline_at = deadline_at
        self.deadline = deadline
        self._epoch = 0
        self._batches = 0

    def _tick(self) -> None:
        self.progress.advance()
        if self.deadline_at is not None and time.monotonic() > self.deadline_at:
            raise TrialTimeoutError(
                f"Trial {self.trial_id} timed out: training did not finish within the {self.deadline:g} s "
                f"trial_deadline (stopped in epoch {self._epoch + 1}, after {self._batches} training "
                "batches); a partly trained candidate is not scored."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        self._tick()

    def on_test_batch_end(self, batch, logs=None):
        self._tick()

    def on_predict_batch_end(self, batch, logs=None):
        self._tick()

    def on_epoch_end(self, epoch, logs=None):
        self._tick()


class RewardCallback(keras.callbacks.Callback):
    """Adds `reward` to the logs of every epoch; fails diverged trials.

    With `int8_accuracy` (a function of the model returning the accuracy of its int8 TFLite conversion), it
    also logs `int8_val_accuracy`, before the reward reads its metric. The trial's constant figures
    (`latency_ms`, `params`, `macs`, `latency_spread`) are logged by `FiguresCallback`, after the user's
    callbacks.
    """

    def __init__(
        self,
        reward: MnasReward,
        latency_ms: float,
        params: int,
        macs: int,
        int8_accuracy=None,
        latency_spread: float | None = None,
    ):
        super().__init__()
        self.reward = reward
        self.int8_accuracy = int8_accuracy
        self.latency_ms = latency_ms
        self.latency_spread = latency_spread
        # Not `self.params`: keras.callbacks.Callback uses that name for the fit parameters.
        self.trainable_params = params
        self.macs = macs

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise keras_tuner.errors.FailedTrialError(
                f"Training diverged: the loss became {float(loss)} at epoch {epoch + 1}."
            )
        if self.int8_accuracy is not None:
            logs[INT8_METRIC] = float(self.int8_accuracy(self.model))
        if self.reward.metric not in logs:
            raise keras_tuner.errors.FailedTrialError(
                f"The reward reads {self.reward.metric!r}, which training did not log (logged: "
                f"{sorted(logs)}). Pass validation_data, or choose the metric with reward=MnasReward(...)."
            )
        accuracy = float(logs[self.reward.metric])
        if not math.isfinite(accuracy):
            raise keras_tuner.errors.FailedTrialError(
                f"{self.reward.metric} is {accuracy} at epoch {epoch + 1}: training diverged."
            )
        logs["reward"] = self.reward(accuracy, self.latency_ms)

    def figures(self) -> FiguresCallback:
        """The callback that logs this trial's constant figures; it goes after the user's callbacks."""
        return FiguresCallback(self.latency_ms, self.trainable_params, self.macs, self.latency_spread)


class FiguresCallback(keras.callbacks.Callback):
    """Adds a trial's constant figures (`latency_ms`, `params`, `macs`, `latency_spread`) to each epoch's log.

    KerasTuner records them from the logs like any metric. Placed after the user's callbacks, so that a
    `keras.callbacks.TensorBoard` draws no flat curves of them: the HParams view shows them once per trial.
    """

    def __init__(self, latency_ms: float, params: int, macs: int, latency_spread: float | None = None):
        super().__init__()
        self.latency_ms = latency_ms
        self.trainable_params = params  # not `self.params`, Callback's fit parameters
        self.macs = macs
        self.latency_spread = latency_spread

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["latency_ms"] = self.latency_ms
        logs["params"] = float(self.trainable_params)
        logs["macs"] = float(self.macs)
        if self.latency_spread is not None:
            logs["latency_spread"] = self.latency_spread


def _measured_spread(result: LatencyResult) -> float | None:
    """The spread the unstable flag judges, or None for a prediction (no runs were timed)."""
    return float(result.spread) if result.runs > 0 else None


def _checked_latency(source: LatencySource, result: Any) -> float:
    """The median latency of a source's result, or a failed trial naming the source and what it returned."""
    median = getattr(result, "median_ms", None)
    if isinstance(result, LatencyResult) and is_number(median) and median > 0:
        return float(median)
    shown = f"median_ms={median!r}" if isinstance(result, LatencyResult) else repr(result)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    raise keras_tuner.errors.FailedTrialError(
        f"The latency source {getattr(source, 'name', type(source).__name__)!r} returned {shown}; expected a "
        "LatencyResult whose median_ms is a finite number of milliseconds > 0. The candidate was not trained."
    )


def _format_ms(ms: float) -> str:
    """Milliseconds for the progress lines: two decimals from 1 ms up, three significant digits below.

    Candidates of a small proxy task run for tens of microseconds; "0.05 ms" would hide the differences
    the reward is made of.
    """
    return f"{ms:.2f}" if not math.isfinite(ms) or abs(ms) >= 1 else f"{ms:#.3g}"


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.normcase(os.path.abspath(os.fspath(a))) == os.path.normcase(os.path.abspath(os.fspath(b)))


def _format_duration(seconds: float) -> str:
    """Seconds for the progress lines: "42 s", "3 min 05 s", "1 h 02 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def chance_threshold(classes: int) -> float:
    """The accuracy at or below which a trial counts as at chance level: `1/classes` plus a margin.

    The margin is 0.05, or `1/classes` when that is smaller (with 1000 classes the threshold is 0.2%: 5% would
    be fifty times chance).
    A candidate that learned something after a proxy training is well above it; one at or below it learned
    nothing, and its reward says nothing about its architecture.

    Example:

    >>> chance_threshold(10), chance_threshold(2), chance_threshold(1000)
    (0.15, 0.55, 0.002)
    """
    classes = check_int("classes", classes, minimum=2)
    return round(1 / classes + min(0.05, 1 / classes), 10)


def _refuse_alpha(alpha: float | None) -> None:
    # TuNAS's sum has one coefficient; an exponent under the target means nothing to it.
    if alpha is not None:
        raise ValueError(f"The absolute reward has no alpha (only beta); received alpha={alpha!r}.")


def _make_reward(reward, target_latency_ms, alpha, beta, metric) -> MnasReward | AbsoluteReward:
    if isinstance(reward, (MnasReward, AbsoluteReward)):
        if target_latency_ms is not None or alpha is not None or beta is not None:
            raise ValueError(
                f"Pass either reward={type(reward).__name__}(...) or target_latency_ms/alpha/beta, not both."
            )
        return reward
    if target_latency_ms is None:
        raise ValueError(
            "MnasTuner needs target_latency_ms (the latency T of the reward, in ms), e.g. "
            "target_latency_ms=75.0; received None."
        )
    if reward == "absolute":
        _refuse_alpha(alpha)
        return AbsoluteReward(target_latency_ms, *(() if beta is None else (beta,)), metric=metric)
    if reward == "soft":
        base = MnasReward.soft(target_latency_ms, metric)
    elif reward == "hard":
        base = MnasReward.hard(target_latency_ms, metric)
    else:
        raise ValueError(
            "reward must be 'soft', 'hard', 'absolute', a MnasReward or an AbsoluteReward; "
            f"received {reward!r}."
        )
    return MnasReward(
        base.target_latency_ms,
        base.alpha if alpha is None else alpha,
        base.beta if beta is None else beta,
        metric,
    )


def _check_tuner_arguments(kwargs, **named) -> None:
    # Every setting is checked before KerasTuner sees it: it would accept `executions_per_trial=0` (each trial
    # then fails with a StatisticsError), `max_consecutive_failed_trials=0` (never stops) and `"no"` as True.
    check_seconds("chief_timeout", named["chief_timeout"], allow_zero=True)
    check_bool("skip_ruled_out", named["skip_ruled_out"])
    check_bool("allow_config_change", named["allow_config_change"])
    if named["tensorboard_dir"] is not None:
        check_type("tensorboard_dir", named["tensorboard_dir"], (str, os.PathLike), "None, a str or a path")
    minimums = {"executions_per_trial": 1, "max_consecutive_failed_trials": 1, "max_retries_per_trial": 0}
    for name, minimum in minimums.items():
        if name in kwargs:
            check_int(name, kwargs[name], minimum=minimum, maximum=10_000)
    if "overwrite" in kwargs:
        check_bool("overwrite", kwargs["overwrite"])
    for name in ("directory", "project_name"):
        if kwargs.get(name) is not None:
            check_type(name, kwargs[name], (str, os.PathLike), "None, a str or a path")


def _known_metrics(hypermodel) -> list[str] | None:
    """The metric names a `MnasHyperModel`'s training logs, or None when they cannot be told in advance."""
    if not isinstance(hypermodel, MnasHyperModel):
        return None
    names = []
    for metric in hypermodel.metrics:
        name = metric if isinstance(metric, str) else getattr(metric, "name", None)
        if not isinstance(name, str):
            return None  # a metric function or object whose logged name only Keras knows
        names += [name, f"val_{name}"]
    return names


def _check_metric(metric: str, hypermodel) -> None:
    known = _known_metrics(hypermodel)
    if known is not None and metric not in known:
        raise ValueError(
            f"`metric` must be one the candidates log: one of {known} (the hypermodel's `metrics`, on the "
            f"training and validation data); received {metric!r}. To read another metric, pass it to "
            "MnasHyperModel(metrics=...)."
        )


class MnasTuner(keras_tuner.Tuner):
    """MnasNet's platform-aware architecture search, driven from an ordinary Keras script.

    Every trial that ends prints its progress: `Trial 3 COMPLETED (trial 4 of 12) in 14 s; 1 min 02 s
    elapsed, about 2 min 10 s left`, then its architecture, its latency (with its spread when that is above
    5%), accuracy and reward, and the best trial so far. A trial whose accuracy stays at chance level
    (`chance_threshold`: 1/classes plus a margin) gets a warning line: it learned nothing, and its reward
    says nothing about its architecture.

    Args:
        hypermodel: A `MnasHyperModel` (default: one over `space`), or any KerasTuner HyperModel of discrete
            hyperparameters whose models the latency source can measure.
        space: The `MnasSearchSpace` of the default hypermodel.
        latency: Where latency comes from: a `LatencySource` (default: `HostLatency()`, this CPU).
        target_latency_ms: The reward's target latency T in milliseconds.
        reward: `"soft"` (default, alpha = beta = -0.07), `"hard"` (alpha = 0, beta = -1), `"absolute"`
            (TuNAS's `accuracy + beta * |latency / T - 1|`, beta = -0.10), a `MnasReward` or an
            `AbsoluteReward`.
        alpha: Override the under-target exponent of a `"soft"`/`"hard"` reward.
        beta: Override the over-target exponent of a `"soft"`/`"hard"` reward, or the coefficient of an
            `"absolute"` one.
        metric: The accuracy metric the reward reads (default `"val_accuracy"`). With a `MnasHyperModel`,
            one its candidates log: a name of its `metrics`, or that name with `val_`.
        quantization: `"float32"` (default) or `"int8"`: which TFLite model's latency is measured (int8:
            full-integer post-training quantization, int8 input and output).
        representative_data: Inputs to calibrate int8 quantization. By default, with
            `quantization="int8"`, 100 samples drawn from the training inputs `search` receives
            (`keras_mnas.quantization.representative_sample`, seeded with `seed`), which must then be an
            array.
        evaluate_int8: With `quantization="int8"`: after every epoch, quantize the candidate (post-training,
            calibrated on the representative data), run the int8 TFLite model on `validation_data` with
            LiteRT and log its accuracy as `int8_val_accuracy`; the reward then reads it instead of
            `val_accuracy`, which is still logged. Costs one conversion and one validation pass per epoch.
        controller: Controller settings, as `MnasOracle`'s `controller` argument.
        max_trials: Number of distinct architectures to evaluate.
        seed: Random seed.
        skip_ruled_out: With a hard constraint, skip training a candidate whose latency alone keeps it below
            the best reward so far (even at 100% accuracy). Recorded as skipped, not as failed.
        prefilter: A `keras_mnas.latency.LatencyLookupTable` of the same quantization, for a hard reward over
            a `MnasHyperModel`: a candidate whose predicted latency exceeds `target_latency_ms * (1 +
            prefilter_tolerance)` is skipped before it is built, measured or trained, and recorded as
            skipped (`skipped` and `prefiltered` metrics of 1.0) with the predicted latency as its
            `latency_ms`, a reward of 0 (so it never ranks above a trained candidate) and the reward's upper
            bound at that latency as `reward_bound`. Candidates the table has no entries for are built and
            measured as usual. A soft reward has no budget to be far over, so a prefilter with it is
            refused. With `MnasHyperModel(include_preprocessing=True)` the table must hold the
            preprocessing entry (`keras_mnas.search.latency_table.profile_space(lut, space,
            include_preprocessing=True)`).
        prefilter_tolerance: How far above the target a prediction must be for the prefilter to skip the
            candidate, as a fraction of the target; choose it above the table's error on your models.
        max_crashes_per_trial: As in `MnasOracle`.
        trial_timeout: As in `MnasOracle`; by default 600 s in distributed tuning (`KERASTUNER_ORACLE_IP`
            set), where workers send a heartbeat every `trial_timeout / 4` s (at most 60 s) while a trial
            runs, and disabled otherwise. The chief takes a trial away when its worker is silent, or its
            work makes no progress (no phase change, no training or validation batch), for this long.
        trial_deadline: Seconds of wall time one trial may take, building, latency measurement and
            training together; `None` (default) sets no limit. In this process, a measurement still
            running at the deadline, or training past it (checked at every batch), fails the trial as timed
            out (`TrialTimeoutError`) and the search goes on. A single operation that never returns (one
            TFLite conversion or op) cannot be interrupted inside a process; in distributed tuning the chief
            also takes away a trial running past the deadline, and hands it to another worker.
        chief_timeout: Distributed tuning: seconds a worker waits for any answer of the chief oracle before
            it stops with an error (KerasTuner waits an hour per call).
        allow_config_change: Resume a saved search even when its space, reward or latency settings differ.
        tensorboard_dir: Where to write the TensorBoard HParams view of the search (one row per trial with
            its architecture choices and `val_accuracy`, `latency_ms`, `reward`, `params`, `macs`) and the
            controller's learning curves and Pareto plot. By default, the `log_dir` of a
            `keras.callbacks.TensorBoard` passed to `search`, if any.
        pareto_every: Log the Pareto plot to TensorBoard every this many completed trials (and at the end).
        oracle: Use this oracle instead of building a `MnasOracle`.
        **kwargs: Every usual KerasTuner argument: `directory`, `project_name`, `overwrite`,
            `executions_per_trial`, `distribution_strategy`, `max_retries_per_trial`,
            `max_consecutive_failed_trials`, `tuner_id`, ...

    Example:

    ```python
    space = MnasSearchSpace(input_shape=(32, 32, 3), classes=10, depth_multiplier=0.35)
    tuner = MnasTuner(space=space, target_latency_ms=2.0, max_trials=20, directory="runs")
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=3)
    tuner.pareto_front()
    best = tuner.best_architectures()[0]
    ```
    """

    def __init__(
        self,
        hypermodel: keras_tuner.HyperModel | None = None,
        *,
        space: MnasSearchSpace | None = None,
        latency: LatencySource | None = None,
        target_latency_ms: float | None = None,
        reward: str | MnasReward | AbsoluteReward = "soft",
        alpha: float | None = None,
        beta: float | None = None,
        metric: str = "val_accuracy",
        quantization: str = "float32",
        representative_data: Any = None,
        evaluate_int8: bool = False,
        controller: str | Mapping[str, Any] | None = None,
        max_trials: int = 100,
        seed: int | None = None,
        skip_ruled_out: bool = True,
        prefilter: LatencyLookupTable | None = None,
        prefilter_tolerance: float = 0.25,
        max_crashes_per_trial: int = 2,
        trial_timeout: float | str | None = "auto",
        trial_deadline: float | None = None,
        chief_timeout: float = 300.0,
        allow_config_change: bool = False,
        tensorboard_dir: str | os.PathLike | None = None,
        pareto_every: int = 10,
        oracle: keras_tuner.Oracle | None = None,
        **kwargs: Any,
    ):
        if hypermodel is None:
            hypermodel = MnasHyperModel(space)
        elif space is not None:
            raise ValueError(
                "Pass either a hypermodel or a space, not both (the hypermodel has its own space)."
            )
        if latency is None:
            latency = HostLatency()
        _check_tuner_arguments(
            kwargs,
            chief_timeout=chief_timeout,
            skip_ruled_out=skip_ruled_out,
            allow_config_change=allow_config_change,
            tensorboard_dir=tensorboard_dir,
        )
        check_type("latency", latency, LatencySource, "a keras_mnas.latency.LatencySource")
        check_choice("quantization", quantization, ("float32", "int8"))
        check_bool("evaluate_int8", evaluate_int8)
        if evaluate_int8 and quantization != "int8":
            raise ValueError(
                f"evaluate_int8=True scores the int8 model: it needs quantization='int8'; received "
                f"quantization={quantization!r}."
            )
        self.reward = _make_reward(reward, target_latency_ms, alpha, beta, metric)
        if not evaluate_int8:  # with evaluate_int8 the reward reads the int8 accuracy, checked below
            _check_metric(self.reward.metric, hypermodel)
        if evaluate_int8:
            if self.reward.metric != "val_accuracy":
                raise ValueError(
                    "evaluate_int8=True measures the int8 model's accuracy, so the reward must read "
                    f"'val_accuracy' (then replaced by {INT8_METRIC!r}); received metric "
                    f"{self.reward.metric!r}."
                )
            self.reward = dataclasses.replace(self.reward, metric=INT8_METRIC)
        self.evaluate_int8 = evaluate_int8
        self._calibration_seed = 0 if seed is None else seed
        self.latency = latency
        self.quantization = quantization
        self.representative_data = representative_data
        self.skip_ruled_out = bool(skip_ruled_out)
        self.prefilter, self.prefilter_tolerance = self._check_prefilter(
            prefilter, prefilter_tolerance, hypermodel
        )
        # The budget check itself (and the table's preprocessing entry) is the one budget_filter uses.
        self._budget_check = (
            None
            if self.prefilter is None
            else Prefilter(
                self.prefilter,
                hypermodel.space,
                self.reward.target_latency_ms,
                tolerance=self.prefilter_tolerance,
                include_preprocessing=hypermodel.include_preprocessing,
            )
        )
        self._prefilter_gaps_reported = False
        pareto_every = check_int("pareto_every", pareto_every, minimum=1)
        self.tensorboard_dir = os.fspath(tensorboard_dir) if tensorboard_dir is not None else None
        self.pareto_every = pareto_every
        self._search_logger: SearchLogger | None = None
        self._overwrite = bool(kwargs.get("overwrite", False))
        # Progress: when this process's search began, when each running trial began, trials ended here.
        self._search_started: float | None = None
        self._trial_started: dict[str, float] = {}
        self._trials_ended_here = 0
        oracle_kwargs = {
            key: kwargs.pop(key)
            for key in ("max_retries_per_trial", "max_consecutive_failed_trials")
            if key in kwargs
        }
        if trial_timeout == "auto":
            trial_timeout = DISTRIBUTED_TRIAL_TIMEOUT if "KERASTUNER_ORACLE_IP" in os.environ else None
        trial_deadline = check_seconds("trial_deadline", trial_deadline, allow_none=True)
        if oracle is None:
            oracle = MnasOracle(
                max_trials=max_trials,
                controller=controller,
                seed=seed,
                max_crashes_per_trial=max_crashes_per_trial,
                trial_timeout=trial_timeout,
                trial_deadline=trial_deadline,
                **oracle_kwargs,
            )
        elif oracle_kwargs or controller is not None or trial_deadline is not None:
            raise ValueError("Pass oracle settings to the oracle you give, not to MnasTuner.")
        #: Seconds one trial may take, in this process too (the oracle's, when it has one); None: no limit.
        self.trial_deadline = getattr(oracle, "trial_deadline", None)
        # Advanced by the work of each trial only; a distributed worker's heartbeats carry it to the chief.
        self._work_progress = WorkProgress()
        if isinstance(oracle, MnasOracle):
            # Checked against the saved search before anything is reloaded (reload happens in __init__).
            oracle.search_config = self._search_config(hypermodel, oracle.policy_factory.get_config())
            oracle.allow_config_change = bool(allow_config_change)
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        # Kept for the worker side of distributed tuning, where `self.oracle` becomes a gRPC client.
        self._mnas_oracle = oracle if isinstance(oracle, MnasOracle) else None
        if self._is_worker():
            timeout = self._mnas_oracle.trial_timeout if self._mnas_oracle is not None else None
            self.oracle = ChiefOracleClient(
                self.oracle,
                chief_timeout=chief_timeout,
                heartbeat_interval=min(timeout / 4, 60.0) if timeout else None,
                progress=self._work_progress,
            )

    def _check_prefilter(self, prefilter, tolerance, hypermodel) -> tuple[LatencyLookupTable | None, float]:
        number = not isinstance(tolerance, bool) and isinstance(tolerance, (int, float))
        if not (number and math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(
                "prefilter_tolerance must be a non-negative finite number such as 0.25 (a fraction of the "
                f"target latency); received {tolerance!r}."
            )
        if prefilter is None:
            return None, float(tolerance)
        if not isinstance(prefilter, LatencyLookupTable):
            raise ValueError(
                "prefilter must be a keras_mnas.latency.LatencyLookupTable (it predicts a candidate's "
                f"latency before it is built); received {type(prefilter).__name__}."
            )
        if not isinstance(hypermodel, MnasHyperModel):
            raise ValueError(
                "prefilter predicts candidates from the hypermodel's MnasSearchSpace: it needs a "
                f"MnasHyperModel (or space=...); received a hypermodel of type {type(hypermodel).__name__}."
            )
        if not self.reward.is_hard:
            raise ValueError(
                "prefilter skips candidates far over a hard latency budget; it needs a hard reward "
                "(reward='hard', or alpha=0 and beta<=-1); received the "
                f"{self.reward.describe()}."
            )
        if prefilter.quantization != self.quantization:
            raise ValueError(
                f"prefilter must predict the latency the search measures: the table holds "
                f"{prefilter.quantization} timings, the search measures quantization={self.quantization!r}."
            )
        check_table_source(prefilter, self.latency)
        return prefilter, float(tolerance)

    def _search_config(self, hypermodel, controller) -> dict[str, Any]:
        space = hypermodel.space.get_config() if isinstance(hypermodel, MnasHyperModel) else None
        config = {
            "space": space,
            "hypermodel": type(hypermodel).__name__,
            "reward": self.reward.get_config(),
            "latency": self.latency.config(),
            "quantization": self.quantization,
            "controller": controller,
        }
        if isinstance(hypermodel, MnasHyperModel):
            # What rebuilds a trial's exact model from the project alone (keras-mnas export).
            config["build"] = hypermodel.build_config()
        config["prefilter"] = (
            None
            if self.prefilter is None
            else {**self.prefilter.config(), "tolerance": self.prefilter_tolerance}
        )
        return json.loads(json.dumps(config))  # the form it takes once saved: lists, not tuples

    # ------------------------------------------------------------------------------------------------------
    # Search

    def search(self, *fit_args: Any, **fit_kwargs: Any) -> None:
        """Runs the search; arguments are those of `model.fit`, as in KerasTuner.

        Raises:
            ValueError: before any trial runs, when the reward's metric needs validation data that is not
                given, or `epochs` is not a positive integer.
            SearchTerminated: when the process gets SIGTERM during the search (unless the program handles
                SIGTERM itself). A `KeyboardInterrupt`, like Ctrl-C: the running trial is recorded as
                interrupted, not crashed, and runs again when the search resumes.
        """
        if self.reward.metric.startswith("val_") and not (
            fit_kwargs.get("validation_data") is not None or fit_kwargs.get("validation_split")
        ):
            raise ValueError(
                f"The reward reads {self.reward.metric!r}: pass validation_data=(x_val, y_val) or "
                "validation_split to search()."
            )
        check_int("epochs", fit_kwargs.get("epochs", 1), minimum=1)
        if self.evaluate_int8:
            validation = fit_kwargs.get("validation_data")
            if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
                raise ValueError(
                    "evaluate_int8=True runs the int8 model on validation_data=(x_val, y_val) arrays; "
                    f"received validation_data of type {type(validation).__name__}."
                )
        if self.quantization == "int8" and self.representative_data is None:
            x = fit_args[0] if fit_args else fit_kwargs.get("x")
            self.representative_data = representative_sample(x, seed=self._calibration_seed)
        callbacks = fit_kwargs.get("callbacks") or []
        if not isinstance(callbacks, (list, tuple)):
            raise ValueError(
                f"callbacks must be a list of Keras callbacks; received {type(callbacks).__name__}."
            )
        # Write the tuner file now: its presence is what makes a rerun reload the project, so a first trial
        # that crashes the process is counted (and given up) like any other, not rerun from scratch forever.
        self.save()
        self._search_started = time.monotonic()
        self._trials_ended_here = 0
        self._start_search_logger(callbacks)
        self._custom_gradients_before_search = custom_gradient_names()
        try:
            with _sigterm_interrupts():
                super().search(*fit_args, **fit_kwargs)
        finally:
            self._log_search_state(final=True)

    def run_trial(self, trial, *fit_args: Any, **fit_kwargs: Any):
        hp = trial.hyperparameters
        prefiltered = self._prefiltered(trial)
        if prefiltered is not None:
            return prefiltered
        self._set_phase(trial, "building")
        # Memory stays flat across trials: the previous candidates go, and so do the training graphs
        # TensorFlow would keep for each of them despite clear_session (see utils/tf_memory.py).
        keras.backend.clear_session()
        before = getattr(self, "_custom_gradients_before_search", None)
        if before is not None:
            forget_custom_gradients(keep=before)
        model = self.hypermodel.build(hp)
        self._check_deadline(trial, "building")
        self._set_phase(trial, "measuring latency")
        result = self._measure_latency(model, trial)
        # Checked now, not by the reward after a whole epoch of training.
        latency_ms = _checked_latency(self.latency, result)
        params = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
        macs = count_model_macs(model)
        del model
        spread = _measured_spread(result)
        if self._ruled_out(latency_ms):
            bound = self.reward.upper_bound(latency_ms)
            print(
                f"Trial {trial.trial_id}: {_format_ms(latency_ms)} ms is too slow to beat the best reward "
                f"even at 100% accuracy (bound {bound:.4f}); skipped before training."
            )
            return {
                "reward": bound,
                "latency_ms": latency_ms,
                "params": float(params),
                "macs": float(macs),
                "skipped": 1.0,
                **({} if spread is None else {"latency_spread": spread}),
            }
        self._set_phase(trial, "training")
        int8_accuracy = None
        if self.evaluate_int8:
            x_val, y_val = fit_kwargs["validation_data"]

            def int8_accuracy(model):
                self.report_progress()
                tflite = convert_to_tflite(
                    model, quantization="int8", representative_data=self.representative_data
                )
                self.report_progress()
                return evaluate_tflite(tflite, x_val, y_val)

        reward_callback = RewardCallback(self.reward, latency_ms, params, macs, int8_accuracy, spread)
        watch = TrialWatch(self._work_progress, trial.trial_id, self._deadline_at(trial), self.trial_deadline)
        callbacks = [
            watch,  # first: a trial past its deadline stops before anything else reads the epoch
            reward_callback,
            *(fit_kwargs.pop("callbacks", None) or []),
            reward_callback.figures(),  # after the user's TensorBoard: no flat latency/params curves
        ]
        return super().run_trial(trial, *fit_args, callbacks=callbacks, **fit_kwargs)

    def _try_run_and_update_trial(self, trial, *fit_args: Any, **fit_kwargs: Any) -> None:
        try:
            super()._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)
        except KeyboardInterrupt:
            # Ctrl-C stops the search, not the candidate: recorded, the trial is no crash on resume.
            if self._mnas_oracle is not None:
                self._mnas_oracle.record_interruption(trial.trial_id)
            raise

    def _prefiltered(self, trial) -> dict[str, float] | None:
        """The skipped trial's metrics when the prefilter predicts it far over the budget, else None."""
        if self._budget_check is None:  # _check_prefilter admits a prefilter only with a hard reward
            return None
        arch = self.hypermodel.architecture(trial.hyperparameters)
        try:
            predicted_ms = self._budget_check.predict(arch)
        except MissingEntryError as error:
            if not self._prefilter_gaps_reported:  # once: every such candidate would say the same
                self._prefilter_gaps_reported = True
                print(
                    f"Trial {trial.trial_id}: the prefilter's table cannot predict this candidate ({error}); "
                    "candidates it has no entries for are built and measured."
                )
            return None
        if not self._budget_check.exceeds(predicted_ms):
            return None
        limit = self._budget_check.limit_ms
        cost = self.hypermodel.space.cost(arch)
        bound = self.reward.upper_bound(predicted_ms)
        print(
            f"Trial {trial.trial_id}: predicted {_format_ms(predicted_ms)} ms by the prefilter, far over "
            f"the {self.reward.target_latency_ms:g} ms budget (limit {_format_ms(limit)} ms); skipped before "
            "building."
        )
        return {
            # Not the bound, unlike a candidate ruled out after measuring (whose bound is below the best
            # reward by construction): this bound may exceed every trained candidate's reward, and a
            # never-trained trial must not become the best one (it has no weights) nor rule out real ones.
            "reward": 0.0,
            "reward_bound": bound,
            "latency_ms": predicted_ms,
            "params": float(cost.trainable_params),
            "macs": float(cost.macs),
            "skipped": 1.0,
            "prefiltered": 1.0,
        }

    def _ruled_out(self, latency_ms: float) -> bool:
        if not (self.skip_ruled_out and self.reward.is_hard):
            return False
        best = [t for t in self.oracle.get_best_trials(1) if t.status == "COMPLETED" and t.score is not None]
        return bool(best) and self.reward.upper_bound(latency_ms) < best[0].score

    def _set_phase(self, trial, phase: str) -> None:
        self.report_progress()
        if self._mnas_oracle is not None:  # workers write it too: the project directory is shared
            self._mnas_oracle.set_trial_phase(trial.trial_id, phase)

    def report_progress(self) -> None:
        """Tells a distributed chief that the running trial's work goes on.

        The trial's phases and its training and validation batches report progress already. A `run_trial`
        override that works for longer than `trial_timeout` outside `fit` calls this now and then: without
        progress, the chief takes the trial away as stalled even though the worker's heartbeats go on.

        Example:

        ```python
        def run_trial(self, trial, *args, **kwargs):
            for step in range(1000):
                do_some_work(step)
                self.report_progress()
            return {"reward": 0.5}
        ```
        """
        self._work_progress.advance()

    def _deadline_at(self, trial) -> float | None:
        """When `trial` runs out of time on `time.monotonic()`'s clock, or None without a deadline."""
        if self.trial_deadline is None:
            return None
        started = self._trial_started.setdefault(trial.trial_id, time.monotonic())
        return started + self.trial_deadline

    def _check_deadline(self, trial, work: str) -> None:
        deadline_at = self._deadline_at(trial)
        if deadline_at is not None and time.monotonic() > deadline_at:
            raise TrialTimeoutError(
                f"Trial {trial.trial_id} timed out: {work} took longer than the {self.trial_deadline:g} s "
                "trial_deadline."
            )

    def _measure_latency(self, model, trial) -> Any:
        """The latency source's result for `model`, within what is left of the trial's deadline."""

        def measure():
            return self.latency.measure(
                model, quantization=self.quantization, representative_data=self.representative_data
            )

        deadline_at = self._deadline_at(trial)
        if deadline_at is None:
            return measure()
        # In a thread this process can stop waiting for: a source that hangs (a phone that never answers)
        # fails its trial instead of the whole search.
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = measure()
            except BaseException as error:  # handed to the trial's thread, which raises it
                outcome["error"] = error

        thread = threading.Thread(target=run, name=f"mnas-latency-trial-{trial.trial_id}", daemon=True)
        thread.start()
        thread.join(max(deadline_at - time.monotonic(), 0.0))
        if thread.is_alive():
            raise TrialTimeoutError(
                f"Trial {trial.trial_id} timed out: the latency measurement (source "
                f"{getattr(self.latency, 'name', type(self.latency).__name__)!r}) did not finish within the "
                f"{self.trial_deadline:g} s trial_deadline; the candidate was not trained. (The measurement "
                "cannot be stopped inside this process: it goes on in the background until it returns.)"
            )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def on_trial_begin(self, trial) -> None:
        super().on_trial_begin(trial)
        self._trial_started[trial.trial_id] = time.monotonic()

    def on_trial_end(self, trial) -> None:
        super().on_trial_end(trial)
        self._log_trial(trial)
        self._print_progress(trial)

    def _progress_header(self, trial) -> str:
        """ "Trial 3 COMPLETED (trial 4 of 12) in 14 s; 1 min 02 s elapsed, about 2 min 10 s left"."""
        now = time.monotonic()
        started = self._trial_started.pop(trial.trial_id, None)
        self._trials_ended_here += 1
        try:
            ended = len(self.oracle.end_order)  # this search's trials so far, those of earlier runs too
        except (AttributeError, TypeError):  # an oracle without the record: count this process's trials
            ended = self._trials_ended_here
        total = getattr(self.oracle, "max_trials", None)
        header = f"Trial {trial.trial_id} {trial.status} (trial {ended}" + (f" of {total})" if total else ")")
        if started is not None:
            header += f" in {_format_duration(now - started)}"
        if self._search_started is None:
            return header
        elapsed = now - self._search_started
        header += f"; {_format_duration(elapsed)} elapsed"
        if total:
            left = max(0, total - ended)
            # This run's mean time per trial, overheads between trials included.
            header += (
                f", about {_format_duration(left * elapsed / self._trials_ended_here)} left"
                if left
                else ", the last trial"
            )
        return header

    def _chance_warning(self, accuracy: float) -> str | None:
        """A warning line when the accuracy the reward read is at chance level, else None."""
        classes = getattr(getattr(self.hypermodel, "space", None), "classes", None)
        if "accuracy" not in self.reward.metric or not isinstance(classes, int) or classes < 2:
            return None
        threshold = chance_threshold(classes)
        if accuracy > threshold:
            return None
        return (
            f"  WARNING: {self.reward.metric} {accuracy:.4f} is at chance level (1/{classes} = "
            f"{1 / classes:.3f}, warned at or below {threshold:.3f}): this candidate learned nothing, so its "
            "reward says nothing about its architecture. Train longer (epochs=...), or check the data and "
            "MnasHyperModel's learning_rate and bn_momentum."
        )

    def _print_progress(self, trial) -> None:
        trial = self.oracle.get_trial(trial.trial_id)
        metrics = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
        arch = self._architecture_or_none(trial.hyperparameters)
        lines = [self._progress_header(trial)]
        warning = None
        if arch is not None:
            lines.append("  architecture: " + str(arch))
        if trial.status == "COMPLETED":
            accuracy = metrics.get(self.reward.metric)
            prefiltered = bool(metrics.get("prefiltered"))
            if accuracy is not None:
                warning = self._chance_warning(accuracy)
                outcome = f"{self.reward.metric} {accuracy:.4f}, "
                # The float accuracy too when the reward reads another metric (int8_val_accuracy), once.
                if self.reward.metric != "val_accuracy" and "val_accuracy" in metrics:
                    outcome += f"val_accuracy {metrics['val_accuracy']:.4f}, "
            else:
                outcome = "skipped before building, " if prefiltered else "skipped before training, "
            spread = metrics.get("latency_spread")
            # Per trial, because a source warns only of its first unstable figure.
            flag = f" (unstable: {spread:.1%} spread)" if is_unstable(spread) else ""
            lines.append(
                f"  {'predicted latency' if prefiltered else 'latency'} "
                f"{_format_ms(metrics.get('latency_ms', float('nan')))} ms{flag}, {outcome}"
                f"reward {trial.score:.4f}"
            )
            if warning is not None:
                lines.append(warning)
        elif trial.message:
            lines.append("  reason: " + trial.message.strip().splitlines()[-1])
        best = self.oracle.get_best_trials(1)
        if best and best[0].score is not None:
            lines.append(f"  best so far: trial {best[0].trial_id}, reward {best[0].score:.4f}")
        print("\n".join(lines), flush=True)

    # ------------------------------------------------------------------------------------------------------
    # TensorBoard

    def _start_search_logger(self, callbacks) -> None:
        log_dir = self.tensorboard_dir or tensorboard_dir_from_callbacks(callbacks)
        self._search_logger = None
        if log_dir is None:
            return
        logger = SearchLogger(
            log_dir,
            # The oracle itself, not `self.oracle`: on a worker that is a gRPC client without the space.
            hyperparameters=self._mnas_oracle.hyperparameters if self._mnas_oracle is not None else None,
            metrics=(
                self.reward.metric,
                *(("val_accuracy",) if self.evaluate_int8 else ()),
                *REPORTED_METRICS,
            ),
        )
        if self._overwrite:
            logger.clear()  # a fresh search: the old controller steps must not hide the new ones
            self._overwrite = False
        self._search_logger = logger
        # Trials that ended without passing through on_trial_end (failed on reload, or killed just after
        # ending) are logged now; logging is idempotent.
        if self._mnas_oracle is not None and not self._is_worker():
            for trial_id in self._mnas_oracle.end_order:
                self._log_trial(self._mnas_oracle.get_trial(trial_id))

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0) -> None:
        # KerasTuner points each TensorBoard callback at <log_dir>/<trial>/execution<k> and adds an HParams
        # session there, without latency or reward. Where SearchLogger writes the trial's session itself, that
        # second session would make the trial a second row of the HParams dashboard: it is left out.
        boards = [cb for cb in callbacks if type(cb).__name__ == "TensorBoard"]  # KerasTuner's own test
        logged = self._search_logger.log_dir if self._search_logger is not None else None
        ours = [logged is not None and _same_path(board.log_dir, logged) for board in boards]
        before = len(callbacks)
        super()._configure_tensorboard_dir(callbacks, trial, execution)
        added = callbacks[before:]  # one session callback per TensorBoard callback, in their order
        if len(added) == len(boards):
            dropped = {id(session) for session, mine in zip(added, ours, strict=True) if mine}
            callbacks[:] = [cb for cb in callbacks if id(cb) not in dropped]

    def _log_trial(self, trial) -> None:
        if self._search_logger is None:
            return
        trial = self.oracle.get_trial(trial.trial_id)
        if trial.status not in ("COMPLETED", "FAILED"):  # INVALID: retried, logged when it ends
            return
        metrics = {name: trial.metrics.get_best_value(name) for name in trial.metrics.metrics}
        metrics["reward"] = trial.score
        self._search_logger.log_trial(trial.trial_id, trial.hyperparameters.values, metrics, trial.status)
        self._log_search_state()

    def _log_search_state(self, final: bool = False) -> None:
        logger = self._search_logger
        if logger is None or self._mnas_oracle is None or self._is_worker():
            return
        logger.log_controller(self._mnas_oracle.controller_updates)
        done = len(self.completed_trials())
        if done and (final or done % self.pareto_every == 0):
            png = plot_pareto(self.trial_records(), target_latency_ms=self.reward.target_latency_ms)
            logger.log_pareto(png, step=done)

    # ------------------------------------------------------------------------------------------------------
    # Results

    def _architecture_or_none(self, hp) -> ArchSpec | None:
        if isinstance(self.hypermodel, MnasHyperModel):
            try:
                return self.hypermodel.architecture(hp)
            except ValueError:
                return None
        return None

    def results_summary(self, num_trials: int = 10) -> None:
        """Prints the best trials' accuracy, latency, reward, size and block strings, and the Pareto front.

        The text is the one `keras-mnas results` prints for a project directory (both use
        `keras_mnas.search.results.format_results`), restricted to the `num_trials` trials of highest reward:
        the trials `oracle.get_best_trials(num_trials)` returns. (KerasTuner's own summary lists every
        hyperparameter value and a bare score.)

        Args:
            num_trials: How many of the best trials to list.

        Raises:
            ValueError: when `num_trials` is not a positive integer.

        Example:

        ```python
        tuner.results_summary(3)
        ```
        """
        num_trials = check_int("num_trials", num_trials, minimum=1)
        records = {record["trial_id"]: record for record in self.trial_records()}
        best = [records[t.trial_id] for t in self.oracle.get_best_trials(num_trials) if t.trial_id in records]
        statuses: dict[str, int] = {}
        for trial in self.oracle.trials.values():
            statuses[trial.status] = statuses.get(trial.status, 0) + 1
        counts = ", ".join(f"{n} {status.lower()}" for status, n in sorted(statuses.items())) or "none yet"
        print(
            f"Results summary: the {len(best)} best of {len(self.oracle.trials)} trials ({counts}) of "
            f"{self.project_dir}, by reward."
        )
        config = self._mnas_oracle.search_config if self._mnas_oracle is not None else None
        settings = describe_search(config or {}, self.reward.metric)
        if settings:
            print(settings)
        if not best:
            return
        print()
        space = self.hypermodel.space if isinstance(self.hypermodel, MnasHyperModel) else None
        searched = None if space is None else space.searched_blocks
        front = self.pareto_front()
        print(format_results(best, metric=self.reward.metric, searched_blocks=searched, front=front))

    def completed_trials(self) -> list:
        """Completed trials, in the order they ended."""
        return [
            self.oracle.get_trial(t)
            for t in self.oracle.end_order
            if self.oracle.get_trial(t).status == "COMPLETED"
        ]

    def trial_records(self) -> list[dict[str, Any]]:
        """One record per completed trial, in the order they ended (`keras_mnas.search.results.trial_record`).

        `accuracy` is the reward's metric. With `evaluate_int8=True` it is the int8 model's, and the records
        also hold `float_accuracy` (`val_accuracy`) and `int8_accuracy` (`int8_val_accuracy`).
        `skipped` marks trials that were never trained (their `accuracy` is None and their reward the
        bound at their latency); `prefiltered` those of them the prefilter skipped before building, whose
        `latency_ms` is the lookup table's prediction rather than a measurement and whose reward is 0.
        `latency_spread` is the spread of the timed runs behind `latency_ms` (`LatencyResult.spread`; above
        0.05 the figure was flagged unstable), None when the latency was predicted. The same records are
        read back from the project directory by `SearchProject(directory).records()`.
        """
        return [
            trial_record(
                trial.trial_id,
                status=trial.status,
                score=trial.score,
                values=trial.hyperparameters.values,
                # As saved in trial.json, so that SearchProject reads the very same figures.
                metrics=best_metric_values(trial.metrics.get_config()),
                arch=self._architecture_or_none(trial.hyperparameters),
                metric=self.reward.metric,
                message=trial.message,
                checkpoint=self._checkpoint_or_none(trial.trial_id),
            )
            for trial in self.completed_trials()
        ]

    def _checkpoint_or_none(self, trial_id: str) -> str | None:
        path = os.path.abspath(self._get_checkpoint_fname(trial_id))
        return path if os.path.isfile(path) else None

    def pareto_front(self) -> list[dict[str, Any]]:
        """The trials not dominated in (higher accuracy, lower latency), fastest first."""
        return pareto_front(self.trial_records())

    def rescore(
        self,
        target_latency_ms: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        reward: MnasReward | AbsoluteReward | None = None,
    ) -> list[dict[str, Any]]:
        """Scores completed trials under another target or exponents, without retraining; best first.

        The search's own reward with `target_latency_ms`, `alpha` or `beta` changed, or any `reward` given.

        Example:

        ```python
        tuner.rescore(target_latency_ms=5.0, alpha=0.0, beta=-1.0)[0]["architecture"]
        ```
        """
        if reward is None and isinstance(self.reward, AbsoluteReward):
            _refuse_alpha(alpha)
            changes = {"target_latency_ms": target_latency_ms, "beta": beta}
            reward = dataclasses.replace(self.reward, **{k: v for k, v in changes.items() if v is not None})
        elif reward is None:
            reward = MnasReward(
                self.reward.target_latency_ms if target_latency_ms is None else target_latency_ms,
                self.reward.alpha if alpha is None else alpha,
                self.reward.beta if beta is None else beta,
                self.reward.metric,
            )
        rescored = []
        for record in self.trial_records():
            if record["accuracy"] is None:
                continue  # skipped before training: no accuracy to rescore
            rescored.append({**record, "reward": reward(record["accuracy"], record["latency_ms"])})
        return sorted(rescored, key=lambda r: r["reward"], reverse=True)

    def best_architectures(self, num_trials: int = 1) -> list[ArchSpec]:
        """The architecture specs of the best trials; build them with `keras_mnas.applications.MnasNet`."""
        if not isinstance(self.hypermodel, MnasHyperModel):
            raise ValueError(
                "best_architectures needs a MnasHyperModel; use get_best_hyperparameters instead."
            )
        return [
            self.hypermodel.architecture(t.hyperparameters) for t in self.oracle.get_best_trials(num_trials)
        ]

    def export_best(
        self,
        path: str | os.PathLike,
        *,
        quantization: str | None = None,
        x: Any = None,
        y: Any = None,
        epochs: int = 1,
        **qat_kwargs: Any,
    ) -> dict[str, str]:
        """Writes the best model as `<path>.keras` and `<path>.tflite` (and its architecture as JSON).

        The `.keras` file is always the best float model as trained in the search; `quantization` chooses the
        `.tflite` file.

        Args:
            path: Path without suffix, e.g. `"exports/best"`.
            quantization: `"float32"`, `"int8"` (post-training quantization, calibrated on the tuner's
                representative data, or on a sample of `x`), or `"qat"` (quantization-aware fine-tuning on
                `(x, y)` for `epochs` epochs, then a full-integer int8 export). By default, the search's own
                `quantization`: the model whose latency the search measured.
            x: Training inputs: needed by `"qat"`, and by `"int8"` when the tuner has no representative
                data (e.g. after a reload).
            y: Training targets, for `"qat"`.
            epochs: Quantization-aware fine-tuning epochs, for `"qat"`.
            **qat_kwargs: More arguments of `keras_mnas.quantization.quantize_aware_train` for `"qat"`:
                `batch_size`, `learning_rate`, `validation_data`, `verbose`, ...

        Returns:
            `{"keras": ..., "tflite": ..., "architecture": ...}` paths.

        Raises:
            ValueError: for an unknown quantization, or missing data.

        Example:

        ```python
        tuner.export_best("exports/best", quantization="qat", x=x, y=y, epochs=2, batch_size=32)
        ```
        """
        if quantization is None:
            quantization = self.quantization
        check_choice("quantization", quantization, EXPORT_QUANTIZATIONS)
        if quantization == "qat" and (x is None or y is None):
            raise ValueError(
                "export_best(quantization='qat') fine-tunes the model quantization-aware: pass the training "
                "data as x=... and y=...."
            )
        unused = [] if quantization == "qat" else [*(["y"] if y is not None else []), *sorted(qat_kwargs)]
        if quantization != "qat" and epochs != 1:
            unused.append("epochs")
        if quantization == "float32" and x is not None:
            unused.insert(0, "x")
        if unused:
            raise ValueError(
                f"export_best(quantization={quantization!r}) does not use {unused}: x is for 'int8' and "
                "'qat', y, epochs and fine-tuning arguments for 'qat' only."
            )
        representative_data = self.representative_data
        if quantization == "int8" and representative_data is None:
            if x is None:
                raise ValueError(
                    "export_best(quantization='int8') calibrates on representative data: the tuner has none "
                    "(it is drawn from the training inputs when a search runs), so pass x=<training inputs>."
                )
            representative_data = representative_sample(x, seed=self._calibration_seed)
        if not self.completed_trials():
            raise ValueError("export_best needs a completed trial; the search has none yet.")
        model = self.get_best_models(1)[0]
        if quantization == "qat":
            tflite = export_int8(quantize_aware_train(model, x, y, epochs=epochs, **qat_kwargs))
        else:
            tflite = convert_to_tflite(
                model, quantization=quantization, representative_data=representative_data
            )
        arch = self._architecture_or_none(self.oracle.get_best_trials(1)[0].hyperparameters)
        return export_model(model, path, tflite_bytes=tflite, arch=arch)

    # ------------------------------------------------------------------------------------------------------
    # Crash-safe state

    def save(self) -> None:
        if not self._is_worker():
            self.oracle.save()
        atomic_write_json(self._get_tuner_fname(), self.get_state())
