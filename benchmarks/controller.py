"""How fast MnasOracle finds good architectures, and what it costs per trial, beside KerasTuner's oracles.

    python benchmarks/controller.py [--seeds 20] [--first-seed 10] [--seed-stride 100003]
                                    [--budgets 50 100 200 500] [--oracles mnas evolution tpe random bayesian]

(a) Overhead: wall time per trial of a KerasTuner search whose trials cost nothing (the reward is looked up),
    i.e. the oracle's sampling and update plus KerasTuner's own bookkeeping, for MnasOracle and
    KerasTuner's RandomSearch oracle in the same run.
(b) Efficiency on NAS-Bench-201 (15,625 cells with real CIFAR-10 accuracy and Pixel 3 latency, no training):
    each oracle drives a real `keras_tuner.Tuner` over 6 `Choice` hyperparameters (the cell's edges) with the
    soft MnasNet reward and T = the table's median latency. For each budget of *distinct* architectures
    evaluated (re-proposing a known one costs no training), the median over seeds of the best reward found, as
    a fraction of the table's best, and its rank in the table (1 = the best) with the interquartile range of
    the ranks. `evolution` is `EvolutionOracle` (regularized evolution, Real et al. 2019: population 50,
    tournament 10, one-edge mutation, oldest removed); `tpe` is Optuna's TPE sampler (`pip install
    keras-mnas[bench]`) driven by ask-and-tell on the same table and reward, where a repeated architecture
    counts as a proposal but not as an architecture, as for the other oracles.
(c) Cost growth: CPU seconds per proposal by trial number (trials 1-50, 51-100, ...), the median over the
    searches that recorded them of each one's median: how much slower each proposal gets as the trials pile
    up. CPU time, which pauses and waiting for a core do not inflate; each worker's numerical libraries get
    cores / workers threads, since a multi-threaded BLAS that must share its cores burns CPU time waiting.

`--cache DIR` keeps each finished search as JSON and each unfinished one as a KerasTuner project under
`DIR/unfinished/`: a run stopped part-way (Bayesian optimisation at 200 trials takes hours) goes on from
where it stood when run again, and finished searches are not run again. A search runs in one process at a
time: a second run of it with the same cache stops at once, naming the process that holds it. The pool's
workers exit within a second of their main process, however it ended.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

BUDGETS = (50, 100, 200, 500)
# Sized per worker before the workers start (they read them when they load their libraries). Measured here:
# a Gaussian-process fit like BayesianOptimization's took 17-27 times the CPU time with OpenBLAS's 2 threads
# as with 1 while two other processes held the 2 cores; its threads spin waiting for each other.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ORACLES = ("mnas", "evolution", "tpe", "random", "bayesian")
LABELS = {
    "mnas": "MnasOracle",
    "evolution": "EvolutionOracle",
    "tpe": "Optuna TPE",
    "random": "RandomSearch",
    "bayesian": "BayesianOptimization",
}


def _make_oracle(name: str, max_trials: int, seed: int, crash_safe: bool = False):
    import keras_tuner

    from keras_mnas.search import EvolutionOracle, MnasOracle

    objective = keras_tuner.Objective("reward", "max")
    if name == "mnas":
        # MnasOracle writes its state atomically already.
        return MnasOracle(objective=objective, max_trials=max_trials, seed=seed)
    if name == "evolution":
        return EvolutionOracle(
            objective=objective, max_trials=max_trials, seed=seed, population_size=50, sample_size=10
        )
    if name == "random":
        oracle_class = keras_tuner.oracles.RandomSearchOracle
    elif name == "bayesian":
        oracle_class = keras_tuner.oracles.BayesianOptimizationOracle
    else:
        raise ValueError(f"Unknown oracle {name!r}; expected one of {ORACLES}.")
    if crash_safe:
        oracle_class = _with_atomic_saves(oracle_class)
    return oracle_class(objective=objective, max_trials=max_trials, seed=seed)


def _with_atomic_saves(oracle_class):
    """`oracle_class` writing oracle.json and trial.json atomically, so a killed search reloads.

    KerasTuner truncates then writes; a search killed in between never loads again. Only the resumable
    searches of (b) use this: the overhead of (a) is timed with KerasTuner's own writes.
    """
    from keras_mnas.search.durable import AtomicSaves

    return type(f"Atomic{oracle_class.__name__}", (AtomicSaves, oracle_class), {})


def run_one(job: tuple[str, int, int], cache: str | None = None) -> dict:
    """One search: an oracle, a seed, a budget of distinct architectures. Returns rewards in trial order.

    With a `cache` directory the search keeps its KerasTuner project under `cache/unfinished/` and a run
    that is stopped part-way (Bayesian optimisation takes hours) goes on from where it stood when run
    again, as a KerasTuner search does with `overwrite=False`. Without one it runs in a temporary
    directory, as (a) needs for timing.

    Each trial records `oracle_seconds`: the wall time from the end of the previous trial (or from the
    start of this process's search) to the start of this one, i.e. the oracle's proposal and update and
    KerasTuner's bookkeeping; and `oracle_cpu_seconds`, the CPU time this process spent meanwhile, which
    other jobs on the cores and pauses do not inflate. They show how the cost of a proposal grows with the
    trials already made.
    """
    name, seed, budget = job
    if name == "tpe":
        return run_tpe(seed, budget)
    import keras_tuner
    from nasbench201 import OPS, NB201Table, tokens_to_index

    table = NB201Table()
    rewards = table.rewards()
    edges = [f"edge{i}" for i in range(6)]

    def declare(hp):
        for edge in edges:
            hp.Choice(edge, list(OPS))

    def index_of(hyperparameters) -> int:
        return tokens_to_index([OPS.index(hyperparameters[e]) for e in edges])

    class TableTuner(keras_tuner.Tuner):
        """Looks the reward up in the table: the trial costs nothing, so what is timed is the oracle."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # A reloaded search: its evaluations so far, in the order they ended.
            ended = [self.oracle.trials[t] for t in self.oracle.end_order]
            ended = [t for t in ended if t.status == "COMPLETED"]
            self.history: list[tuple[int, float]] = [
                (index_of(t.hyperparameters), t.metrics.get_last_value("reward")) for t in ended
            ]
            self.oracle_seconds: list[float] = [t.metrics.get_last_value("oracle_seconds") for t in ended]
            # None for trials of a search started before CPU times were recorded.
            cpu = "oracle_cpu_seconds"
            self.oracle_cpu_seconds: list[float | None] = [
                t.metrics.get_last_value(cpu) if t.metrics.exists(cpu) else None for t in ended
            ]
            self.lookup_seconds = 0.0
            self.mark = time.perf_counter()
            self.cpu_mark = time.process_time()

        def run_trial(self, trial, *args, **kwargs):
            start = time.perf_counter()
            oracle_seconds = start - self.mark
            oracle_cpu_seconds = time.process_time() - self.cpu_mark
            index = index_of(trial.hyperparameters)
            reward = float(rewards[index])
            self.history.append((index, reward))
            self.oracle_seconds.append(oracle_seconds)
            self.oracle_cpu_seconds.append(oracle_cpu_seconds)
            self.lookup_seconds += time.perf_counter() - start
            self.mark = time.perf_counter()
            self.cpu_mark = time.process_time()
            return {
                "reward": reward,
                "oracle_seconds": oracle_seconds,
                "oracle_cpu_seconds": oracle_cpu_seconds,
            }

    # Random search and MnasOracle never evaluate an architecture twice; Bayesian optimisation may, so it gets
    # room for repeats and is cut at the budget of distinct architectures.
    max_trials = budget if name != "bayesian" else 2 * budget
    with contextlib.ExitStack() as stack:
        if cache is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory())
        else:
            directory = _unfinished_dir(cache, name, seed, budget)
            stack.enter_context(_project_lock(directory))
        tuner = TableTuner(
            oracle=_make_oracle(name, max_trials, seed, crash_safe=cache is not None),
            hypermodel=declare,
            directory=directory,
            project_name="nb201",
            overwrite=cache is None,
        )
        tuner.oracle.verbose = 0  # no per-trial tables: thousands of trials
        start = time.perf_counter()
        distinct = {index for index, _ in tuner.history}

        original = tuner.run_trial

        def run_trial(trial, *args, **kwargs):
            result = original(trial, *args, **kwargs)
            distinct.add(tuner.history[-1][0])
            if len(distinct) >= budget:
                tuner.oracle.max_trials = len(tuner.oracle.trials)  # stop after this trial
            return result

        tuner.run_trial = run_trial
        resumed = len(tuner.history)
        if len(distinct) < budget:
            tuner.search(verbose=0)
        elapsed = time.perf_counter() - start
        trials = len(tuner.history) - resumed
    return {
        "oracle": name,
        "seed": seed,
        "budget": budget,
        "history": tuner.history,
        "oracle_seconds": tuner.oracle_seconds,
        "oracle_cpu_seconds": tuner.oracle_cpu_seconds,
        # This process's trials only: a resumed search's earlier runs are in `oracle_seconds`.
        "seconds_per_trial": (elapsed - tuner.lookup_seconds) / max(trials, 1),
        "numerical_threads": _numerical_threads(),
    }


