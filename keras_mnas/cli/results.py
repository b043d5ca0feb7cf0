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


def run(args: argparse.Namespace) -> int:
    """Prints the trials (a table, or JSON) and the Pareto front."""
    from keras_mnas.search.results import describe_search, format_results

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
    print(f"Search project {project.path}: {len(records)} trials ({counts}).")
    settings = describe_search(config, project.metric)
    if settings:
        print(settings)
    if not records:
        return EXIT_OK
    print()
    # The same text as MnasTuner.results_summary: one formatter for both.
    searched = None if space is None else space.searched_blocks
    print(format_results(records, metric=project.metric, searched_blocks=searched, front=front))
    return EXIT_OK
