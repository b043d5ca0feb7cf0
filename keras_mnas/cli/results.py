"""`keras-mnas results`: a search's trials and Pareto front, read from its project directory.

It reads JSON files only (`SearchProject`), so it starts without importing TensorFlow, Keras or KerasTuner.
"""

from __future__ import annotations

import argparse
from typing import Any

from keras_mnas.cli import _format as fmt
from keras_mnas.cli._common import EXIT_OK, CliError, say


def register(commands: argparse._SubParsersAction) -> None:
    """Adds the `results` command and its options to the `keras-mnas` parser's subcommands."""
    results = commands.add_parser(
        "results",
        help="the trials and Pareto front of a search",
        description="Print the trials (accuracy, latency, reward, size, architecture) and the Pareto front "
        "of a search, read from its project directory; the script that ran it is not needed.",
    )
    results.add_argument("directory", metavar="DIR", help="the project directory, or the tuner's directory")
    results.add_argument("--project", help="the project name inside DIR (when it holds several)")
    results.add_argument(
        "--sort", choices=sorted(_SORT_KEYS), help="order the trials (default: as they started)"
    )
    results.add_argument("--json", action="store_true", help="print JSON")
    results.set_defaults(handler=run)



def open_project(directory: str, project: str | None):
    from keras_mnas.search.project import SearchProject, SearchProjectError

    try:
        return SearchProject.open(directory, project)
    except SearchProjectError as error:
        raise CliError(str(error)) from error


def _architecture_summary(record: dict[str, Any], space) -> str | None:
    arch = record.get("architecture")
    if not arch:
        values = record.get("values") or {}
        return ", ".join(f"{k}={v}" for k, v in values.items()) or None
    blocks = arch["blocks"]
    if space is not None:
        blocks = [blocks[i] for i in space.searched_blocks if i < len(blocks)]
    return " ".join(blocks)


_SORT_KEYS: dict[str, tuple[str, bool]] = {
    "reward": ("reward", True),
    "latency": ("latency_ms", False),
    "accuracy": ("accuracy", True),
}


def _sorted_records(records: list[dict[str, Any]], sort: str | None) -> list[dict[str, Any]]:
    if sort is None:
        return records
    key, descending = _SORT_KEYS[sort]
    present = [r for r in records if r.get(key) is not None]
    absent = [r for r in records if r.get(key) is None]
    return sorted(present, key=lambda r: r[key], reverse=descending) + absent


def _flagged(record: dict[str, Any]) -> bool:
    """Whether a trial's latency was measured unstable (as `LatencyResult.unstable` judges)."""
    from keras_mnas.latency.base import is_unstable

    return is_unstable(record.get("latency_spread"))


def _flagged_number(record: dict[str, Any]) -> str | None:
    """The trial's latency for the results table, marked `(!)` when it was measured unstable."""
    shown = fmt.number(record["latency_ms"])
    return f"{shown} (!)" if shown is not None and _flagged(record) else shown


def run(args: argparse.Namespace) -> int:
    """Prints the trials (a table, or JSON) and the Pareto front."""
    project = open_project(args.directory, args.project)
    records = _sorted_records(project.records(), args.sort)
    front = project.pareto_front()
    config = project.search_config
    if args.json:
        fmt.print_json(
            {
                "project": project.path,
                "metric": project.metric,
                "search_config": config,
                "trials": records,
                "pareto_front": [r["trial_id"] for r in front],
            }
        )
        return EXIT_OK
    try:
        space = project.space
    except ValueError as error:
        say(f"Warning: {error}")
        space = None
    statuses: dict[str, int] = {}
    for record in records:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    counts = ", ".join(f"{n} {status.lower()}" for status, n in sorted(statuses.items())) or "no trials yet"
    header = f"Search project {project.path}: {len(records)} trials ({counts})."
    details = []
    if config:
        reward = config.get("reward") or {}
        latency = config.get("latency") or {}
        details.append(
            f"reward reads {project.metric}, target {fmt.number(reward.get('target_latency_ms'))} ms, "
            f"alpha {reward.get('alpha')}, beta {reward.get('beta')}"
        )
        details.append(f"latency from {latency.get('name', '?')}, {config.get('quantization', 'float32')}")
    print(header)
    if details:
        print("Search: " + "; ".join(details) + ".")
    if not records:
        return EXIT_OK
    print()

    def row(record):
        accuracy = None if record["accuracy"] is None else f"{record['accuracy']:.4f}"
        if record["skipped"] and accuracy is None:
            accuracy = "skipped"
        return [
            record["trial_id"],
            record["status"],
            accuracy,
            _flagged_number(record),
            None if record["reward"] is None else f"{record['reward']:.4f}",
            fmt.count(record["params"]),
            fmt.count(record["macs"]),
            _architecture_summary(record, space),
        ]

    headers = ["TRIAL", "STATUS", project.metric.upper(), "LATENCY_MS", "REWARD", "PARAMS", "MACS"]
    headers.append("SEARCHED BLOCKS" if space is not None else "HYPERPARAMETERS")
    print(fmt.table([row(r) for r in records], headers))
    flagged = [r for r in records if _flagged(r)]
    if flagged:
        counted = "1 latency was" if len(flagged) == 1 else f"{len(flagged)} latencies were"
        print(
            f"  (!) {counted} measured with a spread above 5% (unstable); see docs/latency.md before "
            "trusting small differences between such figures."
        )
    failed = [r for r in records if r["status"] == "FAILED" and r["message"]]
    for record in failed:
        reason = record["message"].strip().splitlines()[-1]
        print(f"  trial {record['trial_id']} failed: {reason}")
    print()
    if front:
        print("Pareto front (not dominated in accuracy and latency), fastest first:")
        print(fmt.table([row(r) for r in front], headers))
    else:
        print("Pareto front: no completed trial with both an accuracy and a latency yet.")
    return EXIT_OK

