"""Chooses controller settings on landscapes and seeds kept apart from the ones `controller.py` reports.

    python benchmarks/controller_landscapes.py '{"elite_mutation": 0.0}' hard,relabel,acc 1,2,3,4,5

Runs the LSTM `Controller` with the given settings (a JSON dict of `ControllerConfig` fields, over the
defaults) the way `MnasOracle` drives it: up to `max_resamples` = 5 known re-proposals a trial, each
observed with its known reward, then a never-tried architecture at random. Prints, per landscape, the median
over the seeds of the rank of the best architecture found after 100, 200 and 500 distinct ones (1 = the best).

The landscapes, none of them the reported one (NAS-Bench-201's soft reward with any target T ranks the cells
alike, since T only scales it):

- `hard`, `hardT25`: NAS-Bench-201's hard-constraint reward (alpha = 0, beta = -1), T = the median and the
  25th percentile of the latencies;
- `acc`: NAS-Bench-201's accuracy alone;
- `relabel`: the soft reward with the five operations relabelled (a fixed permutation);
- `pair0`, `pair1`: random tables over the same 6 x 5 space, a sum of one term per decision and one per
  pair of decisions (normal, the pairs at half the scale), from a fixed seed;
- `pair10x4`: such a table over a larger space, 10 decisions of 4 options (1,048,576 architectures), so
  settings are not chosen for NAS-Bench-201's 6 x 5 space only.
"""

from __future__ import annotations

import itertools
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

MAX_RESAMPLES = 5
BUDGETS = (100, 200, 500)


def _pair_table(rng: np.random.Generator, decisions: int, options: int) -> np.ndarray:
    """One normal term per decision plus one per pair of decisions (half their scale), per architecture."""
    tokens = np.array(list(itertools.product(range(options), repeat=decisions)), dtype=np.int8)
    single = rng.normal(size=(decisions, options))
    pairs = rng.normal(size=(decisions, decisions, options, options)) * 0.5
    values = single[np.arange(decisions), tokens].sum(axis=1)
    for i, j in itertools.combinations(range(decisions), 2):
        values += pairs[i, j, tokens[:, i], tokens[:, j]]
    # itertools.product's order is np.ravel_multi_index's (the first decision most significant).
    return values


def landscapes() -> dict[str, tuple[list[int], np.ndarray]]:
    """Options per decision and reward of every architecture (in np.ravel_multi_index order), by landscape."""
    from nasbench201 import NB201Table, tokens_to_index

    table = NB201Table()
    latency = table.latency_ms
    out = {
        "hard": table.rewards(alpha=0.0, beta=-1.0),
        "hardT25": table.rewards(alpha=0.0, beta=-1.0, target_ms=float(np.percentile(latency, 25))),
        "acc": table.accuracy / 100.0,
    }
    permutation = [3, 0, 4, 1, 2]
    soft = table.rewards()
    cells = list(itertools.product(range(5), repeat=6))
    relabelled = np.empty_like(soft)
    relabelled[[tokens_to_index([permutation[op] for op in cell]) for cell in cells]] = soft
    out["relabel"] = relabelled
    rng = np.random.default_rng(12345)
    for k in range(2):
        out[f"pair{k}"] = _pair_table(rng, 6, 5)  # tokens_to_index's order is np.ravel_multi_index's
    tables = {name: ([5] * 6, rewards) for name, rewards in out.items()}
    tables["pair10x4"] = ([4] * 10, _pair_table(np.random.default_rng(54321), 10, 4))
    return tables


def run(
    config, choice_counts: list[int], rewards: np.ndarray, seed: int, budget: int = max(BUDGETS)
) -> dict[int, int]:
    """One search; the rank of the best found after each budget of distinct architectures."""
    from keras_mnas.search.controller import Controller

    def tokens_to_index(tokens):
        return int(np.ravel_multi_index(tokens, choice_counts))

    def index_to_tokens(index):
        return [int(t) for t in np.unravel_index(index, choice_counts)]

    controller = Controller(choice_counts, config, seed=seed)
    rng = np.random.default_rng(seed + 7)
    seen: dict[int, float] = {}
    best, ranks = -np.inf, {}
    while len(seen) < budget:
        for _ in range(MAX_RESAMPLES + 1):
            tokens, log_probs = controller.sample()
            index = tokens_to_index(tokens)
            if index not in seen:
                break
            controller.observe(tokens, log_probs, seen[index])
        else:
            index = int(rng.integers(len(rewards)))
            while index in seen:
                index = int(rng.integers(len(rewards)))
            tokens = index_to_tokens(index)
            log_probs = controller.log_probs(tokens)
        seen[index] = float(rewards[index])
        best = max(best, seen[index])
        controller.observe(tokens, log_probs, seen[index])
        if len(seen) in BUDGETS:
            ranks[len(seen)] = int(np.sum(rewards > best)) + 1
    return ranks


def proposal_cost(settings: dict, decisions: int, options: int = 5, trials: int = 500) -> tuple[float, float]:
    """CPU milliseconds of `sample` + `observe`, median over trials 1-100 and over the last 100.

    On a random additive reward over `decisions` x `options`; `PYTHONPATH=. python
    benchmarks/controller_landscapes.py --cost '{"surrogate": "screen"}'` prints them for 6 and 40 decisions
    (NAS-Bench-201's and about MnasNet's number of decisions).
    """
    import time

    from keras_mnas.search.controller import Controller, ControllerConfig

    controller = Controller([options] * decisions, ControllerConfig(**settings), seed=0)
    terms = np.random.default_rng(0).normal(size=(decisions, options))
    costs = []
    for _ in range(trials):
        start = time.process_time()
        tokens, log_probs = controller.sample()
        controller.observe(tokens, log_probs, float(terms[np.arange(decisions), tokens].sum()))
        costs.append(time.process_time() - start)
    # PPO updates (one in 20 observations) are left in: the medians skip them, as most trials do.
    return 1e3 * float(np.median(costs[:100])), 1e3 * float(np.median(costs[-100:]))


def main(argv=None) -> None:
    from keras_mnas.search.controller import ControllerConfig

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--cost":
        settings = json.loads(argv[1])
        for decisions in (6, 40):
            first, last = proposal_cost(settings, decisions)
            print(
                f"{json.dumps(settings)} {decisions} decisions: {first:.2f} ms per proposal over trials "
                f"1-100, {last:.2f} over trials 401-500 (CPU, median)",
                flush=True,
            )
        return
    settings, names, seeds = json.loads(argv[0]), argv[1].split(","), [int(s) for s in argv[2].split(",")]
    config = ControllerConfig(**settings)
    tables = landscapes()
    medians = {}
    for name in names:
        found = [run(config, *tables[name], seed) for seed in seeds]
        medians[name] = {b: float(np.median([ranks[b] for ranks in found])) for b in BUDGETS}
    print(json.dumps(settings), json.dumps(medians), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
