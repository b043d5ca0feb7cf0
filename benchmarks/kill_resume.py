"""Hundreds of SIGKILLs at random instants: does the project always reload, and is every reward counted once?

    python benchmarks/kill_resume.py [--kills 300] [--modes mnas,plain] [--max-trials 30] [--work 0.005]
                                     [--max-delay SECONDS] [--time-limit 900] [--seed S]

Runs the fast search of `tests/search/_search_script.py` (no model trained; each trial is a short sleep,
so most of the time goes into sampling, saving and reloading) in child processes, and SIGKILLs each child
after a random delay: uniform between 0 and the duration of one uninterrupted search of that mode (measured
first), so kills land anywhere in a run, startup and reload included. The next child resumes the same
project with `overwrite=False`. A project that finishes starts a new one; so does a project that no longer
loads.

Two modes:

- `mnas`: MnasTuner with MnasOracle (atomic saves, reconciliation on reload). Every finished project is
  also compared with one uninterrupted search of the same seed: the same trials, rewards and controller
  state, or it is counted as a wrong resume (a reward lost or counted twice, or the controller moved).
- `plain`: unpatched `keras_tuner.RandomSearch`, which writes oracle.json, trial.json and the tuner file by
  truncate-then-write. Finished projects are checked for trials left RUNNING forever.

After each kill the project's JSON state files are parsed; an empty or torn one makes the project
unloadable, which the next child confirms (it fails while reloading). Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "search"))

import _search_script as script


class Mode:
    def __init__(self, name: str, target):
        self.name = name
        self.target = target
        self.kills = 0
        self.corrupt_after_kill = 0
        self.unloadable = 0
        self.finished = 0
        self.wrong = 0
        self.children = 0
        self.seconds = 0.0
        self.max_delay = 0.0
        self.examples: list[str] = []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=300, help="kills per mode (default 300)")
    parser.add_argument("--modes", default="mnas,plain", help="comma-separated: mnas, plain")
    parser.add_argument("--max-trials", type=int, default=30)
    parser.add_argument(
        "--max-delay",
        type=float,
        default=None,
        help="kill after uniform(0, this) seconds (default: one uninterrupted search's duration)",
    )
    parser.add_argument("--work", type=float, default=0.005, help="seconds of 'training' per trial")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds per mode, then stop early")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the projects (printed path)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="kill_resume_")
    print(f"seed {seed}; projects under {root}", flush=True)
    context = script.fork_context()
    warm_up = context.Process(target=os.getpid)  # starts the fork server (imports TensorFlow) before timing
    warm_up.start()
    warm_up.join(300)
    modes = {
        "mnas": Mode("MnasTuner + MnasOracle", script.run_search),
        "plain": Mode("keras_tuner.RandomSearch", script.run_plain_search),
    }
    chosen = [modes[name] for name in args.modes.split(",")]
    try:
        for mode in chosen:
            reference, duration = _reference(mode, context, root, args)
            mode.max_delay = args.max_delay or duration
            print(f"{mode.name}: one uninterrupted search takes {duration:.2f} s", flush=True)
            _run_mode(mode, context, root, args, rng, reference)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"Searches of {args.max_trials} trials, {args.work * 1000:g} ms of work per trial; seed {seed}.")
    print()
    print(
        "| search | kill delay | kills | kills leaving a corrupt state file | unloadable projects "
        "| finished projects | finished projects resumed wrongly | children | time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in chosen:
        rate = f" (1 in {mode.kills / mode.unloadable:.0f})" if mode.unloadable else ""
        print(
            f"| {mode.name} | U(0, {mode.max_delay:.2f} s) | {mode.kills} | {mode.corrupt_after_kill} | "
            f"{mode.unloadable}{rate} | {mode.finished} | {mode.wrong} | {mode.children} | "
            f"{mode.seconds:.0f} s |"
        )
    for mode in chosen:
        for example in mode.examples[:3]:
            print(f"\n{mode.name}: {example}")
    mnas = modes["mnas"]
    failed = mnas in chosen and (mnas.unloadable or mnas.wrong or mnas.corrupt_after_kill)
    return 1 if failed else 0


def _config(directory: str, args) -> dict:
    return {
        "directory": directory,
        "max_trials": args.max_trials,
        "work_seconds": args.work,
        "max_crashes_per_trial": 1000,  # every kill here is external, not the candidate's fault
        "log": os.path.join(directory, "log.txt"),
    }


def _reference(mode: Mode, context, root: str, args) -> tuple[dict | None, float]:
    """One uninterrupted search: its duration, and for MnasOracle what every resumed search must equal."""
    directory = os.path.join(root, f"reference_{mode.target.__name__}")
    os.makedirs(directory)
    config = _config(directory, args)
    started = time.monotonic()
    process = script.start(context, mode.target, config)
    process.join(300)
    duration = time.monotonic() - started
    script.stop(process)
    if process.exitcode != 0:
        raise RuntimeError("the uninterrupted reference search failed:\n" + script.log_tail(config["log"]))
    return (_mnas_summary(config) if mode.target is script.run_search else None), duration


def _mnas_summary(config: dict) -> dict:
    oracle = script.make_tuner(config).oracle
    state = oracle.get_state()["mnas"]
    completed = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    return {
        "trials": [
            (t.trial_id, t.status, t.hyperparameters.values, t.score)
            for t in (oracle.trials[i] for i in oracle.start_order)
        ],
        "controller": state["controller"],
        "observed": state["observed"],
        "consistent": len(set(state["observed"])) == len(state["observed"])
        and oracle.controller.num_observed == len(completed) + oracle.reused_proposals,
    }


def _plain_stuck(config: dict) -> list[str]:
    tuner = script.PlainRandomSearch(
        max_trials=config["max_trials"], seed=7, directory=config["directory"], project_name=script.PROJECT
    )
    return [t.trial_id for t in tuner.oracle.trials.values() if t.status != "COMPLETED"]


def _run_mode(mode: Mode, context, root: str, args, rng: random.Random, reference: dict | None) -> None:
    started = time.monotonic()
    project = 0
    directory = None
    print(f"\n{mode.name}: {args.kills} kills", flush=True)
    while mode.kills < args.kills and time.monotonic() - started < args.time_limit:
        if directory is None:
            project += 1
            directory = os.path.join(root, f"{mode.target.__name__}_{project:03d}")
            os.makedirs(directory)
        config = _config(directory, args)
        process = script.start(context, mode.target, config)
        mode.children += 1
        try:
            process.join(rng.uniform(0.0, mode.max_delay))
            if process.exitcode is None:
                process.kill()
                process.join(30)
                mode.kills += 1
                bad = script.corrupt_files(os.path.join(directory, script.PROJECT))
                if bad:
                    mode.corrupt_after_kill += 1
                    _confirm_unloadable(mode, context, config, bad)
                    directory = None
                if mode.kills % 25 == 0:
                    print(
                        f"  {mode.kills} kills, {mode.unloadable} unloadable, {mode.finished} finished, "
                        f"{mode.wrong} wrong, {time.monotonic() - started:.0f} s",
                        flush=True,
                    )
                continue
            if process.exitcode != 0:
                mode.unloadable += 1
                mode.examples.append(
                    f"resume failed (exit {process.exitcode}):\n" + script.log_tail(config["log"], 6)
                )
                directory = None
                continue
        finally:
            script.stop(process)
        # Finished: check the accounting, then start a new project.
        mode.finished += 1
        if mode.target is script.run_search:
            summary = _mnas_summary(config)
            same = all(summary[k] == reference[k] for k in ("trials", "controller", "observed"))
            if not (same and summary["consistent"]):
                mode.wrong += 1
                mode.examples.append(f"project {directory} differs from the uninterrupted search")
        else:
            stuck = _plain_stuck(config)
            if stuck:
                mode.wrong += 1
                mode.examples.append(f"finished with trials never completed (stuck RUNNING): {stuck}")
        directory = None
    mode.seconds = time.monotonic() - started


def _confirm_unloadable(mode: Mode, context, config: dict, bad: list[str]) -> None:
    """Runs the same script once more: a project with a corrupt state file must fail to reload."""
    process = script.start(context, mode.target, config)
    mode.children += 1
    process.join(120)
    script.stop(process)
    if process.exitcode != 0:
        mode.unloadable += 1
        last = script.log_tail(config["log"], 1).strip()
        mode.examples.append(f"corrupt after a kill: {', '.join(bad)}; rerun exit {process.exitcode}: {last}")
    else:
        mode.examples.append(f"corrupt after a kill but the rerun loaded it anyway: {', '.join(bad)}")


if __name__ == "__main__":
    sys.exit(main())
