"""One-shot search on digits: rank agreement of inherited weights, and candidates per CPU-minute.

    python benchmarks/one_shot.py [--architectures 30] [--repeats 3] [--supernet-steps 2000]
        [--no-widest-first] [--rank-set spread] [--search-candidates 1000] [--epochs 1] [--copies 24]
        [--reference-draws 8] [--learning-rate 0.01] [--noise 0.6] [--bn batch] [--calibration-batches 4]
        [--op-sampling kinds] [--workers 2] [--seed 0]

Data: scikit-learn's bundled 8x8 digits, upsampled to 16x16, with Gaussian noise of `--noise` (in units of
the pixel range) so that accuracies do not saturate near 100% and the candidates can be told apart. The
1,200 training images come `--copies` times, each copy with noise of its own, so that a training sees fresh
noise instead of learning a fixed draw by heart; the 597 validation images have one draw, on which the
searches score candidates, and `--reference-draws` more for the reference. The space: three
searched blocks over a small skeleton (every op kind, kernels 3 and 5, SE, every skip, three widths, layer
deltas 0 and +1).

1. Trains the supernet (`train_supernet`, TuNAS's warm-up) for `--supernet-steps` batches of 64, timed in
   CPU seconds of this process. Each step after warm-up trains the sampled path at its widest, then the
   path (`train_supernet`'s default; `--no-widest-first`: the path alone). Its paths train each kind of
   operation equally often (`kind_balanced_sampler`), or with `--op-sampling choices` are drawn uniformly
   over the space's choices.
2. Rank agreement: `--architectures` of the search's `--search-candidates` random candidates, spread over
   their mult-adds (`spread_by_cost`: the middle one of each of equal slices of the candidates sorted by
   mult-adds; `--rank-set first` takes the first ones), each scored with inherited weights through the
   supernet (`PathScorer`, batch-norm statistics per `--bn`; `reestimate` uses `--calibration-batches`
   batches) and trained stand-alone from scratch `--repeats` times
   (each with its own initial weights and batch order) for `--epochs` passes over the training copies (Adam
   from `--learning-rate`, cosine decay to 0), `--workers` trainings side by side in processes of one
   thread each. The reference is the mean of the repeats' accuracies on the reference draws (the validation
   images with noise drawn `--reference-draws` times, apart from the validation draw the inherited score
   uses); Kendall's tau between the inherited accuracy and the reference (`kendall_tau`). The tau between
   repeats is printed too: it says how well the reference agrees with itself, the ceiling of any cheap
   score; so are the tau of the inherited cross-entropy (the same pass's loss, lowest first) and of
   mult-adds alone, the floor a cheap score must beat.
3. Cost: candidates evaluated per CPU-minute by the one-shot search (supernet training shared over every
   candidate it scores, tracing the scorer once, and each candidate's seconds) against per-candidate
   training (the mean CPU time of one stand-alone training, what MnasTuner spends per candidate), at the
   same budget: the CPU time the one-shot search took to score its candidates. The per-candidate search
   trains the pool's first candidates once each and scores them on the validation draw (a rank-agreement
   training is reused where there is one). Both winners (the best soft MnasNet reward, latency in mult-adds
   against the pool's median) are judged by the reference: their mean stand-alone accuracy over
   `--repeats` trainings.

The last two lines state the headline figures in words.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from keras_mnas.search.one_shot import (
    BN_METHODS,
    PathScorer,
    kind_balanced_sampler,
    train_supernet,
    uniform_sampler,
)
from keras_mnas.search.proxy import kendall_tau, repeat_tau
from keras_mnas.search.reward import MnasReward
from keras_mnas.search.space import MnasSearchSpace
from keras_mnas.search.supernet import Supernet

#: The stand-alone training that is the reference (chosen on another seed: see docs/one-shot.md).
EPOCHS = 1
LEARNING_RATE = 1e-2
NOISE = 0.6
COPIES = 24
REFERENCE_DRAWS = 8


def digits(noise: float, seed: int = 0, copies: int = 1, reference_draws: int = 0):
    """Digits at 16x16 with Gaussian noise: 1,200 training images, `copies` times, and 597 for validation.

    Each copy of the training images has noise of its own: a training that passes over them sees fresh noise
    and cannot learn the noise by heart. The validation images have one fixed draw, what a search scores
    candidates on. The reference set is the same 597 images with `reference_draws` other draws of noise
    each (an empty set with 0): a trained network's accuracy on it moves less with the draw than on one.

    Returns:
        `(x_train, y_train), (x_valid, y_valid), (x_reference, y_reference)`.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.kron(data.images / 16.0, np.ones((2, 2)))[..., None].astype("float32")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    images, labels = images[order], data.target[order]
    noisy = lambda clean, rng=rng: clean + rng.normal(0, noise, clean.shape).astype("float32")  # noqa: E731
    # The validation draw first: the same validation images whatever `copies` is.
    valid = (noisy(images[1200:]), labels[1200:])
    x_train = np.concatenate([noisy(images[:1200]) for _ in range(copies)])
    # A generator of its own: the training and validation draws are the same whatever `reference_draws` is.
    draws = np.random.default_rng([seed, 1])
    x_reference = [noisy(images[1200:], draws) for _ in range(reference_draws)]
    reference = (
        np.concatenate(x_reference) if x_reference else np.zeros((0, *images.shape[1:]), "float32"),
        np.tile(labels[1200:], reference_draws),
    )
    return (x_train, np.tile(labels[:1200], copies)), valid, reference


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


