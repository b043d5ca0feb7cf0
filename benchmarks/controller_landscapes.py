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
  pair of decisions (normal, the pairs at half the scale), from a fixed seed.
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


def landscapes() -> dict[str, np.ndarray]:
    """Reward of every cell, indexed as `nasbench201.tokens_to_index`, for each landscape."""
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
    tokens = np.array(cells)
    for k in range(2):
        single, pairs = rng.normal(size=(6, 5)), rng.normal(size=(6, 6, 5, 5)) * 0.5
        values = single[np.arange(6), tokens].sum(axis=1)
        for i, j in itertools.combinations(range(6), 2):
            values += pairs[i, j, tokens[:, i], tokens[:, j]]
        # itertools.product's order is tokens_to_index's (the first edge most significant).
        out[f"pair{k}"] = values
    return out


def run(config, rewards: np.ndarray, seed: int, budget: int = max(BUDGETS)) -> dict[int, int]:
    """One search; the rank of the best found after each budget of distinct architectures."""
    from nasbench201 import index_to_tokens, tokens_to_index

    from keras_mnas.search.controller import Controller

    controller = Controller([5] * 6, config, seed=seed)
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


def main(argv=None) -> None:
    from keras_mnas.search.controller import ControllerConfig

    argv = sys.argv[1:] if argv is None else argv
    settings, names, seeds = json.loads(argv[0]), argv[1].split(","), [int(s) for s in argv[2].split(",")]
    config = ControllerConfig(**settings)
    tables = landscapes()
    medians = {}
    for name in names:
        found = [run(config, tables[name], seed) for seed in seeds]
        medians[name] = {b: float(np.median([ranks[b] for ranks in found])) for b in BUDGETS}
    print(json.dumps(settings), json.dumps(medians), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
