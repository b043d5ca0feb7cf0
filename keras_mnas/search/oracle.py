"""MnasOracle: a KerasTuner Oracle driven by MnasNet's reinforcement-learning controller.

Each trial's hyperparameters are one sequence of tokens sampled from the LSTM policy (one token per
hyperparameter, in the order the space declares them). When the trial completes, its score (the reward) and
the log-probabilities recorded *at sampling time* go back to the controller, which runs a PPO update every
minibatch. Trials may finish in any order and on any worker.

Bookkeeping that makes a search of days safe to kill at any instant:

- the controller's whole state (weights, optimizer, baseline, random state, pending minibatch) is saved in
  `oracle.json` with the list of trials it has learnt from, written atomically with every trial file;
- a completed trial whose reward the controller had not yet seen when the process died is observed on reload,
  and one it had seen is never observed again;
- a trial that was running when the process died runs again, unless it has now crashed the process
  `max_crashes_per_trial` times: then it is recorded as failed with the reason;
- an architecture already evaluated is not trained again: the controller learns from the known reward and
  samples anew.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import glob
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import keras_tuner

from keras_mnas.search.controller import Controller
from keras_mnas.utils.io import atomic_write_json, read_json

RUNNING = "RUNNING"
IDLE = "IDLE"
INVALID = "INVALID"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
STOPPED = "STOPPED"

PHASE_FILE = "mnas_phase.json"
KNOWN_DIRECTIONS = {"reward": "max", "latency_ms": "min", "params": "min", "macs": "min"}
#: Trial id of the IDLE answer that tells a distributed worker to stop without ending the chief's search.
STOP_WORKER = "mnas-stop-worker"


def hyperparameter_options(hp) -> list:
    """The discrete options of one KerasTuner hyperparameter, in token order.

    `Choice`, `Boolean`, `Fixed`, `Int` and `Float` with a `step` are discrete; a `Float` without a step is
    not, and raises a `ValueError` naming it.
    """
    kind = type(hp).__name__
    if kind == "Choice":
        return list(hp.values)
    if kind == "Boolean":
        return [False, True]
    if kind == "Fixed":
        return [hp.value]
    if kind in ("Int", "Float"):
        if hp.step is None:
            raise ValueError(
                f"MnasOracle needs discrete hyperparameters: {kind} {hp.name!r} has no `step`. "
                f"Give it a step, e.g. hp.{kind}({hp.name!r}, {hp.min_value}, {hp.max_value}, step=...)."
            )
        return list(hp.values)
    raise ValueError(
        f"MnasOracle supports Choice, Boolean, Fixed, Int and Float hyperparameters; {hp.name!r} is a {kind}."
    )


class MnasOracle(keras_tuner.Oracle):
    """A KerasTuner Oracle that samples trials from MnasNet's LSTM controller and trains it with PPO.

    It works with any KerasTuner space of discrete hyperparameters (`Choice`, `Boolean`, `Fixed`, `Int` and
    `Float` with a step, conditional scopes included), not only MnasNet's.

    Args:
        objective: The objective to maximise; by default the `"reward"` metric `MnasTuner` reports.
        max_trials: Maximum number of trials (distinct evaluations).
        controller: Controller settings: `None` for the defaults, a preset name (e.g. `"nasnet"`, the paper's
            settings), or a dict of `Controller` keyword arguments (`units`, `learning_rate`, ...), optionally
            with a `"preset"` key.
        seed: Random seed of the controller and of KerasTuner's own sampling.
        max_resamples: How many already-evaluated architectures a trial may re-propose (each teaches the
            controller from the known reward) before a never-tried one is drawn at random.
        max_crashes_per_trial: How many times a trial may crash the whole search process before it is recorded
            as failed instead of being run again on restart. Any death of the process while the trial runs
            counts (an abort, the OOM killer, a SIGKILL), and so does, in distributed tuning, its worker
            going silent for `trial_timeout`.
        trial_timeout: Seconds without news from a worker after which its running trial is handed out again
            (distributed tuning; `MnasTuner` workers send heartbeats while a trial runs). With it, workers
            wait for the last running trials instead of stopping, in case one comes back. `None` disables it.
        hyperparameters: Optional `keras_tuner.HyperParameters` to start from, as in `keras_tuner.Oracle`.
        allow_new_entries: As in `keras_tuner.Oracle`.
        tune_new_entries: As in `keras_tuner.Oracle`.
        max_retries_per_trial: As in `keras_tuner.Oracle`.
        max_consecutive_failed_trials: As in `keras_tuner.Oracle`.

    Example:

    ```python
    oracle = MnasOracle(max_trials=50, controller={"learning_rate": 0.003}, seed=1)
    tuner = keras_tuner.RandomSearch  # any Tuner accepts an oracle
    ```
    """

    def __init__(
        self,
        objective: Any = None,
        max_trials: int = 100,
        *,
        controller: str | Mapping[str, Any] | None = None,
        seed: int | None = None,
        max_resamples: int = 100,
        max_crashes_per_trial: int = 2,
        trial_timeout: float | None = None,
        hyperparameters: keras_tuner.HyperParameters | None = None,
        allow_new_entries: bool = True,
        tune_new_entries: bool = True,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
    ):
        if objective is None:
            objective = "reward"
        if isinstance(objective, str) and objective in KNOWN_DIRECTIONS:
            # The metrics MnasTuner reports: KerasTuner cannot infer their direction from the name.
            objective = keras_tuner.Objective(objective, direction=KNOWN_DIRECTIONS[objective])
        if isinstance(objective, (list, tuple)):
            raise ValueError(
                "MnasOracle needs a single objective (the controller learns from one reward); "
                f"received {len(objective)} objectives: {objective!r}."
            )
        for name, value, minimum in (
            ("max_trials", max_trials, 1),
            ("max_resamples", max_resamples, 0),
            ("max_crashes_per_trial", max_crashes_per_trial, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}; received {value!r}.")
        if trial_timeout is not None and (
            isinstance(trial_timeout, bool)
            or not isinstance(trial_timeout, (int, float))
            or not trial_timeout > 0
        ):
            raise ValueError(
                f"trial_timeout must be None or a positive number of seconds; received {trial_timeout!r}."
            )
        if controller is not None and not isinstance(controller, (str, Mapping)):
            raise ValueError(
                "controller must be None, a preset name or a dict of Controller arguments; "
                f"received {type(controller).__name__}."
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be None or an integer; received {seed!r}.")
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries,
            tune_new_entries=tune_new_entries,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        if seed == 0:
            # KerasTuner reads a seed of 0 as "no seed" and draws a random one: seed=0 would not reproduce.
            self.seed = self._seed_state = 0
        direction = getattr(self.objective, "direction", None)
        if direction not in ("max", "min"):
            raise ValueError(
                "MnasOracle needs a single objective with direction 'max' or 'min'; received objective "
                f"{getattr(self.objective, 'name', objective)!r} with direction {direction!r}."
            )
        self.controller_options = (
            copy.deepcopy(dict(controller)) if isinstance(controller, Mapping) else controller
        )
        self.max_resamples = max_resamples
        self.max_crashes_per_trial = max_crashes_per_trial
        self.trial_timeout = trial_timeout
        #: Settings the saved search must match on resume (set by MnasTuner: space, reward, latency source).
        self.search_config: dict[str, Any] = {}
        self.allow_config_change = False
        self.controller: Controller | None = None
        self._layout: list[tuple[str, int]] = []
        self._samples: dict[str, dict[str, Any]] = {}
        self._observed: list[str] = []
        self._pending_duplicates: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self._crashes: dict[str, int] = collections.defaultdict(int)
        self._reused = 0
        self._random_fallbacks = 0
        self._updates: list[dict[str, Any]] = []
        self._last_seen: dict[str, float] = {}
        self._tuner_seen: dict[str, float] = {}
        self._crashed_on_load: list[str] = []
        self._defer_saves = False

    # ------------------------------------------------------------------------------------------------------
    # Tokens <-> hyperparameter values

    def _current_layout(self) -> list[tuple[str, list]]:
        return [(hp.name, hyperparameter_options(hp)) for hp in self.hyperparameters.space]

    def _values_from_tokens(self, tokens) -> dict[str, Any]:
        # Mirrors KerasTuner's own sampling: a conditional hyperparameter gets a value only when active.
        hps = keras_tuner.HyperParameters()
        for hp, token in zip(self.hyperparameters.space, tokens, strict=True):
            hps.merge([hp])
            if hps.is_active(hp):
                hps.values[hp.name] = hyperparameter_options(hp)[token]
        return hps.values

    def _tokens_from_values(self, values: Mapping[str, Any]) -> list[int]:
        tokens = []
        for hp in self.hyperparameters.space:
            options = hyperparameter_options(hp)
            value = values.get(hp.name, hp.default)
            tokens.append(options.index(value) if value in options else 0)
        return tokens

    def _ensure_controller(self) -> Controller | None:
        layout = self._current_layout()
        if not layout:
            return None
        counts = [(name, len(options)) for name, options in layout]
        if self.controller is not None and counts == self._layout:
            return self.controller
        if self.controller is not None:
            # The space grew (a hypermodel that declares hyperparameters lazily): start a policy for the new
            # layout. MnasHyperModel declares everything up front, so this only concerns generic spaces.
            print(
                f"MnasOracle: the search space changed from {len(self._layout)} to {len(counts)} "
                "hyperparameters; the controller starts afresh for the new space."
            )
        self._layout = counts
        self.controller = self._make_controller([n for _, n in counts])
        return self.controller

    def _make_controller(self, choice_counts: list[int]) -> Controller:
        options = self.controller_options
        if isinstance(options, str):
            return Controller.from_preset(options, choice_counts, seed=self.seed)
        options = dict(options or {})
        preset = options.pop("preset", None)
        options.setdefault("seed", self.seed)
        if preset:
            return Controller.from_preset(preset, choice_counts, **options)
        return Controller(choice_counts, **options)

    # ------------------------------------------------------------------------------------------------------
    # Trials

    def _completed_reward_by_hash(self) -> dict[str, float]:
        rewards = {}
        for trial_id, trial in self.trials.items():
            if trial.status == COMPLETED and trial.score is not None and math.isfinite(trial.score):
                rewards[self._id_to_hash[trial_id]] = trial.score
        return rewards

    def _running_hashes(self) -> set[str]:
        return {self._id_to_hash[t.trial_id] for t in self.ongoing_trials.values()} | {
            self._id_to_hash[trial_id] for trial_id in self._retry_queue
        }

    def _reward_for_controller(self, score: float) -> float:
        # The controller maximises; a "min" objective is negated so lower is better.
        return score if self.objective.direction == "max" else -score

    def _observe(self, tokens, log_probs, score: float) -> None:
        stats = self.controller.observe(tokens, log_probs, self._reward_for_controller(score))
        if stats:
            self._updates.append(
                {
                    "update": len(self._updates) + 1,
                    "observed": self.controller.num_observed,
                    **{k: float(v) for k, v in stats.items() if isinstance(v, (int, float))},
                }
            )

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        controller = self._ensure_controller()
        if controller is None:
            # Nothing declared yet: the first trial runs the defaults and reveals the space, as in KerasTuner.
            return {"status": RUNNING, "values": None}
        known = self._completed_reward_by_hash()
        running = self._running_hashes()
        for _ in range(self.max_resamples + 1):
            tokens, log_probs = controller.sample()
            values = self._values_from_tokens(tokens)
            values_hash = self._compute_values_hash(values)
            if values_hash in known:
                self._reused += 1
                self._observe(tokens, log_probs, known[values_hash])
                continue
            if values_hash in running:
                # Teach the controller with this sample when the running twin completes.
                self._pending_duplicates[values_hash].append({"tokens": tokens, "log_probs": log_probs})
                self._reused += 1
                continue
            if values_hash in self._tried_so_far:
                continue  # evaluated and failed: no reward to learn from, never retrained
            self._samples[trial_id] = {"tokens": tokens, "log_probs": log_probs}
            return {"status": RUNNING, "values": values}
        # The policy keeps proposing known architectures: explore with a never-tried random one.
        values = self._random_values()
        if values is None:
            return {"status": STOPPED, "values": None}
        tokens = self._tokens_from_values(values)
        self._random_fallbacks += 1
        self._samples[trial_id] = {"tokens": tokens, "log_probs": controller.log_probs(tokens)}
        return {"status": RUNNING, "values": values}

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

    @keras_tuner.synchronized
    def create_trial(self, tuner_id: str):
        now = time.monotonic()
        self._tuner_seen[tuner_id] = now
        self._requeue_silent_trials()
        if self._should_wait(tuner_id):
            # All trials are handed out but some still run elsewhere: with a trial_timeout, one of them may
            # come back to the queue, so this worker waits (IDLE) instead of stopping (KerasTuner stops it).
            self._tuner_ids.add(tuner_id)
            return keras_tuner.engine.trial.Trial(self.get_space(), status=IDLE)
        retried = set(self._retry_queue)
        trial = super().create_trial(tuner_id)
        if trial.status == STOPPED and self.trial_timeout is not None and self.tuner_ids:
            # KerasTuner's chief checks whether to exit a second after the first STOPPED, then every 20 s:
            # only the last worker gets a real STOPPED; the others a "stop" that the chief does not see
            # (MnasTuner workers read it as STOPPED; others just ask again and get STOPPED when last).
            return keras_tuner.engine.trial.Trial(self.get_space(), trial_id=STOP_WORKER, status=IDLE)
        if trial.status == RUNNING:
            self._last_seen[trial.trial_id] = now
            if trial.trial_id in retried:
                # KerasTuner does not rewrite trial.json for a retry: on reload it must read RUNNING, or a
                # crash during the retry would look like the earlier INVALID end.
                self._save_trial(trial)
        return trial

    def _should_wait(self, tuner_id: str) -> bool:
        return (
            self.trial_timeout is not None
            and tuner_id not in self.ongoing_trials
            and not self._retry_queue
            and bool(self.max_trials)
            and len(self.trials) >= self.max_trials
            and bool(self.ongoing_trials)
        )

    @keras_tuner.synchronized
    def update_trial(self, trial_id: str, metrics: Mapping[str, float], step: int = 0):
        self._last_seen[trial_id] = time.monotonic()
        for tuner_id, ongoing in self.ongoing_trials.items():
            if ongoing.trial_id == trial_id:
                self._tuner_seen[tuner_id] = self._last_seen[trial_id]
        trial = self.trials[trial_id]
        if not metrics or self._has_ended(trial_id):
            # No metrics: a worker's heartbeat (KerasTuner itself never reports an empty dict). An ended
            # trial keeps the result it ended with, whatever a late worker reports.
            return trial
        return super().update_trial(trial_id, metrics, step=step)

    def _has_ended(self, trial_id: str) -> bool:
        trial = self.trials.get(trial_id)
        return trial is not None and trial_id in self.end_order and trial.status in (COMPLETED, FAILED)

    def _requeue_silent_trials(self) -> None:
        """Hands out again the trials of workers that stopped reporting (distributed tuning).

        A worker that went silent counts as a crash of its trial: a candidate that kills every worker it
        runs on is recorded as failed after `max_crashes_per_trial` attempts, as on restarts.
        """
        if self.trial_timeout is None:
            return
        now = time.monotonic()
        changed = False
        for tuner_id, trial in list(self.ongoing_trials.items()):
            last = self._last_seen.get(trial.trial_id, now)
            if now - last <= self.trial_timeout:
                continue
            trial_id = trial.trial_id
            print(
                f"MnasOracle: no news of trial {trial_id} from {tuner_id} for {now - last:.0f} s "
                f"(trial_timeout {self.trial_timeout:g} s); it will run again on another worker."
            )
            self.ongoing_trials.pop(tuner_id)
            self._tuner_ids.discard(tuner_id)  # presumed dead; it is added back if it asks again
            self._last_seen.pop(trial_id, None)
            self._crashes[trial_id] += 1
            if self._crashes[trial_id] >= self.max_crashes_per_trial:
                self._fail_crashing_trial(
                    trial_id, cause=f"its worker {tuner_id} went silent for over {self.trial_timeout:g} s"
                )
            else:
                self._reset_metrics(trial)
                self._retry_queue.append(trial_id)
            changed = True
        if changed:
            self.save()

    @keras_tuner.synchronized
    def end_trial(self, trial) -> None:
        trial_id = trial.trial_id
        if self._has_ended(trial_id):
            # A late report for a trial already ended elsewhere (e.g. a worker presumed dead came back):
            # every trial is accounted for exactly once.
            return
        for tuner_id, ongoing in self.ongoing_trials.items():
            if ongoing.trial_id == trial_id:
                self._tuner_seen[tuner_id] = time.monotonic()
        while trial_id in self._retry_queue:
            # Handed out again after a timeout, but its first worker reported after all: do not run it twice.
            self._retry_queue.remove(trial_id)
        # One oracle.json write per end, after the controller has learnt: KerasTuner's own save in between
        # would only add an on-disk state (ended, not yet learnt from) for reload to reconcile.
        self._defer_saves = True
        try:
            super().end_trial(trial)
        finally:
            self._defer_saves = False
        self._last_seen.pop(trial_id, None)
        self._learn_from(self.trials[trial_id])
        self.save()

    def _learn_from(self, trial) -> None:
        trial_id = trial.trial_id
        if trial_id in self._observed or trial.status not in (COMPLETED, FAILED):
            return  # still to be retried, or already learnt from
        values_hash = self._id_to_hash[trial_id]
        sample = self._samples.get(trial_id)
        duplicates = self._pending_duplicates.pop(values_hash, [])
        self._observed.append(trial_id)
        if trial.status != COMPLETED or trial.score is None or not math.isfinite(trial.score):
            # Failures never reach the controller as rewards; nor do the proposals that waited on this one.
            self._reused -= len(duplicates)
            return
        if self.controller is None:
            self._ensure_controller()
        if self.controller is None:
            return
        if sample is None or len(sample["tokens"]) != len(self._layout):
            # A trial from before the space was known (the discovery trial): scored under the current policy.
            tokens = self._tokens_from_values(trial.hyperparameters.values)
            sample = {"tokens": tokens, "log_probs": self.controller.log_probs(tokens)}
        for item in [sample, *duplicates]:
            self._observe(item["tokens"], item["log_probs"], trial.score)

    # ------------------------------------------------------------------------------------------------------
    # State

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["mnas"] = {
            "layout": self._layout,
            "controller": self.controller.get_state() if self.controller is not None else None,
            "samples": self._samples,
            "observed": self._observed,
            "pending_duplicates": dict(self._pending_duplicates),
            "crashes": dict(self._crashes),
            "reused": self._reused,
            "random_fallbacks": self._random_fallbacks,
            "updates": self._updates,
            "search_config": self.search_config,
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        mnas = state.get("mnas")
        if mnas is None:
            raise ValueError(
                "This project was not written by MnasOracle (its oracle.json has no 'mnas' section). Use "
                "another project_name, or overwrite=True to start a new search."
            )
        self._check_search_config(mnas.get("search_config", {}))
        super().set_state(state)
        self._layout = [tuple(item) for item in mnas["layout"]]
        self.controller = Controller.from_state(mnas["controller"]) if mnas["controller"] else None
        self._samples = dict(mnas["samples"])
        self._observed = list(mnas["observed"])
        self._pending_duplicates = collections.defaultdict(list, mnas["pending_duplicates"])
        self._crashes = collections.defaultdict(int, mnas["crashes"])
        self._reused = mnas["reused"]
        self._random_fallbacks = mnas["random_fallbacks"]
        self._updates = list(mnas["updates"])
        self._crashed_on_load = list(state["ongoing_trials"].values())

    def _check_search_config(self, saved: Mapping[str, Any]) -> None:
        if self.allow_config_change or not saved or not self.search_config:
            return
        differences = _differences(
            saved, _without_settings_saved_before_they_existed(saved, self.search_config)
        )
        if differences:
            raise ValueError(
                "Refusing to resume a search with different settings than the saved one:\n  "
                + "\n  ".join(differences)
                + "\nUse the saved settings, a new project_name, overwrite=True, or allow_config_change=True "
                "to resume anyway."
            )

    def save(self) -> None:
        if self._defer_saves:
            return
        # KerasTuner truncates then writes: a kill in between leaves an empty oracle.json that never loads.
        atomic_write_json(os.path.join(self._project_dir, "oracle.json"), self.get_state())

    def _save_trial(self, trial) -> None:
        directory = os.path.join(self._project_dir, f"trial_{trial.trial_id}")
        atomic_write_json(os.path.join(directory, "trial.json"), trial.get_state())

    def reload(self) -> None:
        """Reloads the search and reconciles what a kill at any instant may have left half-recorded.

        oracle.json is written after each trial.json, so it may lag one step behind: a trial created but
        never handed out (its trial.json written, oracle.json not), or a trial ended (trial.json says so)
        that oracle.json still lists as running. Only a trial that was really running counts as a crash.
        """
        super().reload()
        self._remove_stale_temp_files()
        changed = False
        for trial_id in [t for t in self.trials if t not in self.start_order]:
            # Created, then killed before oracle.json recorded it: the controller state saved predates its
            # sampling, so the same proposal is drawn again under the same id.
            del self.trials[trial_id]
            with contextlib.suppress(OSError):
                os.remove(os.path.join(self._project_dir, f"trial_{trial_id}", "trial.json"))
        queued = dict.fromkeys(self._crashed_on_load + self._retry_queue)
        for trial_id in [t for t in queued if t in self.trials]:
            trial = self.trials[trial_id]
            if trial_id in self.end_order or trial.status in (COMPLETED, FAILED):
                # It ended; the process died before oracle.json said so. Not a crash, and never rerun.
                while trial_id in self._retry_queue:
                    self._retry_queue.remove(trial_id)
                if trial_id not in self.end_order:
                    self.end_order.append(trial_id)
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
        # A trial may have completed after the last save of the controller: learn from it now, in end order.
        for trial_id in list(self.end_order):
            if trial_id not in self._observed:
                self._learn_from(self.trials[trial_id])
                changed = True
        if changed:
            self.save()

    def _remove_stale_temp_files(self) -> None:
        # Left by a kill during an atomic write; only this process writes these files, and it is reloading.
        patterns = (".oracle.json.*.tmp", os.path.join("trial_*", ".trial.json.*.tmp"))
        for pattern in patterns:
            for path in glob.glob(os.path.join(glob.escape(self._project_dir), pattern)):
                with contextlib.suppress(OSError):
                    os.remove(path)

    @staticmethod
    def _reset_metrics(trial) -> None:
        trial.metrics = type(trial.metrics)()
        trial.score = None
        trial.best_step = 0

    def _fail_crashing_trial(self, trial_id: str, cause: str = "the search process died") -> None:
        trial = self.trials[trial_id]
        phase = self.trial_phase(trial_id)
        trial.status = FAILED
        trial.message = (
            f"Trial {trial_id} crashed {self._crashes[trial_id]} times (last: {cause}"
            + (f" while {phase}" if phase else "")
            + f"); max_crashes_per_trial={self.max_crashes_per_trial}, so it is recorded as failed and not "
            "run again."
        )
        while trial_id in self._retry_queue:
            self._retry_queue.remove(trial_id)
        if trial_id not in self.end_order:
            self.end_order.append(trial_id)
        self._save_trial(trial)
        self._learn_from(trial)
        print(trial.message)

    # ------------------------------------------------------------------------------------------------------
    # Progress of a trial, for crash reports

    def set_trial_phase(self, trial_id: str, phase: str) -> None:
        """Records what a trial is doing (`"building"`, `"measuring latency"`, `"training"`)."""
        path = os.path.join(self._project_dir, f"trial_{trial_id}", PHASE_FILE)
        atomic_write_json(path, {"phase": phase, "time": time.time()})

    def trial_phase(self, trial_id: str) -> str | None:
        path = os.path.join(self._project_dir, f"trial_{trial_id}", PHASE_FILE)
        try:
            return read_json(path)["phase"]
        except (OSError, ValueError, KeyError):
            return None

    # ------------------------------------------------------------------------------------------------------
    # Introspection

    @property
    def controller_updates(self) -> list[dict[str, Any]]:
        """Statistics of every PPO update so far (mean reward, baseline, entropy, policy loss, ...)."""
        return list(self._updates)

    @property
    def reused_proposals(self) -> int:
        """Proposals of already-evaluated architectures, answered from their known result."""
        return self._reused


def _is_chief() -> bool:
    """Whether this process is the chief of KerasTuner's distributed tuning (read as KerasTuner does)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" in os.environ.get("KERASTUNER_TUNER_ID", "")


