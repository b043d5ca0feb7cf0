"""Searches for the kill/resume and distributed tests: MnasTuner with MnasOracle.

`run_search(config)` is what a user's script does: build the tuner with `overwrite=False` and search. The
tests run it in child processes (through a multiprocessing fork server that has imported TensorFlow once,
because a fresh interpreter takes 10-15 s to import it on the test machine) and SIGKILL them at random.
`run_plain_search(config)` is the same with unpatched `keras_tuner.RandomSearch`, for the benchmark.

By default no model is built: `FastTuner` computes a trial's metrics from its hyperparameters, so a search of
dozens of trials takes seconds. With `"real": True` in the config, `RealTuner` builds and trains tiny real
candidates of an `MnasSearchSpace` on a small synthetic image set, as a user's search does.

Every evaluation a child really runs is appended to `<directory>/evaluations.log` as
`<tuner id> <trial id> <values as JSON>`, so a test can tell who ran what, and how often. A real candidate
also appends `<tuner id> <trial id>` to `<directory>/training.log` once its first training batch is done.

Also runnable as `python _search_script.py '<config as JSON>'`.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import sys
import time
from typing import Any

import keras
import keras_tuner
import numpy as np

from keras_mnas.latency import LatencyResult, LatencySource
from keras_mnas.search.space import MnasSearchSpace
from keras_mnas.search.tuner import MnasTuner

PROJECT = "search"
EVALUATIONS = "evaluations.log"
TRAINING = "training.log"


def build_space(hp) -> None:
    # 4 * 8 * 2 * 3 = 192 architectures: enough that a search of 20-40 trials rarely re-proposes.
    hp.Choice("op", ["conv", "sep", "mb3", "mb6"])
    hp.Int("units", 8, 64, step=8)
    hp.Boolean("skip")
    hp.Choice("kernel", [3, 5, 7])


def accuracy_of(values: dict[str, Any]) -> float:
    op = {"conv": 0.50, "sep": 0.55, "mb3": 0.60, "mb6": 0.62}[values["op"]]
    return op + values["units"] / 400 + 0.03 * values["skip"] + {3: 0.0, 5: 0.02, 7: 0.01}[values["kernel"]]


def latency_of(values: dict[str, Any]) -> float:
    op = {"conv": 1.0, "sep": 0.6, "mb3": 0.8, "mb6": 1.2}[values["op"]]
    return op * values["units"] / 16 * (1 + values["kernel"] / 10)


class NoLatency(LatencySource):
    """FastTuner computes latency itself; MnasTuner only records this source's config."""

    name = "fake"

    def measure(self, model, *, quantization="float32", representative_data=None):
        raise AssertionError("FastTuner never measures a model")


