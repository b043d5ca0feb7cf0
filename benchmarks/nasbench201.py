"""NAS-Bench-201 with Pixel 3 latency: a table-driven search space for testing and tuning search policies.

A benchmark harness, not part of the `keras_mnas` API: `benchmarks/controller.py` and
`benchmarks/controller_nb201_tuning.py` import it from this directory.

The table (`shared/benchmarks/nasbench201/nb201_cifar10_pixel3.csv`, or its gzipped copy in the repository's
`tests/fixtures/nasbench201/`) holds all 15,625 cells of the
NAS-Bench-201 space (6 edges, 5 operations each) with CIFAR-10 accuracy and Pixel 3 latency. A cell is 6
tokens, one per edge in the order of the cell string, each an index into `OPS`. A search "evaluates" an
architecture by looking up its reward, so a whole search takes seconds and its result can be ranked against
every architecture in the space.

`run_search` drives any `keras_mnas.search.policy.TokenPolicy` (the LSTM `Controller`, `RandomPolicy`, ...)
and counts *distinct* architectures: re-proposing a known one costs no training, so its cached reward is
handed back to the policy (which still learns from it) without spending budget. A cap on the
total number of proposals keeps a strategy that has collapsed onto a few architectures from looping forever.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_mnas.search.reward import MnasReward
from keras_mnas.utils.checks import check_int

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to-node, from-node) of each edge, in the order the cell string lists them.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
CHOICE_COUNTS = (len(OPS),) * len(EDGES)
NUM_ARCHS = len(OPS) ** len(EDGES)
ENV_VAR = "KERAS_MNAS_NB201"
_RELATIVE_PATH = pathlib.Path("shared", "benchmarks", "nasbench201", "nb201_cifar10_pixel3.csv")
# The same table, gzipped, shipped with the repository for its tests (see its README for the source).
FIXTURE_PATH = pathlib.Path(__file__).resolve().parents[1].joinpath(
    "tests", "fixtures", "nasbench201", "nb201_cifar10_pixel3.csv.gz"
)


def tokens_to_arch_str(tokens: Sequence[int]) -> str:
    """Converts 6 op indices (one per edge) to a NAS-Bench-201 cell string.

    Example:

    ```python
    >>> tokens_to_arch_str([3, 1, 0, 2, 4, 3])
    '|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|'
    ```
    """
    if isinstance(tokens, (str, bytes)) or len(tokens) != len(EDGES):
        raise ValueError(f"Expected {len(EDGES)} tokens (one per edge); received {tokens!r}.")
    for token in tokens:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < len(OPS):
            raise ValueError(f"Tokens must be ints in [0, {len(OPS)}); received {list(tokens)!r}.")
    nodes: list[list[str]] = [[], [], []]
    for (to_node, from_node), token in zip(EDGES, tokens, strict=True):
        nodes[to_node - 1].append(f"{OPS[token]}~{from_node}")
    return "+".join("|" + "|".join(node) + "|" for node in nodes)


def arch_str_to_tokens(arch_str: str) -> list[int]:
    """Converts a NAS-Bench-201 cell string to 6 op indices (one per edge); the inverse of
    `tokens_to_arch_str`."""
    if not isinstance(arch_str, str):
        raise ValueError(f"Expected a cell string such as '|op~0|+|op~0|op~1|+|...|'; received {arch_str!r}.")
    edges = [edge for node in arch_str.split("+") for edge in node.strip("|").split("|")]
    if len(edges) != len(EDGES):
        raise ValueError(f"Expected a cell string with {len(EDGES)} edges; received {arch_str!r}.")
    tokens = []
    for edge, (_, from_node) in zip(edges, EDGES, strict=True):
        op, _, source = edge.partition("~")
        if op not in OPS or source != str(from_node):
            raise ValueError(
                f"Edge {edge!r} of {arch_str!r} is not '<op>~{from_node}' with an op from {OPS}."
            )
        tokens.append(OPS.index(op))
    return tokens


def tokens_to_index(tokens: Sequence[int]) -> int:
    """Position of an architecture in the base-5 enumeration of the space (0 .. 15,624)."""
    index = 0
    for token in tokens:
        index = index * len(OPS) + int(token)
    return index


def index_to_tokens(index: int) -> list[int]:
    """The inverse of `tokens_to_index`."""
    tokens = []
    for _ in EDGES:
        index, token = divmod(int(index), len(OPS))
        tokens.append(token)
    return tokens[::-1]


def default_table_path() -> pathlib.Path:
    """Finds the NB201 table: `$KERAS_MNAS_NB201`, else `shared/benchmarks/nasbench201/...` in a parent of
    this package or of the working directory, else the gzipped copy in the repository's `tests/fixtures/`."""
    if os.environ.get(ENV_VAR):
        path = pathlib.Path(os.environ[ENV_VAR])
        if not path.is_file():
            raise FileNotFoundError(f"${ENV_VAR} points to {str(path)!r}, which is not a file.")
        return path
    searched = []
    for start in (pathlib.Path(__file__).resolve(), pathlib.Path.cwd().resolve()):
        for parent in (start, *start.parents):
            candidate = parent / _RELATIVE_PATH
            if candidate.is_file():
                return candidate
            searched.append(str(candidate))
    if FIXTURE_PATH.is_file():
        return FIXTURE_PATH
    raise FileNotFoundError(
        f"Could not find the NAS-Bench-201 table {str(_RELATIVE_PATH)!r} in any parent of this package or of "
        f"the working directory; set ${ENV_VAR} to its path. Searched: {searched[:3]} ..."
    )


