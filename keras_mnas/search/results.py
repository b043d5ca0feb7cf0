"""What a search found, in one shape for the tuner, `SearchProject` and the `keras-mnas` command.

A trial becomes a record (`trial_record`) the same way whether it is read from a running `MnasTuner` or from
a project directory's `trial.json` files, and a trial's model is written to disk (`export_model`) the same
way by `MnasTuner.export_best` and `keras-mnas export`. `pareto_front`, `plot_pareto` and `format_results`
(the text `MnasTuner.results_summary` and `keras-mnas results` print) work on records.

This module imports neither TensorFlow nor Keras (matplotlib only when plotting), so reading a search's
results starts quickly.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keras_mnas.utils.io import atomic_write_bytes, atomic_write_json
from keras_mnas.utils.text import count, distinct_numbers, number, table

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

    The legend sits below the axes, so it never hides a trial.

    Args:
        records: Trial records (`trial_record`); those without an accuracy or a latency are left out.
        target_latency_ms: Draws the reward's target latency as a vertical line.
        path: Where to write the PNG file, if anywhere.
        title: The plot's title.

    Returns:
        The PNG file's bytes.

    Example:

    ```python
    plot_pareto(tuner.trial_records(), target_latency_ms=5.0, path="pareto.png")
    ```
    """
    import matplotlib.pyplot as plt

    figure = _pareto_figure(records, target_latency_ms=target_latency_ms, title=title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    png = buffer.getvalue()
    if path is not None:
        atomic_write_bytes(path, png)
    return png


def _pareto_figure(records, *, target_latency_ms, title):
    """The Matplotlib figure `plot_pareto` saves."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    records = [r for r in records if r.get("accuracy") is not None and r.get("latency_ms") is not None]
    front = pareto_front(records)
    # Constrained layout makes room for a legend outside the axes: inside, it covered a corner's trials.
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=100, layout="constrained")
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
    figure.legend(loc="outside lower center", ncols=3, frameon=False)
    return figure


def describe_search(search_config: Mapping[str, Any], metric: str) -> str | None:
    """One line on a search's reward and latency source, from the settings `MnasTuner` records.

    Args:
        search_config: `MnasOracle.search_config`, as `oracle.json` holds it (`SearchProject.search_config`).
        metric: The accuracy metric the reward reads.

    Returns:
        The line, or None when nothing was recorded (a search not run by `MnasTuner`).

    Example:

    >>> describe_search({"reward": {"target_latency_ms": 0.05, "alpha": -0.07, "beta": -0.07},
    ...                  "latency": {"name": "host"}, "quantization": "float32"}, "val_accuracy")
    'Search: reward reads val_accuracy, target 0.05 ms, alpha -0.07, beta -0.07; latency from host, float32.'
    >>> describe_search({"reward": {"form": "absolute", "target_latency_ms": 0.05, "beta": -0.1},
    ...                  "latency": {"name": "host"}}, "val_accuracy")
    'Search: absolute reward reads val_accuracy, target 0.05 ms, beta -0.1; latency from host, float32.'
    """
    if not search_config:
        return None
    reward = search_config.get("reward") or {}
    latency = search_config.get("latency") or {}
    # TuNAS's absolute reward has one coefficient and no exponents.
    form = "absolute " if reward.get("form") == "absolute" else ""
    exponents = "" if form else f"alpha {reward.get('alpha')}, "
    return (
        f"Search: {form}reward reads {metric}, target {number(reward.get('target_latency_ms'))} ms, "
        f"{exponents}beta {reward.get('beta')}; latency from {latency.get('name', '?')}, "
        f"{search_config.get('quantization', 'float32')}."
    )


def format_results(
    records: Sequence[Mapping[str, Any]],
    *,
    metric: str = FLOAT_METRIC,
    searched_blocks: Sequence[int] | None = None,
    front: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The trials as a table, notes on unstable latencies and failures, then the Pareto front's table.

    What `MnasTuner.results_summary` and `keras-mnas results` print. Each row holds the trial id, its status,
    the reward's accuracy metric (`skipped` for a trial never trained), its latency in ms (marked `(!)` when
    its timed runs spread above 5%), reward, trainable parameters, mult-adds, and its block strings (or its
    hyperparameter values, for a search without an architecture). Latencies print with as many significant
    digits as it takes (at least 4) for different figures to read differently, and a trial's figure reads the
    same in both tables.

    Args:
        records: The trials to list, in order (`trial_record`s).
        metric: The accuracy metric the reward read: the third column's title.
        searched_blocks: Indices of the blocks the search chose: only those block strings are shown. None
            shows every block.
        front: The Pareto front's records, listed after the trials; None lists no front.

    Returns:
        The text, without a final newline.

    Example:

    >>> records = [
    ...     {"trial_id": "0", "status": "COMPLETED", "accuracy": 0.9, "latency_ms": 0.02312, "reward": 0.91,
    ...      "params": 97_200, "macs": 878_000, "architecture": {"blocks": ["r1_k3_s11_e1_i32_o16"]}},
    ...     {"trial_id": "1", "status": "COMPLETED", "accuracy": 0.8, "latency_ms": 0.02348, "reward": 0.79,
    ...      "params": 50_600, "macs": 596_000, "architecture": {"blocks": ["r2_k5_s22_e6_i16_o24"]}},
    ... ]
    >>> print(format_results(records, front=pareto_front(records)))
    TRIAL  STATUS     VAL_ACCURACY  LATENCY_MS  REWARD  PARAMS  MACS  BLOCKS
    0      COMPLETED  0.9000        0.02312     0.9100  97.2K   878K  r1_k3_s11_e1_i32_o16
    1      COMPLETED  0.8000        0.02348     0.7900  50.6K   596K  r2_k5_s22_e6_i16_o24
    <BLANKLINE>
    Pareto front (not dominated in accuracy and latency), fastest first:
    TRIAL  STATUS     VAL_ACCURACY  LATENCY_MS  REWARD  PARAMS  MACS  BLOCKS
    0      COMPLETED  0.9000        0.02312     0.9100  97.2K   878K  r1_k3_s11_e1_i32_o16
    """
    from keras_mnas.latency.base import is_unstable

    front = None if front is None else list(front)
    shown = [*records, *(front or [])]
    # One precision for both tables, chosen over every figure shown.
    latencies = dict(
        zip((id(r) for r in shown), distinct_numbers([r.get("latency_ms") for r in shown]), strict=True)
    )
    has_architecture = any(r.get("architecture") for r in shown)

    def row(record):
        accuracy = None if record.get("accuracy") is None else f"{record['accuracy']:.4f}"
        if record.get("skipped") and accuracy is None:
            accuracy = "skipped"
        latency = latencies[id(record)]
        if latency is not None and is_unstable(record.get("latency_spread")):
            latency += " (!)"
        reward = record.get("reward")
        return [
            record["trial_id"],
            record.get("status"),
            accuracy,
            latency,
            None if reward is None else f"{reward:.4f}",
            count(record.get("params")),
            count(record.get("macs")),
            _choices(record, searched_blocks),
        ]

    if searched_blocks is not None:
        last = "SEARCHED BLOCKS"
    else:
        last = "BLOCKS" if has_architecture else "HYPERPARAMETERS"
    headers = ["TRIAL", "STATUS", metric.upper(), "LATENCY_MS", "REWARD", "PARAMS", "MACS", last]
    lines = [table([row(r) for r in records], headers)]
    flagged = [r for r in records if is_unstable(r.get("latency_spread"))]
    if flagged:
        counted = "1 latency was" if len(flagged) == 1 else f"{len(flagged)} latencies were"
        lines.append(
            f"  (!) {counted} measured with a spread above 5% (unstable): differences smaller than the "
            "spread are noise."
        )
    for record in records:
        if record.get("status") == "FAILED" and record.get("message"):
            reason = record["message"].strip().splitlines()[-1]
            lines.append(f"  trial {record['trial_id']} failed: {reason}")
    if front is not None:
        lines.append("")
        if front:
            lines.append("Pareto front (not dominated in accuracy and latency), fastest first:")
            lines.append(table([row(r) for r in front], headers))
        else:
            lines.append("Pareto front: no completed trial with both an accuracy and a latency yet.")
    return "\n".join(lines)


def _choices(record: Mapping[str, Any], searched_blocks: Sequence[int] | None) -> str | None:
    """A trial's block strings (only the searched ones, when known), else its hyperparameter values."""
    arch = record.get("architecture")
    if not arch:
        values = record.get("values") or {}
        return ", ".join(f"{k}={v}" for k, v in values.items()) or None
    blocks = arch["blocks"]
    if searched_blocks is not None:
        blocks = [blocks[i] for i in searched_blocks if i < len(blocks)]
    return " ".join(blocks)
