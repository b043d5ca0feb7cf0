"""`MnasHyperModel`: a `MnasSearchSpace` as a KerasTuner HyperModel that builds and compiles candidates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras_tuner

from keras_mnas.architecture import ArchSpec
from keras_mnas.builder import check_include_preprocessing
from keras_mnas.search.space import MnasSearchSpace
from keras_mnas.utils.checks import check_number


class MnasHyperModel(keras_tuner.HyperModel):
    """A KerasTuner HyperModel over a `MnasSearchSpace`: every trial builds one candidate.

    The space is declared up front (`declare_hyperparameters`), so the oracle knows every decision before the
    first trial. Models are compiled with defaults that train quickly on small proxy tasks: Adam at
    `learning_rate`, sparse categorical cross-entropy and accuracy; pass `optimizer`, `loss` and `metrics` to
    change them.

    Args:
        space: The search space (default: `MnasSearchSpace()`).
        optimizer: A Keras optimizer, an identifier such as `"rmsprop"`, or a callable returning a fresh
            optimizer. Every trial gets its own copy.
        learning_rate: Learning rate of the default Adam optimizer. 3e-3 by default: a candidate trained for
            one epoch of a small proxy task (45 steps of the digits example) gets far enough from its random
            start to be ranked; Keras' 1e-3 leaves it much closer.
        loss: Loss passed to `compile`.
        metrics: Metrics passed to `compile`; the reward reads `val_<metric>`.
        include_preprocessing: Whether candidates normalise [0, 255] RGB inputs themselves.
        jit_compile: Whether Keras compiles training with XLA. Off by default: on a CPU, compiling each
            short-lived candidate costs more than it saves.
        bn_momentum: BatchNormalization momentum of the candidates, 0.5 by default. Validation runs on the
            moving averages of the batch statistics, which trail the network's weights: while they change
            fast, in a proxy training of tens or hundreds of steps, averages over the last ten steps (0.9)
            or hundred (the reference's 0.99) describe an earlier network, and validation accuracy stays at
            chance level while training accuracy climbs. 0.5 averages over the last couple of steps. Final
            models use 0.99 (`applications`).
        name: HyperModel name.

    Example:

    ```python
    hypermodel = MnasHyperModel(MnasSearchSpace(input_shape=(32, 32, 3), classes=10))
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    model = hypermodel.build(hp)  # the default architecture of the space
    ```
    """

    def __init__(
        self,
        space: MnasSearchSpace | None = None,
        *,
        optimizer: Any = None,
        learning_rate: float = 3e-3,
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] = ("accuracy",),
        include_preprocessing: bool = False,
        jit_compile: bool = False,
        bn_momentum: float = 0.5,
        name: str | None = None,
    ):
        super().__init__(name=name, tunable=True)
        if space is not None and not isinstance(space, MnasSearchSpace):
            raise ValueError(f"space must be a MnasSearchSpace; received {type(space).__name__}.")
        self.space = space or MnasSearchSpace()
        check_number("learning_rate", learning_rate, low=0, low_open=True)
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.loss = loss
        self.metrics = list(metrics)
        check_include_preprocessing(include_preprocessing, self.space.input_shape[-1])
        self.include_preprocessing = include_preprocessing
        self.jit_compile = jit_compile
        check_number("bn_momentum", bn_momentum, low=0, high=1, high_open=True)
        self.bn_momentum = bn_momentum

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        self.space.declare(hp)

    def build_config(self) -> dict[str, Any]:
        """The settings besides the architecture that shape the candidates' layers.

        `MnasTuner` records them with the search, so a trial's model can be rebuilt from the project
        directory alone (`SearchProject.build_model`, `keras-mnas export`) exactly as it was trained.
        Training settings (optimizer, loss, metrics) do not change the layers and are not included.

        Example:

        >>> MnasHyperModel(include_preprocessing=True).build_config()
        {'include_preprocessing': True, 'bn_momentum': 0.5}
        """
        return {
            "include_preprocessing": bool(self.include_preprocessing),
            "bn_momentum": float(self.bn_momentum),
        }

    def architecture(self, hp: keras_tuner.HyperParameters | Mapping[str, Any]) -> ArchSpec:
        """The architecture a trial's hyperparameters describe."""
        return self.space.architecture(hp)

    def build(self, hp: keras_tuner.HyperParameters):
        import keras

        self.space.declare(hp)  # registers the decisions when the tuner's space is still empty
        arch = self.architecture(hp)
        model = self.space.build(
            arch, include_preprocessing=self.include_preprocessing, bn_momentum=self.bn_momentum
        )
        if self.optimizer is None:
            optimizer = keras.optimizers.Adam(self.learning_rate)
        elif isinstance(self.optimizer, keras.optimizers.Optimizer):
            # An optimizer holds per-model state: each trial trains with a fresh copy.
            optimizer = self.optimizer.__class__.from_config(self.optimizer.get_config())
        elif callable(self.optimizer):
            optimizer = self.optimizer()
        else:
            optimizer = keras.optimizers.get(self.optimizer)
        model.compile(
            optimizer=optimizer,
            loss=self.loss,
            metrics=[_resolve_accuracy(metric, self.loss) for metric in self.metrics],
            jit_compile=self.jit_compile,
        )
        # Without a distribution strategy Keras creates the optimizer's slots (and string metrics) inside the
        # first traced training step, and TensorFlow then traces that step a second time: creating them here
        # halves the per-candidate tracing, the larger part of a short proxy training on a CPU.
        model.optimizer.build(model.trainable_variables)
        return model


def _resolve_accuracy(metric: Any, loss: Any) -> Any:
    """`"accuracy"` as the metric object Keras would pick for `loss`, created now rather than mid-trace.

    Keras resolves the string from the shapes it sees during the first training step; for the losses below
    the answer is known in advance. The metric keeps the name `accuracy`, so logs still read `val_accuracy`.
    """
    import keras

    if metric not in ("accuracy", "acc"):
        return metric
    loss_name = loss if isinstance(loss, str) else getattr(loss, "name", None)
    metric_class = {
        "sparse_categorical_crossentropy": keras.metrics.SparseCategoricalAccuracy,
        "categorical_crossentropy": keras.metrics.CategoricalAccuracy,
        "binary_crossentropy": keras.metrics.BinaryAccuracy,
    }.get(loss_name)
    return metric if metric_class is None else metric_class(name=metric)