class FastTuner(MnasTuner):
    """MnasTuner whose trials compute their metrics from the hyperparameters after `work_seconds`.

    Args:
        work_seconds: Sleep of each trial, so kills land inside trials as well as inside saves.
        crash_trials: Trial ids whose evaluation kills the process with `os._exit(134)`, like an aborting
            TFLite converter.
        stall_at: The evaluation of this process (0-based count) that writes `stalled_<trial id>` in the
            directory, then sleeps an hour (to be killed there).
        slow_at: `[n, seconds]`: this process's evaluation number n (0-based) works that long instead,
            reporting progress every 0.1 s.
        fail_all: Every evaluation fails with a `FailedTrialError` (after it is logged).
        start_together: Tuner ids whose first trials wait for one another: every one of them has asked the
            chief for a trial before any trial ends (a worker slow to start would find the search over).
    """

    def __init__(
        self,
        *,
        work_seconds: float = 0.0,
        crash_trials: tuple[str, ...] = (),
        stall_at: int | None = None,
        slow_at: tuple[int, float] | None = None,
        fail_all: bool = False,
        start_together: tuple[str, ...] = (),
        **kwargs: Any,
    ):
        super().__init__(
            hypermodel=build_space, latency=NoLatency(), target_latency_ms=2.0, metric="accuracy", **kwargs
        )
        self.fail_all = fail_all
        self.work_seconds = work_seconds
        self.crash_trials = set(crash_trials)
        self.stall_at = stall_at
        self.slow_at = tuple(slow_at) if slow_at else None
        self.runs = 0
        self.start_together = tuple(start_together)

    def _wait_for_the_others(self) -> None:
        append_line(os.path.join(self.directory, f"in_trial_{self.tuner_id}"), "")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            markers = (os.path.join(self.directory, f"in_trial_{t}") for t in self.start_together)
            if all(os.path.exists(marker) for marker in markers):
                return
            time.sleep(0.05)

    def run_trial(self, trial, *args: Any, **kwargs: Any) -> dict[str, float]:
        values = dict(trial.hyperparameters.values)
        self._set_phase(trial, "training")
        if self.runs == 0 and self.start_together:
            self._wait_for_the_others()
        if trial.trial_id in self.crash_trials:
            os._exit(134)  # what SIGABRT in native code looks like to the parent: no Python cleanup at all
        self.runs += 1
        if self.stall_at is not None and self.runs - 1 == self.stall_at:
            with open(os.path.join(self.directory, f"stalled_{trial.trial_id}"), "w") as f:
                f.write(self.tuner_id)
            time.sleep(3600)
        slow = self.slow_at is not None and self.runs - 1 == self.slow_at[0]
        if slow:
            # A long trial whose work goes on: it reports progress, as training does at every batch.
            end = time.monotonic() + self.slow_at[1]
            while time.monotonic() < end:
                time.sleep(0.1)
                self.report_progress()
        else:
            time.sleep(self.work_seconds)
        accuracy, latency = accuracy_of(values), latency_of(values)
        log_evaluation(self.directory, self.tuner_id, trial.trial_id, values)
        if self.fail_all:
            raise keras_tuner.errors.FailedTrialError(f"trial {trial.trial_id} fails, as scripted")
        return {"reward": self.reward(accuracy, latency), "accuracy": accuracy, "latency_ms": latency}


class ParamsLatency(LatencySource):
    """A latency proportional to the parameter count: the same figure for a candidate in every process.

    The tests of real training are about training being killed and resumed, not about timing: a measured
    figure would differ between a killed attempt and its rerun, and converting every candidate costs seconds.
    """

    name = "params"

    def measure(self, model, *, quantization="float32", representative_data=None):
        ms = model.count_params() / 1e4
        return LatencyResult(
            median_ms=ms, mean_ms=ms, p90_ms=ms, std_ms=0.0, cv=0.0, runs=0, warmup_runs=0, threads=1,
            source=self.name, quantization=quantization, provenance={"prediction": True},
        )


def tiny_space() -> MnasSearchSpace:
    """Candidates of about ten thousand parameters on 16x16 grey images: each builds and trains in seconds."""
    return MnasSearchSpace(
        [(1, 16, 1, 1), (6, 24, 1, 2), (6, 32, 2, 2)],
        input_shape=(16, 16, 1),
        classes=10,
        depth_multiplier=0.5,
        head_filters=32,
        fixed_blocks={0: "r1_k3_s11_e1_i32_o16_noskip"},
    )


