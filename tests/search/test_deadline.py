"""Stuck trials time out: a per-trial deadline, and liveness judged from progress rather than heartbeats.

In one process, `MnasTuner(trial_deadline=...)` fails a trial whose latency measurement or training runs past
the deadline, and the search goes on. In distributed tuning the chief takes a trial from a worker whose work
stops advancing (even while its heartbeat thread goes on) or that runs past the deadline, hands it to another
worker, ignores the first worker's late reports, and records the candidate as failed once it has timed out
`max_crashes_per_trial` times. The oracle-level tests drive `DurableOracle` as the chief's gRPC server does.
"""

from __future__ import annotations

import json
import os
import threading
import time

import keras
import keras_tuner
import numpy as np
import pytest
from _search_script import (
    PROJECT,
    FastTuner,
    fork_context,
    log_tail,
    make_tuner,
    read_evaluations,
    run_search,
    start,
    stop,
    tiny_space,
)
from test_distributed import (
    assert_every_trial_once,
    cluster_configs,
    free_port,
    join_all,
    load,
)

from keras_mnas.latency import LatencyResult, LatencySource
from keras_mnas.search import MnasTuner, durable
from keras_mnas.search.durable import INTERRUPTED_FILE, worker_stamp
from keras_mnas.search.tuner import TrialTimeoutError


class HangingLatency(LatencySource):
    """Answers 1 ms at once, except that the calls numbered in `hang_on` (0-based) wait for `release`."""

    name = "hanging"

    def __init__(self, hang_on=(1,)):
        self.hang_on = set(hang_on)
        self.calls = 0
        self.release = threading.Event()

    def measure(self, model, *, quantization="float32", representative_data=None):
        call, self.calls = self.calls, self.calls + 1
        if call in self.hang_on:
            self.release.wait(60)  # a phone that never answers; the test releases it when done
        return LatencyResult(
            median_ms=1.0, mean_ms=1.0, p90_ms=1.0, std_ms=0.0, cv=0.0, runs=1, warmup_runs=0, threads=1,
            source=self.name, quantization=quantization,
        )

    def config(self):
        return {"name": self.name}


