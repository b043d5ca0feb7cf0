"""`max_consecutive_failed_trials`: the search stops with everything saved, and a resumed search goes on.

KerasTuner raises at the limit from inside `end_trial`, before the last failed trial and the oracle are
saved: that trial stayed RUNNING on disk, and every resume counted it as a crash and ran it again.
"""

from __future__ import annotations

import json
import os

import keras_tuner
import pytest
from _search_script import PROJECT, FastTuner, log_evaluation, read_evaluations


class FlakyTuner(FastTuner):
    """FastTuner whose every trial fails while `failing` is true, as with broken data or a broken device."""

    def __init__(self, *, failing: bool, **kwargs):
        super().__init__(**kwargs)
        self.failing = failing

    def run_trial(self, trial, *args, **kwargs):
        if self.failing:
            log_evaluation(self.directory, self.tuner_id, trial.trial_id, dict(trial.hyperparameters.values))
            raise keras_tuner.errors.FailedTrialError("the validation data is broken")
        return super().run_trial(trial, *args, **kwargs)


def flaky_tuner(directory, *, limit: int, failing: bool, max_trials: int = 6) -> FlakyTuner:
    """The same search each time, resumed from `directory` if saved there (a new process, as far as the
    project is concerned)."""
    return FlakyTuner(
        failing=failing,
        max_trials=max_trials,
        seed=7,
        controller={"minibatch_size": 2, "units": 8},
        max_consecutive_failed_trials=limit,
        directory=str(directory),
        project_name=PROJECT,
        overwrite=False,
    )


def saved_state(directory) -> tuple[dict, dict[str, str]]:
    """oracle.json, and the status each trial.json holds."""
    project = os.path.join(directory, PROJECT)
    with open(os.path.join(project, "oracle.json")) as f:
        oracle = json.load(f)
    statuses = {}
    for name in sorted(os.listdir(project)):
        if name.startswith("trial_"):
            with open(os.path.join(project, name, "trial.json")) as f:
                statuses[name[len("trial_") :]] = json.load(f)["status"]
    return oracle, statuses


def runs_per_trial(directory) -> dict[str, int]:
    runs: dict[str, int] = {}
    for _, trial_id, _ in read_evaluations(str(directory)):
        runs[trial_id] = runs.get(trial_id, 0) + 1
    return runs


def test_the_limit_stops_the_search_with_the_last_failure_saved(tmp_path):
    with pytest.raises(RuntimeError, match="consecutive failures exceeded the limit of 2"):
        flaky_tuner(tmp_path, limit=2, failing=True).search(verbose=0)
    oracle, statuses = saved_state(tmp_path)
    assert statuses == {"0": "FAILED", "1": "FAILED"}, "the trial that reached the limit must be saved FAILED"
    assert oracle["ongoing_trials"] == {} and oracle["end_order"] == ["0", "1"]
    assert oracle["mnas"]["observed"] == ["0", "1"]


def test_a_fixed_search_resumes_after_the_limit_without_rerunning_or_counting_crashes(tmp_path):
    with pytest.raises(RuntimeError, match="limit of 2"):
        flaky_tuner(tmp_path, limit=2, failing=True).search(verbose=0)
    resumed = flaky_tuner(tmp_path, limit=2, failing=False)  # the cause fixed, the same limit
    resumed.search(verbose=0)
    oracle, statuses = saved_state(tmp_path)
    assert statuses == {"0": "FAILED", "1": "FAILED", **{str(i): "COMPLETED" for i in range(2, 6)}}
    assert oracle["mnas"]["crashes"] == {}, "no trial crashed"
    assert runs_per_trial(tmp_path) == {str(i): 1 for i in range(6)}, "every trial runs exactly once"
    assert oracle["end_order"] == [str(i) for i in range(6)]
    assert sorted(oracle["mnas"]["observed"]) == oracle["end_order"]
    completed = len(resumed.completed_trials())
    assert resumed.oracle.controller.num_observed == completed + resumed.oracle.reused_proposals


def test_a_higher_limit_on_resume_counts_failures_afresh_then_stops_again(tmp_path):
    with pytest.raises(RuntimeError, match="limit of 2"):
        flaky_tuner(tmp_path, limit=2, failing=True).search(verbose=0)
    with pytest.raises(RuntimeError, match="limit of 3"):
        flaky_tuner(tmp_path, limit=3, failing=True).search(verbose=0)
    oracle, statuses = saved_state(tmp_path)
    assert statuses == {str(i): "FAILED" for i in range(5)}
    assert oracle["ongoing_trials"] == {} and oracle["mnas"]["crashes"] == {}
    flaky_tuner(tmp_path, limit=3, failing=False).search(verbose=0)
    _, statuses = saved_state(tmp_path)
    assert statuses["5"] == "COMPLETED" and len(statuses) == 6
    assert runs_per_trial(tmp_path) == {str(i): 1 for i in range(6)}


def test_search_called_again_in_the_same_process_goes_on(tmp_path):
    tuner = flaky_tuner(tmp_path, limit=2, failing=True, max_trials=4)
    with pytest.raises(RuntimeError, match="limit of 2"):
        tuner.search(verbose=0)
    tuner.failing = False
    tuner.search(verbose=0)
    assert [t.status for t in map(tuner.oracle.get_trial, tuner.oracle.end_order)] == [
        "FAILED",
        "FAILED",
        "COMPLETED",
        "COMPLETED",
    ]
