"""KerasTuner's distributed mode with MnasOracle: a chief and two workers over gRPC on 127.0.0.1.

The chief and the workers run the same script (see `_search_script.py`) in child processes, told their role
by the `KERASTUNER_*` variables, and share one project directory. Checked: every trial is accounted for
exactly once; a worker killed mid-trial has its trial handed out again after `trial_timeout`; workers stop
with a clear error, within `chief_timeout`, when the chief is killed.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from _search_script import (
    fork_context,
    log_tail,
    make_tuner,
    read_evaluations,
    read_trainings,
    run_search,
    start,
    stop,
)

WORKERS = ("tuner0", "tuner1")


@pytest.fixture(scope="module")
def context():
    return fork_context()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster_configs(directory, port: int, **common) -> dict[str, dict]:
    configs = {}
    for role in ("chief", *WORKERS):
        env = {
            "KERASTUNER_TUNER_ID": role,
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port),
        }
        log = str(directory / f"{role}.log")
        configs[role] = {"directory": str(directory), "log": log, "env": env, **common}
    return configs


def start_cluster(context, configs: dict[str, dict]) -> dict:
    processes = {"chief": start(context, run_search, configs["chief"])}
    for role in WORKERS:
        processes[role] = start(context, run_search, configs[role])
    return processes


def join_all(processes: dict, configs: dict, timeout: float) -> tuple[dict[str, int], dict[str, float]]:
    """Waits for every process; returns their exit codes and when each was seen to end (monotonic)."""
    deadline = time.monotonic() + timeout
    ended: dict[str, float] = {}
    while len(ended) < len(processes) and time.monotonic() < deadline:
        for role, process in processes.items():
            if role not in ended and process.exitcode is not None:
                ended[role] = time.monotonic()
        time.sleep(0.05)
    codes = {role: process.exitcode for role, process in processes.items()}
    logs = "\n".join(f"--- {role}:\n{log_tail(configs[role]['log'])}" for role in processes)
    assert None not in codes.values(), f"still running after {timeout} s: {codes}\n{logs}"
    return codes, ended


def load(configs: dict):
    """The project as a plain (non-distributed) script would reload it."""
    config = {key: value for key, value in configs["chief"].items() if key != "env"}
    return make_tuner(config).oracle


def assert_every_trial_once(oracle, max_trials: int) -> None:
    completed = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    assert len(completed) == max_trials, (
        f"expected {max_trials} completed trials, found {len(completed)}: "
        f"{ {t.trial_id: t.status for t in oracle.trials.values()} }"
    )
    assert oracle.ongoing_trials == {} and oracle._retry_queue == []
    values = [json.dumps(t.hyperparameters.values, sort_keys=True) for t in completed]
    assert len(set(values)) == len(values), "an architecture was evaluated twice"
    observed = oracle.get_state()["mnas"]["observed"]
    assert len(observed) == len(set(observed)) == len(oracle.end_order), f"learnt twice: {observed}"
    assert oracle.controller.num_observed == len(completed) + oracle.reused_proposals


def test_chief_and_two_workers_account_for_every_trial_once(context, tmp_path):
    max_trials, trial_timeout = 10, 3.0
    configs = cluster_configs(
        tmp_path,
        free_port(),
        max_trials=max_trials,
        work_seconds=0.3,
        trial_timeout=trial_timeout,
        chief_timeout=30,
        start_together=WORKERS,
    )
    # KerasTuner reports nothing while a trial trains: without heartbeats (every trial_timeout / 4 s) that
    # carry its progress, this trial, longer than trial_timeout, would be taken from its live worker.
    configs["tuner1"]["slow_at"] = [1, 2 * trial_timeout]
    processes = start_cluster(context, configs)
    try:
        codes, ended = join_all(processes, configs, timeout=75)
    finally:
        stop(*processes.values())
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, "\n".join(
        f"--- {role}:\n{log_tail(configs[role]['log'])}" for role in processes
    )
    runs = read_evaluations(str(tmp_path))
    trial_ids = [trial_id for _, trial_id, _ in runs]
    assert sorted(trial_ids) == sorted(set(trial_ids)) and len(trial_ids) == max_trials, trial_ids
    by_worker = {role: [t for r, t, _ in runs if r == role] for role in WORKERS}
    assert all(by_worker.values()), f"both workers should have run trials: {by_worker}"
    oracle = load(configs)
    assert_every_trial_once(oracle, max_trials)
    assert "no news of trial" not in log_tail(configs["chief"]["log"], 400)
    assert oracle.get_state()["mnas"]["crashes"] == {}
    # KerasTuner's chief polls for its exit every 20 s once a worker got STOPPED; MnasOracle tells only the
    # last worker, so the chief ends with it.
    lag = ended["chief"] - max(ended["tuner0"], ended["tuner1"])
    assert lag < 8, f"the chief ended {lag:.1f} s after the last worker"


def test_chief_and_two_workers_train_real_candidates_each_once(context, tmp_path):
    # Tiny real candidates, built and trained by two workers at once; the chief only proposes and learns.
    max_trials = 4
    configs = cluster_configs(tmp_path, free_port(), real=True, max_trials=max_trials, chief_timeout=60)
    processes = start_cluster(context, configs)
    try:
        codes, _ = join_all(processes, configs, timeout=300)
    finally:
        stop(*processes.values())
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, "\n".join(
        f"--- {role}:\n{log_tail(configs[role]['log'])}" for role in processes
    )
    trainings = read_trainings(str(tmp_path))
    runs = read_evaluations(str(tmp_path))
    trained, scored = sorted(t for _, t in trainings), sorted(t for _, t, _ in runs)
    assert trained == scored == [str(i) for i in range(max_trials)], (trainings, runs)
    # Both workers train (each asks for a trial as soon as it is up, and a trial takes seconds); the chief
    # never does.
    assert {role for role, _ in trainings} == set(WORKERS), f"both workers, and only they, train: {trainings}"
    oracle = load(configs)
    assert_every_trial_once(oracle, max_trials)
    assert oracle.get_state()["mnas"]["crashes"] == {}
    for trial in oracle.trials.values():
        # Scored from the real training: the reward's accuracy is the trial's own validation accuracy.
        assert 0 < trial.metrics.get_last_value("val_accuracy") <= 1
        assert trial.score == trial.metrics.get_last_value("reward")


def test_a_worker_killed_mid_trial_has_its_trial_run_by_the_other(context, tmp_path):
    max_trials, trial_timeout = 8, 3.0
    configs = cluster_configs(
        tmp_path,
        free_port(),
        max_trials=max_trials,
        work_seconds=0.2,
        trial_timeout=trial_timeout,
        chief_timeout=30,
    )
    configs["tuner0"]["stall_at"] = 1  # tuner0's second trial hangs: it is killed there
    processes = start_cluster(context, configs)
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not any(n.startswith("stalled_") for n in os.listdir(tmp_path)):
            time.sleep(0.1)
        stalled = [n.removeprefix("stalled_") for n in os.listdir(tmp_path) if n.startswith("stalled_")]
        assert stalled, "tuner0 never reached its second trial:\n" + log_tail(configs["tuner0"]["log"])
        processes["tuner0"].kill()
        killed_at = time.monotonic()
        processes["tuner0"].join(10)
        rest = {role: processes[role] for role in ("chief", "tuner1")}
        codes, _ = join_all(rest, configs, timeout=60)
        elapsed = time.monotonic() - killed_at
    finally:
        stop(*processes.values())
    assert codes == {"chief": 0, "tuner1": 0}, "\n".join(
        f"--- {role}:\n{log_tail(configs[role]['log'])}" for role in rest
    )
    (trial_id,) = stalled
    runs = read_evaluations(str(tmp_path))
    assert ("tuner1", trial_id) in [(r, t) for r, t, _ in runs], (
        f"trial {trial_id} of the killed worker was not completed by tuner1: {runs}"
    )
    trial_ids = [t for _, t, _ in runs]
    assert sorted(trial_ids) == sorted(set(trial_ids)) and len(trial_ids) == max_trials, trial_ids
    assert f"no news of trial {trial_id} from tuner0" in log_tail(configs["chief"]["log"], 400)
    oracle = load(configs)
    assert_every_trial_once(oracle, max_trials)
    assert oracle.get_state()["mnas"]["crashes"] == {trial_id: 1}
    assert elapsed < 45, f"the search took {elapsed:.0f} s to end after the kill"


def test_workers_stop_with_a_clear_error_when_the_chief_dies(context, tmp_path):
    chief_timeout = 4.0
    port = free_port()
    configs = cluster_configs(
        tmp_path, port, max_trials=60, work_seconds=0.3, trial_timeout=20, chief_timeout=chief_timeout
    )
    processes = start_cluster(context, configs)
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and len(read_evaluations(str(tmp_path))) < 3:
            time.sleep(0.1)
        assert len(read_evaluations(str(tmp_path))) >= 3, log_tail(configs["chief"]["log"])
        processes["chief"].kill()
        killed_at = time.monotonic()
        workers = {role: processes[role] for role in WORKERS}
        codes, _ = join_all(workers, configs, timeout=chief_timeout + 30)
        elapsed = time.monotonic() - killed_at
    finally:
        stop(*processes.values())
    assert all(code not in (0, None) for code in codes.values()), codes
    for role in WORKERS:
        log = log_tail(configs[role]["log"], 60)
        assert f"The chief oracle at 127.0.0.1:{port} did not answer" in log, log
        assert "is the chief process still running?" in log, log
    # They retry a lost connection until chief_timeout (the chief may be restarting), then give up.
    assert chief_timeout - 1 < elapsed < chief_timeout + 30, f"workers took {elapsed:.1f} s to give up"


def test_the_chief_stops_every_worker_at_the_failure_limit_with_everything_saved(context, tmp_path):
    max_trials, limit = 10, 3
    configs = cluster_configs(
        tmp_path,
        free_port(),
        max_trials=max_trials,
        work_seconds=0.1,
        trial_timeout=5.0,
        chief_timeout=30,
        fail_all=True,
        failure_limit=limit,
        start_together=WORKERS,
    )
    processes = start_cluster(context, configs)
    try:
        codes, _ = join_all(processes, configs, timeout=120)
    finally:
        stop(*processes.values())
    logs = "\n".join(f"--- {role}:\n{log_tail(configs[role]['log'])}" for role in processes)
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, logs
    assert f"Number of consecutive failures exceeded the limit of {limit}" in log_tail(
        configs["chief"]["log"], 400
    ), logs
    oracle = load(configs)
    failed = [t for t in oracle.trials.values() if t.status == "FAILED"]
    assert len(failed) == len(oracle.trials) and limit <= len(failed) < max_trials, logs
    assert oracle.ongoing_trials == {} and sorted(oracle.end_order) == sorted(oracle.trials)
    # The cause fixed, the same search resumed (here in one process) goes on to max_trials.
    resumed = make_tuner({**{k: v for k, v in configs["chief"].items() if k != "env"}, "fail_all": False})
    resumed.search(verbose=0)
    statuses = [resumed.oracle.trials[t].status for t in resumed.oracle.start_order]
    assert statuses == ["FAILED"] * len(failed) + ["COMPLETED"] * (max_trials - len(failed)), statuses
