"""DurableOracle: the bookkeeping that makes a KerasTuner search of days safe to kill at any instant.

A search algorithm subclasses `DurableOracle` as it would `keras_tuner.Oracle` (override `populate_space`, add
its own keys to the state) and gets:

- atomic writes of `oracle.json` and every `trial.json`, so a kill never leaves a file that does not load;
- on reload, reconciliation of what a kill may have left half-recorded (a trial created but never handed
  out, a trial ended that `oracle.json` still lists as running) and removal of stale temporary files;
- crash accounting: a trial that was running when the process died runs again, unless it has now crashed the
  process `max_crashes_per_trial` times: then it is recorded as failed, with the phase it was in. A trial
  interrupted on purpose (Ctrl-C, recorded with `record_interruption`) is no crash: it just runs again;
- a stop at `max_consecutive_failed_trials` that leaves everything saved: the search raises once the last
  failure is recorded, and a resumed search counts failures afresh;
- in distributed tuning, liveness judged from progress: a trial whose worker is silent, or whose work has not
  advanced, for `trial_timeout`, or that runs past `trial_deadline`, is taken from its worker and handed out
  again (up to `max_crashes_per_trial` times, then recorded as failed); idle workers wait while a trial may
  still come back, and late reports (from a worker whose trial was taken away, or of a trial already ended)
  are ignored;
- a refusal to resume a search whose settings (`search_config`) differ from the saved ones.

The algorithm learns from ended trials through one hook, `_learn_from(trial)`, called exactly once per trial
that ends (also after a crash verdict, and on reload for trials the saved state had not learnt from).

Every use of KerasTuner's private attributes (`_retry_queue`, `_id_to_hash`, `_tried_so_far`, `_tuner_ids`,
`_seed_state`, `_project_dir`, `_compute_values_hash`, `_random_values`) is in this module, behind the small
helpers of the "KerasTuner internals" section (and `AtomicSaves._project_path`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Mapping
from typing import Any

import keras_tuner

from keras_mnas.utils.checks import check_int, check_seconds
from keras_mnas.utils.io import atomic_write_json, read_json, remove_temp_files

RUNNING = "RUNNING"
IDLE = "IDLE"
INVALID = "INVALID"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
STOPPED = "STOPPED"

PHASE_FILE = "mnas_phase.json"
#: Written in a trial's directory when the trial is interrupted on purpose: on reload it is no crash.
INTERRUPTED_FILE = "mnas_interrupted.json"
#: A distributed chief reloading removes only temporary files older than this: workers may be writing.
LIVE_WRITE_SECONDS = 60.0
#: The section of `oracle.json` that keras-mnas oracles write (`SearchProject` reads `search_config` there).
STATE_SECTION = "mnas"
#: Trial id of the IDLE answer that tells a distributed worker to stop without ending the chief's search.
STOP_WORKER = "mnas-stop-worker"
#: Prefix of the reserved metric a distributed worker adds to its reports: `<prefix><tuner id>`, valued with
#: the worker's progress count. The chief strips it: it never reaches a trial's metrics.
WORKER_STAMP = "mnas-worker:"
#: Seconds past `trial_deadline` before a distributed chief takes a trial away: the worker enforces the
#: deadline itself when it can, and its report of the timed-out trial must have time to arrive.
DEADLINE_GRACE_SECONDS = 10.0
# What each recorded phase is called in a timeout's reason.
_PHASE_WORK = {"building": "building", "measuring latency": "latency measurement", "training": "training"}


class AtomicSaves:
    """Mixin for any `keras_tuner.Oracle`: writes `oracle.json` and every `trial.json` atomically.

    KerasTuner truncates then writes: a kill in between leaves an empty file, and a project that never loads.

    Example:

    ```python
    class DurableRandomSearch(AtomicSaves, keras_tuner.oracles.RandomSearchOracle):
        pass
    ```
    """

    #: Whether the per-trial writes wait for the disk (`fsync`). The rename keeps them consistent under any
    #: kill; waiting for the disk as well cost a search ~40 ms per trial (six writes) on a busy machine.
    sync_saves = False

    def save(self) -> None:
        atomic_write_json(self._project_path("oracle.json"), self.get_state(), sync=self.sync_saves)

    def _save_trial(self, trial) -> None:
        path = self._project_path(f"trial_{trial.trial_id}", "trial.json")
        atomic_write_json(path, trial.get_state(), sync=self.sync_saves)

    def _project_path(self, *parts: str) -> str:
        """A path inside the project directory."""
        # KerasTuner internals (keras-tuner < 1.5): the project directory has no public accessor.
        return os.path.join(self._project_dir, *parts)


class DurableOracle(AtomicSaves, keras_tuner.Oracle):
    """A KerasTuner Oracle whose search survives a kill at any instant, with crash accounting per trial.

    Subclass it as `keras_tuner.Oracle` (override `populate_space`) and override `_learn_from(trial)` to
    learn from ended trials; extend `get_state`/`set_state` by adding keys to `state["mnas"]`.

    Args:
        max_crashes_per_trial: How many times a trial may crash the whole search process before it is recorded
            as failed instead of being run again on restart. Any death of the process while the trial runs
            counts (an abort, the OOM killer, a SIGKILL), and so does, in distributed tuning, its worker
            going silent for `trial_timeout`, or the chief taking the trial away as timed out (stalled, or
            past `trial_deadline`).
        trial_timeout: Distributed tuning: seconds without news from a worker, or without progress of its
            trial's work, after which its running trial is taken away and handed out again. `MnasTuner`
            workers send heartbeats carrying a progress count that only the work advances (phases, training
            and validation batches), so a worker whose trial hangs while its heartbeats go on loses the
            trial too. With it, workers wait for the last running trials instead of stopping, in case one
            comes back. `None` disables it.
        trial_deadline: Distributed tuning: seconds of wall time a trial may run on a worker (measurement
            and training). A trial still running `DEADLINE_GRACE_SECONDS` (10 s) past it is taken away as
            timed out, like a stalled one. `None` (default) sets no limit. (`MnasTuner` also enforces it
            inside each process.)
        seed: As in `keras_tuner.Oracle`, except that 0 is a seed like any other.
        **kwargs: The other arguments of `keras_tuner.Oracle`. `max_consecutive_failed_trials` stops the
            search as KerasTuner's does (a `RuntimeError`), but only once the last failed trial and the
            oracle are saved; a resumed search counts consecutive failures from zero again.

    Raises:
        ValueError: for a bad `max_crashes_per_trial`, `trial_timeout`, `trial_deadline` or `seed`.

    Attributes:
        search_config: Settings the saved search must match on resume (`MnasTuner` sets the space, reward
            and latency source); a difference is refused unless `allow_config_change` is true.
    """

    def __init__(
        self,
        *,
        max_crashes_per_trial: int = 2,
        trial_timeout: float | None = None,
        trial_deadline: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ):
        max_crashes_per_trial = check_int("max_crashes_per_trial", max_crashes_per_trial, minimum=1)
        trial_timeout = check_seconds("trial_timeout", trial_timeout, allow_none=True)
        trial_deadline = check_seconds("trial_deadline", trial_deadline, allow_none=True)
        seed = check_int("seed", seed, allow_none=True)
        super().__init__(seed=seed, **kwargs)
        if seed == 0:
            # KerasTuner reads a seed of 0 as "no seed" and draws a random one: seed=0 would not reproduce.
            self.seed = self._seed_state = 0
        self.max_crashes_per_trial = max_crashes_per_trial
        self.trial_timeout = trial_timeout
        self.trial_deadline = trial_deadline
        self.search_config: dict[str, Any] = {}
        self.allow_config_change = False
        self._crashes: dict[str, int] = collections.defaultdict(int)
        # How many of a trial's crashes were timeouts (stalled, or past its deadline), for its message.
        self._timeouts: dict[str, int] = collections.defaultdict(int)
        # Liveness of running trials, on this process's monotonic clock: never saved, so that a restarted
        # chief counts every running trial's silence, stall and deadline from its own start.
        self._last_seen: dict[str, float] = {}
        self._handed_out_at: dict[str, float] = {}
        self._progress: dict[str, tuple[float | None, float]] = {}  # (progress count, when it last moved)
        self._taken_from: dict[str, set[str]] = collections.defaultdict(set)
        self._tuner_seen: dict[str, float] = {}
        self._crashed_on_load: list[str] = []
        self._defer_saves = False
        # Consecutive failures count from this position of end_order: a resume after the limit starts afresh.
        self._failures_counted_from = 0
        self._failure_limit_message: str | None = None
        # Interrupted trials whose marker file goes when they are handed out again.
        self._interrupted: set[str] = set()

    # ------------------------------------------------------------------------------------------------------
    # KerasTuner internals (keras-tuner < 1.5): the only place that touches them.

    def _hash_of(self, trial_id: str) -> str:
        """The hash of a trial's hyperparameter values."""
        return self._id_to_hash[trial_id]

    def _values_hash(self, values: Mapping[str, Any]) -> str:
        """The hash KerasTuner gives these hyperparameter values."""
        return self._compute_values_hash(values)

    def _was_tried(self, values_hash: str) -> bool:
        """Whether a trial with these values was ever created."""
        return values_hash in self._tried_so_far

    def _untried_random_values(self) -> dict[str, Any] | None:
        """Random values never tried before, or None when KerasTuner finds none."""
        return self._random_values()

    def _retry_ids(self) -> list[str]:
        """The trials waiting in KerasTuner's retry queue, in order."""
        return list(self._retry_queue)

    def _requeue(self, trial_id: str) -> None:
        """Puts a trial in the retry queue: the next `create_trial` hands it out again."""
        self._retry_queue.append(trial_id)

    def _dequeue_retry(self, trial_id: str) -> None:
        """Takes a trial out of the retry queue (every occurrence)."""
        while trial_id in self._retry_queue:
            self._retry_queue.remove(trial_id)

    @property
    def tuner_ids(self) -> set[str]:
        """Workers that asked for trials and were not yet told to stop.

        KerasTuner's chief exits once this is empty and no trial runs; a worker silent for longer than
        `trial_timeout` with no trial is forgotten, so a dead worker does not keep the chief up forever.
        """
        if self.trial_timeout is not None:
            now = time.monotonic()
            busy = set(getattr(self, "ongoing_trials", {}))
            for tuner_id in list(self._tuner_ids):
                seen = self._tuner_seen.get(tuner_id)
                if tuner_id not in busy and seen is not None and now - seen > self.trial_timeout:
                    self._tuner_ids.discard(tuner_id)
        return self._tuner_ids

    @tuner_ids.setter
    def tuner_ids(self, value) -> None:
        self._tuner_ids = set(value)

    # ------------------------------------------------------------------------------------------------------
    # The algorithm's hook

    def _learn_from(self, trial) -> bool:
        """Lets the algorithm learn from an ended trial; returns whether the trial was new to it.

        Called when a trial ends, when a crash verdict ends it, and on reload for every ended trial. An
        algorithm that learns nothing keeps this default.
        """
        del trial
        return False

    # ------------------------------------------------------------------------------------------------------
    # Trials: liveness and late reports

    def create_trial(self, tuner_id: str):
        trial = self._create_trial(tuner_id)
        if trial.status == STOPPED and self._failure_limit_message is not None and not _is_chief():
            # Raised here, outside the oracle's lock (KerasTuner's decorator does not release it on an
            # exception), and only now: the trial that reached the limit was fully ended and saved. Once:
            # calling search() again goes on, with failures counted afresh.
            message, self._failure_limit_message = self._failure_limit_message, None
            raise RuntimeError(message)
        return trial

    @keras_tuner.synchronized
    def _create_trial(self, tuner_id: str):
        now = time.monotonic()
        self._tuner_seen[tuner_id] = now
        held = self.ongoing_trials.get(tuner_id)
        if held is not None and held.trial_id in self._interrupted:
            # search() again in the process that was interrupted (a notebook's next cell): its trial starts
            # afresh, clocks included; the pause was no stall and does not count towards the deadline.
            for clock in (self._last_seen, self._handed_out_at, self._progress):
                clock.pop(held.trial_id, None)
        self._take_back_stuck_trials()
        if self._should_wait(tuner_id):
            # All trials are handed out but some still run elsewhere: with a trial_timeout or trial_deadline,
            # one of them may come back to the queue, so this worker waits (IDLE) instead of stopping.
            self._tuner_ids.add(tuner_id)
            return keras_tuner.engine.trial.Trial(self.get_space(), status=IDLE)
        retried = set(self._retry_ids())
        if self._failure_limit_message is not None and tuner_id not in self.ongoing_trials:
            trial = self._stop_at_failure_limit(tuner_id)
        else:
            trial = super().create_trial(tuner_id)
        if trial.status == STOPPED and self._takes_trials_back() and self.tuner_ids:
            # KerasTuner's chief checks whether to exit a second after the first STOPPED, then every 20 s:
            # only the last worker gets a real STOPPED; the others a "stop" that the chief does not see
            # (MnasTuner workers read it as STOPPED; others just ask again and get STOPPED when last).
            return keras_tuner.engine.trial.Trial(self.get_space(), trial_id=STOP_WORKER, status=IDLE)
        if trial.status == RUNNING and self._handed_out_at.get(trial.trial_id) is None:
            # Handed out now (create_trial answers a worker's repeated request with its running trial: its
            # clocks go on). A restarted chief hands out afresh the trials it found running (KerasTuner's
            # reload queues them), so neither the time before the restart nor the restart counts.
            self._last_seen[trial.trial_id] = now
            self._handed_out_at[trial.trial_id] = now
            self._progress[trial.trial_id] = (None, now)
        if trial.status == RUNNING:
            if trial.trial_id in retried:
                # KerasTuner does not rewrite trial.json for a retry: on reload it must read RUNNING, or a
                # crash during the retry would look like the earlier INVALID end.
                self._save_trial(trial)
            if trial.trial_id in self._interrupted:
                # Its interruption is over: should it die during this run, that is a crash.
                self._clear_interruption(trial.trial_id)
        return trial

    def _stop_at_failure_limit(self, tuner_id: str):
        """The answer to a trial request once `max_consecutive_failed_trials` is reached: the search is over.

        In a single process, `create_trial` then raises. A distributed chief answers STOPPED to every worker
        instead: an exception would reach the worker as an opaque gRPC error.
        """
        self._tuner_ids.discard(tuner_id)
        return keras_tuner.engine.trial.Trial(self.get_space(), status=STOPPED)

    def _check_consecutive_failures(self) -> None:
        # KerasTuner raises at the limit from inside end_trial, before the trial's end and the oracle are
        # saved: the failed trial would stay RUNNING on disk and count as a crash on every resume. Here the
        # limit is only noted; end_trial finishes and saves, and the next create_trial stops the search.
        limit = self.max_consecutive_failed_trials
        if not limit or limit < 1:
            return
        streak: list[str] = []  # the failed trials that ended last, in a row
        for trial_id in self.end_order[self._failures_counted_from :]:
            if self.trials[trial_id].status == FAILED:
                streak.append(trial_id)
            else:
                streak.clear()
        if len(streak) < limit:
            return
        # A resumed search (with a higher limit, or its cause fixed) counts failures afresh from here.
        self._failures_counted_from = len(self.end_order)
        last = self.trials[streak[-1]].message or ""
        self._failure_limit_message = (
            f"Number of consecutive failures exceeded the limit of {limit}: trials {', '.join(streak)} "
            "failed. The search stopped with every trial saved; run it again with overwrite=False to go on "
            "(failures are counted from zero again).\n" + last
        )
        if _is_chief():
            print(self._failure_limit_message)  # the chief raises nothing: its workers are told to stop

    def _takes_trials_back(self) -> bool:
        """Whether a running trial may be taken from its worker and handed out again."""
        return self.trial_timeout is not None or self.trial_deadline is not None

    def _should_wait(self, tuner_id: str) -> bool:
        return (
            self._takes_trials_back()
            and tuner_id not in self.ongoing_trials
            and not self._retry_ids()
            and bool(self.max_trials)
            and len(self.trials) >= self.max_trials
            and bool(self.ongoing_trials)
        )

    @keras_tuner.synchronized
    def update_trial(self, trial_id: str, metrics: Mapping[str, float], step: int = 0):
        metrics = dict(metrics)
        reporter, progress = _pop_worker_stamp(metrics)
        trial = self.trials[trial_id]
        if self._is_late(trial_id, reporter):
            # Not this worker's trial any more: its report does not count, and the answer tells it so.
            return keras_tuner.engine.trial.Trial(self.get_space(), trial_id=trial_id, status=STOPPED)
        now = time.monotonic()
        self._last_seen[trial_id] = now
        owner = self._owner_of(trial_id)
        if owner is not None:
            self._tuner_seen[owner] = now
        last_progress = self._progress.get(trial_id, (None, now))[0]
        if metrics or (progress is not None and progress != last_progress):
            # Only the work moves this: a heartbeat repeating the same count while its trial hangs does not.
            self._progress[trial_id] = (progress, now)
        if not metrics or self._has_ended(trial_id):
            # No metrics: a worker's heartbeat (KerasTuner itself never reports an empty dict). An ended
            # trial keeps the result it ended with, whatever a late worker reports.
            self._take_back_stuck_trials()  # a lone hung worker's own heartbeats are then all the chief hears
            return trial
        return super().update_trial(trial_id, metrics, step=step)

    def _owner_of(self, trial_id: str) -> str | None:
        """The worker running a trial now, or None."""
        for tuner_id, ongoing in self.ongoing_trials.items():
            if ongoing.trial_id == trial_id:
                return tuner_id
        return None

    def _is_late(self, trial_id: str, reporter: str | None) -> bool:
        """Whether a worker's report is about a trial it no longer holds: it must not count.

        Another worker runs the trial now, or the trial was taken from this one and waits to run again.
        (A report that names no worker, from a client that does not stamp its reports, always counts.)
        """
        if reporter is None:
            return False
        owner = self._owner_of(trial_id)
        if owner is not None:
            return owner != reporter
        return reporter in self._taken_from.get(trial_id, ())

    def _has_ended(self, trial_id: str) -> bool:
        trial = self.trials.get(trial_id)
        return trial is not None and trial_id in self.end_order and trial.status in (COMPLETED, FAILED)

    def _take_back_stuck_trials(self) -> None:
        """Takes running trials from workers that are gone or stuck, and hands them out again.

        Judged on this process's clock, from the worker's reports: silent for `trial_timeout` (the worker
        died: a crash), no progress for `trial_timeout` while heartbeats go on (the work hangs: a timeout),
        or running for over `trial_deadline` plus `DEADLINE_GRACE_SECONDS` (a timeout). Crashes and timeouts
        count alike towards `max_crashes_per_trial`: a candidate that keeps hanging or killing its worker is
        recorded as failed, with the reason. A worker that recorded an interruption of its trial
        (`record_interruption`) did not crash. Reports the trial's first worker sends later are ignored.
        """
        if not self._takes_trials_back():
            return
        now = time.monotonic()
        changed = False
        for tuner_id, trial in list(self.ongoing_trials.items()):
            trial_id = trial.trial_id
            reason = self._stuck_reason(trial_id, tuner_id, now)
            if reason is None:
                continue
            silent, cause = reason
            print(f"{type(self).__name__}: {cause}; it will run again on another worker.")
            self.ongoing_trials.pop(tuner_id)
            self._tuner_ids.discard(tuner_id)  # presumed dead or stuck; it is added back if it asks again
            self._taken_from[trial_id].add(tuner_id)
            for clock in (self._last_seen, self._handed_out_at, self._progress):
                clock.pop(trial_id, None)
            if silent and self._was_interrupted(trial_id):
                # Its worker was stopped on purpose (Ctrl-C) and said so before exiting: no crash.
                self._interrupted.add(trial_id)
            else:
                self._crashes[trial_id] += 1
                if not silent:
                    self._timeouts[trial_id] += 1
            if self._crashes.get(trial_id, 0) >= self.max_crashes_per_trial:
                self._fail_crashing_trial(trial_id, cause=cause)
            else:
                self._reset_metrics(trial)
                self._requeue(trial_id)
            changed = True
        if changed:
            self.save()

    def _stuck_reason(self, trial_id: str, tuner_id: str, now: float) -> tuple[bool, str] | None:
        """`(silent, cause)` when a running trial must be taken from its worker, else None."""
        # A trial not yet on this process's clocks starts them now.
        seen = self._last_seen.setdefault(trial_id, now)
        started = self._handed_out_at.setdefault(trial_id, now)
        moved = self._progress.setdefault(trial_id, (None, now))[1]
        timeout, deadline = self.trial_timeout, self.trial_deadline
        if timeout is not None and now - seen > timeout:
            return True, (
                f"no news of trial {trial_id} from {tuner_id} for {now - seen:.0f} s (trial_timeout "
                f"{timeout:g} s): its worker went silent"
            )
        if timeout is not None and now - moved > timeout:
            what = f"made no progress for {now - moved:.0f} s (trial_timeout {timeout:g} s)"
        elif deadline is not None and now - started > deadline + DEADLINE_GRACE_SECONDS:
            what = f"did not finish within the {deadline:g} s trial_deadline"
        else:
            return None
        work = _PHASE_WORK.get(self.trial_phase(trial_id) or "", "its work")
        return False, f"trial {trial_id} on {tuner_id} timed out: {work} {what}"

    @keras_tuner.synchronized
    def end_trial(self, trial) -> None:
        trial_id = trial.trial_id
        reporter = _pop_worker_stamp(trial.metrics)[0]
        if self._has_ended(trial_id):
            # A late report for a trial already ended elsewhere (e.g. a worker presumed dead came back):
            # every trial is accounted for exactly once.
            return
        if self._is_late(trial_id, reporter):
            # Taken from this worker (silent, stuck or past its deadline): the trial runs, or waits to run,
            # elsewhere, and counts once, from there. A result that missed the deadline is no result.
            print(f"{type(self).__name__}: ignoring the late end of trial {trial_id} from {reporter}.")
            return
        owner = self._owner_of(trial_id)
        if owner is not None:
            self._tuner_seen[owner] = time.monotonic()
        # Handed out again after a timeout, but its first worker (one that does not stamp its reports)
        # reported after all: do not run it twice.
        self._dequeue_retry(trial_id)
        # One oracle.json write per end, after the algorithm has learnt: KerasTuner's own save in between
        # would only add an on-disk state (ended, not yet learnt from) for reload to reconcile.
        self._defer_saves = True
        try:
            super().end_trial(trial)
        finally:
            self._defer_saves = False
        for clock in (self._last_seen, self._handed_out_at, self._progress):
            clock.pop(trial_id, None)
        self._learn_from(self.trials[trial_id])
        self.save()

    # ------------------------------------------------------------------------------------------------------
    # State

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state[STATE_SECTION] = {
            "crashes": dict(self._crashes),
            "timeouts": dict(self._timeouts),
            "search_config": self.search_config,
            "failures_counted_from": self._failures_counted_from,
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        section = state.get(STATE_SECTION)
        if section is None:
            raise ValueError(
                f"This project was not written by {type(self).__name__} (its oracle.json has no "
                f"{STATE_SECTION!r} section). Use another project_name, or overwrite=True to start a new "
                "search."
            )
        self._check_search_config(section.get("search_config", {}))
        super().set_state(state)
        self._crashes = collections.defaultdict(int, section["crashes"])
        # Absent from projects saved before trials could time out: none did.
        self._timeouts = collections.defaultdict(int, section.get("timeouts", {}))
        # Absent from projects saved before the failure limit could be resumed: count from the start.
        self._failures_counted_from = int(section.get("failures_counted_from", 0))
        self._crashed_on_load = list(state["ongoing_trials"].values())

    def _check_search_config(self, saved: Mapping[str, Any]) -> None:
        if self.allow_config_change or not saved or not self.search_config:
            return
        differences = _differences(saved, self.search_config)
        if differences:
            raise ValueError(
                "Refusing to resume a search with different settings than the saved one:\n  "
                + "\n  ".join(differences)
                + "\nUse the saved settings, a new project_name, overwrite=True, or allow_config_change=True "
                "to resume anyway."
            )

    def save(self) -> None:
        if not self._defer_saves:
            super().save()

    def reload(self) -> None:
        """Reloads the search and reconciles what a kill at any instant may have left half-recorded.

        oracle.json is written after each trial.json, so it may lag one step behind: a trial created but
        never handed out (its trial.json written, oracle.json not), or a trial ended (trial.json says so)
        that oracle.json still lists as running. Only a trial that was really running counts as a crash, and
        not when its process recorded an interruption (Ctrl-C) before exiting: that trial runs again as if
        it had never started.
        """
        super().reload()
        self._remove_stale_temp_files()
        changed = False
        for trial_id in [t for t in self.trials if t not in self.start_order]:
            # Created, then killed before oracle.json recorded it: the algorithm's state saved predates its
            # sampling, so the same proposal is drawn again under the same id.
            del self.trials[trial_id]
            with contextlib.suppress(OSError):
                os.remove(self._project_path(f"trial_{trial_id}", "trial.json"))
        queued = dict.fromkeys(self._crashed_on_load + self._retry_ids())
        for trial_id in [t for t in queued if t in self.trials]:
            trial = self.trials[trial_id]
            if trial_id in self.end_order or trial.status in (COMPLETED, FAILED):
                # It ended; the process died before oracle.json said so. Not a crash, and never rerun.
                self._dequeue_retry(trial_id)
                if trial_id not in self.end_order:
                    self.end_order.append(trial_id)
                self._clear_interruption(trial_id)
                changed = True
            elif trial_id in self._crashed_on_load and self._was_interrupted(trial_id):
                # Stopped on purpose, not by the candidate: it runs again from scratch, uncounted. The marker
                # stays until it is handed out, in case this process dies before that.
                self._interrupted.add(trial_id)
                self._reset_metrics(trial)
                changed = True
            elif trial_id in self._crashed_on_load and trial.status != INVALID and not _is_chief():
                # INVALID: it ended with an error and waits for KerasTuner's retry; not a crash either. Nor is
                # a restart of a distributed chief: the trials ran on workers.
                self._crashes[trial_id] += 1
                if self._crashes[trial_id] >= self.max_crashes_per_trial:
                    self._fail_crashing_trial(trial_id)
                else:
                    self._reset_metrics(trial)  # the rerun's metrics must not average with the crashed run's
                changed = True
        self._crashed_on_load = []
        # A trial may have ended after the algorithm's state was last saved: learn from it now, in end order.
        for trial_id in list(self.end_order):
            changed = self._learn_from(self.trials[trial_id]) or changed
        if changed:
            self.save()

    def _remove_stale_temp_files(self) -> None:
        """Removes the temporary files that kills mid-write left in the project and its trial folders."""
        # In a single process nothing else writes here while it reloads. A distributed chief may restart
        # while workers write their trials' files: it leaves the files young enough to be in use.
        min_age = LIVE_WRITE_SECONDS if _is_chief() else 0.0
        project = self._project_path()
        trial_dirs = [
            os.path.join(project, name)
            for name in sorted(os.listdir(project))
            if name.startswith("trial_") and os.path.isdir(os.path.join(project, name))
        ]
        for directory in [project, *trial_dirs]:
            remove_temp_files(directory, min_age_seconds=min_age)

    @staticmethod
    def _reset_metrics(trial) -> None:
        trial.metrics = type(trial.metrics)()
        trial.score = None
        trial.best_step = 0

    def _fail_crashing_trial(self, trial_id: str, cause: str = "the search process died") -> None:
        trial = self.trials[trial_id]
        phase = self.trial_phase(trial_id)
        count, timeouts = self._crashes[trial_id], self._timeouts.get(trial_id, 0)
        what = "timed out" if timeouts == count else "crashed or timed out" if timeouts else "crashed"
        trial.status = FAILED
        trial.message = (
            f"Trial {trial_id} {what} {count} times (last: {cause}"
            + (f" while {phase}" if phase and not timeouts else "")
            + f"); max_crashes_per_trial={self.max_crashes_per_trial}, so it is recorded as failed and not "
            "run again."
        )
        self._dequeue_retry(trial_id)
        if trial_id not in self.end_order:
            self.end_order.append(trial_id)
        self._save_trial(trial)
        self._learn_from(trial)
        print(trial.message)

    # ------------------------------------------------------------------------------------------------------
    # Interruptions: a trial stopped on purpose is no crash

    def record_interruption(self, trial_id: str) -> None:
        """Records that a running trial was interrupted on purpose (Ctrl-C): it does not count as a crash.

        Call it in the process that ran the trial, as the interruption unwinds: it writes a marker in the
        trial's directory, which the next process reads on reload (or a distributed chief when the worker
        goes silent). The trial then runs again as if it had never started, and its crash count is left as
        it was. A process that dies without calling it (an abort, the OOM killer, a SIGKILL) crashed.

        Args:
            trial_id: The trial that was running.

        Example:

        ```python
        try:
            run(trial)
        except KeyboardInterrupt:
            oracle.record_interruption(trial.trial_id)
            raise
        ```
        """
        atomic_write_json(
            self._project_path(f"trial_{trial_id}", INTERRUPTED_FILE),
            {"phase": self.trial_phase(trial_id), "time": time.time()},
        )
        # This process may run the search again (a notebook's next cell): the trial starts afresh then too.
        self._interrupted.add(trial_id)
        trial = self.trials.get(trial_id)
        if trial is not None and not self._has_ended(trial_id):
            self._reset_metrics(trial)

    def _was_interrupted(self, trial_id: str) -> bool:
        return os.path.exists(self._project_path(f"trial_{trial_id}", INTERRUPTED_FILE))

    def _clear_interruption(self, trial_id: str) -> None:
        self._interrupted.discard(trial_id)
        with contextlib.suppress(OSError):
            os.remove(self._project_path(f"trial_{trial_id}", INTERRUPTED_FILE))

    # ------------------------------------------------------------------------------------------------------
    # Progress of a trial, for crash reports

    def set_trial_phase(self, trial_id: str, phase: str) -> None:
        """Records what a trial is doing (`"building"`, `"measuring latency"`, `"training"`)."""
        atomic_write_json(
            self._project_path(f"trial_{trial_id}", PHASE_FILE), {"phase": phase, "time": time.time()}
        )

    def trial_phase(self, trial_id: str) -> str | None:
        """What a trial was last recorded doing, or None."""
        try:
            return read_json(self._project_path(f"trial_{trial_id}", PHASE_FILE))["phase"]
        except (OSError, ValueError, KeyError):
            return None


def worker_stamp(tuner_id: str, progress: float) -> dict[str, float]:
    """The reserved metric a distributed worker adds to its reports: who sends them, how far its work is."""
    return {WORKER_STAMP + tuner_id: float(progress)}


def _pop_worker_stamp(metrics: Any) -> tuple[str | None, float | None]:
    """Removes a worker's stamp from reported metrics (a dict or a MetricsTracker); `(tuner id, progress)`."""
    store = metrics if isinstance(metrics, Mapping) else metrics.metrics  # a trial's MetricsTracker
    names = [name for name in store if isinstance(name, str) and name.startswith(WORKER_STAMP)]
    if not names:
        return None, None
    value = store.pop(names[0])
    for name in names[1:]:
        store.pop(name)
    if hasattr(value, "get_last_value"):  # a MetricsTracker's entry: the metric's history
        value = value.get_last_value()
    return names[0][len(WORKER_STAMP) :], None if value is None else float(value)


def _is_chief() -> bool:
    """Whether this process is the chief of KerasTuner's distributed tuning (read as KerasTuner does)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" in os.environ.get("KERASTUNER_TUNER_ID", "")


def _differences(saved: Any, current: Any, path: str = "") -> list[str]:
    """Lists the leaves where two JSON-like configs differ, as `path: saved X, now Y`."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        lines = []
        for key in sorted(set(saved) | set(current), key=str):
            lines += _differences(saved.get(key), current.get(key), f"{path}.{key}" if path else str(key))
        return lines
    return [] if saved == current else [f"{path}: saved {saved!r}, now {current!r}"]
