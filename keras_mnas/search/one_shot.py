"""One-shot search: train a supernet once, then score candidates with the weights they inherit from it.

`train_supernet` follows TuNAS's recipe (Bender et al., 2020), one sampled path per training step: during
the first quarter of training, with a probability that falls linearly from 1 to 0, every operation runs at
once (op warm-up) and every block is at its widest (filter warm-up); after that, paths come from the space
or from the policy the caller passes, and each step trains its path at its widest first, then as drawn.
Training resumes where a killed run stopped: the weights, the optimizer's state and the step are
checkpointed together, as Keras and JSON files.

`PathScorer` scores candidates through the supernet itself, in a fraction of a second each: one compiled
function takes the path as a tensor, re-estimates the path's batch-norm statistics on a few batches and
evaluates, without building a model. `evaluate_path` does the same by extracting the candidate as a Keras
model, which it returns.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from keras_mnas.architecture import ArchSpec
from keras_mnas.search.hypermodel import MnasHyperModel
from keras_mnas.search.supernet import Supernet
from keras_mnas.utils.checks import check_int, check_number, check_type
from keras_mnas.utils.io import atomic_write_json, read_json

#: TuNAS's warm-up: op and filter warm-up over the first 25% of the steps.
WARMUP_FRACTION = 0.25
_STATE = "supernet_state.json"


def warmup_probability(step: int, steps: int, fraction: float = WARMUP_FRACTION) -> float:
    """The probability of warm-up at `step`: 1 at the start, falling linearly to 0 at `fraction * steps`.

    Example:

    >>> warmup_probability(0, 100), warmup_probability(10, 100), warmup_probability(25, 100)
    (1.0, 0.6, 0.0)
    """
    end = fraction * steps
    return 0.0 if end <= 0 else max(0.0, 1.0 - step / end)


def _uniform_values(space, rng: np.random.Generator) -> dict[str, Any]:
    values = {}
    for index in space.searched_blocks:
        for decision, choices in space._choices().items():
            values[space.hp_name(index, decision)] = choices[int(rng.integers(len(choices)))]
    return values


def uniform_sampler(space) -> Callable[[np.random.Generator], dict[str, Any]]:
    """A path sampler for `train_supernet` that draws every decision uniformly over its choices.

    The operations too: the kind with several choices (every `mbconv<E>`) then gets most of the training
    steps (see `kind_balanced_sampler`, the default).

    Args:
        space: The `MnasSearchSpace` the supernet was made for.

    Returns:
        `sample(rng) -> hyperparameter values`, for `train_supernet(..., sample=...)`.

    Example:

    ```python
    train_supernet(supernet, x, y, steps=2000, sample=uniform_sampler(supernet.space))
    ```
    """
    from keras_mnas.search.space import MnasSearchSpace

    check_type("space", space, MnasSearchSpace, "a MnasSearchSpace")
    return lambda rng: _uniform_values(space, rng)


def kind_balanced_sampler(space) -> Callable[[np.random.Generator], dict[str, Any]]:
    """The path sampler `train_supernet` uses by default: every kind of operation trains equally often.

    Each kind (`conv`, `dconv`, `mbconv`) owns its weight set in the supernet. Drawn uniformly over the
    space's operations (`uniform_sampler`), the kind with several choices (every `mbconv<E>` shares the
    `mbconv` weights) gets most of the steps: with the default operations half of them, where `conv` and
    `dconv` get a quarter each, and candidates built of the better-trained kind then score higher with
    inherited weights. This sampler draws the kind first, uniformly, then its choice (the expansion); every
    other decision stays uniform. On the one-shot benchmark's digits, supernets trained on uniform draws
    ranked 10 candidates unlike stand-alone training (Kendall tau 0.00 to 0.04), kind-balanced ones at 0.27
    to 0.43, by how the batch-norm statistics were set (`docs/one-shot.md`).

    Args:
        space: The `MnasSearchSpace` the supernet was made for.

    Returns:
        `sample(rng) -> hyperparameter values`, for `train_supernet(..., sample=...)`.

    Example:

    ```python
    sample = kind_balanced_sampler(space)
    values = sample(np.random.default_rng(0))  # one path's hyperparameter values
    ```
    """
    from keras_mnas.search.space import MnasSearchSpace

    check_type("space", space, MnasSearchSpace, "a MnasSearchSpace")
    by_kind: dict[str, list[str]] = {}
    for op in space.conv_ops:
        by_kind.setdefault("mbconv" if op.startswith("mbconv") else op, []).append(op)
    kinds = list(by_kind.values())

    def sample(rng: np.random.Generator) -> dict[str, Any]:
        values = _uniform_values(space, rng)
        for index in space.searched_blocks:
            ops = kinds[int(rng.integers(len(kinds)))]
            values[space.hp_name(index, "conv_op")] = ops[int(rng.integers(len(ops)))]
        return values

    return sample


def default_optimizer(steps: int, batch_size: int):
    """TuNAS's supernet optimizer: RMSProp peaking at 0.165 (x batch / 256 over 256), with a cosine decay.

    With epsilon 1.0, this RMSProp is in effect SGD with momentum 0.9. The learning rate is scaled up
    linearly for batches over 256, as TuNAS does, but not scaled down for smaller ones: at batch 64 the
    scaled rate, 0.041, leaves a supernet trained on random paths at chance level for hundreds of steps,
    where 0.165 trains it (`benchmarks/one_shot.py`).

    Args:
        steps: Total training steps (the length of the schedule).
        batch_size: Examples per step.

    Returns:
        A Keras RMSprop optimizer with its schedule.
    """
    import keras

    peak = 0.165 * max(batch_size, 256) / 256
    warmup = max(1, int(0.025 * steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=peak, warmup_steps=warmup
    )
    return keras.optimizers.RMSprop(schedule, rho=0.9, momentum=0.9, epsilon=1.0)


def train_supernet(
    supernet: Supernet,
    x: Any,
    y: Any,
    *,
    steps: int,
    batch_size: int = 32,
    directory: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    sample: Callable[[np.random.Generator], Mapping[str, Any]] | None = None,
    optimizer: Any = None,
    warmup_fraction: float = WARMUP_FRACTION,
    widest_first: bool = True,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> int:
    """Trains a supernet with TuNAS's recipe, one sampled path per step, resuming from `directory`.

    Each step draws its batch and its path from a generator seeded with `(seed, step)`, so a resumed run
    draws exactly what the uninterrupted run would have drawn.

    Each step after warm-up first trains the sampled path at its widest (every searched block at its widest
    output and mbconv expansion, the filter warm-up's path), then the path itself, on the same batch, so the
    widest channels, which every narrower path slices, keep training; warm-up steps train their one path.
    Such a step costs two updates. On the one-shot benchmark's digits, supernets trained on the paths alone
    ranked wide candidates below where stand-alone training put them (`docs/one-shot.md`).
    `widest_first=False` trains each step's path alone, TuNAS's recipe as published.

    Args:
        supernet: The supernet to train (its model is compiled here).
        x: Training images, `(n, height, width, channels)`.
        y: Integer labels, `(n,)`.
        steps: Total training steps (a resumed run continues up to this number).
        batch_size: Examples per step.
        directory: Where checkpoints go and are resumed from; `None` keeps nothing.
        checkpoint_every: Steps between checkpoints (the last step is always checkpointed).
        sample: `sample(rng) -> hyperparameter values` for the paths after warm-up, e.g. a policy's;
            by default `kind_balanced_sampler(supernet.space)`, which trains every kind of operation
            equally often (`uniform_sampler` draws every choice alike).
        optimizer: A Keras optimizer; `default_optimizer(updates, batch_size)` (TuNAS's) by default, where
            `updates` is `steps`, plus with `widest_first` one per step after warm-up (the schedule ends
            with the last update).
            Adam is a poor choice here: at 3e-3 it leaves a supernet on random paths at chance level
            for hundreds of steps where the default learns.
        warmup_fraction: Fraction of the steps over which the warm-up probability falls to 0.
        widest_first: Whether each step after warm-up trains the sampled path at its widest first
            (`False`: the path alone).
        seed: Seed of the batches and the paths.
        on_step: Called as `on_step(step, loss)` after every step (e.g. to log, or to stop).

    Returns:
        The number of steps done, `steps` when training completed.

    Raises:
        ValueError: when the data or the settings are not what is described above.
    """
    check_type("supernet", supernet, Supernet, "a Supernet")
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=1)
    check_number("warmup_fraction", warmup_fraction, low=0, high=1)
    check_type("widest_first", widest_first, bool, "True or False")
    seed = check_int("seed", seed, minimum=0)
    x = np.asarray(x, dtype="float32")
    y = np.asarray(y)
    if x.shape[1:] != supernet.space.input_shape or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"x must be (n, {', '.join(map(str, supernet.space.input_shape))}) images and y n labels; "
            f"received x of shape {x.shape} and y of shape {y.shape}."
        )
    model = supernet.model

    def warmup_flags(step: int) -> tuple[bool, bool]:
        # With widest_first, from a generator of their own: the updates can be counted without drawing paths.
        probability = warmup_probability(step, steps, warmup_fraction)
        draws = np.random.default_rng([seed, step, 1]).random(2)
        return bool(draws[0] < probability), bool(draws[1] < probability)

    updates = steps + (sum(not any(warmup_flags(step)) for step in range(steps)) if widest_first else 0)
    model.compile(
        optimizer=optimizer or default_optimizer(updates, batch_size),
        loss="sparse_categorical_crossentropy",
        jit_compile=False,
    )
    model.optimizer.build(model.trainable_variables)
    done = _restore(supernet, directory) if directory is not None else 0
    sample = sample or kind_balanced_sampler(supernet.space)
    for step in range(done, steps):
        rng = np.random.default_rng([seed, step])
        indices = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
        values = sample(rng)
        if widest_first:
            mix_ops, largest_filters = warmup_flags(step)
        else:
            probability = warmup_probability(step, steps, warmup_fraction)
            mix_ops, largest_filters = bool(rng.random() < probability), bool(rng.random() < probability)
        paths = [supernet.encode(values, mix_ops=mix_ops, largest_filters=largest_filters)]
        if widest_first and not (mix_ops or largest_filters):
            paths.insert(0, supernet.encode(values, largest_filters=True))
        for path in paths:
            batch_paths = np.tile(path, (len(indices), 1))
            loss = model.train_on_batch([x[indices], batch_paths], y[indices], return_dict=True)["loss"]
        if directory is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            _checkpoint(supernet, directory, step + 1)
        if on_step is not None:
            on_step(step + 1, float(loss))
    return steps


def _checkpoint(supernet: Supernet, directory: str | os.PathLike, step: int) -> None:
    """Writes weights, optimizer state and step; the state file, written last and atomically, points at them.

    A kill at any instant leaves the previous state file, and the files it names, whole.
    """
    os.makedirs(directory, exist_ok=True)
    weights = f"supernet-{step}.weights.h5"
    optimizer = f"optimizer-{step}.npz"
    partial = os.path.join(directory, ".partial-" + weights)
    supernet.model.save_weights(partial)
    os.replace(partial, os.path.join(directory, weights))
    store: dict[str, np.ndarray] = {}
    supernet.model.optimizer.save_own_variables(store)
    partial = os.path.join(directory, ".partial-" + optimizer)
    with open(partial, "wb") as file:
        np.savez(file, **{str(key): np.asarray(value) for key, value in store.items()})
    os.replace(partial, os.path.join(directory, optimizer))
    atomic_write_json(
        os.path.join(directory, _STATE), {"step": step, "weights": weights, "optimizer": optimizer}
    )
    for old in glob.glob(os.path.join(directory, "supernet-*.weights.h5")) + glob.glob(
        os.path.join(directory, "optimizer-*.npz")
    ):
        if os.path.basename(old) not in (weights, optimizer):
            os.remove(old)


def _restore(supernet: Supernet, directory: str | os.PathLike) -> int:
    state_path = os.path.join(directory, _STATE)
    if not os.path.exists(state_path):
        return 0
    state = read_json(state_path)
    supernet.model.load_weights(os.path.join(directory, state["weights"]))
    # allow_pickle=False: the checkpoint holds arrays only, and loading never runs code.
    with np.load(os.path.join(directory, state["optimizer"]), allow_pickle=False) as stored:
        supernet.model.optimizer.load_own_variables({key: stored[key] for key in stored.files})
    return int(state["step"])


def reestimate_batch_norm(model, x: Any, *, batches: int = 4, batch_size: int = 64) -> None:
    """Replaces every BatchNormalization's moving statistics by their average over a few batches of `x`.

    Statistics inherited from a supernet were gathered over many paths; a candidate's own, re-estimated on
    a few batches, are what its accuracy should be measured with (TuNAS, and every one-shot method since).

    Args:
        model: A Keras model (e.g. from `Supernet.extract`).
        x: Images to estimate on.
        batches: How many batches.
        batch_size: Examples per batch.
    """
    import keras

    batches = check_int("batches", batches, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    x = np.asarray(x, dtype="float32")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    try:
        for index in range(batches):
            chunk = x[index * batch_size : (index + 1) * batch_size]
            if len(chunk) == 0:
                break
            # Momentum index / (index + 1) makes the moving statistics the running mean of the batches'.
            for layer in norms:
                layer.momentum = index / (index + 1)
            model(chunk, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum


def evaluate_path(
    supernet: Supernet,
    values: Mapping[str, Any],
    x: Any,
    y: Any,
    *,
    calibration_x: Any = None,
    calibration_batches: int = 4,
    batch_size: int = 64,
):
    """A candidate's accuracy with inherited weights: extract it, re-estimate its BN statistics, evaluate.

    Args:
        supernet: The trained supernet.
        values: The candidate's hyperparameter values.
        x: Validation images.
        y: Validation labels.
        calibration_x: Images for the BN statistics (training images, usually); `x` by default.
        calibration_batches: Batches of `calibration_x` to estimate them on.
        batch_size: Examples per batch.

    Returns:
        `(accuracy, model)`: the accuracy on `(x, y)` and the stand-alone model, ready to export.
    """
    model = supernet.extract(values)
    reestimate_batch_norm(
        model,
        x if calibration_x is None else calibration_x,
        batches=calibration_batches,
        batch_size=batch_size,
    )
    predictions = model.predict(np.asarray(x, dtype="float32"), batch_size=batch_size, verbose=0)
    accuracy = float(np.mean(np.argmax(predictions, axis=-1) == np.asarray(y)))
    return accuracy, model


#: How `PathScorer` gives a path its batch-norm statistics.
BN_METHODS = ("reestimate", "batch")


def _compiled(function: Callable) -> Callable:
    """`function` compiled by the Keras backend (traced once per input structure), or as it is on others."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(function)
    return function


@dataclasses.dataclass(frozen=True)
class PathScore:
    """What `PathScorer.score` measured for one candidate.

    Attributes:
        accuracy: Top-1 accuracy on the scorer's validation data.
        loss: Mean sparse categorical cross-entropy there.
        predictions: The class probabilities, one row per validation image.
        statistics: The batch-norm statistics the path was scored with (for `PathScorer.extract`).
    """

    accuracy: float
    loss: float
    predictions: np.ndarray
    statistics: tuple = dataclasses.field(default=(), repr=False)


class PathScorer:
    """Scores candidates through the supernet itself: one compiled function serves every path.

    `evaluate_path` builds each candidate as a Keras model, which costs more than scoring it. A scorer
    builds nothing: the path is a tensor input of one traced function that runs the supernet stateless (its
    variables are never written), so every candidate after the first costs only the arithmetic.

    Batch-norm statistics, with `bn="reestimate"` (the default, TuNAS's): the supernet runs in training mode
    on `calibration_batches` batches of `calibration_x`, the mean of each batch's statistics (what
    `reestimate_batch_norm` computes on the extracted candidate) normalises the validation pass. With
    `bn="batch"`: the validation images are normalised by the statistics of their own batches of
    `evaluation_batch_size` (no calibration pass; the score then depends on how the batches are drawn).

    Args:
        supernet: The trained supernet (later training is seen: the weights are read at every call).
        x: Validation images.
        y: Validation labels (integers).
        calibration_x: Images for the statistics (training images, usually); `x` by default.
        calibration_batches: Batches of `calibration_x` to estimate them on.
        batch_size: Examples per calibration batch.
        evaluation_batch_size: Examples per validation batch.
        bn: `"reestimate"` or `"batch"`, as above.

    Raises:
        ValueError: when the data or the settings are not what is described above.

    Example:

    ```python
    scorer = PathScorer(supernet, x_val, y_val, calibration_x=x_train)
    scores = [scorer.score(values).accuracy for values in space.sample_values(500)]
    ```
    """

    def __init__(
        self,
        supernet: Supernet,
        x: Any,
        y: Any,
        *,
        calibration_x: Any = None,
        calibration_batches: int = 4,
        batch_size: int = 64,
        evaluation_batch_size: int = 256,
        bn: str = "reestimate",
    ):
        from keras import ops

        self.supernet = check_type("supernet", supernet, Supernet, "a Supernet")
        calibration_batches = check_int("calibration_batches", calibration_batches, minimum=1)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        evaluation_batch_size = check_int("evaluation_batch_size", evaluation_batch_size, minimum=1)
        if bn not in BN_METHODS:
            raise ValueError(f"bn must be one of {BN_METHODS}; received {bn!r}.")
        self.bn = bn
        shape = supernet.space.input_shape
        x = np.asarray(x, dtype="float32")
        self.y = np.asarray(y)
        calibration = x if calibration_x is None else np.asarray(calibration_x, dtype="float32")
        for name, images in (("x", x), ("calibration_x", calibration)):
            if images.shape[1:] != shape or len(images) == 0:
                raise ValueError(
                    f"{name} must be (n, {', '.join(map(str, shape))}) images; received shape {images.shape}."
                )
        if self.y.shape != (len(x),):
            raise ValueError(
                f"y must hold one label per image of x ({len(x)}); received shape {self.y.shape}."
            )
        self._validation = [
            ops.convert_to_tensor(x[i : i + evaluation_batch_size])
            for i in range(0, len(x), evaluation_batch_size)
        ]
        chunks = [calibration[i * batch_size : (i + 1) * batch_size] for i in range(calibration_batches)]
        self._calibration = [ops.convert_to_tensor(c) for c in chunks if len(c)] if bn == "reestimate" else []
        model = supernet.model
        self._norms = supernet.batch_norms()
        position = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
        # Where each BN's moving mean and variance sit among the model's non-trainable variables.
        self._statistics = [
            position[id(v)] for layer in self._norms for v in (layer.moving_mean, layer.moving_variance)
        ]
        self._run = _compiled(self._score_function)

    def _score_function(self, trainable, non_trainable, calibration, validation, path):
        from keras import ops

        model = self.supernet.model

        def call(state, images, training):
            paths = ops.broadcast_to(ops.expand_dims(path, 0), (ops.shape(images)[0], path.shape[0]))
            return model.stateless_call(trainable, state, [images, paths], training=training)

        state = list(non_trainable)
        if calibration:
            # Momentum 0 while this is traced (set by `_evaluate`): a training-mode call returns the
            # batch's own statistics as the "updated" moving ones; their mean is the re-estimate.
            estimates = [call(state, images, True)[1] for images in calibration]
            for index in self._statistics:
                state[index] = sum(e[index] for e in estimates) / len(estimates)
        training = self.bn == "batch"
        predictions = ops.concatenate([call(state, images, training)[0] for images in validation], axis=0)
        return predictions, [state[index] for index in self._statistics]

    def _evaluate(self, values: Mapping[str, Any] | ArchSpec) -> tuple[np.ndarray, list]:
        from keras import ops

        path = self.supernet.encode(values)
        model = self.supernet.model
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        momenta = [layer.momentum for layer in self._norms]
        try:
            for layer in self._norms:
                layer.momentum = 0.0
            predictions, statistics = self._run(
                trainable, non_trainable, self._calibration, self._validation, ops.convert_to_tensor(path)
            )
        finally:
            for layer, momentum in zip(self._norms, momenta, strict=True):
                layer.momentum = momentum
        return np.asarray(predictions), [np.asarray(s) for s in statistics]

    def score(self, values: Mapping[str, Any] | ArchSpec) -> PathScore:
        """A candidate's accuracy and loss on the validation data, with inherited weights.

        Args:
            values: The candidate's hyperparameter values, or its `ArchSpec`.

        Returns:
            A `PathScore`.
        """
        predictions, statistics = self._evaluate(values)
        picked = predictions[np.arange(len(self.y)), self.y]
        return PathScore(
            accuracy=float(np.mean(np.argmax(predictions, axis=-1) == self.y)),
            # Clipped as Keras' cross-entropy clips probabilities.
            loss=float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0)))),
            predictions=predictions,
            statistics=tuple(statistics),
        )

    def extract(
        self, values: Mapping[str, Any] | ArchSpec, *, model: Any = None, score: PathScore | None = None
    ):
        """The stand-alone candidate with inherited weights and the statistics this scorer gave its path.

        With `bn="batch"` the statistics are the supernet's own (there is no estimate to hand down).

        Args:
            values: The candidate's hyperparameter values, or its `ArchSpec`.
            model: The candidate already built by the space's builder; built here by default.
            score: This path's `PathScore`, when already measured (its statistics are reused, not
                estimated again).

        Returns:
            The `keras.Model`, as `Supernet.extract` returns it.
        """
        statistics = score.statistics if score is not None else self._evaluate(values)[1]
        variables = self.supernet.model.non_trainable_variables
        kept = [np.asarray(variables[index]) for index in self._statistics]
        try:
            if self.bn == "reestimate":
                for index, value in zip(self._statistics, statistics, strict=True):
                    variables[index].assign(value)
            return self.supernet.extract(values, model=model)
        finally:
            for index, value in zip(self._statistics, kept, strict=True):
                variables[index].assign(value)