def run_tpe(seed: int, budget: int) -> dict:
    """One search of Optuna's TPE sampler, by ask-and-tell on the table: the same result as `run_one`'s.

    TPE may propose an architecture it has seen: it is told the known reward again, and the proposal counts
    towards the `2 * budget` proposals a search gets but not towards the distinct architectures. There is no
    project on disk (Optuna's in-memory storage), so `--cache` keeps only finished searches.
    """
    import optuna
    from nasbench201 import OPS, NB201Table, tokens_to_index

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rewards = NB201Table().rewards()
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed % 2**32)
    )
    history: list[tuple[int, float]] = []
    cpu_seconds: list[float] = []
    wall_seconds: list[float] = []
    distinct: set[int] = set()
    start = time.perf_counter()
    while len(distinct) < budget and len(history) < 2 * budget:
        wall, cpu = time.perf_counter(), time.process_time()
        trial = study.ask()
        tokens = [OPS.index(trial.suggest_categorical(f"edge{i}", list(OPS))) for i in range(6)]
        index = tokens_to_index(tokens)
        reward = float(rewards[index])
        study.tell(trial, reward)
        cpu_seconds.append(time.process_time() - cpu)
        wall_seconds.append(time.perf_counter() - wall)
        history.append((index, reward))
        distinct.add(index)
    return {
        "oracle": "tpe",
        "seed": seed,
        "budget": budget,
        "history": history,
        "oracle_seconds": wall_seconds,
        "oracle_cpu_seconds": cpu_seconds,
        "seconds_per_trial": (time.perf_counter() - start) / max(len(history), 1),
        "numerical_threads": _numerical_threads(),
    }


