"""What a search found: the Pareto front of accuracy against latency, and its plot."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any


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

    from keras_mnas.utils.io import atomic_write_bytes

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
