"""Kill the search process at any instant, run the same script again: the search goes on as if never killed.

Each search runs in a child process (see `_search_script.py`) that is SIGKILLed at random moments, or dies
at an exact point between two saves, then is rerun with `overwrite=False` until it finishes. The resumed
search must equal an uninterrupted one with the same seed: same trials, same rewards, same controller state
(weights, optimizer, baseline, random state), so no reward was counted twice or lost.
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest
from _search_script import (
    PROJECT,
    corrupt_files,
    fork_context,
    log_tail,
    make_tuner,
    read_evaluations,
    read_trainings,
    run_search,
    start,
    stop,
)

from keras_mnas.utils.io import is_temp_file

MAX_TRIALS = 24
RUN_TIMEOUT = 90.0  # one child, resume included; a search of MAX_TRIALS takes ~5 s here


@pytest.fixture(scope="module")
def context():
    return fork_context()


def config_for(directory, **overrides) -> dict:
    config = {"directory": str(directory), "max_trials": MAX_TRIALS, "log": str(directory / "log.txt")}
    config.update(overrides)
    return config


def run_once(context, config: dict, timeout: float = RUN_TIMEOUT) -> int:
    process = start(context, run_search, config)
    try:
        process.join(timeout)
        assert process.exitcode is not None, f"the search did not end within {timeout} s:\n" + log_tail(
            config["log"]
        )
        return process.exitcode
    finally:
        stop(process)


def summary(config: dict) -> dict:
    """Loads the project in this process, as a user would, and returns what must match the reference."""
    tuner = make_tuner(config)
    oracle = tuner.oracle
    trials = [oracle.trials[t] for t in oracle.start_order]
    with open(os.path.join(config["directory"], PROJECT, "oracle.json")) as f:
        state = json.load(f)["mnas"]
    return {
        "oracle": oracle,
        "trials": [(t.trial_id, t.status, t.hyperparameters.values, t.score) for t in trials],
        "controller": json.dumps(state["controller"], sort_keys=True),
        "observed": state["observed"],
        "updates": state["updates"],
        "reused": state["reused"],
        "crashes": state["crashes"],
    }


def assert_accounted_once(result: dict, max_trials: int = MAX_TRIALS) -> None:
    oracle = result["oracle"]
    completed = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    assert len(completed) == max_trials, (
        f"expected {max_trials} completed trials, found {len(completed)}: {result['trials']}"
    )
    observed = result["observed"]
    assert len(observed) == len(set(observed)), f"a trial was learnt from twice: {observed}"
    assert sorted(observed) == sorted(oracle.end_order)
    assert oracle.controller.num_observed == len(completed) + oracle.reused_proposals, (
        f"the controller observed {oracle.controller.num_observed} rewards; expected {len(completed)} "
        f"completed + {oracle.reused_proposals} reused proposals"
    )
    values = [json.dumps(t.hyperparameters.values, sort_keys=True) for t in completed]
    assert len(set(values)) == len(values), "an architecture was evaluated twice"


def assert_same_search(resumed: dict, reference: dict) -> None:
    assert resumed["trials"] == reference["trials"]
    assert resumed["observed"] == reference["observed"]
    assert resumed["updates"] == reference["updates"]
    assert resumed["reused"] == reference["reused"]
    assert resumed["controller"] == reference["controller"], "the controller is not where it was"


def assert_no_stray_files(project_dir: str, kills: int) -> None:
    assert corrupt_files(project_dir) == []
    temps = [
        os.path.relpath(os.path.join(root, name), project_dir)
        for root, _, names in os.walk(project_dir)
        for name in names
        if is_temp_file(name) or name.endswith(".tmp")
    ]
    # Whatever the kills left mid-write, the last run's reload removed it (the names come from utils.io).
    assert temps == [], f"{len(temps)} temporary files left after {kills} kills: {temps}"


@pytest.fixture(scope="module")
def reference(context, tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("reference")
    config = config_for(directory)
    assert run_once(context, config) == 0, log_tail(config["log"])
    result = summary(config)
    assert_accounted_once(result)
    return result


def test_random_sigkills_then_resume_equals_an_uninterrupted_search(context, reference, tmp_path):
    config = config_for(tmp_path)
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    kills, deadline = 0, time.monotonic() + 60
    progress = []  # evaluations done at each kill: the kills must not all land before the first trial
    while kills < 5 and time.monotonic() < deadline:
        done_before = len(read_evaluations(config["directory"]))
        process = start(context, run_search, config)
        try:
            # Each run may add only a few evaluations before its kill, so at least four kills land before
            # the MAX_TRIALS are done however fast this machine runs the trials (4 runs add at most
            # 5 + 3 + 5 + 3, plus one each for the polling delay: 20 < 24).
            if kills % 2:
                # Odd kills land inside the trial loop: after this run's first new evaluation (a reload
                # can take longer than the whole random window on a slow machine), within the next few
                # trials' sampling, PPO updates and saves (a trial takes tens of milliseconds).
                wait_for_evaluations(process, config, done_before + 1, timeout=30)
                wait_for_evaluations(process, config, done_before + 3, timeout=rng.uniform(0.0, 0.25))
            else:
                # Anywhere: startup, reload, trials, saves.
                wait_for_evaluations(process, config, done_before + 5, timeout=rng.uniform(0.1, 1.5))
            if process.exitcode is None:
                process.kill()
                process.join(10)
                assert process.exitcode == -9
                kills += 1
                progress.append(len(read_evaluations(config["directory"])))
            else:
                assert process.exitcode == 0, f"seed {seed}:\n" + log_tail(config["log"])
                break  # finished before the next kill
        finally:
            stop(process)
    assert kills >= 4, f"only {kills} kills landed before the search ended (seed {seed})"
    assert len(set(progress)) >= 2, f"the search made no progress between kills: {progress} (seed {seed})"
    assert run_once(context, config) == 0, f"seed {seed}:\n" + log_tail(config["log"])
    result = summary(config)
    assert_accounted_once(result)
    assert_same_search(result, reference)
    assert_no_stray_files(os.path.join(config["directory"], PROJECT), kills)
    assert "SEARCH DONE" in log_tail(config["log"], 3)


@pytest.mark.parametrize(
    "path_suffix, contains, what",
    [
        ("trial_03/trial.json", '"COMPLETED"', "ended: trial.json says so, oracle.json lists it running"),
        ("trial_03/trial.json", '"RUNNING"', "created: trial.json written, oracle.json never heard of it"),
    ],
)
def test_death_between_trial_json_and_oracle_json(context, reference, tmp_path, path_suffix, contains, what):
    config = config_for(tmp_path)
    first = run_once(context, {**config, "exit_after_write": [path_suffix, contains]})
    assert first == 137, f"expected the injected death (137) when trial 03 was {what}; got {first}"
    assert run_once(context, config) == 0, log_tail(config["log"])
    result = summary(config)
    assert_accounted_once(result)
    assert_same_search(result, reference)
    assert result["crashes"] == {}, f"no trial crashed, yet crashes were counted: {result['crashes']}"
    runs = [trial_id for _, trial_id, _ in read_evaluations(config["directory"])]
    assert sorted(runs) == sorted(set(runs)), f"a trial was evaluated twice: {runs}"


def test_a_trial_that_crashes_the_process_is_failed_after_max_crashes(context, tmp_path):
    # Trial 0: the very first (no trial had ended yet); 3: one in the middle. Each kills the process.
    config = config_for(tmp_path, max_trials=6, crash_trials=["0", "3"], max_crashes_per_trial=2)
    exit_codes = []
    while len(exit_codes) < 8:
        exit_codes.append(run_once(context, config))
        if exit_codes[-1] == 0:
            break
    assert exit_codes == [134, 134, 134, 134, 0], (
        f"expected two aborts per crashing trial, then a finished search; exit codes {exit_codes}\n"
        + log_tail(config["log"])
    )
    result = summary(config)
    oracle = result["oracle"]
    statuses = {t.trial_id: t.status for t in oracle.trials.values()}
    expected = {"0": "FAILED", "3": "FAILED"} | {t: "COMPLETED" for t in ("1", "2", "4", "5")}
    assert statuses == expected
    for trial_id in ("0", "3"):
        message = oracle.trials[trial_id].message
        assert "crashed 2 times" in message and "while training" in message, message
        assert "max_crashes_per_trial=2" in message, message
    completed = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    assert oracle.controller.num_observed == len(completed) + oracle.reused_proposals
    runs = sorted(trial_id for _, trial_id, _ in read_evaluations(config["directory"]))
    assert runs == ["1", "2", "4", "5"], f"each good trial runs once, the crashing ones never end: {runs}"


def test_sigkill_while_a_real_candidate_trains_then_resume(context, tmp_path):
    # Tiny real candidates, built and trained: the kill lands inside model.fit of trial 1, after its first
    # batch, with trial 0 trained, scored and saved.
    config = config_for(tmp_path, real=True, max_trials=3)
    process = start(context, run_search, {**config, "pause_in_training": ["1", 600]})
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.exitcode is None:
            if ("tuner0", "1") in read_trainings(str(tmp_path)):
                break
            time.sleep(0.05)
        started = ("tuner0", "1") in read_trainings(str(tmp_path))
        assert started, "trial 1 never started training:\n" + log_tail(config["log"])
        process.kill()
        process.join(10)
        assert process.exitcode == -9
    finally:
        stop(process)
    assert [t for _, t, _ in read_evaluations(str(tmp_path))] == ["0"]
    trial_files = {t: tmp_path / PROJECT / f"trial_{t}" / "trial.json" for t in ("0", "1")}
    before = {t: json.loads(path.read_text()) for t, path in trial_files.items()}
    assert before["0"]["status"] == "COMPLETED" and before["1"]["status"] == "RUNNING"

    assert run_once(context, config, timeout=240) == 0, log_tail(config["log"])
    assert "SEARCH DONE" in log_tail(config["log"], 3)
    oracle = make_tuner(config).oracle
    assert {t.trial_id: t.status for t in oracle.trials.values()} == dict.fromkeys("012", "COMPLETED")
    # Nothing lost: trial 0 kept its score and was not trained again; the killed trial 1 ran again, with
    # the same architecture, and is the only one trained twice.
    assert oracle.trials["0"].score == before["0"]["score"]
    assert oracle.trials["1"].hyperparameters.values == before["1"]["hyperparameters"]["values"]
    assert sorted(t for _, t in read_trainings(str(tmp_path))) == ["0", "1", "1", "2"]
    # Nothing counted twice: each trial was scored once, and the controller learnt from each once.
    assert sorted(t for _, t, _ in read_evaluations(str(tmp_path))) == ["0", "1", "2"]
    state = oracle.get_state()["mnas"]
    assert sorted(state["observed"]) == ["0", "1", "2"]
    assert oracle.controller.num_observed == 3 + oracle.reused_proposals
    assert state["crashes"] == {"1": 1}, "the kill counts as one crash of the trial it interrupted"


def wait_for_evaluations(process, config, count: int, timeout: float) -> None:
    """Waits until `count` evaluations are logged, the process ends, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.exitcode is None:
        if len(read_evaluations(config["directory"])) >= count:
            return
        time.sleep(0.005)
