"""MnasOracle: a KerasTuner Oracle driven by a token policy, by default MnasNet's LSTM controller.

Each trial's hyperparameters are one sequence of tokens sampled from the policy (one token per
hyperparameter, in the order the space declares them). When the trial completes, its score (the reward) and
the log-probabilities recorded *at sampling time* go back to the policy; MnasNet's LSTM controller runs a PPO
update every minibatch. Trials may finish in any order and on any worker.

The policy's whole state is saved in `oracle.json` with the list of trials it has learnt from, under the
policy's registered name, so a resumed search rebuilds it exactly: a completed trial whose reward the policy
had not yet seen when the process died is observed on reload, and one it had seen is never observed again.
An architecture already evaluated is not trained again: the policy learns from the known reward and samples
anew. Crash accounting, atomic saves and distributed liveness come from `DurableOracle`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import keras_tuner

from keras_mnas.search.controller import ControllerConfig
from keras_mnas.search.durable import (
    COMPLETED,
    FAILED,
    IDLE,
    INVALID,
    PHASE_FILE,
    RUNNING,
    STATE_SECTION,
    STOP_WORKER,
    STOPPED,
    DurableOracle,
)
from keras_mnas.search.policy import PolicyFactory, TokenPolicy, get_policy, resolve_policy
from keras_mnas.utils.checks import check_int
from keras_mnas.utils.io import atomic_write_bytes, read_json

__all__ = [
    "COMPLETED",
    "FAILED",
    "IDLE",
    "INVALID",
    "KNOWN_DIRECTIONS",
    "PHASE_FILE",
    "RUNNING",
    "STOPPED",
    "STOP_WORKER",
    "MnasOracle",
    "hyperparameter_options",
]

#: Files of the policy's bulky state (`checkpoint_keys`), named by a digest of their contents.
CHECKPOINT_PREFIX = "mnas_policy_"

KNOWN_DIRECTIONS = {"reward": "max", "latency_ms": "min", "params": "min", "macs": "min"}


def single_objective(objective: Any, oracle_name: str, why: str = "") -> Any:
    """The one objective an oracle optimises, with the direction of MnasTuner's metrics filled in.

    `None` means `"reward"`; a list of objectives is refused, naming `oracle_name` (and `why`, if given).
    """
    if objective is None:
        objective = "reward"
    if isinstance(objective, str) and objective in KNOWN_DIRECTIONS:
        # The metrics MnasTuner reports: KerasTuner cannot infer their direction from the name.
        objective = keras_tuner.Objective(objective, direction=KNOWN_DIRECTIONS[objective])
    if isinstance(objective, (list, tuple)):
        raise ValueError(
            f"{oracle_name} needs a single objective{why}; received {len(objective)} objectives: "
            f"{objective!r}."
        )
    return objective


def check_direction(oracle: keras_tuner.Oracle, given: Any) -> None:
    """Refuses an objective KerasTuner resolved without a direction ('max' or 'min') to optimise."""
    direction = getattr(oracle.objective, "direction", None)
    if direction not in ("max", "min"):
        raise ValueError(
            f"{type(oracle).__name__} needs a single objective with direction 'max' or 'min'; received "
            f"objective {getattr(oracle.objective, 'name', given)!r} with direction {direction!r}."
        )


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


class MnasOracle(DurableOracle):
    """A KerasTuner Oracle that samples trials from a token policy, by default MnasNet's LSTM controller.

    It works with any KerasTuner space of discrete hyperparameters (`Choice`, `Boolean`, `Fixed`, `Int` and
    `Float` with a step, conditional scopes included), not only MnasNet's.

    Args:
        objective: The objective to maximise; by default the `"reward"` metric `MnasTuner` reports.
        max_trials: Maximum number of trials (distinct evaluations).
        controller: The policy: `None` for the LSTM controller with its default settings, a preset name
            (`"nasnet"`, the paper's settings), a `ControllerConfig`, a dict of its settings (optionally with
            a `"preset"` key), or a policy registered with `keras_mnas.search.policy.register_policy` (its
            name, e.g. `"random"`, or its factory). Checked here, not when the search starts.
        seed: Random seed of the policy and of KerasTuner's own sampling.
        max_resamples: How many already-evaluated architectures a trial may re-propose (each teaches the
            policy from the known reward) before a never-tried one is drawn at random. A policy that keeps
            re-proposing what it knows has little left to learn from it; a larger value makes a converged
            policy's trials cost more (each re-proposal is a sample and a share of a policy update).
        max_crashes_per_trial: As in `DurableOracle`: crashes of the search process a trial may cause before
            it is recorded as failed.
        trial_timeout: As in `DurableOracle`: seconds without news, or without progress, from a distributed
            worker's trial before it is taken away and handed out again; `None` disables it.
        trial_deadline: As in `DurableOracle`: seconds of wall time a trial may run on a distributed worker
            before it is taken away as timed out; `None` (default) sets no limit.
        hyperparameters: Optional `keras_tuner.HyperParameters` to start from, as in `keras_tuner.Oracle`.
        allow_new_entries: As in `keras_tuner.Oracle`.
        tune_new_entries: As in `keras_tuner.Oracle`.
        max_retries_per_trial: As in `keras_tuner.Oracle`.
        max_consecutive_failed_trials: As in `keras_tuner.Oracle`.

    Raises:
        ValueError: for a bad argument, bad controller settings included.

    Example:

    ```python
    oracle = MnasOracle(max_trials=50, controller=ControllerConfig(learning_rate=0.003), seed=1)
    tuner = keras_tuner.RandomSearch  # any Tuner accepts an oracle
    ```
    """

    def __init__(
        self,
        objective: Any = None,
        max_trials: int = 100,
        *,
        controller: str | ControllerConfig | Mapping[str, Any] | PolicyFactory | Callable | None = None,
        seed: int | None = None,
        max_resamples: int = 5,
        max_crashes_per_trial: int = 2,
        trial_timeout: float | None = None,
        trial_deadline: float | None = None,
        hyperparameters: keras_tuner.HyperParameters | None = None,
        allow_new_entries: bool = True,
        tune_new_entries: bool = True,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
    ):
        objective = single_objective(objective, "MnasOracle", " (the controller learns from one reward)")
        max_trials = check_int("max_trials", max_trials, minimum=1)
        self.max_resamples = check_int("max_resamples", max_resamples, minimum=0)
        #: Makes the policy once the space is known, and names it in the saved state.
        self.policy_factory = resolve_policy(controller)
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries,
            tune_new_entries=tune_new_entries,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
            max_crashes_per_trial=max_crashes_per_trial,
            trial_timeout=trial_timeout,
            trial_deadline=trial_deadline,
        )
        check_direction(self, objective)
        #: The policy proposing the trials (a `TokenPolicy`; `None` until the space is known).
        self.controller: TokenPolicy | None = None
        self._policy_name = self.policy_factory.name
        self._layout: list[tuple[str, int]] = []
        self._samples: dict[str, dict[str, Any]] = {}
        self._observed: list[str] = []
        self._num_observed = 0
        self._pending_duplicates: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self._reused = 0
        self._random_fallbacks = 0
        self._updates: list[dict[str, Any]] = []
        self._saving = False
        #: Token sequence -> (hyperparameter values, their hash), for the current layout; not saved.
        self._hash_by_tokens: dict[tuple[int, ...], tuple[dict[str, Any], str]] = {}
        # (policy version, file name) of the last checkpoint written, and the file oracle.json last named.
        self._checkpoint: tuple[Any, str] | None = None
        self._checkpoint_on_disk: str | None = None

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

    def _ensure_controller(self) -> TokenPolicy | None:
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
        self.controller = self.policy_factory([n for _, n in counts], self.seed)
        self._hash_by_tokens = {}
        self._policy_name = self.policy_factory.name
        return self.controller

    # ------------------------------------------------------------------------------------------------------
    # Trials

    def _completed_reward_by_hash(self) -> dict[str, float]:
        rewards = {}
        for trial_id, trial in self.trials.items():
            if trial.status == COMPLETED and trial.score is not None and math.isfinite(trial.score):
                rewards[self._hash_of(trial_id)] = trial.score
        return rewards

    def _running_hashes(self) -> set[str]:
        return {self._hash_of(t.trial_id) for t in self.ongoing_trials.values()} | {
            self._hash_of(trial_id) for trial_id in self._retry_ids()
        }

    def _reward_for_controller(self, score: float) -> float:
        # The policy maximises; a "min" objective is negated so lower is better.
        return score if self.objective.direction == "max" else -score

    def _observe(self, tokens, log_probs, score: float) -> None:
        stats = self.controller.observe(tokens, log_probs, self._reward_for_controller(score))
        self._num_observed += 1
        if stats:
            self._updates.append(
                {
                    "update": len(self._updates) + 1,
                    "observed": self._num_observed,
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
            # A converged policy re-proposes the same few architectures: hash each token sequence once.
            key = tuple(tokens)
            if key not in self._hash_by_tokens:
                values = self._values_from_tokens(tokens)
                self._hash_by_tokens[key] = (values, self._values_hash(values))
            values, values_hash = self._hash_by_tokens[key]
            values = dict(values)
            if values_hash in known:
                self._reused += 1
                self._observe(tokens, log_probs, known[values_hash])
                continue
            if values_hash in running:
                # Teach the controller with this sample when the running twin completes.
                self._pending_duplicates[values_hash].append({"tokens": tokens, "log_probs": log_probs})
                self._reused += 1
                continue
            if self._was_tried(values_hash):
                continue  # evaluated and failed: no reward to learn from, never retrained
            self._samples[trial_id] = {"tokens": tokens, "log_probs": log_probs}
            return {"status": RUNNING, "values": values}
        # The policy keeps proposing known architectures: explore with a never-tried random one.
        values = self._untried_random_values()
        if values is None:
            return {"status": STOPPED, "values": None}
        tokens = self._tokens_from_values(values)
        self._random_fallbacks += 1
        self._samples[trial_id] = {"tokens": tokens, "log_probs": controller.log_probs(tokens)}
        return {"status": RUNNING, "values": values}

    def _learn_from(self, trial) -> bool:
        trial_id = trial.trial_id
        if trial_id in self._observed:
            return False
        if trial.status not in (COMPLETED, FAILED):
            return True  # still to be retried
        values_hash = self._hash_of(trial_id)
        # Learnt from once only: its sample is not kept, so oracle.json does not grow with every trial.
        sample = self._samples.pop(trial_id, None)
        duplicates = self._pending_duplicates.pop(values_hash, [])
        self._observed.append(trial_id)
        if trial.status != COMPLETED or trial.score is None or not math.isfinite(trial.score):
            # Failures never reach the controller as rewards; nor do the proposals that waited on this one.
            self._reused -= len(duplicates)
            return True
        if self.controller is None:
            self._ensure_controller()
        if self.controller is None:
            return True
        if sample is None or len(sample["tokens"]) != len(self._layout):
            # A trial from before the space was known (the discovery trial): scored under the current policy.
            tokens = self._tokens_from_values(trial.hyperparameters.values)
            sample = {"tokens": tokens, "log_probs": self.controller.log_probs(tokens)}
        for item in [sample, *duplicates]:
            self._observe(item["tokens"], item["log_probs"], trial.score)
        return True

    # ------------------------------------------------------------------------------------------------------
    # State

    def save(self) -> None:
        # Only a state bound for oracle.json moves the policy's bulky parts to their own file.
        self._saving = True
        try:
            super().save()
        finally:
            self._saving = False
        if self._checkpoint is not None and self._checkpoint[1] != self._checkpoint_on_disk:
            self._remove_old_checkpoints(keep=self._checkpoint[1])

    def _remove_old_checkpoints(self, keep: str | None) -> None:
        # After oracle.json names the new file: a kill before this leaves the old one, removed next time.
        self._checkpoint_on_disk = keep
        with contextlib.suppress(OSError):
            for name in os.listdir(self._project_path()):
                if name.startswith(CHECKPOINT_PREFIX) and name != keep:
                    with contextlib.suppress(OSError):
                        os.remove(self._project_path(name))

    def _policy_state(self) -> dict[str, Any] | None:
        """The policy's state; when saving, its `checkpoint_keys` replaced by the name of their file.

        The weights and optimizer slots of the LSTM controller are most of its state (1.4 MB at 100 units)
        and change only at a PPO update: written with every trial, they made each trial cost tens of
        milliseconds, growing with the file. Their file is written (atomically, before the oracle.json that
        names it) only when they change, so a kill at any instant leaves a consistent pair on disk.
        """
        if self.controller is None:
            return None
        state = self.controller.get_state()
        keys = tuple(getattr(self.controller, "checkpoint_keys", ()))
        if not self._saving or not keys:
            return state
        version = (getattr(self.controller, "checkpoint_version", None), id(self.controller))
        if self._checkpoint is None or self._checkpoint[0] != version:
            data = json.dumps({key: state[key] for key in keys}, sort_keys=True).encode("utf-8")
            name = f"{CHECKPOINT_PREFIX}{hashlib.sha256(data).hexdigest()[:24]}.json"
            if not os.path.exists(self._project_path(name)):
                atomic_write_bytes(self._project_path(name), data)
            self._checkpoint = (version, name)
        small = {key: value for key, value in state.items() if key not in keys}
        small["checkpoint_file"] = self._checkpoint[1]
        return small

    def _load_policy_state(self, saved: dict[str, Any]) -> dict[str, Any]:
        """A saved policy state with its checkpoint file's contents put back."""
        name = saved.get("checkpoint_file")
        if name is None:
            return saved
        path = self._project_path(name)
        try:
            bulky = read_json(path)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"oracle.json names the policy checkpoint {path}, which could not be read ({error}). The "
                "project's files are incomplete: restore the file, or start a new search with overwrite=True."
            ) from error
        state = {key: value for key, value in saved.items() if key != "checkpoint_file"}
        state.update(bulky)
        self._checkpoint_on_disk = name
        return state

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state[STATE_SECTION].update(
            layout=self._layout,
            policy=self._policy_name,
            controller=self._policy_state(),
            samples=self._samples,
            observed=self._observed,
            num_observed=self._num_observed,
            pending_duplicates=dict(self._pending_duplicates),
            reused=self._reused,
            random_fallbacks=self._random_fallbacks,
            updates=self._updates,
        )
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        mnas = state[STATE_SECTION]
        self._layout = [tuple(item) for item in mnas["layout"]]
        self._hash_by_tokens = {}
        # Rebuilt by the name it was saved under, whatever this oracle was constructed with: the saved
        # search's own settings are checked against the current ones through `search_config`.
        self._policy_name = mnas["policy"]
        saved = mnas["controller"]
        self.controller = (
            get_policy(self._policy_name).from_state(self._load_policy_state(saved)) if saved else None
        )
        self._checkpoint = None
        self._samples = dict(mnas["samples"])
        self._observed = list(mnas["observed"])
        self._num_observed = mnas["num_observed"]
        self._pending_duplicates = collections.defaultdict(list, mnas["pending_duplicates"])
        self._reused = mnas["reused"]
        self._random_fallbacks = mnas["random_fallbacks"]
        self._updates = list(mnas["updates"])

    # ------------------------------------------------------------------------------------------------------
    # Introspection

    @property
    def controller_updates(self) -> list[dict[str, Any]]:
        """Statistics of every policy update so far (the controller's mean reward, entropy, ...)."""
        return list(self._updates)

    @property
    def reused_proposals(self) -> int:
        """Proposals of already-evaluated architectures, answered from their known result."""
        return self._reused