def tiny_data(samples: int = 128) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A learnable 10-class set of 16x16 images (one noisy prototype per class), the same in every process."""
    rng = np.random.default_rng(0)
    prototypes = rng.random((10, 16, 16, 1), dtype=np.float32)
    labels = rng.integers(0, 10, size=2 * samples)
    images = prototypes[labels] + 0.3 * rng.standard_normal((2 * samples, 16, 16, 1), dtype=np.float32)
    return (images[:samples], labels[:samples]), (images[samples:], labels[samples:])


class TrainingMarker(keras.callbacks.Callback):
    """Logs that a candidate's training has begun, after its first batch; can then pause inside `fit`.

    Args:
        directory: The search directory, where `training.log` is.
        tuner_id: Who trains.
        trial_id: What is trained.
        pause_seconds: Sleep this long after the first batch (a test kills the process there, mid-`fit`).
    """

    def __init__(self, directory: str, tuner_id: str, trial_id: str, pause_seconds: float = 0.0):
        super().__init__()
        self.directory, self.tuner_id, self.trial_id = directory, tuner_id, trial_id
        self.pause_seconds = pause_seconds
        self.logged = False

    def on_train_batch_end(self, batch, logs=None):
        if self.logged:
            return
        self.logged = True
        append_line(os.path.join(self.directory, TRAINING), f"{self.tuner_id} {self.trial_id}\n")
        time.sleep(self.pause_seconds)


class RealTuner(MnasTuner):
    """MnasTuner on `tiny_space()`, training each candidate for real; logs every training and evaluation.

    Args:
        pause_in_training: `[trial id, seconds]`: that trial's training pauses this long after its first
            batch.
    """

    def __init__(self, *, pause_in_training: tuple[str, float] | None = None, **kwargs: Any):
        super().__init__(space=tiny_space(), latency=ParamsLatency(), target_latency_ms=2.0, **kwargs)
        self.pause_in_training = tuple(pause_in_training) if pause_in_training else None

    def run_trial(self, trial, *args: Any, **kwargs: Any):
        pause = 0.0
        if self.pause_in_training and self.pause_in_training[0] == trial.trial_id:
            pause = float(self.pause_in_training[1])
        marker = TrainingMarker(self.directory, self.tuner_id, trial.trial_id, pause)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), marker]
        result = super().run_trial(trial, *args, **kwargs)
        log_evaluation(self.directory, self.tuner_id, trial.trial_id, dict(trial.hyperparameters.values))
        return result


class PlainRandomSearch(keras_tuner.RandomSearch):
    """Unpatched KerasTuner (truncate-then-write saves), same fake evaluation."""

    def __init__(self, *, work_seconds: float = 0.0, **kwargs: Any):
        super().__init__(hypermodel=build_space, objective=keras_tuner.Objective("reward", "max"), **kwargs)
        self.work_seconds = work_seconds

    def run_trial(self, trial, *args: Any, **kwargs: Any) -> dict[str, float]:
        values = dict(trial.hyperparameters.values)
        time.sleep(self.work_seconds)
        log_evaluation(self.directory, self.tuner_id, trial.trial_id, values)
        return {"reward": accuracy_of(values) - latency_of(values) / 100}


def log_evaluation(directory: str, tuner_id: str, trial_id: str, values: dict[str, Any]) -> None:
    append_line(
        os.path.join(directory, EVALUATIONS), f"{tuner_id} {trial_id} {json.dumps(values, sort_keys=True)}\n"
    )


def append_line(path: str, line: str) -> None:
    # One small O_APPEND write: lines of concurrent workers never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_trainings(directory: str) -> list[tuple[str, str]]:
    """`(tuner id, trial id)` of every real training that got past its first batch, in order."""
    path = os.path.join(directory, TRAINING)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [tuple(line.split()) for line in f if line.strip()]


def read_evaluations(directory: str) -> list[tuple[str, str, dict[str, Any]]]:
    path = os.path.join(directory, EVALUATIONS)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            tuner_id, trial_id, values = line.rstrip("\n").split(" ", 2)
            rows.append((tuner_id, trial_id, json.loads(values)))
    return rows


def make_tuner(config: dict[str, Any]) -> MnasTuner:
    """The config's tuner: a `RealTuner` with `"real": True`, else a `FastTuner`."""
    if config.get("real"):
        return RealTuner(
            max_trials=config["max_trials"],
            seed=config.get("seed", 7),
            controller={"minibatch_size": 4, "units": 16},
            max_crashes_per_trial=config.get("max_crashes_per_trial", 2),
            trial_timeout=config.get("trial_timeout", "auto"),
            chief_timeout=config.get("chief_timeout", 300.0),
            pause_in_training=config.get("pause_in_training"),
            directory=config["directory"],
            project_name=PROJECT,
            overwrite=False,
        )
    return FastTuner(
        max_trials=config["max_trials"],
        seed=config.get("seed", 7),
        controller={"minibatch_size": 4, "units": 16},
        max_crashes_per_trial=config.get("max_crashes_per_trial", 2),
        trial_timeout=config.get("trial_timeout", "auto"),
        chief_timeout=config.get("chief_timeout", 300.0),
        work_seconds=config.get("work_seconds", 0.0),
        crash_trials=tuple(config.get("crash_trials", ())),
        stall_at=config.get("stall_at"),
        slow_at=config.get("slow_at"),
        fail_all=config.get("fail_all", False),
        start_together=tuple(config.get("start_together", ())),
        **({"max_consecutive_failed_trials": config["failure_limit"]} if "failure_limit" in config else {}),
        directory=config["directory"],
        project_name=PROJECT,
        overwrite=False,
    )