def _numerical_threads() -> int | None:
    """The most threads any of this process's numerical libraries (BLAS, OpenMP) may use, if known."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [pool["num_threads"] for pool in threadpool_info()]
    return max(counts) if counts else None


def _unfinished_dir(cache: str, name: str, seed: int, budget: int) -> str:
    """Where a search not yet cached as finished keeps its KerasTuner project."""
    return os.path.join(cache, "unfinished", f"{name}-seed{seed}-budget{budget}")


def _lock_file(directory: str) -> str:
    """The lock file of an unfinished project, beside it: a lock inside would go with a cleared project."""
    return directory + ".lock"


@contextlib.contextmanager
def _project_lock(directory: str):
    """Holds an exclusive lock on an unfinished project while the `with` block runs.

    Two runs of the same search with the same cache would write over each other's KerasTuner project, so the
    second one stops at once, naming the first. The lock goes with the process that holds it, killed or not.
    """
    import fcntl

    os.makedirs(os.path.dirname(directory), exist_ok=True)
    with open(_lock_file(directory), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise RuntimeError(
                f"{directory} is in use by another run of this benchmark (process {holder}); wait for it to "
                "end or stop it, and run again."
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield  # closing the file releases the lock


def _exit_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Pool initializer: the worker exits when the process that started it is gone.

    A pool's workers outlive a main process killed with SIGKILL (nothing tells them), and one would go on with
    its search for hours, unseen. A daemon thread notices the worker has been reparented and ends it.
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _remove_unfinished(cache: str | None, job: tuple[str, int, int]) -> None:
    if cache is not None:
        directory = _unfinished_dir(cache, *job)
        shutil.rmtree(directory, True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(_lock_file(directory))


def _cache_path(cache: str | None, name: str, seed: int, budget: int) -> str | None:
    return None if cache is None else os.path.join(cache, f"{name}-seed{seed}-budget{budget}.json")


def _load_cached(cache: str | None, job: tuple[str, int, int]) -> dict | None:
    path = _cache_path(cache, *job)
    if path is None or not os.path.exists(path):
        return None
    from keras_mnas.utils.io import read_json

    result = read_json(path)
    result["history"] = [tuple(item) for item in result["history"]]
    return result


def _store_cached(cache: str | None, result: dict) -> None:
    path = _cache_path(cache, result["oracle"], result["seed"], result["budget"])
    if path is not None:
        from keras_mnas.utils.io import atomic_write_json

        os.makedirs(cache, exist_ok=True)
        atomic_write_json(path, result)


def best_by_budget(history: list[tuple[int, float]], budgets) -> dict[int, float]:
    """Best reward among the first `budget` distinct architectures of a search, for each budget reached."""
    seen: set[int] = set()
    best = -np.inf
    out = {}
    budgets = sorted(budgets)
    for index, reward in history:
        if index in seen:
            continue
        seen.add(index)
        best = max(best, reward)
        for budget in budgets:
            if len(seen) == budget:
                out[budget] = best
    return out


def best_at_budget(result: dict, budget: int) -> tuple[float, bool] | None:
    """A search's best reward after `budget` distinct architectures, and whether it was capped.

    Only the first `2 * budget` proposals count, the most a search run for `budget` gets (Bayesian
    optimisation re-proposes what it knows). No oracle here reads its trial limit when it proposes, so those
    are the proposals such a search makes: one search run for 500 gives the 50, 100 and 200 columns too. A
    search that had not reached `budget` distinct architectures by then is counted with the best it had
    found (capped): more proposals were not giving it more. `None` when `budget` is beyond the budget the
    search was run for.
    """
    if budget > result["budget"]:
        return None
    proposals = result["history"][: 2 * budget]
    reached = best_by_budget(proposals, [budget])
    if budget in reached:
        return reached[budget], False
    return max(reward for _, reward in proposals), True


PROPOSAL_SPANS = ((1, 50), (51, 100), (101, 200), (201, 500), (501, 1000))


def print_proposal_cost(results: list[dict], oracles, labels: dict[str, str]) -> None:
    """How a proposal's cost grows with the trials before it: median over seeds of each span's median.

    Counts the CPU seconds each trial recorded (`oracle_cpu_seconds`; searches run before they were
    recorded have none). Medians, because a few trials hold more than the proposal: the tuner's start-up
    in the first trial of each run of a resumed search.
    """
    timed = {
        name: [
            np.array([np.nan if v is None else v for v in r["oracle_cpu_seconds"]], dtype=float)
            for r in results
            if r["oracle"] == name and r.get("oracle_cpu_seconds")
        ]
        for name in oracles
    }
    timed = {name: runs for name, runs in timed.items() if runs}
    if not timed:
        return
    longest = max(len(seconds) for runs in timed.values() for seconds in runs)
    spans = [(first, last) for first, last in PROPOSAL_SPANS if first <= longest]
    rows = []
    for name, runs in timed.items():
        cells = []
        for first, last in spans:
            in_span = [seconds[first - 1 : last] for seconds in runs]
            medians = [float(np.nanmedian(s)) for s in in_span if np.isfinite(s).any()]
            cells.append(f"{np.median(medians):.3f} ({len(medians)})" if medians else "n/a")
        rows.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    timed_results = [r for r in results if r["oracle"] in timed and r.get("oracle_cpu_seconds")]
    threads = sorted({str(r.get("numerical_threads") or "unrecorded") for r in timed_results})
    print(
        "\n(c) CPU seconds per proposal (oracle + KerasTuner bookkeeping) by trial number: median over the "
        "searches that got that far (how many) of each one's median; numerical libraries' threads per "
        f"search: {', '.join(threads)}"
    )
    print("| oracle | " + " | ".join(f"trials {a}-{b}" for a, b in spans) + " |")
    print("|---|" + "---|" * len(spans))
    print("\n".join(rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--seed-stride",
        type=int,
        default=100_003,
        help="search i gets seed (first_seed + i) x stride. KerasTuner's oracles draw the k-th random value "
        "of a search seeded s with seed s + k, so searches seeded 10, 11, 12 replay one another's draws "
        "shifted by one value; 100,003 apart they share none (1 reproduces consecutive seeds)",
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=10,
        help="first seed (default 10: MnasOracle's defaults were chosen on seeds 0-9, so those would flatter "
        "it; and KerasTuner's own oracles turn seed 0 into a random seed)",
    )
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument(
        "--oracles", nargs="+", default=[o for o in ORACLES if o != "bayesian"], choices=ORACLES
    )
    parser.add_argument("--overhead-trials", type=int, default=200)
    parser.add_argument(
        "--bayesian-budget",
        type=int,
        default=100,
        help="largest budget for BayesianOptimization, whose Gaussian-process fits make every trial slower "
        "than the last (minutes per seed at 100 trials on 2 cores)",
    )
    parser.add_argument("--bayesian-seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument(
        "--cache",
        help="directory keeping each finished search as JSON, reused by later runs with the same oracle, "
        "seed and budget, and each unfinished one as a KerasTuner project that a later run resumes: slow "
        "oracles can be run a few seeds, or a few hours, at a time",
    )
    args = parser.parse_args(argv)

    from nasbench201 import NB201Table

    table = NB201Table()
    rewards = table.rewards()
    table_best = float(np.max(rewards))
    budget = max(args.budgets)

    started = time.time()
    # (a) overhead, both oracles in this run, one after the other on an otherwise idle pool.
    overhead = {
        name: run_one((name, 0, args.overhead_trials))["seconds_per_trial"] for name in ("mnas", "random")
    }

    jobs = [
        (name, seed, min(budget, args.bayesian_budget) if name == "bayesian" else budget)
        for name in args.oracles
        for seed in (
            args.seed_stride * i
            for i in range(
                args.first_seed, args.first_seed + (args.bayesian_seeds if name == "bayesian" else args.seeds)
            )
        )
    ]
    results = [cached for cached in (_load_cached(args.cache, job) for job in jobs) if cached is not None]
    done = {(r["oracle"], r["seed"]) for r in results}
    for job in jobs:
        if (job[0], job[1]) in done:
            _remove_unfinished(args.cache, job)  # left behind by a run stopped just after caching the result
    jobs = [job for job in jobs if (job[0], job[1]) not in done]
    if results:
        print(f"  {len(results)} searches reused from {args.cache}", file=sys.stderr)
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, str(threads))  # inherited by the spawned workers; yours win
    with multiprocessing.get_context("spawn").Pool(
        args.workers, initializer=_exit_with_parent, initargs=(os.getpid(),)
    ) as pool:
        for result in pool.imap_unordered(functools.partial(run_one, cache=args.cache), jobs):
            results.append(result)
            _store_cached(args.cache, result)
            _remove_unfinished(args.cache, (result["oracle"], result["seed"], result["budget"]))
            print(
                f"  {result['oracle']} seed {result['seed']} done ({time.time() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    print(f"(a) Overhead per trial over {args.overhead_trials} trials (oracle + KerasTuner bookkeeping):")
    print("| oracle | ms per trial |\n|---|---|")
    for name, seconds in overhead.items():
        label = "MnasOracle" if name == "mnas" else "RandomSearch"
        print(f"| {label} | {1000 * seconds:.1f} |")
    print()
    print(
        f"(b) NAS-Bench-201, soft reward, T = {table.median_latency_ms:.2f} ms: median over seeds of the "
        "best reward found (fraction of the table's best), its rank among 15,625 [interquartile range of the "
        "ranks], and in how many seeds it was the table's best"
    )
    header = "| oracle | seeds | " + " | ".join(f"{b} archs" for b in sorted(args.budgets)) + " |"
    print(header + "\n|---|---|" + "---|" * len(args.budgets))
    labels = LABELS
    any_capped = False
    for name in args.oracles:
        cells = []
        for b in sorted(args.budgets):
            found = [best_at_budget(r, b) for r in results if r["oracle"] == name]
            found = [f for f in found if f is not None]
            if not found:
                cells.append("n/a")
                continue
            values = [value for value, _ in found]
            capped = sum(was_capped for _, was_capped in found)
            median = float(np.median(values))
            ranks = [NB201Table.rank(v, rewards) for v in values]
            any_capped = any_capped or capped > 0
            note = f"; {capped} capped" if capped else ""
            q1, q3 = np.percentile(ranks, [25, 75])
            best = sum(rank == 1 for rank in ranks)
            cells.append(
                f"{median / table_best:.4f} (rank {np.median(ranks):g} [{q1:g}-{q3:g}]; "
                f"best {best}/{len(ranks)}{note})"
            )
        seeds = sorted(r["seed"] for r in results if r["oracle"] == name)
        seed_range = f"{len(seeds)} ({', '.join(map(str, seeds))})" if seeds else "0"
        print(f"| {labels[name]} | {seed_range} | " + " | ".join(cells) + " |")
    if any_capped:
        print(
            "(capped: searches that had not evaluated that many distinct architectures after twice as many "
            "proposals, the most a search run for that budget gets; counted with the best they had found.)"
        )
    print_proposal_cost(results, args.oracles, labels)
    print(f"\nTotal {time.time() - started:.0f} s on {os.cpu_count()} cores.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"overhead": overhead, "results": results}, f)


if __name__ == "__main__":
    main()
