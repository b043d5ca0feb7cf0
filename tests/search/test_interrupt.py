"""Ctrl-C is an interruption, not a crash: the trial runs again as if it had never started.

Only a death while the trial runs (an abort, the OOM killer, a SIGKILL) counts towards
`max_crashes_per_trial`. The interrupted process tells the next one by recording the interruption as it
unwinds; a process that dies records nothing.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from _search_script import PROJECT, FastTuner, read_evaluations

from keras_mnas.search.durable import INTERRUPTED_FILE


class Killed(BaseException):
    """Stands for a death of the process: nothing catches it, nothing is recorded on the way out."""


class InterruptibleTuner(FastTuner):
    """FastTuner that gets a Ctrl-C (or dies) in the trials named, once per name listed."""

    def __init__(self, *, interrupt=(), die=(), **kwargs):
        super().__init__(**kwargs)
        self.interrupt = list(interrupt)
        self.die = list(die)

    def run_trial(self, trial, *args, **kwargs):
        self._set_phase(trial, "training")
        if trial.trial_id in self.interrupt:
            self.interrupt.remove(trial.trial_id)
            raise KeyboardInterrupt
        if trial.trial_id in self.die:
            self.die.remove(trial.trial_id)
            raise Killed
        return super().run_trial(trial, *args, **kwargs)


def tuner_for(directory, **kwargs) -> InterruptibleTuner:
    """The same search each time, resumed from `directory` if saved there, as a new process would."""
    return InterruptibleTuner(
        max_trials=4,
        seed=5,
        controller={"minibatch_size": 2, "units": 8},
        max_crashes_per_trial=2,
        directory=str(directory),
        project_name=PROJECT,
        overwrite=False,
        **kwargs,
    )


def outcome(tuner) -> list:
    oracle = tuner.oracle
    return [
        (t, oracle.trials[t].status, oracle.trials[t].hyperparameters.values, oracle.trials[t].score)
        for t in oracle.start_order
    ]


def crashes(directory) -> dict[str, int]:
    with open(os.path.join(directory, PROJECT, "oracle.json")) as f:
        return json.load(f)["mnas"]["crashes"]


def markers(directory) -> list[str]:
    project = os.path.join(directory, PROJECT)
    names = sorted(os.listdir(project))
    return [name for name in names if os.path.isfile(os.path.join(project, name, INTERRUPTED_FILE))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tuner = tuner_for(tmp_path_factory.mktemp("reference"))
    tuner.search(verbose=0)
    return outcome(tuner)


def test_a_trial_interrupted_twice_is_no_crash_and_runs_as_if_never_started(tmp_path, reference):
    for _ in range(2):  # with max_crashes_per_trial=2, two crashes would fail the trial
        with pytest.raises(KeyboardInterrupt):
            tuner_for(tmp_path, interrupt=["1"]).search(verbose=0)
    assert crashes(tmp_path) == {}
    resumed = tuner_for(tmp_path)
    resumed.search(verbose=0)
    assert crashes(tmp_path) == {}
    assert outcome(resumed) == reference, "the interrupted search must end as the uninterrupted one"
    runs = [trial_id for _, trial_id, _ in read_evaluations(str(tmp_path))]
    assert runs == ["0", "1", "2", "3"], "each trial completed exactly once"
    assert markers(tmp_path) == []
    assert resumed.oracle.controller.num_observed == 4 + resumed.oracle.reused_proposals


def test_search_called_again_after_ctrl_c_in_the_same_process(tmp_path, reference):
    tuner = tuner_for(tmp_path, interrupt=["2"])
    with pytest.raises(KeyboardInterrupt):
        tuner.search(verbose=0)
    tuner.search(verbose=0)  # a notebook's next cell
    assert outcome(tuner) == reference
    assert crashes(tmp_path) == {} and markers(tmp_path) == []


def test_a_death_after_an_interruption_is_still_a_crash(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        tuner_for(tmp_path, interrupt=["1"]).search(verbose=0)
    with pytest.raises(Killed):
        tuner_for(tmp_path, die=["1"]).search(verbose=0)  # the rerun kills the process
    with pytest.raises(Killed):
        tuner_for(tmp_path, die=["1"]).search(verbose=0)
    assert crashes(tmp_path) == {"1": 1}
    resumed = tuner_for(tmp_path)
    resumed.search(verbose=0)
    trial = resumed.oracle.get_trial("1")
    assert trial.status == "FAILED"
    assert "crashed 2 times" in trial.message and "while training" in trial.message
    assert crashes(tmp_path) == {"1": 2}


def test_an_interrupted_worker_trial_is_handed_on_without_a_crash(tmp_path):
    tuner = InterruptibleTuner(
        max_trials=4, seed=5, trial_timeout=0.01, directory=str(tmp_path), project_name=PROJECT
    )
    oracle = tuner.oracle
    tuner._populate_initial_space()
    first = oracle.create_trial("worker0")
    oracle.record_interruption(first.trial_id)  # what a worker's MnasTuner does on Ctrl-C
    time.sleep(0.05)
    again = oracle.create_trial("worker1")
    assert again.trial_id == first.trial_id
    assert crashes(tmp_path) == {}
    assert markers(tmp_path) == [], "handed out again, the trial may crash like any other"
