"""One-shot search on digits: rank agreement of inherited weights, and candidates per CPU-minute.

    python benchmarks/one_shot.py [--architectures 30] [--supernet-steps 600] [--epochs 6] [--noise 0.6]

Data: scikit-learn's bundled 8x8 digits, upsampled to 16x16, with Gaussian noise of `--noise` (in units of
the pixel range) added to every image so that accuracies do not saturate near 100% and the candidates can be
told apart. The space: three searched blocks over a small skeleton (every op kind, kernels 3 and 5, SE, every
skip, three widths, layer deltas 0 and +1).

1. Trains the supernet (`train_supernet`, TuNAS's warm-up), timed in CPU seconds of this process.
2. Rank agreement: `--architectures` random candidates, each scored with inherited weights through the
   supernet (`PathScorer`, batch-norm statistics per `--bn`) and trained stand-alone from scratch for
   `--epochs` epochs; Kendall's tau between the two accuracies (`kendall_tau`).
3. Cost: candidates evaluated per CPU-minute by the one-shot search (supernet training shared over every
   candidate it scores, plus each candidate's seconds) against per-candidate training (the mean CPU time of
   one stand-alone training above, which is what MnasTuner spends per candidate), at the same budget: the
   CPU time the one-shot search took to score `--search-candidates` candidates. Both searches' best reward
   (soft MnasNet reward, latency in mult-adds against the median candidate's) and their winners' stand-alone
   accuracy are printed.

The last two lines state the headline figures in words.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from keras_mnas.search.one_shot import BN_METHODS, PathScorer, train_supernet
from keras_mnas.search.proxy import kendall_tau
from keras_mnas.search.reward import MnasReward
from keras_mnas.search.space import MnasSearchSpace
from keras_mnas.search.supernet import Supernet


def digits(noise: float, seed: int = 0):
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.kron(data.images / 16.0, np.ones((2, 2)))[..., None].astype("float32")
    rng = np.random.default_rng(seed)
    images = images + rng.normal(0, noise, images.shape).astype("float32")
    order = rng.permutation(len(images))
    images, labels = images[order], data.target[order]
    return (images[:1200], labels[:1200]), (images[1200:], labels[1200:])


def space() -> MnasSearchSpace:
    return MnasSearchSpace(
        ((1, 8, 1, 1), (6, 16, 2, 2), (6, 24, 2, 2), (6, 32, 1, 1)),
        fixed_blocks={0: "r1_k3_s11_e1_i8_o8_noskip"},
        layer_deltas=(0, 1),
        input_shape=(16, 16, 1),
        classes=10,
        stem_filters=8,
        head_filters=64,
        dropout_rate=0.0,
    )


def train_alone(search_space, values, train, valid, epochs: int) -> tuple[float, float]:
    """Stand-alone accuracy after `epochs` epochs from scratch, and the CPU seconds it took.

    Adam with a cosine decay to 0, so that the accuracy is read at the end of a schedule, not mid-way at the
    full rate.
    """
    keras.backend.clear_session()
    start = time.process_time()
    model = search_space.build(search_space.architecture(values), bn_momentum=0.9)
    steps = epochs * -(-len(train[0]) // 64)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(*train, epochs=epochs, batch_size=64, verbose=0)
    accuracy = float(model.evaluate(*valid, verbose=0, return_dict=True)["accuracy"])
    return accuracy, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architectures", type=int, default=30)
    parser.add_argument("--search-candidates", type=int, default=200)
    parser.add_argument("--supernet-steps", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--noise", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bn", choices=BN_METHODS, default="reestimate")
    args = parser.parse_args()

    search_space = space()
    train, valid = digits(args.noise, args.seed)
    supernet = Supernet(search_space, seed=args.seed)
    start = time.process_time()
    # train_supernet's default optimizer, TuNAS's: Adam (which the stand-alone candidates use) leaves the
    # supernet on random paths at chance level for hundreds of steps.
    train_supernet(supernet, *train, steps=args.supernet_steps, batch_size=64, seed=args.seed)
    supernet_cpu = time.process_time() - start
    print(f"supernet: {args.supernet_steps} steps in {supernet_cpu / 60:.1f} CPU-minutes")

    # One compiled function scores every candidate; tracing it, once, is part of the one-shot search's cost.
    begin = time.process_time()
    scorer = PathScorer(supernet, *valid, calibration_x=train[0], calibration_batches=4, bn=args.bn)
    scorer.score(search_space.default_values())
    trace_cpu = time.process_time() - begin

    def inherited(values) -> tuple[float, float]:
        begin = time.process_time()
        accuracy = scorer.score(values).accuracy
        return accuracy, time.process_time() - begin

    candidates = search_space.sample_values(args.architectures, seed=args.seed + 1)
    print("| # | architecture | inherited acc | stand-alone acc | MMACs |")
    print("|---|---|---|---|---|")
    cheap, full, train_cpu = [], [], []
    for index, values in enumerate(candidates):
        accuracy, _ = inherited(values)
        alone, cpu = train_alone(search_space, values, train, valid, args.epochs)
        cheap.append(accuracy)
        full.append(alone)
        train_cpu.append(cpu)
        arch = search_space.architecture(values)
        macs = search_space.cost(arch).macs / 1e6
        print(
            f"| {index + 1} | {' '.join(arch.block_strings[1:])} | {accuracy:.3f} | {alone:.3f} "
            f"| {macs:.2f} |"
        )
    tau = kendall_tau(cheap, full)

    # The search: latency in mult-adds, target the median of the sampled candidates'.
    pool = search_space.sample_values(args.search_candidates, seed=args.seed + 2)
    macs = {id(v): search_space.cost(search_space.architecture(v)).macs / 1e6 for v in pool}
    reward = MnasReward.soft(float(np.median(list(macs.values()))))
    eval_cpu, scored = 0.0, []
    for values in pool:
        accuracy, cpu = inherited(values)
        eval_cpu += cpu
        scored.append((reward(accuracy, macs[id(values)]), values))
    one_shot_cpu = supernet_cpu + trace_cpu + eval_cpu
    print(
        f"scoring: {eval_cpu / len(pool):.3f} CPU-seconds per candidate, after {trace_cpu:.1f} to trace the "
        "scorer once"
    )
    per_candidate_cpu = float(np.mean(train_cpu))
    budget_candidates = max(1, int(one_shot_cpu // per_candidate_cpu))
    # Per-candidate search at the same budget: the first candidates of the same pool, trained stand-alone.
    per_candidate = []
    for values in pool[:budget_candidates]:
        accuracy, _ = train_alone(search_space, values, train, valid, args.epochs)
        per_candidate.append((reward(accuracy, macs[id(values)]), accuracy, values))
    best_one_shot = max(scored, key=lambda item: item[0])[1]
    winner_accuracy, _ = train_alone(search_space, best_one_shot, train, valid, args.epochs)
    best_per_candidate = max(per_candidate, key=lambda item: item[0])
    ratio = (len(pool) / one_shot_cpu) / (1.0 / per_candidate_cpu)
    print()
    print("| search | CPU-minutes | candidates | best reward (stand-alone) | winner acc | winner MMACs |")
    print("|---|---|---|---|---|---|")
    one_shot_reward = reward(winner_accuracy, macs[id(best_one_shot)])
    print(
        f"| one-shot | {one_shot_cpu / 60:.1f} | {len(pool)} | {one_shot_reward:.3f} "
        f"| {winner_accuracy:.3f} | {macs[id(best_one_shot)]:.2f} |"
    )
    print(
        f"| per-candidate | {budget_candidates * per_candidate_cpu / 60:.1f} | {budget_candidates} | "
        f"{best_per_candidate[0]:.3f} | {best_per_candidate[1]:.3f} | {macs[id(best_per_candidate[2])]:.2f} |"
    )
    print()
    print(f"Kendall tau: {tau:.2f} over {len(candidates)} architectures")
    print(f"{ratio:.1f}x more candidates per CPU-minute than per-candidate training")


if __name__ == "__main__":
    main()