class NB201Table:
    """The NAS-Bench-201 table with Pixel 3 latency, indexed by token sequence.

    Rows are reordered so that row `tokens_to_index(tokens)` holds the architecture with those tokens.

    Args:
        path: The CSV file (gzipped if its name ends in `.gz`); `None` finds it with `default_table_path()`.

    Attributes:
        arch_strs: Cell strings, shape (15625,).
        accuracy: CIFAR-10 test accuracy in %, shape (15625,).
        latency_ms: Pixel 3 latency in ms, shape (15625,).
        arch_idx: Official NAS-Bench-201 index of each row.

    Example:

    ```python
    table = NB201Table()
    rewards = table.rewards()  # soft MnasNet reward, T = median latency
    best = int(np.argmax(rewards))
    assert table.rank(rewards[best], rewards) == 1
    ```
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = pathlib.Path(path) if path is not None else default_table_path()
        if not self.path.is_file():
            raise FileNotFoundError(f"NAS-Bench-201 table not found: {str(self.path)!r}.")
        arch_strs = [""] * NUM_ARCHS
        accuracy = np.full(NUM_ARCHS, np.nan)
        latency = np.full(NUM_ARCHS, np.nan)
        arch_idx = np.full(NUM_ARCHS, -1, dtype=np.int64)
        opener = gzip.open if self.path.suffix == ".gz" else open
        with opener(self.path, "rt", newline="") as handle:
            reader = csv.DictReader(handle)
            expected = {"arch_idx", "arch_str", "acc_cifar10", "lat_pixel3_ms"}
            if not expected <= set(reader.fieldnames or ()):
                raise ValueError(
                    f"{str(self.path)!r} must have columns {sorted(expected)}; received {reader.fieldnames}."
                )
            for row in reader:
                index = tokens_to_index(arch_str_to_tokens(row["arch_str"]))
                arch_strs[index] = row["arch_str"]
                accuracy[index] = float(row["acc_cifar10"])
                latency[index] = float(row["lat_pixel3_ms"])
                arch_idx[index] = int(row["arch_idx"])
        missing = int(np.sum(arch_idx < 0))
        if missing:
            raise ValueError(f"{str(self.path)!r} lacks {missing} of the {NUM_ARCHS} architectures.")
        self.arch_strs = np.array(arch_strs)
        self.accuracy = accuracy
        self.latency_ms = latency
        self.arch_idx = arch_idx

    def __len__(self) -> int:
        return NUM_ARCHS

    @property
    def median_latency_ms(self) -> float:
        """The median latency over the table (the default target T)."""
        return float(np.median(self.latency_ms))

    def rewards(
        self, alpha: float = -0.07, beta: float = -0.07, target_ms: float | None = None
    ) -> np.ndarray:
        """The MnasNet reward of every row (accuracy as a fraction); `target_ms=None` uses the median
        latency (10.68 ms)."""
        target = self.median_latency_ms if target_ms is None else target_ms
        # Cells whose every path is `none` have near-zero latency; keep the exponent finite.
        latency = np.maximum(self.latency_ms, 1e-6)
        return MnasReward(target, alpha, beta).score_arrays(self.accuracy / 100.0, latency)

    @staticmethod
    def rank(reward: float, rewards: np.ndarray) -> int:
        """Rank of `reward` among `rewards`: 1 + the number of strictly better ones (1 = the best)."""
        return int(np.sum(np.asarray(rewards) > reward)) + 1


@dataclasses.dataclass
class SearchResult:
    """Outcome of `run_search`.

    Attributes:
        best_rewards: Best reward after each distinct architecture (`best_rewards[k - 1]` after k).
        best_tokens: Tokens of the best architecture found.
        distinct: Number of distinct architectures evaluated.
        proposals: Number of proposals, repeats included.
        hit_proposal_cap: True when the search stopped at `max_proposals` before the budget.
        stats: The update statistics the strategy returned, in order.
    """

    best_rewards: list[float]
    best_tokens: list[int]
    distinct: int
    proposals: int
    hit_proposal_cap: bool
    stats: list[dict[str, Any]]

    def best_at(self, budget: int) -> float:
        """Best reward after `budget` distinct architectures (the final best if the search stopped early)."""
        if budget < 1:
            raise ValueError(f"budget must be >= 1; received {budget!r}.")
        return self.best_rewards[min(budget, len(self.best_rewards)) - 1]


def run_search(
    strategy: Any,
    budget_distinct: int,
    seed: int | None = None,
    *,
    table: NB201Table | None = None,
    rewards: np.ndarray | None = None,
    max_proposals: int | None = None,
) -> SearchResult:
    """Runs a search on NAS-Bench-201 until `budget_distinct` distinct architectures have been evaluated.

    A repeated proposal is not evaluated again: its cached reward is passed to `strategy.observe` (so a
    learning strategy still learns from it) and the budget is not charged.

    Args:
        strategy: Anything `MnasOracle(controller=...)` accepts: a registered policy's name (`"random"`,
            `"controller"`) or factory, a controller preset name (`"nasnet"`), a `ControllerConfig` or a dict
            of its settings; or a callable `(choice_counts, seed) -> policy`; or a policy itself (an object
            with `sample() -> (tokens, log_probs)` and `observe(tokens, log_probs, reward)`).
        budget_distinct: Number of distinct architectures to evaluate.
        seed: Seed handed to the strategy when this function builds it.
        table: The table; loaded with defaults when `None` (and `rewards` is `None`).
        rewards: Reward of every row (indexed by `tokens_to_index`); `None` means the soft MnasNet reward
            with T = the median latency.
        max_proposals: Cap on total proposals; `None` means `20 * budget_distinct`.

    Returns:
        A `SearchResult`.

    Example:

    ```python
    result = run_search(ControllerConfig.nasnet(), budget_distinct=200, seed=0)
    rewards = NB201Table().rewards()
    print(NB201Table.rank(result.best_at(200), rewards))
    ```
    """
    budget_distinct = check_int("budget_distinct", budget_distinct, minimum=1, maximum=NUM_ARCHS)
    if rewards is None:
        rewards = (table or NB201Table()).rewards()
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape != (NUM_ARCHS,):
        raise ValueError(f"rewards must have shape ({NUM_ARCHS},); received {rewards.shape}.")
    cap = 20 * budget_distinct if max_proposals is None else int(max_proposals)
    if cap < budget_distinct:
        raise ValueError(f"max_proposals must be >= budget_distinct ({budget_distinct}); received {cap}.")
    strategy = _make_strategy(strategy, seed)

    seen: dict[int, float] = {}
    best_rewards: list[float] = []
    best, best_tokens = -np.inf, []
    proposals = 0
    stats = []
    while len(seen) < budget_distinct and proposals < cap:
        tokens, log_probs = strategy.sample()
        proposals += 1
        index = tokens_to_index(tokens)
        if index not in seen:
            seen[index] = float(rewards[index])
            if seen[index] > best:
                best, best_tokens = seen[index], list(tokens)
            best_rewards.append(best)
        update = strategy.observe(tokens, log_probs, seen[index])
        if update is not None:
            stats.append(update)
    return SearchResult(
        best_rewards=best_rewards,
        best_tokens=best_tokens,
        distinct=len(seen),
        proposals=proposals,
        hit_proposal_cap=len(seen) < budget_distinct,
        stats=stats,
    )


def _make_strategy(strategy: Any, seed: int | None):
    if hasattr(strategy, "sample") and hasattr(strategy, "observe"):
        return strategy
    # Imported here: the table and token helpers need no Keras.
    from keras_mnas.search.controller import ControllerConfig
    from keras_mnas.search.policy import PolicyFactory, resolve_policy

    if strategy is None or isinstance(strategy, (str, Mapping, ControllerConfig, PolicyFactory)):
        return resolve_policy(strategy)(CHOICE_COUNTS, seed)
    if callable(strategy):
        return strategy(list(CHOICE_COUNTS), seed)
    raise ValueError(
        "strategy must be a policy name, preset, ControllerConfig or factory, a callable "
        f"(choice_counts, seed) -> policy, or an object with sample() and observe(); received {strategy!r}."
    )
