"""Reading a finished (or running) search from its project directory, without the script that ran it.

KerasTuner keeps a search in a project directory: `oracle.json` (the oracle's state; `MnasOracle` adds the
search's settings under `mnas.search_config`: the space's `get_config()`, the hypermodel's build settings,
the reward, the latency source and the quantization) and one `trial_<id>/trial.json` per trial (its
hyperparameter values, metrics, score and status), next to the best epoch's weights,
`trial_<id>/checkpoint.weights.h5`. `SearchProject` reads those files only: it never builds the tuner, so it
neither needs the user's script nor changes anything on disk, and it can read a search that another process
is still running.

Example:

```python
from keras_mnas.search.project import SearchProject

project = SearchProject.open("runs", project="digits")
for record in project.records():
    print(record["trial_id"], record["status"], record["accuracy"], record["latency_ms"])
front = project.pareto_front()
model, trained = project.build_model(front[0]["trial_id"])
```
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

from keras_mnas.architecture import ArchSpec
from keras_mnas.search.results import best_metric_values, pareto_front, trial_record
from keras_mnas.utils.io import read_json

ORACLE_FILE = "oracle.json"
TRIAL_FILE = "trial.json"
#: The best epoch's weights KerasTuner keeps for a trial (Keras 3 file name).
CHECKPOINT_FILE = "checkpoint.weights.h5"
#: The accuracy metric when the search recorded none (MnasTuner's default).
DEFAULT_METRIC = "val_accuracy"

_PARTIAL_LOAD = re.compile(
    r"freshly.initiali[sz]ed|could not be loaded|Skipping loading|Skipping nested", re.I
)


class SearchProjectError(ValueError):
    """The directory is not a readable search project, or it lacks what was asked for."""


@dataclasses.dataclass(frozen=True)
class SavedTrial:
    """One trial as its `trial.json` records it.

    Attributes:
        trial_id: KerasTuner's id, e.g. `"0"` or `"007"`.
        status: `"COMPLETED"`, `"FAILED"`, `"RUNNING"`, `"INVALID"`, `"IDLE"` or `"STOPPED"`.
        score: The objective (MnasTuner: the reward) at the best step, or `None`.
        values: The hyperparameter values.
        metrics: The best value of every metric (by its direction; the mean over executions):
            `keras_mnas.search.results.best_metric_values`.
        message: Why it failed, if it did.
        best_step: The epoch of the best score.
        directory: The trial's directory.
        checkpoint: Path of the best epoch's weights, or `None` when the trial saved none (failed, skipped
            before training, or still running).
    """

    trial_id: str
    status: str
    score: float | None
    values: dict[str, Any]
    metrics: dict[str, float]
    message: str | None
    best_step: int
    directory: str
    checkpoint: str | None


def find_projects(directory: str | os.PathLike) -> list[str]:
    """The search projects in `directory`: itself if it holds `oracle.json`, else its subdirectories that do.

    Example:

    ```python
    find_projects("runs")  # ["runs/digits", "runs/cifar"]
    ```
    """
    directory = os.fspath(directory)
    if os.path.isfile(os.path.join(directory, ORACLE_FILE)):
        return [directory]
    pattern = os.path.join(glob.escape(directory), "*", ORACLE_FILE)
    return sorted(os.path.dirname(path) for path in glob.glob(pattern))


class SearchProject:
    """A search's project directory, read from its JSON files.

    Args:
        path: The project directory (the one holding `oracle.json`).

    Raises:
        SearchProjectError: when `path` holds no readable `oracle.json`.

    Example:

    ```python
    project = SearchProject("runs/digits")
    project.space            # the MnasSearchSpace the search ran over (None for other hypermodels)
    project.trial("3").status
    ```
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.path.abspath(os.fspath(path))
        self.name = os.path.basename(self.path)
        oracle_path = os.path.join(self.path, ORACLE_FILE)
        if not os.path.isfile(oracle_path):
            raise SearchProjectError(
                f"{self.path} is not a search project directory: it has no {ORACLE_FILE} (KerasTuner writes "
                "one per project, in <directory>/<project_name>)."
            )
        try:
            self.oracle_state: dict[str, Any] = read_json(oracle_path)
        except (OSError, ValueError) as error:
            raise SearchProjectError(f"Cannot read {oracle_path}: {error}") from error
        if not isinstance(self.oracle_state, Mapping):
            raise SearchProjectError(
                f"{oracle_path} does not hold a KerasTuner oracle state (a JSON object)."
            )
        mnas = self.oracle_state.get("mnas")
        #: The settings MnasTuner recorded (space, reward, latency, quantization); `{}` for other tuners.
        self.search_config: dict[str, Any] = dict((mnas or {}).get("search_config") or {})
        self.trials: list[SavedTrial] = self._read_trials()

    @classmethod
    def open(cls, directory: str | os.PathLike, project: str | None = None) -> SearchProject:
        """Opens a project given its directory, or KerasTuner's `directory` and a `project_name`.

        Args:
            directory: A project directory, or a directory of projects.
            project: The project's name inside `directory`; needed when it holds several projects.

        Raises:
            SearchProjectError: when there is no such project, or several and no `project` is given.

        Example:

        ```python
        SearchProject.open("runs", project="digits")
        ```
        """
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise SearchProjectError(f"{directory} is not a directory; expected a search project directory.")
        if project is not None:
            candidate = os.path.join(directory, project)
            if os.path.isfile(os.path.join(candidate, ORACLE_FILE)):
                return cls(candidate)
            if os.path.basename(os.path.abspath(directory)) == project and os.path.isfile(
                os.path.join(directory, ORACLE_FILE)
            ):
                return cls(directory)
            found = [os.path.basename(p) for p in find_projects(directory)]
            raise SearchProjectError(
                f"No search project {project!r} in {directory}"
                + (f"; it holds {', '.join(found)}." if found else " (it holds no search project).")
            )
        found = find_projects(directory)
        if not found:
            raise SearchProjectError(
                f"{directory} is not a search directory: neither it nor its subdirectories hold an "
                f"{ORACLE_FILE}. Pass the `directory` given to MnasTuner (with --project NAME), or "
                "<directory>/<project_name>."
            )
        if len(found) > 1:
            names = ", ".join(os.path.basename(p) for p in found)
            raise SearchProjectError(f"{directory} holds several search projects ({names}): choose one.")
        return cls(found[0])

    def _read_trials(self) -> list[SavedTrial]:
        pattern = os.path.join(glob.escape(self.path), "trial_*", TRIAL_FILE)
        trials = []
        for path in glob.glob(pattern):
            try:
                state = read_json(path)
            except (OSError, ValueError) as error:
                raise SearchProjectError(f"Cannot read {path}: {error}") from error
            if not isinstance(state, Mapping) or "trial_id" not in state:
                raise SearchProjectError(f"{path} is not a KerasTuner trial file (no 'trial_id').")
            directory = os.path.dirname(path)
            checkpoint = os.path.join(directory, CHECKPOINT_FILE)
            hyperparameters = state.get("hyperparameters") or {}
            score = state.get("score")
            trials.append(
                SavedTrial(
                    trial_id=str(state["trial_id"]),
                    status=str(state.get("status", "UNKNOWN")),
                    score=float(score) if isinstance(score, (int, float)) else None,
                    values=dict(hyperparameters.get("values") or {}),
                    metrics=best_metric_values(state.get("metrics")),
                    message=state.get("message"),
                    best_step=int(state.get("best_step") or 0),
                    directory=directory,
                    checkpoint=checkpoint if os.path.isfile(checkpoint) else None,
                )
            )
        order = {trial_id: i for i, trial_id in enumerate(self.oracle_state.get("start_order") or [])}
        trials.sort(key=lambda t: (order.get(t.trial_id, len(order)), _id_key(t.trial_id)))
        return trials

    # ----------------------------------------------------------------------------------------------
    # What the search was.

    @property
    def metric(self) -> str:
        """The accuracy metric the reward read (`val_accuracy` unless the search chose another)."""
        reward = self.search_config.get("reward") or {}
        return str(reward.get("metric") or DEFAULT_METRIC)

    @property
    def target_latency_ms(self) -> float | None:
        """The reward's target latency, when recorded."""
        value = (self.search_config.get("reward") or {}).get("target_latency_ms")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def space(self):
        """The `MnasSearchSpace` the search ran over, or `None` when the search did not record one.

        Raises:
            SearchProjectError: when the recorded space cannot be rebuilt.
        """
        config = self.search_config.get("space")
        if not config:
            return None
        from keras_mnas.search.space import MnasSearchSpace

        try:
            return MnasSearchSpace.from_config(config)
        except (TypeError, ValueError, KeyError) as error:
            raise SearchProjectError(
                f"The search space recorded in {os.path.join(self.path, ORACLE_FILE)} cannot be rebuilt by "
                f"this keras-mnas: {error}"
            ) from error

    # ----------------------------------------------------------------------------------------------
    # Trials.

    @property
    def build_settings(self) -> dict[str, Any]:
        """The search's `MnasHyperModel.build_config()`; empty when the hypermodel was another one."""
        return dict(self.search_config.get("build") or {})

    def trial(self, trial_id: str | int) -> SavedTrial:
        """The trial with this id; `"7"`, `7` and `"007"` all name trial `007`.

        Raises:
            SearchProjectError: naming the known ids when there is no such trial.

        Example:

        ```python
        project.trial(3).values
        ```
        """
        wanted = str(trial_id).strip()
        for trial in self.trials:
            if trial.trial_id == wanted:
                return trial
        if wanted.isdigit():
            for trial in self.trials:
                if trial.trial_id.isdigit() and int(trial.trial_id) == int(wanted):
                    return trial
        known = ", ".join(t.trial_id for t in self.trials) or "none"
        raise SearchProjectError(f"No trial {wanted!r} in search project {self.path} (trials: {known}).")

    def best_trial(self) -> SavedTrial:
        """The completed trial of highest reward: the one `MnasTuner`'s `get_best_trials(1)` returns.

        Among equal rewards, the trial that started first.

        Raises:
            SearchProjectError: when the search was not run by `MnasTuner` (its objective, hence what "best"
                means, is not recorded) or no trial has completed with a reward yet.

        Example:

        ```python
        project.best_trial().trial_id
        ```
        """
        if not self.search_config:
            raise SearchProjectError(
                f"Search project {self.path} was not run by MnasTuner: it records no reward, so its best "
                "trial is not known. Name the trial by its id."
            )
        completed = [t for t in self.trials if t.status == "COMPLETED" and t.score is not None]
        if not completed:
            statuses = ", ".join(f"{t.trial_id} {t.status.lower()}" for t in self.trials) or "none"
            raise SearchProjectError(
                f"Search project {self.path} has no completed trial with a reward yet (trials: {statuses})."
            )
        return max(completed, key=lambda t: t.score)  # max keeps the first of equals, as KerasTuner's sort

    def architecture(self, trial: SavedTrial | str | int) -> ArchSpec | None:
        """The architecture a trial's hyperparameters describe, as `MnasHyperModel` decodes them.

        Returns `None` when the search recorded no `MnasSearchSpace` (another hypermodel), or when the values
        do not decode in it.
        """
        if not isinstance(trial, SavedTrial):
            trial = self.trial(trial)
        space = self.space
        if space is None:
            return None
        try:
            return space.architecture(trial.values)
        except ValueError:
            return None

    def records(self) -> list[dict[str, Any]]:
        """One record per trial (every status), in the order the trials started.

        The records are `keras_mnas.search.results.trial_record`s, the same that `MnasTuner.trial_records`
        gives for the completed trials of the search that wrote this directory.

        Example:

        ```python
        [r["trial_id"] for r in SearchProject("runs/digits").records() if r["status"] == "FAILED"]
        ```
        """
        metric = self.metric
        return [
            trial_record(
                trial.trial_id,
                status=trial.status,
                score=trial.score,
                values=trial.values,
                metrics=trial.metrics,
                arch=self.architecture(trial),
                metric=metric,
                message=trial.message,
                checkpoint=trial.checkpoint,
            )
            for trial in self.trials
        ]

    def pareto_front(self) -> list[dict[str, Any]]:
        """The completed trials no other dominates in (higher accuracy, lower latency), fastest first."""
        return pareto_front(r for r in self.records() if r["status"] == "COMPLETED")

    def build_model(
        self,
        trial: SavedTrial | str | int,
        *,
        load_weights: bool = True,
        include_preprocessing: bool | None = None,
        bn_momentum: float | None = None,
    ):
        """Rebuilds a trial's model, with the weights of its best epoch when the search saved them.

        The model is built as `MnasHyperModel` built the candidates, from the recorded space (input shape,
        classes, width multiplier) and the recorded hypermodel settings (`build_settings`); a project that
        records none gets `include_preprocessing=False` and the builder's `bn_momentum=0.9`.
        A wrong `include_preprocessing` changes what the model computes without changing its weights.

        Args:
            trial: The trial or its id.
            load_weights: Whether to load the trial's checkpoint when there is one.
            include_preprocessing: `None` (the default) uses the recorded setting. A value that contradicts
                the recorded one is refused.
            bn_momentum: `None` uses the recorded setting; a value overrides it (it only matters for further
                training).

        Returns:
            `(model, trained)`: `trained` is False when no checkpoint was loaded (the weights are the initial
            random ones).

        Raises:
            SearchProjectError: when the search recorded no `MnasSearchSpace`, the trial's values do not
                decode in it, or its checkpoint does not fit the rebuilt model.

        Example:

        ```python
        model, trained = SearchProject("runs/digits").build_model("3")
        ```
        """
        if not isinstance(trial, SavedTrial):
            trial = self.trial(trial)
        space = self.space
        if space is None:
            raise SearchProjectError(
                f"Search project {self.path} recorded no MnasSearchSpace (it was not run by MnasTuner over a "
                "MnasHyperModel), so its trials' architectures cannot be rebuilt from the files alone."
            )
        try:
            arch = space.architecture(trial.values)
        except ValueError as error:
            raise SearchProjectError(
                f"Trial {trial.trial_id}'s hyperparameters do not describe an architecture of the recorded "
                f"space: {error}"
            ) from error
        recorded = self.build_settings
        if include_preprocessing is None:
            include_preprocessing = recorded.get("include_preprocessing", False)
        elif (
            "include_preprocessing" in recorded and include_preprocessing != recorded["include_preprocessing"]
        ):
            raise SearchProjectError(
                f"The search built its candidates with include_preprocessing="
                f"{recorded['include_preprocessing']}; rebuilding with include_preprocessing="
                f"{include_preprocessing} would change what trial {trial.trial_id}'s model computes. "
                "Leave it unset to use the recorded setting."
            )
        if bn_momentum is None:
            bn_momentum = recorded.get("bn_momentum", 0.9)
        model = space.build(arch, include_preprocessing=include_preprocessing, bn_momentum=bn_momentum)
        if not (load_weights and trial.checkpoint):
            return model, False
        problem = None
        # Keras reports some weights it could not place only as warnings ("... will retain their
        # freshly-initialized weights"): a model partly left at random is not the trial's model.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model.load_weights(trial.checkpoint)
            except (ValueError, OSError, KeyError) as error:
                problem = error
        partial = [str(w.message) for w in caught if _PARTIAL_LOAD.search(str(w.message))]
        if problem is None and partial:
            problem = partial[0]
        if problem is not None:
            raise SearchProjectError(
                f"The checkpoint {trial.checkpoint} does not fit the architecture rebuilt from trial "
                f"{trial.trial_id}'s hyperparameters ({problem}). Was the search run with another "
                "keras-mnas, or with include_preprocessing set differently?"
            ) from (problem if isinstance(problem, BaseException) else None)
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return model, True


def _id_key(trial_id: str) -> tuple[int, Any]:
    return (0, int(trial_id)) if trial_id.isdigit() else (1, trial_id)
