"""Tunes the search controller's hyperparameters on NAS-Bench-201 (Pixel 3 latency, soft MnasNet reward).

Each setting runs a search per seed until 500 distinct architectures have been evaluated (repeats reuse the
cached reward, still teach the controller and are capped at 20x the budget). The table gives, at budgets of
50/100/200/500 distinct architectures, the median over seeds of the best reward as a fraction of the table's
best and of its rank among the 15,625 architectures (1 = the best), next to random search (sampling distinct
architectures without replacement).

Usage:

    python benchmarks/controller_nb201_tuning.py --seeds 10 --workers 2 [--configs nasnet,default,...]
    python benchmarks/controller_nb201_tuning.py --list

    python benchmarks/controller_nb201_tuning.py --overhead   # ms per trial of the controller alone

`docs/benchmarks.md` holds the held-out comparison that chose the LSTM settings of
`keras_mnas.search.ControllerConfig`'s defaults (its `lr.02_tanh2.5_rank_ent3e-2` row); `default` adds the
elite mutation chosen with `benchmarks/controller_landscapes.py`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

BUDGETS = (50, 100, 200, 500)

# Settings compared; each is a set of overrides of the paper's ("nasnet") settings, except "default",
# which is the constructor's defaults.
NASNET_OVERRIDES: dict[str, dict] = {
    "nasnet": {},
    # Learning rate, minibatch size, PPO epochs, advantage normalisation, entropy weight, alone.
    "lr.003": {"learning_rate": 0.003},
    "lr.01": {"learning_rate": 0.01},
    "lr.03": {"learning_rate": 0.03},
    "lr.1": {"learning_rate": 0.1},
    "lr.01_mb10": {"learning_rate": 0.01, "minibatch_size": 10},
    "lr.03_mb10": {"learning_rate": 0.03, "minibatch_size": 10},
    "lr.01_ep4": {"learning_rate": 0.01, "ppo_epochs": 4},
    "lr.01_norm": {"learning_rate": 0.01, "advantage_normalization": "std"},
    "lr.01_ent1e-3": {"learning_rate": 0.01, "entropy_weight": 1e-3},
    # Logit shaping: tanh bounds how peaked a softmax can get (no collapse), temperature softens it.
    "lr.01_tanh2.5": {"learning_rate": 0.01, "tanh_constant": 2.5},
    "lr.03_tanh2.5": {"learning_rate": 0.03, "tanh_constant": 2.5},
    "lr.03_t5_tanh2.5": {"learning_rate": 0.03, "temperature": 5.0, "tanh_constant": 2.5},
    "lr.003_tanh2.5": {"learning_rate": 0.003, "tanh_constant": 2.5},
    "lr.01_tanh1.5": {"learning_rate": 0.01, "tanh_constant": 1.5},
    "lr.01_tanh4": {"learning_rate": 0.01, "tanh_constant": 4.0},
    "lr.01_t5_tanh2.5": {"learning_rate": 0.01, "temperature": 5.0, "tanh_constant": 2.5},
    "lr.01_tanh2.5_mb10": {"learning_rate": 0.01, "tanh_constant": 2.5, "minibatch_size": 10},
    "lr.01_tanh2.5_ep4": {"learning_rate": 0.01, "tanh_constant": 2.5, "ppo_epochs": 4},
    "lr.01_tanh2.5_norm": {"learning_rate": 0.01, "tanh_constant": 2.5, "advantage_normalization": "std"},
    "lr.01_tanh2.5_ent1e-2": {"learning_rate": 0.01, "tanh_constant": 2.5, "entropy_weight": 1e-2},
    "lr.01_tanh2.5_u32": {"learning_rate": 0.01, "tanh_constant": 2.5, "units": 32},
    "lr.01_tanh2.5_u200": {"learning_rate": 0.01, "tanh_constant": 2.5, "units": 200},
    # Rank-normalised advantages: a few disastrous cells no longer drown the differences between good ones.
    "lr.01_rank": {"learning_rate": 0.01, "advantage_normalization": "rank"},
    "lr.003_rank": {"learning_rate": 0.003, "advantage_normalization": "rank"},
    "lr.01_tanh2.5_rank": {"learning_rate": 0.01, "tanh_constant": 2.5, "advantage_normalization": "rank"},
    "lr.003_tanh2.5_rank": {"learning_rate": 0.003, "tanh_constant": 2.5, "advantage_normalization": "rank"},
    "lr.01_tanh1.5_rank": {"learning_rate": 0.01, "tanh_constant": 1.5, "advantage_normalization": "rank"},
    "lr.02_tanh2.5_rank": {"learning_rate": 0.02, "tanh_constant": 2.5, "advantage_normalization": "rank"},
    "lr.01_tanh2_rank": {"learning_rate": 0.01, "tanh_constant": 2.0, "advantage_normalization": "rank"},
    "lr.01_tanh3_rank": {"learning_rate": 0.01, "tanh_constant": 3.0, "advantage_normalization": "rank"},
    "lr.01_tanh2.5_rank_mb10": {
        "learning_rate": 0.01,
        "tanh_constant": 2.5,
        "advantage_normalization": "rank",
        "minibatch_size": 10,
    },
    "lr.01_tanh2.5_rank_ep4": {
        "learning_rate": 0.01,
        "tanh_constant": 2.5,
        "advantage_normalization": "rank",
        "ppo_epochs": 4,
    },
    "lr.01_tanh2.5_rank_u32": {
        "learning_rate": 0.01,
        "tanh_constant": 2.5,
        "advantage_normalization": "rank",
        "units": 32,
    },
    "lr.02_tanh2.5_rank_ent1e-2": {
        "learning_rate": 0.02,
        "tanh_constant": 2.5,
        "advantage_normalization": "rank",
        "entropy_weight": 1e-2,
    },
    "lr.01_tanh3_rank_ent1e-2": {
        "learning_rate": 0.01,
        "tanh_constant": 3.0,
        "advantage_normalization": "rank",
        "entropy_weight": 1e-2,
    },
    "lr.01_tanh2.5_rank_ent3e-2": {
        "learning_rate": 0.01,
        "tanh_constant": 2.5,
        "advantage_normalization": "rank",
        "entropy_weight": 3e-2,
    },
    "lr.01_tanh2.5_rank_ent1e-1": {
        "learning_rate": 0.01,
        "tanh_constant": 2.5,
        "advantage_normalization": "rank",
        "entropy_weight": 1e-1,
    },
    "lr.02_tanh2.5_rank_ent3e-2": {
        "learning_rate": 0.02,
        "tanh_constant": 2.5,
        "advantage_normalization": "rank",
        "entropy_weight": 3e-2,
    },
    "lr.01_tanh3_rank_ent3e-2": {
        "learning_rate": 0.01,
        "tanh_constant": 3.0,
        "advantage_normalization": "rank",
        "entropy_weight": 3e-2,
    },
    "lr.01_tanh2.5_std": {"learning_rate": 0.01, "tanh_constant": 2.5, "advantage_normalization": "std"},
    "lr.01_tanh2.5_rank_ent1e-2": {
        "learning_rate": 0.01,
        "tanh_constant": 2.5,
        "advantage_normalization": "rank",
        "entropy_weight": 1e-2,
    },
}


def _settings(name: str):
    """The `ControllerConfig` of a setting's name."""
    from keras_mnas.search import ControllerConfig

    if name == "default":
        return ControllerConfig()
    if name in NASNET_OVERRIDES:
        return ControllerConfig.from_config({"preset": "nasnet", **NASNET_OVERRIDES[name]})
    if name.startswith("{"):  # ad-hoc: a JSON dict of overrides of the nasnet preset
        return ControllerConfig.from_config({"preset": "nasnet", **json.loads(name)})
    raise SystemExit(f"Unknown setting {name!r}; --list shows them.")


