"""Does memory stay flat over a long search? Resident memory after every trial of a real MnasTuner search.

    python benchmarks/memory.py [--trials 50] [--epochs 1] [--modes cleared uncleared]

Each trial builds a candidate of MnasNet's space (the first three blocks of MobileNetV2's skeleton at 16x16,
scikit-learn's digits), converts it to TFLite and times it on this CPU, trains it for an epoch and scores it:
everything a search does. The process's resident set size (RSS) is read after every trial.

Three modes, each in a fresh process:

- `shipped`: MnasTuner as shipped. Before building each candidate it clears the Keras session and releases
  the training graphs TensorFlow keeps for every trained model (`keras_mnas/utils/tf_memory.py`).
- `clear-session-only`: the Keras session is cleared but TensorFlow's graphs are kept, as in a plain
  KerasTuner search with `keras.backend.clear_session()` between trials.
- `nothing-released`: neither, to show what each step buys.

Prints one markdown table: RSS after the first trial, after 10, 25 and the last trial, and the growth per
trial fitted over the trials after the 10th (least squares, MB per trial). Flat means a growth close to 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

MODES = ("shipped", "clear-session-only", "nothing-released")
LABELS = {
    "shipped": "as shipped: session cleared, training graphs released",
    "clear-session-only": "Keras session cleared only",
    "nothing-released": "nothing released",
}


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux `/proc`; peak RSS elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_search(mode: str, trials: int, epochs: int, seed: int) -> list[float]:
    """One search in this process; returns the RSS in MB after each trial."""
    import keras
    from sklearn.datasets import load_digits

    import keras_mnas.search.tuner as tuner_module
    from keras_mnas.latency import HostLatency
    from keras_mnas.search import MOBILENET_V2_SKELETON, MnasSearchSpace, MnasTuner

    if mode in ("clear-session-only", "nothing-released"):
        tuner_module.forget_custom_gradients = lambda *args, **kwargs: 0
    if mode == "nothing-released":
        keras.backend.clear_session = lambda *args, **kwargs: None

    digits = load_digits()
    images = np.kron(digits.images.astype("float32") / 16.0, np.ones((2, 2), "float32"))[..., None]
    labels = digits.target
    space = MnasSearchSpace(
        MOBILENET_V2_SKELETON[:3], input_shape=(16, 16, 1), classes=10, depth_multiplier=0.35, head_filters=64
    )
    samples: list[float] = []

    class RecordingTuner(MnasTuner):
        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            samples.append(rss_mb())
            print(f"  {mode}: trial {len(samples)} RSS {samples[-1]:.0f} MB", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as directory:
        tuner = RecordingTuner(
            space=space,
            latency=HostLatency(runs=10, warmup_runs=2),
            target_latency_ms=0.05,
            max_trials=trials,
            seed=seed,
            directory=directory,
            project_name="memory",
        )
        tuner.search(
            images[:1400],
            labels[:1400],
            validation_data=(images[1400:], labels[1400:]),
            epochs=epochs,
            batch_size=64,
            verbose=0,
        )
    return samples


def growth_per_trial(samples: list[float], skip: int = 10) -> float:
    """Least-squares slope of RSS against trial number over the trials after `skip` (MB per trial)."""
    tail = np.asarray(samples[skip:], dtype="float64")
    if len(tail) < 2:
        return float("nan")
    return float(np.polyfit(np.arange(len(tail)), tail, 1)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trials < 12:
        parser.error(
            f"--trials must be at least 11 to fit the growth after the 10th trial; received {args.trials}."
        )

    if args.child:  # one search in this fresh process; the samples go to stdout as JSON
        print(json.dumps(run_search(args.child, args.trials, args.epochs, args.seed)))
        return

    rows = []
    for mode in args.modes:
        started = time.time()
        output = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--trials",
                str(args.trials),
                "--epochs",
                str(args.epochs),
                "--seed",
                str(args.seed),
            ],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        samples = json.loads(output.strip().splitlines()[-1])
        if len(samples) != args.trials:
            raise RuntimeError(f"{mode}: expected {args.trials} trials, recorded {len(samples)}.")
        rows.append((mode, samples, time.time() - started))

    print(
        f"RSS (MB) over a {args.trials}-trial MnasTuner search ({args.epochs} epoch per trial), "
        f"{os.cpu_count()} cores:"
    )
    print(
        "| between trials | after trial 1 | after 10 | after 25 | after last "
        "| growth after the 10th (MB/trial) "
        "| minutes |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode, samples, seconds in rows:
        label = LABELS[mode]
        after_25 = f"{samples[24]:.0f}" if len(samples) >= 25 else "n/a"
        print(
            f"| {label} | {samples[0]:.0f} | {samples[9]:.0f} | {after_25} | {samples[-1]:.0f} | "
            f"{growth_per_trial(samples):+.2f} | {seconds / 60:.1f} |"
        )


if __name__ == "__main__":
    main()
