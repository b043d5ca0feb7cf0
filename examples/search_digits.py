"""MnasNet's platform-aware search on real data, on a laptop: scikit-learn's handwritten digits.

    python examples/search_digits.py [--trials 12] [--epochs 3] [--directory runs]

The 1,797 8x8 digits that ship with scikit-learn (no download) are upscaled to 32x32. The search space is
MnasNet's over the first five blocks of MobileNetV2's skeleton (at 32x32 the last two would shrink the maps
to 1x1), width x0.35: four searched blocks of 432 choices each. Every candidate is converted to TFLite and
timed on this CPU, trained for a few epochs, and rewarded with MnasNet's soft reward against a target
latency: the latency of the MobileNetV2-like skeleton measured here first, so the search looks for models
faster than it at equal accuracy.

It prints the Pareto front and the best architecture, writes TensorBoard logs (`tensorboard --logdir
runs/digits/tensorboard`), and exports the best model as `.keras` and `.tflite`. Run it again with the same
arguments to resume an interrupted search.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from sklearn.datasets import load_digits

from keras_mnas.latency import HostLatency
from keras_mnas.search import MOBILENET_V2_SKELETON, MnasSearchSpace, MnasTuner


def load_data(seed: int = 0):
    """Digits as 32x32x1 images in [0, 1], split 1,437 / 360 (train / validation)."""
    digits = load_digits()
    images = digits.images.astype("float32") / 16.0
    images = np.kron(images, np.ones((4, 4), "float32"))[..., None]  # 8x8 -> 32x32, nearest neighbour
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order], digits.target[order]
    split = int(0.8 * len(images))
    return (images[:split], labels[:split]), (images[split:], labels[split:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--directory", default="runs")
    parser.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    (x_train, y_train), (x_val, y_val) = load_data(args.seed)
    space = MnasSearchSpace(
        MOBILENET_V2_SKELETON[:5],
        input_shape=(32, 32, 1),
        classes=10,
        depth_multiplier=0.35,
        head_filters=256,
    )
    latency = HostLatency(runs=30, warmup_runs=5)

    started = time.time()
    skeleton = space.build(space.decode(space.default_values()))
    target_ms = latency.measure(skeleton).median_ms
    print(f"Target latency: {target_ms:.3f} ms, the MobileNetV2-like skeleton on this CPU.")

    tuner = MnasTuner(
        space=space,
        latency=latency,
        target_latency_ms=round(target_ms, 4),
        max_trials=args.trials,
        controller={"minibatch_size": 4},  # a short search: learn from every 4 trials
        seed=args.seed,
        directory=args.directory,
        project_name="digits",
        overwrite=args.overwrite,
    )
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
    paths = tuner.export_best(os.path.join(args.directory, "digits", "best"))
    print("\nExported: " + ", ".join(paths.values()))


if __name__ == "__main__":
    main()
