"""MnasNet's platform-aware search on real data, on a laptop: scikit-learn's handwritten digits.

    python examples/search_digits.py [--trials 12] [--epochs 3] [--directory runs]

The 1,797 8x8 digits that ship with scikit-learn (no download) are upscaled to 32x32. The search space is
MnasNet's over the first five blocks of MobileNetV2's skeleton (at 32x32 the last two would shrink the maps
to 1x1), width x0.35: four searched blocks of 432 choices each. Every candidate is converted to TFLite and
timed on this CPU, trained for a few epochs, and rewarded with MnasNet's soft reward against a target
latency: the latency of the MobileNetV2-like skeleton measured here first, so the search looks for models
faster than it at equal accuracy.

The target is measured once and kept in the project directory (`runs/digits/target_latency.json`): a
rerun reads it back rather than timing the skeleton again, whose figure moves by a few per cent between
measurements, so that the rerun is the same search. Run it again with the same arguments to resume an
interrupted search (finished trials are not retrained); `--overwrite` starts afresh and measures the target
again; `--target-ms` sets it yourself.

It prints the Pareto front and the best architecture, writes TensorBoard logs (`tensorboard --logdir
runs/digits/tensorboard`), and exports the best model as `.keras`, `.tflite` and `.arch.json` (the
arguments of `keras_mnas.build_model` that rebuild it).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from sklearn.datasets import load_digits

from keras_mnas.utils.io import atomic_write_json
from keras_mnas.utils.quiet import quiet_tensorflow_startup


def load_data(seed: int = 0):
    """Digits as 32x32x1 images in [0, 1], split 1,437 / 360 (train / validation)."""
    digits = load_digits()
    images = digits.images.astype("float32") / 16.0
    images = np.kron(images, np.ones((4, 4), "float32"))[..., None]  # 8x8 -> 32x32, nearest neighbour
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order], digits.target[order]
    split = int(0.8 * len(images))
    return (images[:split], labels[:split]), (images[split:], labels[split:])


def target_latency(latency, space, path, overwrite: bool) -> float:
    """The skeleton's latency: measured once, then read back from `path` on every rerun."""
    if not overwrite and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            target_ms = json.load(f)["target_latency_ms"]
        print(f"Target latency: {target_ms:.4g} ms, as measured when this search began ({path}).", flush=True)
        return target_ms
    print("Measuring the target latency: the MobileNetV2-like skeleton on this CPU...", flush=True)
    skeleton = space.build(space.decode(space.default_values()))
    result = latency.measure(skeleton)
    target_ms = round(result.median_ms, 4)
    print(f"Target latency: {target_ms:.4g} ms (spread {result.spread:.1%}).", flush=True)
    return target_ms


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="architectures to train (default 12)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per candidate (default 3)")
    parser.add_argument("--directory", default="runs", help="where the search is saved (default runs)")
    parser.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    parser.add_argument("--target-ms", type=float, help="the target latency (default: the skeleton's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.time()
    quiet_tensorflow_startup()  # before Keras imports TensorFlow: no oneDNN, CUDA or cuInit lines
    import keras

    from keras_mnas.latency import HostLatency
    from keras_mnas.search import MOBILENET_V2_SKELETON, MnasSearchSpace, MnasTuner

    (x_train, y_train), (x_val, y_val) = load_data(args.seed)
    space = MnasSearchSpace(
        MOBILENET_V2_SKELETON[:5],
        input_shape=(32, 32, 1),
        classes=10,
        depth_multiplier=0.35,
        head_filters=256,
    )
    # These candidates run for tens of microseconds: half a second of runs in each of three fresh
    # interpreters makes their figures repeat to a few per cent on an idle 2-core machine.
    latency = HostLatency(runs=100, warmup_runs=20, min_seconds=0.5, repeats=3)
    project = os.path.join(args.directory, "digits")
    target_file = os.path.join(project, "target_latency.json")
    if args.target_ms is not None:
        target_ms = args.target_ms
    else:
        target_ms = target_latency(latency, space, target_file, args.overwrite)

    tuner = MnasTuner(
        space=space,
        latency=latency,
        target_latency_ms=target_ms,
        max_trials=args.trials,
        controller={"minibatch_size": 4},  # a short search: learn from every 4 trials
        seed=args.seed,
        directory=args.directory,
        project_name="digits",
        overwrite=args.overwrite,
    )
    if args.target_ms is None and not os.path.isfile(target_file):
        # Written after the tuner, which clears the project directory when overwriting.
        atomic_write_json(target_file, {"target_latency_ms": target_ms})
    print(f"Searching {args.trials} architectures, {args.epochs} epoch(s) each...", flush=True)
    tuner.search(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=32,
        verbose=0,
        callbacks=[keras.callbacks.TensorBoard(os.path.join(args.directory, "digits", "tensorboard"))],
    )

    print(f"\nSearch finished in {time.time() - started:.0f} s.\n")
    tuner.results_summary(3)  # the 3 best trials and the Pareto front, as `keras-mnas results` prints them
    best_trial = tuner.oracle.get_best_trials(1)[0]
    best = tuner.best_architectures()[0]
    print(
        f"\nBest architecture: trial {best_trial.trial_id}, reward {best_trial.score:.4f} (build it at any "
        "size with keras_mnas.applications.MnasNet):"
    )
    for block in best.block_strings:
        print("  " + block)
    print("\nExporting the best model...", flush=True)
    paths = tuner.export_best(os.path.join(args.directory, "digits", "best"))
    print("\nExported: " + ", ".join(paths.values()))


if __name__ == "__main__":
    main()