def train_alone(
    search_space,
    values,
    train,
    evaluations,
    epochs: int,
    *,
    seed: int = 0,
    learning_rate: float = 3e-3,
    batch_size: int = 64,
) -> tuple[list[float], float]:
    """Stand-alone accuracies on each `(x, y)` of `evaluations` after `epochs` epochs from scratch, and the
    CPU seconds of the training and the first evaluation (what a search spends on a candidate).

    Adam with a cosine decay to 0, so that the accuracy is read at the end of a schedule, not mid-way at the
    full rate. `seed` sets the initial weights and the order of the batches: repeated trainings of one
    candidate differ only by it.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    start = time.process_time()
    model = search_space.build(search_space.architecture(values), bn_momentum=0.9)
    steps = epochs * -(-len(train[0]) // batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(*train, epochs=epochs, batch_size=batch_size, verbose=0)
    accuracies: list[float] = []
    for x, y in evaluations:
        result = model.evaluate(x, y, batch_size=512, verbose=0, return_dict=True)
        accuracies.append(float(result["accuracy"]))
        if len(accuracies) == 1:  # a search evaluates a candidate once: the reference's draws are extra
            cpu = time.process_time() - start
    return accuracies, cpu


def spread_by_cost(costs, count: int) -> list[int]:
    """Indices of `count` candidates spread over the range of `costs`: the middle one of each of `count`
    equal slices of the candidates sorted by cost.

    Random candidates crowd around the typical cost; these cover the small and the large ones too.

    Example:

    >>> spread_by_cost([5.0, 1.0, 4.0, 2.0, 3.0, 6.0], 3)
    [3, 2, 5]
    """
    if not 1 <= count <= len(costs):
        raise ValueError(f"expected a count between 1 and the {len(costs)} candidates; received {count}.")
    order = np.argsort(np.asarray(costs), kind="stable")
    return [int(order[int((k + 0.5) * len(costs) / count)]) for k in range(count)]


def held_out_taus(cheap, scored_once, reference_runs) -> tuple[float, float]:
    """Kendall tau of one training's own score, and of the cheap score, against the other trainings' mean.

    What per-candidate search ranks by, one training scored on the validation draw (`scored_once[k]`, the
    k-th repeat's accuracies), judged as the cheap score is: against the mean of the other repeats'
    reference accuracies, each repeat left out in turn, since a training agrees with a mean that holds it.
    Both taus are averaged over the repeat left out.

    Args:
        cheap: One cheap score per candidate.
        scored_once: `(repeats, candidates)` validation accuracies, one row per training.
        reference_runs: `(repeats, candidates)` reference accuracies of the same trainings.
    """
    others = [np.delete(reference_runs, k, axis=0).mean(axis=0) for k in range(len(reference_runs))]
    one_training = np.mean([kendall_tau(own, rest) for own, rest in zip(scored_once, others, strict=True)])
    return float(one_training), float(np.mean([kendall_tau(cheap, rest) for rest in others]))


#: What a worker process of `--workers` needs to train candidates: the space and the data, built once.
_WORKER: dict = {}


def _start_worker(noise: float, seed: int, copies: int, reference_draws: int) -> None:
    # One thread per worker, `--workers` of them side by side: each training's CPU time is then its own,
    # as the per-candidate search's cost should be.
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime already started: keep its threads
        pass
    train, valid, reference = digits(noise, seed, copies, reference_draws)
    _WORKER.update(space=space(), train=train, evaluations=(valid, reference))


def _train_in_worker(job: tuple) -> tuple[list[float], float]:
    values, seed, epochs, learning_rate = job
    return train_alone(
        _WORKER["space"],
        values,
        _WORKER["train"],
        _WORKER["evaluations"],
        epochs,
        seed=seed,
        learning_rate=learning_rate,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architectures", type=int, default=30)
    parser.add_argument("--rank-set", choices=("spread", "first"), default="spread")
    parser.add_argument("--search-candidates", type=int, default=1000)
    parser.add_argument("--supernet-steps", type=int, default=2000)
    parser.add_argument("--widest-first", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--noise", type=float, default=NOISE)
    parser.add_argument("--copies", type=int, default=COPIES)
    parser.add_argument("--reference-draws", type=int, default=REFERENCE_DRAWS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bn", choices=BN_METHODS, default="batch")
    parser.add_argument("--calibration-batches", type=int, default=4)
    parser.add_argument("--op-sampling", choices=("choices", "kinds"), default="kinds")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if (
        min(args.repeats, args.copies, args.workers, args.reference_draws) < 1
        or not 2 <= args.architectures <= args.search_candidates
    ):
        parser.error(
            "expected --repeats >= 1, --copies >= 1, --workers >= 1, --reference-draws >= 1, "
            "--architectures >= 2 and --search-candidates >= --architectures; received "
            f"{args.repeats}, {args.copies}, {args.workers}, {args.reference_draws}, {args.architectures} "
            f"and {args.search_candidates}."
        )
    wall = time.perf_counter()
    search_space = space()
    train_data, valid, reference_set = digits(args.noise, args.seed, args.copies, args.reference_draws)
    supernet = Supernet(search_space, seed=args.seed)
    start = time.process_time()
    # train_supernet's default optimizer, TuNAS's: Adam (which the stand-alone candidates use) leaves the
    # supernet on random paths at chance level for hundreds of steps.
    sampler = kind_balanced_sampler if args.op_sampling == "kinds" else uniform_sampler
    sample = sampler(search_space)
    train_supernet(
        supernet,
        *train_data,
        steps=args.supernet_steps,
        batch_size=64,
        seed=args.seed,
        sample=sample,
        widest_first=args.widest_first,
    )
    supernet_cpu = time.process_time() - start
    widest = " (each after warm-up at its widest, then as sampled)" if args.widest_first else " (paths alone)"
    print(f"supernet: {args.supernet_steps} steps{widest} in {supernet_cpu / 60:.1f} CPU-minutes")

    # One compiled function scores every candidate; tracing it, once, is part of the one-shot search's cost.
    begin = time.process_time()
    scorer = PathScorer(
        supernet,
        *valid,
        calibration_x=train_data[0],
        calibration_batches=args.calibration_batches,
        bn=args.bn,
    )
    scorer.score(search_space.default_values())
    trace_cpu = time.process_time() - begin

    def inherited(values) -> tuple[float, float, float]:
        """A candidate's accuracy and loss with inherited weights, and the CPU seconds they took."""
        begin = time.process_time()
        score = scorer.score(values)
        return score.accuracy, score.loss, time.process_time() - begin

    # The search's pool; the rank-agreement candidates are drawn from it (`--rank-set`), and the per-candidate
    # search trains its first ones.
    pool = search_space.sample_values(args.search_candidates, seed=args.seed + 2)
    macs = [search_space.cost(search_space.architecture(v)).macs / 1e6 for v in pool]
    if args.rank_set == "spread":
        rank_set = spread_by_cost(macs, args.architectures)
    else:
        rank_set = list(range(args.architectures))
    train_cpu: list[float] = []
    # pool index: (validation accuracy, reference accuracy) of each of the repeated trainings
    trained: dict[int, list[tuple[float, float]]] = {}

    def training_seed(index: int, repeat: int) -> int:
        # Each repeat its own initial weights and batch order; the same ones for a candidate in any run.
        return int(np.random.SeedSequence([args.seed, index, repeat]).generate_state(1)[0])

    workers = None
    if args.workers > 1:
        # The stand-alone trainings run side by side in worker processes of one thread each (wall time
        # only: each training's CPU time is counted as it is).
        import multiprocessing

        initargs = (args.noise, args.seed, args.copies, args.reference_draws)
        workers = multiprocessing.get_context("spawn").Pool(args.workers, _start_worker, initargs)
    else:
        # One process: it trains as a worker would, on the data it already has.
        _WORKER.update(space=search_space, train=train_data, evaluations=(valid, reference_set))

    def train_missing(wanted: dict[int, int]) -> None:
        """Trains each pool[index] of `wanted` until it has `wanted[index]` stand-alone trainings."""
        jobs = [(i, r) for i, count in wanted.items() for r in range(len(trained.get(i, [])), count)]
        tasks = [(pool[i], training_seed(i, r), args.epochs, args.learning_rate) for i, r in jobs]
        if workers is not None:
            results = workers.map(_train_in_worker, tasks, chunksize=1)
        else:
            results = [_train_in_worker(task) for task in tasks]
        for (index, _), (accuracies, cpu) in zip(jobs, results, strict=True):
            trained.setdefault(index, []).append(tuple(accuracies))
            train_cpu.append(cpu)

    def reference(index: int, repeats: int) -> list[float]:
        """The reference accuracies of pool[index]'s first `repeats` trainings."""
        return [on_reference for _, on_reference in trained[index][:repeats]]

    train_missing(dict.fromkeys(rank_set, args.repeats))
    print("| # | architecture | inherited acc | stand-alone acc (each training) | MMACs |")
    print("|---|---|---|---|---|")
    cheap, cheap_loss, runs = [], [], []
    for row, index in enumerate(rank_set):
        accuracy, loss, _ = inherited(pool[index])
        alone = reference(index, args.repeats)
        cheap.append(accuracy)
        cheap_loss.append(loss)
        runs.append(alone)
        arch = search_space.architecture(pool[index])
        print(
            f"| {row + 1} | {' '.join(arch.block_strings[1:])} | {accuracy:.3f} | {np.mean(alone):.3f} "
            f"({', '.join(f'{a:.3f}' for a in alone)}) | {macs[index]:.2f} |"
        )
    runs = np.asarray(runs).T  # repeats x candidates
    full = runs.mean(axis=0)
    tau = kendall_tau(cheap, full)
    print(
        f"stand-alone: {args.epochs} passes over {args.copies} noisy copies of the training images, "
        f"{np.mean(train_cpu):.1f} CPU-seconds per training; accuracies on {args.reference_draws} draws of "
        f"the validation images' noise {full.min():.3f} to {full.max():.3f}"
    )
    # Another cheap score from the same pass: the cross-entropy weighs how wrong each mistake is, which
    # 597 right-or-wrong answers do not.
    loss_tau = kendall_tau(-np.asarray(cheap_loss), full)
    print(f"the inherited cross-entropy, lowest first: Kendall tau {loss_tau:.2f}")
    # The baseline any cheap score must beat: a larger network is the more accurate one.
    print(f"mult-adds alone: Kendall tau {kendall_tau([macs[i] for i in rank_set], full):.2f}")
    if args.repeats > 1:
        print(
            f"repeated trainings: Kendall tau {repeat_tau(runs):.2f} between repeats, mean "
            f"|difference| {np.mean(np.abs(runs - full)):.3f} from their mean"
        )
        scored_once = np.asarray(
            [[on_valid for on_valid, _ in trained[i][: args.repeats]] for i in rank_set]
        ).T
        one_training, inherited_left_out = held_out_taus(cheap, scored_once, runs)
        print(
            f"against the mean of the other {args.repeats - 1} trainings, each left out in turn: one "
            f"stand-alone training scored on the validation draw (what per-candidate search ranks by) "
            f"Kendall tau {one_training:.2f}, the inherited accuracy {inherited_left_out:.2f}"
        )

    # The search: latency in mult-adds, target the median of the pool's.
    reward = MnasReward.soft(float(np.median(macs)))
    eval_cpu, scored = 0.0, []
    for index, values in enumerate(pool):
        accuracy, _, cpu = inherited(values)
        eval_cpu += cpu
        scored.append((reward(accuracy, macs[index]), index))
    one_shot_cpu = supernet_cpu + trace_cpu + eval_cpu
    print(
        f"scoring: {eval_cpu / len(pool):.3f} CPU-seconds per candidate, after {trace_cpu:.1f} to trace the "
        "scorer once"
    )
    per_candidate_cpu = float(np.mean(train_cpu))
    budget_candidates = min(len(pool), max(1, int(one_shot_cpu // per_candidate_cpu)))
    # Per-candidate search at the same budget: the pool's first candidates, one stand-alone training each
    # (as MnasTuner trains a candidate), scored on the validation draw as the one-shot search's candidates
    # are; a rank-agreement training reused where there is one.
    train_missing(dict.fromkeys(range(budget_candidates), 1))
    per_candidate = [(reward(trained[i][0][0], macs[i]), i) for i in range(budget_candidates)]
    best_one_shot = max(scored)[1]
    best_per_candidate = max(per_candidate)[1]
    # Both winners are judged by the reference (the mean of repeated trainings), not by what chose them.
    train_missing({best_one_shot: args.repeats, best_per_candidate: args.repeats})
    if workers is not None:
        workers.close()
        workers.join()
    worker_cpu = sum(train_cpu) if workers is not None else 0.0  # not in this process's CPU time
    ratio = (len(pool) / one_shot_cpu) / (1.0 / per_candidate_cpu)
    print()
    print(
        f"| search | CPU-minutes | candidates | winner's reward | winner's stand-alone acc (mean of "
        f"{args.repeats}) | winner MMACs |"
    )
    print("|---|---|---|---|---|---|")
    for name, cpu, count, index in (
        ("one-shot", one_shot_cpu, len(pool), best_one_shot),
        ("per-candidate", budget_candidates * per_candidate_cpu, budget_candidates, best_per_candidate),
    ):
        accuracy = float(np.mean(reference(index, args.repeats)))
        print(
            f"| {name} | {cpu / 60:.1f} | {count} | {reward(accuracy, macs[index]):.3f} | {accuracy:.3f} "
            f"| {macs[index]:.2f} |"
        )
    print()
    print(
        f"whole run: {(time.perf_counter() - wall) / 60:.1f} minutes, "
        f"{(time.process_time() + worker_cpu) / 60:.1f} CPU-minutes, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"Kendall tau: {tau:.2f} over {args.architectures} architectures")
    print(f"{ratio:.1f}x more candidates per CPU-minute than per-candidate training")


if __name__ == "__main__":
    main()
