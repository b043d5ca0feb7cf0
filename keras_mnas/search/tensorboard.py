"""TensorBoard logging of a search: one HParams row per trial, and the controller's learning curves.

`SearchLogger` writes, under one TensorBoard log directory:

```
<log_dir>/                 the HParams experiment: every hyperparameter's domain and the declared metrics
<log_dir>/<trial_id>/      one HParams session per trial: its hyperparameter values, its final metrics
<log_dir>/search/          the controller's scalars (`controller/mean_reward`, ...) and the Pareto plot
```

**Layout with a `keras.callbacks.TensorBoard` callback.** KerasTuner logs each trial's training curves to
`<log_dir>/<trial_id>/execution<k>/` (`train/` and `validation/`), and adds an HParams session there whose
group is the trial id; that session carries only per-epoch training scalars, and nothing computed outside
`fit` (latency, reward). `MnasTuner` leaves KerasTuner's session out, so each trial is one session: the one
`SearchLogger` writes to `<log_dir>/<trial_id>/`, beside the training curves. Under another tuner,
`SearchLogger`'s session joins KerasTuner's under the *same session group name* (the trial id): the HParams
dashboard merges the sessions of a group into one row and averages each metric over the sessions that have
it. The experiment written at the top declares the domains and the metrics, so the table,
parallel-coordinates and scatter views compare `val_accuracy` against `latency_ms` across trials.

**Crash safety and idempotency.** Every events file is written complete in a scratch directory, then
renamed into place under a name TensorBoard ignores until the rename, so a reader never sees half a session.
The file name records what it holds (`...mnas-trial.<fingerprint>.v2`, `...mnas-controller.<first>-<last>.v2`,
`...mnas-pareto.<step>.v2`), so the rename is the only commit: logging a trial again with the same content
does nothing, with new content it replaces the old session (a retried trial), and a resumed search writes
only the controller updates and Pareto steps not already on disk. No side file can disagree with the events.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from keras_mnas.utils.checks import check_choice, check_choices, check_int
from keras_mnas.utils.io import atomic_write_bytes

if TYPE_CHECKING:
    import keras_tuner

DEFAULT_METRICS = ("val_accuracy", "latency_ms", "reward", "params", "macs")

#: Display names and descriptions of the metrics MnasTuner reports.
METRIC_INFO = {
    "val_accuracy": ("validation accuracy", "Accuracy on the validation data at the trial's best epoch."),
    "accuracy": ("accuracy", "Training accuracy at the trial's best epoch."),
    "latency_ms": ("latency (ms)", "Median measured inference latency of the candidate, in milliseconds."),
    "reward": ("reward", "MnasNet's reward ACC(m) x [LAT(m) / T]^w, which the controller maximises."),
    "params": ("parameters", "Trainable parameters of the candidate."),
    "macs": ("mult-adds", "Multiply-accumulate operations of one inference."),
}

#: The run holding the controller's scalars and the Pareto plot.
SEARCH_RUN = "search"
PARETO_TAG = "search/pareto"
CONTROLLER_PREFIX = "controller/"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILE = re.compile(
    r"^events\.out\.tfevents\.\d+\.\d+\.mnas-(?P<kind>experiment|trial|controller|pareto)"
    r"\.(?P<key>[0-9A-Za-z_-]+)\.v2$"
)
# KerasTuner's trial statuses -> TensorBoard's session statuses (resolved lazily: api_pb2 is a proto module).
_STATUS = {
    "COMPLETED": "STATUS_SUCCESS",
    "FAILED": "STATUS_FAILURE",
    "INVALID": "STATUS_FAILURE",
    "STOPPED": "STATUS_UNKNOWN",
    "RUNNING": "STATUS_RUNNING",
    "IDLE": "STATUS_RUNNING",
}
# Statuses whose metrics are not logged: whatever a failed trial reported before failing (e.g. the accuracy
# of the epochs before it diverged) would sit in the scatter plots as if it were a result.
_NO_METRICS = ("FAILED", "INVALID")


def _tf():
    # TensorFlow is imported only when something is written: importing keras_mnas.search stays light.
    import tensorflow as tf

    return tf


def tensorboard_dir_from_callbacks(callbacks: Iterable[Any] | None) -> str | None:
    """The `log_dir` of the first `keras.callbacks.TensorBoard` among `callbacks`, or `None`.

    KerasTuner recognises the callback by its class name `TensorBoard` (Keras 3's and tf-keras's alike) and
    logs each trial to `<log_dir>/<trial_id>/execution<k>`; `SearchLogger` on this directory adds the
    trials' final metrics to those rows of the HParams dashboard.

    Example:

    ```python
    callbacks = [keras.callbacks.EarlyStopping(), keras.callbacks.TensorBoard("logs/search")]
    tensorboard_dir_from_callbacks(callbacks)  # "logs/search"
    ```
    """
    if callbacks is None:
        return None
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Iterable):
        raise ValueError(f"callbacks must be a list of Keras callbacks; received {type(callbacks).__name__}.")
    for callback in callbacks:
        # By class name through the MRO, like KerasTuner (which matches the exact class name): Keras 3's and
        # tf-keras's TensorBoard, and subclasses of either.
        if any(cls.__name__ == "TensorBoard" for cls in type(callback).__mro__):
            log_dir = getattr(callback, "log_dir", None)
            if log_dir is None:
                continue
            return os.fspath(log_dir)
    return None


def _fingerprint(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _check_trial_id(trial_id: Any) -> str:
    if (
        not isinstance(trial_id, str)
        or not trial_id
        or trial_id in (".", "..", SEARCH_RUN)
        or "/" in trial_id
        or os.sep in trial_id
        or (os.altsep is not None and os.altsep in trial_id)
    ):
        raise ValueError(
            "trial_id must be a non-empty string usable as a directory name (no path separator, not "
            f"'.', '..' or {SEARCH_RUN!r}); received {trial_id!r}."
        )
    return trial_id


def _hparam_value(name: str, value: Any) -> bool | int | float | str:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()  # NumPy scalars
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"Hyperparameter {name!r} must be finite; received {value!r}.")
        return value
    raise ValueError(
        f"Hyperparameter {name!r} must be a bool, int, float or str; received {value!r} "
        f"({type(value).__name__})."
    )


def _metric_value(name: str, value: Any) -> float | None:
    """The value to log, or None to leave the metric out (not reported, or not finite)."""
    if value is None:
        return None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"Metric {name!r} must be a number or None; received {value!r} ({type(value).__name__})."
        )
    value = float(value)
    return value if math.isfinite(value) else None


def _discrete(values: Sequence[Any]):
    """A `Discrete` HParams domain of `values`, or None when no single type fits them."""
    from tensorboard.plugins.hparams import summary_v2

    values = [_hparam_value("domain", v) for v in values]
    if not values:
        return None
    if all(isinstance(v, bool) for v in values):
        return summary_v2.Discrete(values, dtype=bool)
    if all(isinstance(v, str) for v in values):
        return summary_v2.Discrete(values, dtype=str)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        # TensorBoard stores every number as a double; mixed ints and floats are one numeric domain.
        if all(isinstance(v, int) for v in values):
            return summary_v2.Discrete(values, dtype=int)
        return summary_v2.Discrete([float(v) for v in values], dtype=float)
    return None


def _domain(hp: Any):
    """The HParams domain of one KerasTuner hyperparameter (None when it has none TensorBoard can show)."""
    from tensorboard.plugins.hparams import summary_v2

    kind = type(hp).__name__
    if kind == "Choice":
        return _discrete(list(hp.values))
    if kind == "Boolean":
        return summary_v2.Discrete([False, True], dtype=bool)
    if kind == "Fixed":
        return _discrete([hp.value])
    if kind in ("Int", "Float"):
        if hp.step is not None:
            # KerasTuner's own enumeration: the domain holds exactly the values trials receive.
            return _discrete(list(hp.values))
        if kind == "Int":
            return summary_v2.IntInterval(int(hp.min_value), int(hp.max_value))
        return summary_v2.RealInterval(float(hp.min_value), float(hp.max_value))
    return None


class SearchLogger:
    """Logs a search to TensorBoard: one HParams session per trial, the controller's curves, the Pareto plot.

    Args:
        log_dir: The TensorBoard log directory. When the search has a `keras.callbacks.TensorBoard`
            callback, pass its `log_dir` (see `tensorboard_dir_from_callbacks`): each trial's row then holds
            both KerasTuner's session and this one.
        hyperparameters: The search space, whose domains the HParams dashboard shows (and filters on). Pass
            the oracle's live `HyperParameters`: a space that grows as trials reveal it is picked up at the
            next `log_trial`. Without it, hyperparameters are declared by name only, with no domain.
        metrics: The metric names logged for every trial, in the dashboard's column order. Each is also the
            scalar tag in the trial's run.

    Use one `log_dir` per search: trials of two searches with the same ids would share HParams rows (as
    KerasTuner's own sessions would). For a search restarted from scratch, call `clear()` first.

    Example:

    ```python
    logger = SearchLogger("logs/search", hyperparameters=tuner.oracle.hyperparameters)
    logger.log_trial(
        "00",
        {"block2_conv_op": "mbconv6", "block2_kernel": 5},
        {"val_accuracy": 0.91, "latency_ms": 4.2, "reward": 0.87, "params": 2.1e6, "macs": 3.1e8},
    )
    logger.log_controller(tuner.oracle.controller_updates)
    logger.log_pareto(plot_pareto(tuner.trial_records()), step=1)
    ```

    Then `tensorboard --logdir logs/search`, HPARAMS tab.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        hyperparameters: keras_tuner.HyperParameters | None = None,
        metrics: Sequence[str] = DEFAULT_METRICS,
    ):
        if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
            raise ValueError(f"log_dir must be a non-empty path; received {log_dir!r}.")
        if hyperparameters is not None and not hasattr(hyperparameters, "space"):
            raise ValueError(
                "hyperparameters must be a keras_tuner.HyperParameters or None; received "
                f"{type(hyperparameters).__name__}."
            )
        self.metrics = check_choices(
            "metrics", metrics, lambda m: isinstance(m, str) and bool(m), "metric names"
        )
        self.log_dir = os.fspath(log_dir)
        self.hyperparameters = hyperparameters
        os.makedirs(self.log_dir, exist_ok=True)
        if hyperparameters is not None and hyperparameters.space:
            self._ensure_experiment({})

    # ------------------------------------------------------------------------------------------------------
    # Paths and files

    @property
    def search_dir(self) -> str:
        """The search-level run: controller scalars and the Pareto plot."""
        return os.path.join(self.log_dir, SEARCH_RUN)

    def trial_dir(self, trial_id: str) -> str:
        """The run holding a trial's session: `<log_dir>/<trial_id>`, beside KerasTuner's `execution<k>`."""
        return os.path.join(self.log_dir, _check_trial_id(trial_id))

    @staticmethod
    def _files(directory: str, kind: str) -> dict[str, str]:
        """`{file name: key}` of this logger's events files of one kind in `directory`."""
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return {}
        found = {}
        for name in names:
            match = _FILE.match(name)
            if match and match["kind"] == kind:
                found[name] = match["key"]
        return found

    def _write(self, directory: str, kind: str, key: str, write: Callable[[], None]) -> str:
        """Runs `write` under a fresh summary writer; moves the complete events file into `directory`."""
        tf = _tf()
        with tempfile.TemporaryDirectory(prefix="keras-mnas-tensorboard-") as scratch:
            writer = tf.summary.create_file_writer(scratch)
            try:
                with writer.as_default():
                    write()
                writer.flush()
            finally:
                writer.close()
            produced = [name for name in os.listdir(scratch) if "tfevents" in name]
            if len(produced) != 1:
                raise RuntimeError(f"Expected one events file from the summary writer; found {produced}.")
            with open(os.path.join(scratch, produced[0]), "rb") as f:
                data = f.read()
        now = time.time()
        # The time leads the name so files sort in writing order, as TensorBoard expects.
        name = f"events.out.tfevents.{int(now)}.{int(now % 1 * 1e6):06d}.mnas-{kind}.{key}.v2"
        _place(directory, name, data)
        return name

    @staticmethod
    def _remove(directory: str, names: Iterable[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))

    # ------------------------------------------------------------------------------------------------------
    # Experiment

    def _experiment_pb(self, trial_hparams: Mapping[str, Any], time_created_secs: float):
        from tensorboard.plugins.hparams import api_pb2, summary_v2

        hparams = {}
        space = self.hyperparameters.space if self.hyperparameters is not None else []
        for hp in space:
            hparams[hp.name] = summary_v2.HParam(hp.name, _domain(hp))
        # Values the space does not declare (or all of them, without a space) are shown without a domain:
        # a made-up domain would make the dashboard's filters hide the trials outside it.
        for name in trial_hparams:
            if name not in hparams:
                hparams[name] = summary_v2.HParam(name)
        metrics = []
        for name in self.metrics:
            display, description = METRIC_INFO.get(name, (name, None))
            metrics.append(
                summary_v2.Metric(
                    name,
                    group="",
                    display_name=display,
                    description=description,
                    dataset_type=api_pb2.DATASET_VALIDATION if name.startswith("val_") else None,
                )
            )
        return summary_v2.hparams_config_pb(
            list(hparams.values()), metrics, time_created_secs=time_created_secs
        )

    def _ensure_experiment(self, trial_hparams: Mapping[str, Any]) -> None:
        """Writes the experiment unless the same one is on disk; a changed one replaces the old."""
        timeless = self._experiment_pb(trial_hparams, time_created_secs=0.0)
        key = hashlib.sha256(timeless.SerializeToString(deterministic=True)).hexdigest()[:16]
        existing = self._files(self.log_dir, "experiment")
        if key in existing.values():
            self._remove(self.log_dir, [name for name, k in existing.items() if k != key])
            return
        pb = self._experiment_pb(trial_hparams, time_created_secs=time.time())
        self._write(self.log_dir, "experiment", key, lambda: _write_raw(pb, step=0))
        # TensorBoard keeps the first experiment it reads for a run: an outdated one must go.
        self._remove(self.log_dir, existing)

    # ------------------------------------------------------------------------------------------------------
    # Trials

    def log_trial(
        self,
        trial_id: str,
        hparams: Mapping[str, Any],
        metrics: Mapping[str, float | None],
        status: str = "COMPLETED",
    ) -> None:
        """Writes one trial's HParams session: its hyperparameter values and its final metrics.

        Only the declared metrics are written (other keys of `metrics` are ignored); a metric that is missing,
        `None` or not finite is left out, and the dashboard shows an empty cell (e.g. the accuracy of a trial
        skipped before training). Failed trials (`"FAILED"`, `"INVALID"`) are logged with their
        hyperparameters and status but no metrics, so they are visible in the table without placing a
        half-trained result in the plots.

        Logging the same trial again with the same content does nothing; with other content (a trial retried
        after a failure) the new session replaces the old one.

        Args:
            trial_id: The KerasTuner trial id; also the session group name, which KerasTuner uses for the
                session its TensorBoard integration writes, so both share one row.
            hparams: The trial's hyperparameter values (`trial.hyperparameters.values`).
            metrics: `{metric name: value}`, e.g. the best value of each metric over the trial's epochs.
            status: The trial's status: `"COMPLETED"`, `"FAILED"`, `"INVALID"`, `"STOPPED"` or `"RUNNING"`.

        Example:

        ```python
        logger.log_trial("03", {"block2_kernel": 3}, {"val_accuracy": 0.9, "latency_ms": 2.5}, "COMPLETED")
        ```
        """
        trial_id = _check_trial_id(trial_id)
        if not isinstance(hparams, Mapping):
            raise ValueError(
                f"hparams must be a dict of hyperparameter values; received {type(hparams).__name__}."
            )
        if not isinstance(metrics, Mapping):
            raise ValueError(f"metrics must be a dict of metric values; received {type(metrics).__name__}.")
        check_choice("status", status, sorted(_STATUS))
        values = {}
        for name, value in hparams.items():
            if not isinstance(name, str):
                raise ValueError(f"Hyperparameter names must be strings; received {name!r}.")
            values[name] = _hparam_value(name, value)
        scalars = {}
        if status not in _NO_METRICS:
            for name in self.metrics:
                value = _metric_value(name, metrics.get(name))
                if value is not None:
                    scalars[name] = value

        self._ensure_experiment(values)
        directory = self.trial_dir(trial_id)
        key = _fingerprint({"hparams": values, "metrics": scalars, "status": status})
        existing = self._files(directory, "trial")
        if key in existing.values():
            self._remove(directory, [name for name, k in existing.items() if k != key])
            return

        def write():
            from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2

            tf = _tf()
            _write_raw(summary_v2.hparams_pb(values, trial_id=trial_id), step=0)
            for name, value in scalars.items():
                tf.summary.scalar(name, value, step=0)
            end = plugin_data_pb2.SessionEndInfo(
                status=api_pb2.Status.Value(_STATUS[status]), end_time_secs=time.time()
            )
            _write_raw(
                _hparams_summary(
                    metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)
                ),
                step=0,
            )

        os.makedirs(directory, exist_ok=True)
        self._write(directory, "trial", key, write)
        # A run must hold one session: TensorBoard keeps the first session start it reads.
        self._remove(directory, existing)

    # ------------------------------------------------------------------------------------------------------
    # Search-level run

    def logged_controller_steps(self) -> int:
        """The last controller update already written (0 when none)."""
        last = 0
        for key in self._files(self.search_dir, "controller").values():
            last = max(last, int(key.split("-")[1]))
        return last

    def log_controller(self, updates: Sequence[Mapping[str, Any]]) -> None:
        """Writes the controller updates not yet logged as `controller/<statistic>` scalars.

        The step of an update is its `"update"` entry (1, 2, ...), else its position in `updates` counted
        from 1. Every other numeric entry is logged: `mean_reward`, `baseline`, `entropy`, `policy_loss`,
        `observed`, ...

        Args:
            updates: Every update so far, e.g. `oracle.controller_updates`; those already on disk (from this
                process or an earlier one on the same `log_dir`) are skipped.

        Example:

        ```python
        logger.log_controller(tuner.oracle.controller_updates)
        ```
        """
        if isinstance(updates, (str, bytes, Mapping)) or not isinstance(updates, Sequence):
            raise ValueError(
                "updates must be a list of dicts of controller statistics; received "
                f"{type(updates).__name__}."
            )
        done = self.logged_controller_steps()
        rows = []
        for position, update in enumerate(updates, start=1):
            if not isinstance(update, Mapping):
                raise ValueError(
                    f"Each controller update must be a dict of statistics; update {position} is "
                    f"{type(update).__name__}."
                )
            step = check_int(f"updates[{position - 1}]['update']", update.get("update", position), minimum=1)
            if step <= done:
                continue
            stats = {
                name: float(value)
                for name, value in update.items()
                if name != "update"
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
            }
            rows.append((step, stats))
        rows.sort(key=lambda row: row[0])
        if not rows:
            return
        steps = [step for step, _ in rows]
        if len(set(steps)) != len(steps):
            raise ValueError(f"Controller updates must have distinct 'update' numbers; received {steps}.")

        def write():
            tf = _tf()
            for step, stats in rows:
                for name, value in stats.items():
                    tf.summary.scalar(CONTROLLER_PREFIX + name, value, step=step)

        os.makedirs(self.search_dir, exist_ok=True)
        self._write(self.search_dir, "controller", f"{steps[0]}-{steps[-1]}", write)

    def log_pareto(self, png: bytes, step: int) -> None:
        """Writes the Pareto plot (PNG bytes, e.g. from `plot_pareto`) as the image `search/pareto` at `step`.

        A step already logged is not written again.

        Example:

        ```python
        logger.log_pareto(plot_pareto(tuner.trial_records(), target_latency_ms=5.0), step=20)
        ```
        """
        if not isinstance(png, (bytes, bytearray)):
            raise ValueError(f"png must be the bytes of a PNG image; received {type(png).__name__}.")
        if bytes(png[:8]) != _PNG_SIGNATURE:
            raise ValueError(
                f"png must be the bytes of a PNG image (starting {_PNG_SIGNATURE!r}); received "
                f"{len(png)} bytes starting {bytes(png[:8])!r}."
            )
        step = check_int("step", step, minimum=0)
        if str(step) in self._files(self.search_dir, "pareto").values():
            return
        png = bytes(png)

        def write():
            tf = _tf()
            image = tf.image.decode_png(png)
            tf.summary.image(
                PARETO_TAG,
                image[None],
                step=step,
                description="Accuracy against latency of every completed trial, and the Pareto front.",
            )

        os.makedirs(self.search_dir, exist_ok=True)
        self._write(self.search_dir, "pareto", str(step), write)

    # ------------------------------------------------------------------------------------------------------

    def clear(self) -> None:
        """Removes every events file this logger wrote under `log_dir` (for a search restarted from scratch).

        Files of others (KerasTuner's `execution<k>` runs, Keras' TensorBoard callback) are left alone.
        """
        for directory, _, names in os.walk(self.log_dir):
            self._remove(directory, [name for name in names if _FILE.match(name)])


def _hparams_summary(tag: str, plugin_data):
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata

    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag, metadata=metadata.create_summary_metadata(plugin_data), tensor=metadata.NULL_TENSOR
    )
    return summary


def _write_raw(summary, step: int) -> None:
    _tf().summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)


def _place(directory: str, name: str, data: bytes) -> None:
    """Writes `data` to `directory/name` atomically (the temporary name has no "tfevents" in it)."""
    atomic_write_bytes(os.path.join(directory, name), data)