def _run_one(job: tuple[str, int, int]) -> dict:
    name, seed, budget = job
    import keras
    from nasbench201 import NB201Table, run_search

    table = _table()
    rewards = _rewards()
    start = time.perf_counter()
    if name == "random":
        result = run_search("random", budget, seed=seed, rewards=rewards)
    else:
        result = run_search(_settings(name), budget, seed=seed, rewards=rewards)
        keras.backend.clear_session()  # no build-up of graphs over hundreds of controllers
    seconds = time.perf_counter() - start
    best = float(rewards.max())
    return {
        "name": name,
        "seed": seed,
        "fraction": [result.best_at(b) / best for b in BUDGETS],
        "rank": [NB201Table.rank(result.best_at(b), rewards) for b in BUDGETS],
        "proposals": result.proposals,
        "distinct": result.distinct,
        "seconds": seconds,
        "table": str(table.path),
    }


_CACHE: dict = {}


def _table():
    from nasbench201 import NB201Table

    if "table" not in _CACHE:
        _CACHE["table"] = NB201Table()
    return _CACHE["table"]


def _rewards():
    if "rewards" not in _CACHE:
        _CACHE["rewards"] = _table().rewards()
    return _CACHE["rewards"]


def measure_overhead(choice_counts: list[int], config=None, trials: int = 400) -> dict:
    """Wall-clock cost of the controller alone: ms per `sample()` and per trial including the amortised
    PPO updates (the first update's one-off tracing/compilation reported apart)."""
    from keras_mnas.search import Controller

    start = time.perf_counter()
    controller = Controller(choice_counts, config, seed=0)
    build = time.perf_counter() - start
    rng = np.random.default_rng(0)
    sample_s, observe_s, first_update = 0.0, [], None
    for _ in range(trials):
        t0 = time.perf_counter()
        tokens, log_probs = controller.sample()
        t1 = time.perf_counter()
        stats = controller.observe(tokens, log_probs, float(rng.random()))
        t2 = time.perf_counter()
        sample_s += t1 - t0
        if stats is not None and first_update is None:
            first_update = t2 - t1
        else:
            observe_s.append(t2 - t1)
    return {
        "decisions": len(choice_counts),
        "build_s": build,
        "first_update_s": first_update,
        "sample_ms": 1e3 * sample_s / trials,
        "per_trial_ms": 1e3 * (sample_s + sum(observe_s)) / trials,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="random,nasnet,default", help="comma-separated setting names")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=max(BUDGETS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jsonl", default=None, help="append every run's result to this file")
    parser.add_argument("--list", action="store_true", help="print the settings and exit")
    parser.add_argument("--overhead", action="store_true", help="time the default controller and exit")
    args = parser.parse_args(argv)
    if args.overhead:
        from nasbench201 import CHOICE_COUNTS

        # NAS-Bench-201 (6 decisions of 5) and a MnasNet-sized space (7 blocks x 6 decisions).
        for counts in (list(CHOICE_COUNTS), [3, 2, 2, 2, 3, 3] * 7):
            for name in ("default", "nasnet"):
                result = measure_overhead(counts, _settings(name))
                print(
                    f"{name:8s} {result['decisions']:2d} decisions: sample {result['sample_ms']:.2f} ms, "
                    f"per trial incl. amortised PPO update {result['per_trial_ms']:.2f} ms "
                    f"(build {result['build_s']:.2f} s, first update incl. tracing "
                    f"{result['first_update_s']:.2f} s)"
                )
        return 0
    if args.list:
        for name in ["random", "default", *NASNET_OVERRIDES]:
            print(name, "" if name == "random" else _settings(name))
        return 0
    names = [name.strip() for name in args.configs.split(";" if "{" in args.configs else ",") if name.strip()]
    jobs = [
        (name, seed, args.budget)
        for name in names
        for seed in range(args.first_seed, args.first_seed + args.seeds)
    ]
    started = time.perf_counter()
    results: dict[str, list[dict]] = {name: [] for name in names}
    ctx = multiprocessing.get_context("spawn")  # TensorFlow does not survive fork
    with ctx.Pool(args.workers, maxtasksperchild=20) as pool:
        for result in pool.imap_unordered(_run_one, jobs):
            results[result["name"]].append(result)
            if args.jsonl:
                with open(args.jsonl, "a") as handle:
                    handle.write(json.dumps(result) + "\n")
            print(
                f"  {result['name']} seed {result['seed']}: rank@200 {result['rank'][2]} "
                f"({result['seconds']:.1f} s, {result['proposals']} proposals)",
                file=sys.stderr,
                flush=True,
            )

    budgets = [b for b in BUDGETS if b <= args.budget]
    print(
        f"NAS-Bench-201, soft reward (T = median latency), median over {args.seeds} seeds "
        f"(seeds {args.first_seed}..{args.first_seed + args.seeds - 1})"
    )
    print("best reward as a fraction of the table's best | rank of the best (1 = best of 15,625)")
    header = f"{'setting':26s} " + " ".join(f"{'frac@' + str(b):>9s}" for b in budgets)
    header += (
        " "
        + " ".join(f"{'rank@' + str(b):>8s}" for b in budgets)
        + f" {'props@' + str(args.budget):>10s} {'s/run':>6s}"
    )
    print(header)
    for name in names:
        runs = results[name]
        fractions = np.median([run["fraction"] for run in runs], axis=0)
        ranks = np.median([run["rank"] for run in runs], axis=0)
        line = f"{name[:26]:26s} " + " ".join(f"{fractions[i]:9.4f}" for i in range(len(budgets)))
        line += " " + " ".join(f"{ranks[i]:8.1f}" for i in range(len(budgets)))
        proposals = np.median([run["proposals"] for run in runs])
        line += f" {proposals:10.0f} {np.mean([run['seconds'] for run in runs]):6.1f}"
        print(line)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