class OneShotHyperModel(MnasHyperModel):
    """A `MnasHyperModel` whose trials inherit their weights from a trained supernet instead of training.

    Give it to `MnasTuner` in place of a `MnasHyperModel`: the oracle proposes candidates as ever, the
    tuner measures their latency and scores the reward as ever (TensorBoard HParams, resume, the Pareto
    front, `results_summary` and `export_best` included), but each trial's "training" is a `PathScorer`'s
    score: the candidate's path through the supernet, its BN statistics re-estimated on a few batches of
    the training data, evaluated on the validation data (one compiled function shared by every trial). The
    candidate model gets the supernet's weights and those statistics, so `export_best` writes the winner
    as it was scored (fine-tune it, or train it from scratch, with `SearchProject`'s model or
    `space.build`). With other metrics than the default accuracy, the model is also evaluated by Keras.

    Args:
        supernet: The trained `Supernet`.
        calibration_batches: Batches of the training data the BN statistics are re-estimated on.
        batch_size: Examples per batch when re-estimating and evaluating.
        **kwargs: `MnasHyperModel`'s (optimizer, loss, metrics, ...), for the compiled candidates.

    Example:

    ```python
    tuner = MnasTuner(OneShotHyperModel(supernet), latency=HostLatency(), target_latency_ms=2.0,
                      max_trials=200, directory="one_shot")
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=1)
    ```
    """

    def __init__(self, supernet: Supernet, *, calibration_batches: int = 4, batch_size: int = 64, **kwargs):
        check_type("supernet", supernet, Supernet, "a trained Supernet")
        kwargs.setdefault("bn_momentum", supernet.bn_momentum)
        if kwargs.get("include_preprocessing"):
            # The supernet has no preprocessing layers to hand down: its inputs are normalised beforehand.
            raise ValueError(
                "OneShotHyperModel takes inputs normalised beforehand, as the supernet was trained on them; "
                "received include_preprocessing=True."
            )
        super().__init__(supernet.space, **kwargs)
        self.supernet = supernet
        self.calibration_batches = check_int("calibration_batches", calibration_batches, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)

    def build(self, hp):
        model = super().build(hp)  # compiled as every candidate is; its weights come from the supernet
        return self.supernet.extract(self.architecture(hp), model=model)

    def scorer(self, x: Any, x_val: Any, y_val: Any) -> PathScorer:
        """The `PathScorer` of this data, made once and kept while the trials pass the same arrays."""
        data = (x, x_val, y_val)
        kept = getattr(self, "_scorer", None)
        if kept is None or any(a is not b for a, b in zip(kept[0], data, strict=True)):
            scorer = PathScorer(
                self.supernet,
                x_val,
                y_val,
                calibration_x=x,
                calibration_batches=self.calibration_batches,
                batch_size=self.batch_size,
            )
            self._scorer = kept = (data, scorer)
        return kept[1]

    def fit(self, hp, model, x=None, y=None, *, validation_data=None, callbacks=None, **kwargs):
        if x is None or not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
            raise ValueError(
                "A one-shot trial needs the training images as x (for the BN statistics) and "
                f"validation_data=(x_val, y_val); received x={type(x).__name__} and validation_data of "
                f"type {type(validation_data).__name__}."
            )
        import keras

        history = keras.callbacks.History()
        hooks = keras.callbacks.CallbackList([*(callbacks or []), history], model=model)
        hooks.on_train_begin()
        hooks.on_epoch_begin(0)
        x_val, y_val = validation_data
        scorer = self.scorer(x, x_val, y_val)
        arch = self.architecture(hp)
        scored = scorer.score(arch)
        # The model gets the statistics the score was measured with: the exported winner is what was scored.
        scorer.extract(arch, model=model, score=scored)
        if self.loss == "sparse_categorical_crossentropy" and self.metrics == ["accuracy"]:
            # The defaults: read off the supernet's pass, no Keras evaluation.
            logs = {"val_loss": scored.loss, "val_accuracy": scored.accuracy}
        else:
            scores = model.evaluate(x_val, y_val, batch_size=self.batch_size, return_dict=True, verbose=0)
            logs = {f"val_{name}": float(value) for name, value in scores.items()}
        hooks.on_epoch_end(0, logs)
        hooks.on_train_end(logs)
        return history