# Search settings recorded only by later keras-mnas versions, as paths into the search config.
_SETTINGS_ADDED_LATER = (("build",), ("latency", "min_seconds"))


def _without_settings_saved_before_they_existed(saved: Mapping[str, Any], current: Mapping[str, Any]):
    """`current` without the later-added settings that `saved` lacks: an older project says nothing about
    them, which is not a change to refuse."""
    current = copy.deepcopy(dict(current))
    for path in _SETTINGS_ADDED_LATER:
        saved_parent, current_parent = saved, current
        for key in path[:-1]:
            saved_parent = saved_parent.get(key) if isinstance(saved_parent, Mapping) else None
            current_parent = current_parent.get(key) if isinstance(current_parent, dict) else None
        if (
            isinstance(saved_parent, Mapping)
            and isinstance(current_parent, dict)
            and path[-1] not in saved_parent
        ):
            current_parent.pop(path[-1], None)
    return current


def _differences(saved: Any, current: Any, path: str = "") -> list[str]:
    """Lists the leaves where two JSON-like configs differ, as `path: saved X, now Y`."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        lines = []
        for key in sorted(set(saved) | set(current), key=str):
            lines += _differences(saved.get(key), current.get(key), f"{path}.{key}" if path else str(key))
        return lines
    return [] if saved == current else [f"{path}: saved {saved!r}, now {current!r}"]
