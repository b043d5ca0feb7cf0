"""Start-up time of `keras-mnas --help` and `keras-mnas results DIR`, each in fresh processes.

    python benchmarks/cli_startup.py [--runs 5] [--trials 100] [--dir RUNS/PROJECT] [--json out.json]

Each command runs `--runs` times in a new Python process, started the way the `keras-mnas` entry point
starts (`from keras_mnas.cli import main`), and the median wall-clock time per command is printed with the
slowest run and the heavy modules the process imported. Without `--dir`, `results` reads a search project
written to a temporary directory: `--trials` completed trials of the default MnasNet search space, as
`MnasTuner` records them (JSON files only, no weights). Run it from the repository root so the checkout's
`keras_mnas` is the one imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time

# What the entry point runs, then a report of the heavy modules it imported (on stderr, after the output).
_ENTRY = (
    "import sys\n"
    "from keras_mnas.cli import main\n"
    "status = main(sys.argv[1:])\n"
    "heavy = [m for m in ('tensorflow', 'keras', 'keras_tuner', 'matplotlib') if m in sys.modules]\n"
    "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
    "sys.exit(status)\n"
)


def write_project(directory: str, trials: int, seed: int = 0) -> str:
    """Writes a search project of `trials` completed trials of the default space; returns its path."""
    from keras_mnas.search.space import MnasSearchSpace

    space = MnasSearchSpace()
    rng = random.Random(seed)
    path = os.path.join(directory, "startup")
    ids = [str(i) for i in range(trials)]
    for trial_id, values in zip(ids, space.sample_values(trials, seed=seed), strict=True):
        accuracy, latency = rng.uniform(0.5, 0.8), rng.uniform(50.0, 120.0)
        metrics = {
            name: {"direction": direction, "observations": [{"value": [value], "step": 0}]}
            for name, direction, value in (
                ("val_accuracy", "max", accuracy),
                ("latency_ms", "min", latency),
                ("params", "min", 3e6),
                ("macs", "min", 3e8),
            )
        }
        state = {
            "trial_id": trial_id,
            "hyperparameters": {"space": [], "values": values},
            "metrics": {"metrics": metrics},
            "score": accuracy * (latency / 75.0) ** -0.07,
            "best_step": 0,
            "status": "COMPLETED",
            "message": None,
        }
        os.makedirs(os.path.join(path, f"trial_{trial_id}"))
        with open(os.path.join(path, f"trial_{trial_id}", "trial.json"), "w") as f:
            json.dump(state, f)
    config = {
        "space": space.get_config(),
        "reward": {"target_latency_ms": 75.0, "alpha": -0.07, "beta": -0.07, "metric": "val_accuracy"},
        "latency": {"name": "host"},
        "quantization": "float32",
    }
    oracle = {"start_order": ids, "end_order": ids, "mnas": {"search_config": config}}
    with open(os.path.join(path, "oracle.json"), "w") as f:
        json.dump(oracle, f)
    return path


def time_command(argv: list[str], runs: int) -> dict:
    """Runs the command `runs` times in fresh processes; returns the times and imported heavy modules."""
    seconds, heavy = [], set()
    for _ in range(runs):
        start = time.perf_counter()
        process = subprocess.run(
            [sys.executable, "-c", _ENTRY, *argv], capture_output=True, text=True, timeout=300
        )
        seconds.append(time.perf_counter() - start)
        if process.returncode != 0:
            raise SystemExit(f"keras-mnas {' '.join(argv)} failed:\n{process.stderr}")
        for line in process.stderr.splitlines():
            if line.startswith("HEAVY="):
                heavy.update(m for m in line[len("HEAVY=") :].split(",") if m)
    return {
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "runs": runs,
        "heavy_imports": sorted(heavy),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per command (5)")
    parser.add_argument("--trials", type=int, default=100, help="trials of the generated project (100)")
    parser.add_argument("--dir", help="a search project to read instead of a generated one")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = args.dir or write_project(tmp, args.trials)
        figures = {
            "keras-mnas --help": time_command(["--help"], args.runs),
            "keras-mnas results DIR": time_command(["results", project], args.runs),
        }
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    print()
    print("| command | median (s) | slowest (s) | runs | TensorFlow/Keras/KerasTuner/matplotlib imported |")
    print("|---|---:|---:|---:|---|")
    for command, figure in figures.items():
        print(
            f"| `{command}` | {figure['median_s']:.2f} | {figure['max_s']:.2f} | {figure['runs']} | "
            f"{', '.join(figure['heavy_imports']) or 'none'} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