def run_search(config: dict[str, Any]) -> None:
    """Child process entry: environment, output to a log file, then the search (resuming if saved)."""
    _prepare(config)
    tuner = make_tuner(config)
    if config.get("real"):
        (x, y), validation = tiny_data()
        tuner.search(x, y, validation_data=validation, epochs=1, batch_size=32, verbose=0)
    else:
        tuner.search(verbose=0)
    print("SEARCH DONE", flush=True)


def run_plain_search(config: dict[str, Any]) -> None:
    _prepare(config)
    tuner = PlainRandomSearch(
        max_trials=config["max_trials"],
        seed=config.get("seed", 7),
        work_seconds=config.get("work_seconds", 0.0),
        directory=config["directory"],
        project_name=PROJECT,
        overwrite=False,
    )
    tuner.search(verbose=0)
    print("SEARCH DONE", flush=True)


def _prepare(config: dict[str, Any]) -> None:
    os.environ.update(config.get("env", {}))
    if config.get("exit_after_write"):
        _exit_after_write(*config["exit_after_write"])
    log = config.get("log")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)


# --------------------------------------------------------------------------------------------------------
# Harness: child processes from a fork server that imported TensorFlow once


def fork_context():
    """A forkserver multiprocessing context whose server has imported this module (and TensorFlow).

    The server is a fresh interpreter that imports but runs nothing: its children start in milliseconds and
    are ordinary processes, killed with a real SIGKILL. (Forking the test process itself, which may have run
    TensorFlow ops and threads, would not be safe.)
    """
    context = multiprocessing.get_context("forkserver")
    # By package name: Python 3.11's fork server ignores the parent's sys.path, so this module itself may not
    # import there (a failed preload is silently skipped; each child would then import TensorFlow itself).
    context.set_forkserver_preload(["keras_mnas.search.tuner", "grpc", __name__])
    return context


def start(context, target, config: dict[str, Any]):
    process = context.Process(target=target, args=(config,), daemon=True)
    process.start()
    return process


def stop(*processes) -> None:
    """Kills whatever is still running (tests call this in `finally`)."""
    for process in processes:
        if process is not None and process.is_alive():
            process.kill()
    for process in processes:
        if process is not None:
            process.join(10)


def log_tail(path: str, lines: int = 25) -> str:
    if not path or not os.path.exists(path):
        return "(no log)"
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def state_files(project_dir: str) -> list[str]:
    """Every JSON state file of a project: oracle.json, the tuner files, each trial.json."""
    top = glob.glob(os.path.join(project_dir, "*.json"))
    return sorted(top + glob.glob(os.path.join(project_dir, "trial_*", "*.json")))


def corrupt_files(project_dir: str) -> list[str]:
    """The state files that are empty or not valid JSON (what makes KerasTuner unable to reload)."""
    bad = []
    for path in state_files(project_dir):
        try:
            with open(path, encoding="utf-8") as f:
                json.load(f)
        except (OSError, ValueError):
            bad.append(f"{os.path.relpath(path, project_dir)} ({os.path.getsize(path)} bytes)")
    return bad


def _exit_after_write(path_suffix: str, contains: str) -> None:
    """Dies (like SIGKILL: no cleanup) right after the first atomic write of `path_suffix` holding `contains`.

    Lands a kill exactly between two saves, e.g. after a trial's trial.json says COMPLETED and before
    oracle.json does.
    """
    from keras_mnas.search import durable as durable_module

    write = durable_module.atomic_write_json

    def write_then_maybe_die(path, obj, **kwargs):
        text = write(path, obj, **kwargs)
        if os.fspath(path).endswith(path_suffix) and contains in text:
            os._exit(137)
        return text

    durable_module.atomic_write_json = write_then_maybe_die


if __name__ == "__main__":
    run_search(json.loads(sys.argv[1]))
