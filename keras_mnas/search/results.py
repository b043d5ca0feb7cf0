"""What a search found, in one shape for the tuner, `SearchProject` and the `keras-mnas` command.

A trial becomes a record (`trial_record`) the same way whether it is read from a running `MnasTuner` or from
a project directory's `trial.json` files, and a trial's model is written to disk (`export_model`) the same
way by `MnasTuner.export_best` and `keras-mnas export`. `pareto_front` and `plot_pareto` work on records.

This module imports neither TensorFlow nor Keras (matplotlib only when plotting), so reading a search's
results starts quickly.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from keras_mnas.utils.io import atomic_write_bytes, atomic_write_json

#: The metric `MnasTuner(evaluate_int8=True)` logs and its reward reads: the int8 TFLite model's accuracy.
INT8_METRIC = "int8_val_accuracy"
#: The float model's accuracy, which an int8-scored search still logs.
FLOAT_METRIC = "val_accuracy"


def best_metric_values(metrics_state: Any) -> dict[str, float]:
    """The best value of every metric of a KerasTuner metrics state, by its direction.

    The state is what `trial.metrics.get_config()` returns and what a `trial.json` holds under `metrics`.
    A step's value is the mean over the trial's executions; NaN steps are ignored; metrics without a
    number are left out.

    Args:
        metrics_state: `{"metrics": {name: {"direction": "min"|"max", "observations": [...]}}}`.

    Returns:
        `{name: best value}`, as plain floats.

    Example:

    >>> best_metric_values({"metrics": {"loss": {"direction": "min", "observations": [
    ...     {"value": [0.5], "step": 0}, {"value": [0.25], "step": 1}]}}})
    {'loss': 0.25}
    """
    tracked = metrics_state.get("metrics", {}) if isinstance(metrics_state, Mapping) else {}
    best = {}
    for name, state in tracked.items():
        means = []
        for observation in state.get("observations", []) if isinstance(state, Mapping) else []:
            values = observation.get("value") if isinstance(observation, Mapping) else None
            if isinstance(values, (int, float)):
                values = [values]
            numbers = [float(v) for v in values or [] if isinstance(v, (int, float))]
            if numbers:
                means.append(sum(numbers) / len(numbers))
        means = [m for m in means if not math.isnan(m)]
        if means:
            best[name] = min(means) if state.get("direction") == "min" else max(means)
    return best


def trial_record(
    trial_id: str,
    *,
    status: str,
    score: float | None,
    values: Mapping[str, Any],
    metrics: Mapping[str, float],
    arch: Any,
    metric: str,
    message: str | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """One trial as a plain, JSON-serialisable dict: what `trial_records()` and `records()` return.

    Keys: `trial_id`, `status`, `accuracy` (the reward's `metric`), `latency_ms`, `latency_spread` (how far
    the timed runs disagreed; None for a predicted latency), `reward` (the score), `params`, `macs`,
    `skipped` (never trained: its latency ruled it out), `prefiltered` (skipped on the lookup table's
    prediction before it was built: `latency_ms` is predicted and the reward 0), `architecture` (an
    `ArchSpec.to_dict()` or None), `values` (the hyperparameters), `metrics` (every metric's best value),
    `message` (why it failed) and `checkpoint` (the best epoch's weights file, or None). When the reward reads
    the int8 model's accuracy (`evaluate_int8=True`), also `float_accuracy` and `int8_accuracy`.

    Args:
        trial_id: KerasTuner's trial id.
        status: The trial's status, e.g. `"COMPLETED"`.
        score: The trial's score (MnasTuner: the reward), or None.
        values: The trial's hyperparameter values.
        metrics: The best value of each metric (`best_metric_values`).
        arch: The trial's `ArchSpec`, or None when it has none (another hypermodel).
        metric: The accuracy metric the reward read.
        message: Why the trial failed, if it did.
        checkpoint: Path of the best epoch's weights, if the search kept them.

    Returns:
        The record.

    Example:

    >>> record = trial_record("3", status="COMPLETED", score=0.5, values={}, arch=None,
    ...                       metrics={"val_accuracy": 0.75, "latency_ms": 2.0}, metric="val_accuracy")
    >>> record["accuracy"], record["latency_ms"], record["skipped"]
    (0.75, 2.0, False)
    """
    int8_figures = (
        {"float_accuracy": metrics.get(FLOAT_METRIC), "int8_accuracy": metrics.get(INT8_METRIC)}
        if metric == INT8_METRIC
        else {}
    )
    return {
        "trial_id": str(trial_id),
        "status": status,
        "accuracy": metrics.get(metric),
        **int8_figures,
        "latency_ms": metrics.get("latency_ms"),
        "latency_spread": metrics.get("latency_spread"),
        "reward": None if score is None else float(score),
        "params": metrics.get("params"),
        "macs": metrics.get("macs"),
        "skipped": bool(metrics.get("skipped")),
        "prefiltered": bool(metrics.get("prefiltered")),
        "architecture": arch.to_dict() if arch is not None else None,
        "values": dict(values),
        "metrics": dict(metrics),
        "message": message,
        "checkpoint": checkpoint,
    }


def export_model(
    model: Any, path: str | os.PathLike, *, tflite_bytes: bytes, arch: Any = None
) -> dict[str, str]:
    """Writes a model as `<path>.keras`, its TFLite conversion as `<path>.tflite`, its build as JSON.

    A `.keras` or `.tflite` suffix on `path` is dropped. Every file is written to a temporary name first and
    then renamed, so an interrupted export leaves no half-written file under the final name.

    `<path>.arch.json` holds the `keras_mnas.build_model` arguments that rebuild the model exactly: the
    architecture under `"arch"`, and the width multiplier, input shape, classes, dropout, preprocessing and
    BatchNormalization settings beside it (`keras_mnas.builder.get_build_config`). Rebuild it with
    `build_model(**json.load(file))`, then load the exported weights into it.

    Args:
        model: The Keras model to save, made by `keras_mnas.build_model` (as every search candidate is).
        path: The output path, without suffix (e.g. `"exports/best"`); missing directories are created.
        tflite_bytes: The converted model.
        arch: The model's `ArchSpec`; None writes no `.arch.json` file.

    Returns:
        `{"keras": ..., "tflite": ...}` paths, and `"architecture"` when `arch` is given.

    Raises:
        ValueError: when `arch` is given and the model was not made by `keras_mnas.build_model`.

    Example:

    ```python
    paths = export_model(model, "exports/best", tflite_bytes=convert_to_tflite(model), arch=arch)
    with open(paths["architecture"]) as f:
        twin = keras_mnas.build_model(**json.load(f))  # the same layers, ready for the exported weights
    ```
    """
    base = os.fspath(path)
    for suffix in (".keras", ".tflite"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    paths = {"keras": base + ".keras", "tflite": base + ".tflite"}
    build = None
    if arch is not None:
        # Read before anything is written: a model that cannot be described must not leave half an export.
        from keras_mnas.builder import get_build_config

        build = {**get_build_config(model), "arch": arch.to_dict()}
        build["input_shape"] = list(build["input_shape"])
    directory = os.path.dirname(os.path.abspath(base))
    os.makedirs(directory, exist_ok=True)
    # Keras picks the format from the suffix, so the temporary file keeps `.keras`.
    tmp = os.path.join(directory, "." + os.path.basename(base) + ".partial.keras")
    model.save(tmp)
    os.replace(tmp, paths["keras"])
    atomic_write_bytes(paths["tflite"], tflite_bytes)
    if build is not None:
        paths["architecture"] = base + ".arch.json"
        atomic_write_json(paths["architecture"], build)
    return paths


def pareto_front(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records no other record dominates in (higher `accuracy`, lower `latency_ms`), fastest first.

    A record dominates another when it is at least as accurate and at least as fast, and strictly better in
    one of the two. Records without an accuracy (skipped before training) are left out.

    Example:

    >>> front = pareto_front([
    ...     {"trial_id": "0", "accuracy": 0.9, "latency_ms": 10.0},
    ...     {"trial_id": "1", "accuracy": 0.8, "latency_ms": 12.0},  # slower and worse: dominated
    ...     {"trial_id": "2", "accuracy": 0.7, "latency_ms": 5.0},
    ... ])
    >>> " then ".join(r["trial_id"] for r in front)
    '2 then 0'
    """
    candidates = [
        dict(r) for r in records if r.get("accuracy") is not None and r.get("latency_ms") is not None
    ]
    # Fastest first; among equally fast, most accurate first. A record is on the front when it is more
    # accurate than every faster one.
    candidates.sort(key=lambda r: (r["latency_ms"], -r["accuracy"]))
    front = []
    best_accuracy = float("-inf")
    for record in candidates:
        if record["accuracy"] > best_accuracy:
            front.append(record)
            best_accuracy = record["accuracy"]
    return front


def plot_pareto(
    records: Iterable[Mapping[str, Any]],
    *,
    target_latency_ms: float | None = None,
    path: str | None = None,
    title: str = "Accuracy against latency",
) -> bytes:
    """Plots every trial and the Pareto front; returns PNG bytes and writes them to `path` if given.

    Example:

    ```python
    plot_pareto(tuner.trial_records(), target_latency_ms=5.0, path="pareto.png")
    ```
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    records = [r for r in records if r.get("accuracy") is not None and r.get("latency_ms") is not None]
    front = pareto_front(records)
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    axes.scatter(
        [r["latency_ms"] for r in records], [r["accuracy"] for r in records], s=14, alpha=0.5, label="trials"
    )
    axes.plot(
        [r["latency_ms"] for r in front],
        [r["accuracy"] for r in front],
        "o-",
        color="tab:red",
        label="Pareto front",
    )
    if target_latency_ms is not None:
        axes.axvline(
            target_latency_ms, color="gray", linestyle="--", label=f"target {target_latency_ms:g} ms"
        )
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("accuracy")
    axes.set_title(title)
    axes.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    png = buffer.getvalue()
    if path is not None:
        atomic_write_bytes(path, png)
    return png