class SlowBatches(keras.callbacks.Callback):
    """Training that takes `seconds` per batch."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.seconds)


def build_dense(hp):
    """A candidate that builds and trains in a fraction of a second: the deadlines catch only the faults."""
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(hp.Choice("units", [4, 8, 16, 32]), activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def dense_data(samples=64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2 * samples, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")
    return (x[:samples], y[:samples]), (x[samples:], y[samples:])


def dense_tuner(tmp_path, latency, **kwargs) -> MnasTuner:
    return MnasTuner(
        build_dense,
        latency=latency,
        target_latency_ms=2.0,
        seed=1,
        controller={"minibatch_size": 2, "units": 8},
        directory=str(tmp_path),
        project_name=PROJECT,
        **kwargs,
    )


@pytest.mark.exclusive_cpu  # its next trial must train within the deadline
def test_a_hanging_latency_source_fails_its_trial_by_the_deadline_and_the_search_goes_on(tmp_path, capsys):
    (x, y), validation = dense_data()
    latency = HangingLatency(hang_on=(0,))
    # Room for the second trial's training, tracing included, on a loaded machine.
    tuner = dense_tuner(tmp_path, latency, max_trials=2, trial_deadline=15.0)
    try:
        started = time.monotonic()
        tuner.search(x, y, validation_data=validation, epochs=1, batch_size=64, verbose=0)
        elapsed = time.monotonic() - started
    finally:
        latency.release.set()
    trials = [tuner.oracle.get_trial(t) for t in tuner.oracle.start_order]
    assert [t.status for t in trials] == ["FAILED", "COMPLETED"], "the search goes on after the hang"
    message = trials[0].message
    assert "TrialTimeoutError" in message
    assert "latency measurement (source 'hanging') did not finish within the 15 s trial_deadline" in message
    assert trials[0].score is None and not trials[0].metrics.exists("val_accuracy"), "never trained"
    assert elapsed < 60, f"the search took {elapsed:.0f} s"
    assert "Trial 0 FAILED" in capsys.readouterr().out


def test_training_past_the_deadline_fails_as_timed_out_and_is_not_scored(tmp_path):
    (x, y), validation = dense_data()
    tuner = dense_tuner(tmp_path, HangingLatency(hang_on=()), max_trials=1, trial_deadline=3.0)
    started = time.monotonic()
    # 8 batches of at least 1 s each: the deadline falls in the middle of the epoch.
    tuner.search(
        x, y, validation_data=validation, epochs=1, batch_size=8, callbacks=[SlowBatches(1.0)], verbose=0
    )
    elapsed = time.monotonic() - started
    trial = tuner.oracle.get_trial("0")
    assert trial.status == "FAILED"
    assert "training did not finish within the 3 s trial_deadline" in trial.message
    assert "partly trained candidate is not scored" in trial.message
    assert trial.score is None and not trial.metrics.exists("reward")
    assert elapsed < 7.5, f"training went on for {elapsed:.1f} s, past its 3 s deadline"


def test_the_deadline_is_checked_up_front():
    with pytest.raises(ValueError, match=r"`trial_deadline` must be None or a finite number of seconds > 0"):
        MnasTuner(space=tiny_space(), target_latency_ms=2.0, trial_deadline=0)
    with pytest.raises(ValueError, match=r"`trial_deadline` must be .*; received 'soon'"):
        MnasTuner(space=tiny_space(), target_latency_ms=2.0, trial_deadline="soon")
    assert issubclass(TrialTimeoutError, TimeoutError)
    assert issubclass(TrialTimeoutError, keras_tuner.errors.FailedTrialError)


# --------------------------------------------------------------------------------------------------------
# The chief's side, driven as its gRPC server drives it


def chief_oracle(tmp_path, **kwargs):
    tuner = FastTuner(
        max_trials=4,
        seed=5,
        controller={"minibatch_size": 2, "units": 8},
        directory=str(tmp_path),
        project_name=PROJECT,
        overwrite=False,
        **kwargs,
    )
    tuner._populate_initial_space()
    tuner.save()  # as search() does first: a rerun reloads the project
    return tuner.oracle


def beat(oracle, trial_id, tuner_id, seconds, *, progressing):
    """Heartbeats every 0.05 s for `seconds`, carrying a progress count that moves or not."""
    count, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        count += progressing
        oracle.update_trial(trial_id, worker_stamp(tuner_id, count))
        time.sleep(0.05)


def stamped(trial, tuner_id):
    for name, value in worker_stamp(tuner_id, 0).items():
        trial.metrics.register(name)
        trial.metrics.update(name, value)
    return trial


def saved_state(tmp_path):
    with open(os.path.join(tmp_path, PROJECT, "oracle.json")) as f:
        return json.load(f)["mnas"]


def test_heartbeats_without_progress_lose_the_trial_and_with_progress_keep_it(tmp_path):
    oracle = chief_oracle(tmp_path, trial_timeout=0.3)
    kept = oracle.create_trial("tuner0")
    beat(oracle, kept.trial_id, "tuner0", 0.6, progressing=True)
    assert oracle.create_trial("tuner1").trial_id != kept.trial_id, "a trial whose work goes on stays"

    stuck = oracle.create_trial("tuner2")
    oracle.set_trial_phase(stuck.trial_id, "training")
    beat(oracle, stuck.trial_id, "tuner2", 0.6, progressing=False)  # a live thread, a hung trial
    again = oracle.create_trial("tuner3")
    assert again.trial_id == stuck.trial_id, "a trial whose heartbeats carry no progress is handed on"
    # Counted as a timeout of the candidate; the two workers silent meanwhile crashed, they did not time out.
    state = oracle.get_state()["mnas"]
    assert state["timeouts"] == {stuck.trial_id: 1}
    assert state["crashes"] == {kept.trial_id: 1, stuck.trial_id: 1, "1": 1}

    # The first worker's late reports are ignored: neither its metrics nor its end count; the answer says so.
    answer = oracle.update_trial(stuck.trial_id, {"reward": 0.99, **worker_stamp("tuner2", 7)})
    assert answer.status == "STOPPED"
    late = stamped(keras_tuner.engine.trial.Trial(oracle.get_space(), trial_id=stuck.trial_id), "tuner2")
    late.status = "COMPLETED"
    oracle.end_trial(late)
    assert oracle.get_trial(stuck.trial_id).status == "RUNNING" and stuck.trial_id not in oracle.end_order
    assert not oracle.get_trial(stuck.trial_id).metrics.exists("reward")
    # The worker it runs on now reports normally; the stamp never reaches the trial's metrics.
    oracle.update_trial(again.trial_id, {"reward": 0.5, **worker_stamp("tuner3", 1)})
    done = stamped(keras_tuner.engine.trial.Trial(oracle.get_space(), trial_id=again.trial_id), "tuner3")
    done.status = "COMPLETED"
    oracle.end_trial(done)
    trial = oracle.get_trial(stuck.trial_id)
    assert trial.status == "COMPLETED" and trial.score == 0.5
    assert sorted(trial.metrics.metrics) == ["reward"]
    assert oracle.end_order.count(stuck.trial_id) == 1


def test_a_candidate_timed_out_max_crashes_per_trial_times_is_failed_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(durable, "DEADLINE_GRACE_SECONDS", 0.0)
    oracle = chief_oracle(tmp_path, trial_timeout=30, trial_deadline=0.3, max_crashes_per_trial=2)
    first = oracle.create_trial("tuner0")
    oracle.set_trial_phase(first.trial_id, "measuring latency")
    beat(oracle, first.trial_id, "tuner0", 0.5, progressing=True)  # progressing, but past the deadline
    second = oracle.create_trial("tuner1")
    assert second.trial_id == first.trial_id
    beat(oracle, first.trial_id, "tuner1", 0.5, progressing=True)
    oracle.create_trial("tuner2")
    trial = oracle.get_trial(first.trial_id)
    assert trial.status == "FAILED" and first.trial_id in oracle.end_order
    assert trial.message.startswith(f"Trial {first.trial_id} timed out 2 times")
    assert "latency measurement did not finish within the 0.3 s trial_deadline" in trial.message
    assert "max_crashes_per_trial=2" in trial.message
    state = saved_state(tmp_path)
    assert state["timeouts"] == state["crashes"] == {first.trial_id: 2}


def test_a_restarted_chief_neither_times_out_its_running_trials_at_once_nor_counts_the_restart(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    monkeypatch.setattr(durable, "DEADLINE_GRACE_SECONDS", 0.0)
    oracle = chief_oracle(tmp_path, trial_timeout=0.4, trial_deadline=0.6)
    running = oracle.create_trial("tuner0")
    time.sleep(0.7)  # past the deadline and trial_timeout when the chief is killed
    oracle.save()
    restarted = chief_oracle(tmp_path, trial_timeout=0.4, trial_deadline=0.6)
    # KerasTuner queues the trials a restarted chief finds running; the next worker gets one, with fresh
    # clocks: neither the time before the restart nor the restart itself counts against the candidate.
    again = restarted.create_trial("tuner1")
    assert again.trial_id == running.trial_id
    beat(restarted, again.trial_id, "tuner1", 0.4, progressing=True)
    assert restarted.ongoing_trials["tuner1"].trial_id == running.trial_id
    assert saved_state(tmp_path)["crashes"] == {} and saved_state(tmp_path)["timeouts"] == {}
    beat(restarted, again.trial_id, "tuner1", 0.4, progressing=True)  # now past its deadline
    assert "tuner1" not in restarted.ongoing_trials
    assert saved_state(tmp_path)["timeouts"] == {running.trial_id: 1}


class Killed(BaseException):
    """Stands for a SIGKILL of the process: nothing catches it, nothing is recorded on the way out."""


class DyingTuner(FastTuner):
    def __init__(self, *, die=(), interrupt=(), **kwargs):
        super().__init__(**kwargs)
        self.die = list(die)
        self.interrupt = list(interrupt)

    def run_trial(self, trial, *args, **kwargs):
        if trial.trial_id in self.interrupt:
            self.interrupt.remove(trial.trial_id)
            raise KeyboardInterrupt
        if trial.trial_id in self.die:
            self._set_phase(trial, "training")
            time.sleep(0.4)  # past its deadline when the process dies
            raise Killed
        time.sleep(0.15)
        self._check_deadline(trial, "training")  # the rerun's deadline counts from its own start
        return super().run_trial(trial, *args, **kwargs)


def test_a_kill_is_a_crash_not_a_timeout_and_the_rerun_has_its_whole_deadline(tmp_path):
    settings = {
        "max_trials": 3,
        "seed": 5,
        "controller": {"minibatch_size": 2, "units": 8},
        "trial_deadline": 0.3,
        "directory": str(tmp_path),
        "project_name": PROJECT,
        "overwrite": False,
    }
    with pytest.raises(Killed):
        DyingTuner(die=["1"], **settings).search(verbose=0)
    resumed = DyingTuner(**settings)
    resumed.search(verbose=0)
    assert [resumed.oracle.get_trial(t).status for t in resumed.oracle.start_order] == ["COMPLETED"] * 3
    state = saved_state(tmp_path)
    assert state["crashes"] == {"1": 1} and state["timeouts"] == {}
    assert np.isfinite(resumed.oracle.get_trial("1").score)


# --------------------------------------------------------------------------------------------------------
# A chief and two workers, one of which hangs in a trial while its heartbeat thread goes on


@pytest.fixture(scope="module")
def context():
    return fork_context()


def test_a_worker_hung_in_a_trial_loses_it_and_the_search_finishes(context, tmp_path):
    max_trials, trial_timeout = 4, 2.0
    configs = cluster_configs(
        tmp_path,
        free_port(),
        max_trials=max_trials,
        work_seconds=0.2,
        trial_timeout=trial_timeout,
        chief_timeout=30,
    )
    configs["tuner0"]["stall_at"] = 0  # tuner0's first trial hangs for an hour, heartbeats and all
    processes = {role: start(context, run_search, configs[role]) for role in ("chief", "tuner0")}
    try:
        # tuner1 joins once tuner0 hangs: started together, tuner1 could run every trial before tuner0
        # asked for one (a slow start under load), and tuner0 would finish without ever hanging.
        deadline = time.monotonic() + 60
        while not any("stalled_" in name for name in os.listdir(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.05)
        processes["tuner1"] = start(context, run_search, configs["tuner1"])
        rest = {role: processes[role] for role in ("chief", "tuner1")}
        codes, _ = join_all(rest, configs, timeout=60)
        assert processes["tuner0"].exitcode is None, "tuner0 hangs until killed"
    finally:
        stop(*processes.values())
    logs = "\n".join(f"--- {role}:\n{log_tail(configs[role]['log'])}" for role in processes)
    assert codes == {"chief": 0, "tuner1": 0}, logs
    (stalled,) = [name.removeprefix("stalled_") for name in os.listdir(tmp_path) if "stalled_" in name]
    runs = [(role, trial_id) for role, trial_id, _ in read_evaluations(str(tmp_path))]
    assert ("tuner1", stalled) in runs, f"trial {stalled} was not handed on to tuner1: {runs}\n{logs}"
    assert f"trial {stalled} on tuner0 timed out: training made no progress" in log_tail(
        configs["chief"]["log"], 400
    )
    assert f"the chief took trial {stalled} from this worker" in log_tail(configs["tuner0"]["log"], 60)
    oracle = load(configs)
    assert_every_trial_once(oracle, max_trials)
    assert oracle.get_state()["mnas"]["timeouts"] == {stalled: 1}


def test_sigterm_interrupts_a_search_like_ctrl_c_and_is_no_crash(context, tmp_path):
    config = {
        "directory": str(tmp_path),
        "log": str(tmp_path / "search.log"),
        "max_trials": 3,
        "stall_at": 1,  # the second trial waits for the signal
    }
    process = start(context, run_search, config)
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not any("stalled_" in name for name in os.listdir(tmp_path)):
            time.sleep(0.1)
        process.terminate()  # SIGTERM, as `kill` and job schedulers send
        process.join(30)
    finally:
        stop(process)
    log = log_tail(config["log"], 60)
    assert process.exitcode not in (0, None) and "SearchTerminated" in log, log
    (stalled,) = [name.removeprefix("stalled_") for name in os.listdir(tmp_path) if "stalled_" in name]
    assert os.path.exists(os.path.join(tmp_path, PROJECT, f"trial_{stalled}", INTERRUPTED_FILE))
    resumed = make_tuner({**config, "stall_at": None})
    resumed.search(verbose=0)
    assert saved_state(tmp_path)["crashes"] == {}, "an interruption, not a crash"
    assert [resumed.oracle.get_trial(t).status for t in resumed.oracle.start_order] == ["COMPLETED"] * 3


def test_a_pause_after_ctrl_c_counts_neither_as_a_stall_nor_towards_the_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(durable, "DEADLINE_GRACE_SECONDS", 0.0)
    tuner = DyingTuner(
        interrupt=["1"],
        max_trials=3,
        seed=5,
        controller={"minibatch_size": 2, "units": 8},
        trial_timeout=None,
        trial_deadline=0.3,
        directory=str(tmp_path),
        project_name=PROJECT,
    )
    with pytest.raises(KeyboardInterrupt):
        tuner.search(verbose=0)
    time.sleep(0.5)  # a notebook's user reads the traceback, then runs the cell again
    tuner.search(verbose=0)
    assert [tuner.oracle.get_trial(t).status for t in tuner.oracle.start_order] == ["COMPLETED"] * 3
    state = saved_state(tmp_path)
    assert state["crashes"] == {} and state["timeouts"] == {}
