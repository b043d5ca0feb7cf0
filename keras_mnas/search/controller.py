"""The MnasNet search controller: an LSTM policy over architecture tokens, trained with PPO.

MnasNet uses "the same RNN controller as NASNet" (Zoph et al., 2018, appendix A): a one-layer LSTM with 100
hidden units emits one token per decision, each sampled from a softmax over that decision's options and fed
back as the next step's input. It is trained with PPO (learning rate 0.00035, entropy weight 1e-5) against an
exponential moving average of the rewards (decay 0.95), on minibatches of 20 architectures, from weights drawn
uniformly from [-0.1, 0.1].

Design, in short:

- **Settings are one frozen dataclass**, `ControllerConfig`, checked when it is made;
  `ControllerConfig.nasnet()` gives the paper's.
- **Sampling runs in NumPy** on the Keras layers' own weights. One architecture is a handful of tiny LSTM
  steps; calling Keras per step would cost milliseconds, NumPy costs microseconds. The tests check the
  NumPy log-probabilities against the teacher-forced Keras forward pass that the PPO step differentiates.
- **The PPO step is a plain Keras `train_on_batch`** on a `keras.Model` whose `compute_loss` is the clipped
  surrogate, teacher-forced over the minibatch's token sequences with their sampling-time log-probabilities
  and advantages. So the gradient step runs on whichever Keras backend is active (tested: TensorFlow, JAX).
- **Decisions with one option** (fixed hyperparameters) are not fed to the LSTM at all: they always yield
  token 0 with log-probability 0, so they cost nothing, while token positions stay those of `choice_counts`.
- **The whole state is JSON**: weights and optimizer slots as base64 float32 bytes with shape and dtype, the
  NumPy `Generator` state, the baseline and the pending minibatch. A restored controller proposes exactly
  the architectures, and makes exactly the updates, that the original would have.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from keras_mnas.search.surrogate import RewardModel, centred_ranks
from keras_mnas.utils.checks import check_choice, check_int, check_number, is_integer

STATE_FORMAT = "keras_mnas.search.Controller/1"
ADVANTAGE_NORMALIZATIONS = (None, "std", "rank")
NEIGHBOUR_SEARCHES = ("exhaustive", "random")
SURROGATES = (None, "neighbours", "screen", "samples")
# Settings added after states were first saved, with the value a state saved without them searched with.
_SETTINGS_BEFORE_SAVED = {
    "neighbour_search": "random",
    "elite_warmup": 0,
    "perturbation": 0,
    "elite_replay": 0,
    "surrogate": None,
    "surrogate_candidates": 16,
    "surrogate_exploration": 1.0,
}


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """The settings of a `Controller`, checked when made.

    The defaults suit searches of a few hundred trials; `ControllerConfig.nasnet()` gives the NASNet/MnasNet
    paper's settings, made for searches of thousands. `docs/benchmarks.md` compares the two.

    Args:
        units: Hidden units of each LSTM layer.
        num_layers: Number of stacked LSTM layers.
        embedding_dim: Size of the token embeddings fed back as inputs; `None` means `units`.
        learning_rate: Adam learning rate of the PPO updates.
        entropy_weight: Weight of the entropy bonus (summed over decisions) in the PPO loss.
        baseline_decay: Decay of the exponential moving average of rewards used as the baseline, in [0, 1).
        clip_ratio: PPO's clipping range epsilon: probability ratios are clipped to `[1 - eps, 1 + eps]`.
        ppo_epochs: Gradient steps made on each full minibatch.
        minibatch_size: Number of observed architectures per PPO update.
        init_range: Every weight starts uniform in `[-init_range, init_range]`.
        temperature: If set, logits are divided by it before sampling (and in the loss).
        tanh_constant: If set, logits become `tanh_constant * tanh(logits)`, after the temperature: bounds
            how peaked any softmax can get, which keeps some exploration.
        advantage_normalization: How a minibatch's advantages are rescaled before the update. `None`: as
            they are (`reward - baseline`). `"std"`: standardised to zero mean and unit standard deviation
            within the minibatch, so the step size does not depend on the reward scale. `"rank"`: the centred
            ranks of the minibatch's rewards (in [-0.5, 0.5]; the minibatch is its own baseline and the EMA
            baseline only feeds the statistics), so a few disastrous architectures (e.g. a cell of only
            `none` ops, reward near 0) cannot drown the fine differences between good ones, and any monotone
            transform of the reward gives the same search.
        elite_mutation: Probability that a proposal is one decision of an elite architecture (one of the
            `elite_size` best observed) changed, as `neighbour_search` says, instead of a sample of the LSTM
            (which also proposes when no change is left to try). The LSTM still
            learns from every reward, these proposals' included (scored by its own log-probabilities when
            proposed), so the policy is pulled towards what the mutations find; 0 samples the LSTM only.
        elite_size: How many of the best architectures observed are kept as elites.
        neighbour_search: Which one-decision change of which elite a mutation proposes. `"exhaustive"`: a
            change not yet proposed or observed, of the best elite that has one left (a best-first local
            search, which moves on to a better architecture as soon as one is found), drawn with the LSTM's
            probabilities of the new option given the elite's earlier decisions, so what the policy has
            learnt orders the search. `"random"`: any change of any elite, uniformly.
        elite_warmup: Rewards observed before elite mutation starts; until then the LSTM (near uniform at
            first) proposes alone, so the local search starts from the best of a first spread of
            architectures, not from the first one seen.
        perturbation: With `neighbour_search="exhaustive"`, how the local search goes on from a local
            optimum (an architecture none of whose one-decision neighbours is better). 0: it moves to the
            next elite that has an untried neighbour. `k > 0`: an iterated local search; once the best
            architecture's neighbourhood and the current climb's are exhausted, it proposes the best with
            `k` decisions changed at random and climbs from there (to the first better neighbour each time,
            whether or not the start beats the elites), until that climb is stuck too and it restarts.
        elite_replay: How many of the best elites join every PPO minibatch again, scored by the current
            policy, so the LSTM keeps learning where the best architectures found lie, not only from the
            latest rewards. 0 learns from each reward once.
        surrogate: Whether a model of the reward chooses among proposals. A kernel ridge regression (a
            Gaussian process) over the one-hot decisions and their pairs is fitted to the centred ranks of
            every reward observed, and scores a proposal by its predicted rank plus `surrogate_exploration`
            times its predictive standard deviation (an upper confidence bound). `None`: no model.
            `"neighbours"`: the exhaustive neighbour search takes the untried neighbour with the highest
            bound instead of one drawn with the LSTM's probabilities. `"screen"`: an elite mutation becomes
            the best, by the bound, of `surrogate_candidates` LSTM samples and every untried one-decision
            neighbour of every elite, leaving out architectures already observed. `"samples"`: the elite
            mutations stay as they are, and each LSTM proposal after the warm-up becomes the best, by the
            bound, of `surrogate_candidates` LSTM samples not yet observed. The LSTM stays the policy
            and learns from every reward; the model is refitted from the observations the state keeps.
        surrogate_candidates: With `surrogate="screen"` or `"samples"`, how many LSTM samples are screened.
        surrogate_exploration: The weight of the predictive standard deviation in the upper confidence
            bound; 0 takes the highest predicted reward.

    Raises:
        ValueError: if a setting is out of range, naming it and the value received.

    Example:

    ```python
    config = ControllerConfig(learning_rate=0.01)
    paper = ControllerConfig.nasnet()
    smaller = dataclasses.replace(paper, units=32)
    ```
    """

    units: int = 100
    num_layers: int = 1
    embedding_dim: int | None = None
    learning_rate: float = 0.02
    entropy_weight: float = 0.03
    baseline_decay: float = 0.95
    clip_ratio: float = 0.2
    ppo_epochs: int = 1
    minibatch_size: int = 20
    init_range: float = 0.1
    temperature: float | None = None
    tanh_constant: float | None = 2.5
    advantage_normalization: str | None = "rank"
    elite_mutation: float = 0.75
    elite_size: int = 10
    neighbour_search: str = "exhaustive"
    elite_warmup: int = 20
    perturbation: int = 0
    elite_replay: int = 0
    surrogate: str | None = None
    surrogate_candidates: int = 16
    surrogate_exploration: float = 1.0

    def __post_init__(self):
        # Stored in canonical types (an int learning rate becomes a float), so configs compare and save alike.
        checked = {
            # Upper bounds keep a typo (units=10**9, temperature=1e-300) from failing only when the search
            # starts, out of memory or with NaN probabilities; each is far beyond any useful setting.
            "units": check_int("units", self.units, minimum=1, maximum=4096),
            "num_layers": check_int("num_layers", self.num_layers, minimum=1, maximum=16),
            "embedding_dim": check_int(
                "embedding_dim", self.embedding_dim, minimum=1, maximum=4096, allow_none=True
            ),
            "learning_rate": check_number("learning_rate", self.learning_rate, low=0, high=10, low_open=True),
            "entropy_weight": check_number("entropy_weight", self.entropy_weight, low=0, high=100),
            "baseline_decay": check_number(
                "baseline_decay", self.baseline_decay, low=0, high=1, high_open=True
            ),
            "clip_ratio": check_number(
                "clip_ratio", self.clip_ratio, low=0, high=1, low_open=True, high_open=True
            ),
            "ppo_epochs": check_int("ppo_epochs", self.ppo_epochs, minimum=1, maximum=1000),
            "minibatch_size": check_int("minibatch_size", self.minibatch_size, minimum=1, maximum=100_000),
            "init_range": check_number("init_range", self.init_range, low=0, high=10, low_open=True),
            "temperature": check_number(
                "temperature", self.temperature, low=0.01, high=100, allow_none=True
            ),
            "tanh_constant": check_number(
                "tanh_constant", self.tanh_constant, low=0, high=100, low_open=True, allow_none=True
            ),
            "advantage_normalization": check_choice(
                "advantage_normalization", self.advantage_normalization, ADVANTAGE_NORMALIZATIONS
            ),
            "elite_mutation": check_number(
                "elite_mutation", self.elite_mutation, low=0, high=1, high_open=True
            ),
            "elite_size": check_int("elite_size", self.elite_size, minimum=1, maximum=100_000),
            "neighbour_search": check_choice("neighbour_search", self.neighbour_search, NEIGHBOUR_SEARCHES),
            "elite_warmup": check_int("elite_warmup", self.elite_warmup, minimum=0, maximum=10**9),
            "perturbation": check_int("perturbation", self.perturbation, minimum=0, maximum=10**6),
            "elite_replay": check_int("elite_replay", self.elite_replay, minimum=0, maximum=100_000),
            "surrogate": check_choice("surrogate", self.surrogate, SURROGATES),
            "surrogate_candidates": check_int(
                "surrogate_candidates", self.surrogate_candidates, minimum=0, maximum=100_000
            ),
            "surrogate_exploration": check_number(
                "surrogate_exploration", self.surrogate_exploration, low=0, high=100
            ),
        }
        if checked["perturbation"] and checked["neighbour_search"] != "exhaustive":
            raise ValueError(
                "perturbation restarts the exhaustive neighbour search; expected perturbation=0 or "
                f"neighbour_search='exhaustive', received perturbation={checked['perturbation']} with "
                f"neighbour_search={checked['neighbour_search']!r}."
            )
        if checked["surrogate"] == "neighbours" and checked["neighbour_search"] != "exhaustive":
            raise ValueError(
                "surrogate='neighbours' orders the exhaustive neighbour search; expected "
                "neighbour_search='exhaustive' or another surrogate, received "
                f"neighbour_search={checked['neighbour_search']!r}."
            )
        if checked["surrogate"] is not None and checked["elite_mutation"] <= 0:
            raise ValueError(
                "the surrogate chooses elite mutations; expected elite_mutation > 0 with "
                f"surrogate={checked['surrogate']!r}, received elite_mutation={checked['elite_mutation']}."
            )
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def nasnet(cls) -> ControllerConfig:
        """The NASNet controller (Zoph et al., 2018, appendix A) that MnasNet reuses.

        One LSTM layer of 100 units, Adam at 0.00035, entropy weight 1e-5, baseline decay 0.95, minibatches
        of 20, uniform initialisation in [-0.1, 0.1], PPO clip 0.2. The paper names neither the optimizer
        (Adam, as NAS and ENAS use) nor the number of PPO epochs per minibatch: 1 epoch makes each update a
        single clipped policy-gradient step, the most conservative reading.

        Returns:
            A `ControllerConfig`.
        """
        return cls(
            learning_rate=0.00035,
            entropy_weight=1e-5,
            tanh_constant=None,
            advantage_normalization=None,
            elite_mutation=0.0,
        )

    @classmethod
    def presets(cls) -> dict[str, ControllerConfig]:
        """The named settings: `"default"` (the defaults) and `"nasnet"` (the paper's).

        Returns:
            A dict from preset name to `ControllerConfig`.
        """
        return {"default": cls(), "nasnet": cls.nasnet()}

    @classmethod
    def preset(cls, name: str) -> ControllerConfig:
        """The settings of a named preset.

        Args:
            name: `"default"` or `"nasnet"`.

        Returns:
            A `ControllerConfig`.

        Raises:
            ValueError: for an unknown name.
        """
        presets = cls.presets()
        if name not in presets:
            raise ValueError(f"Unknown controller preset {name!r}; expected one of {sorted(presets)}.")
        return presets[name]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ControllerConfig:
        """Makes settings from a dict: any settings, optionally over a `"preset"` (by default the defaults).

        Args:
            config: Setting names to values, e.g. `{"preset": "nasnet", "learning_rate": 0.01}`.

        Returns:
            A `ControllerConfig`.

        Raises:
            ValueError: for an unknown preset or setting name, or a setting out of range.
        """
        settings = dict(config)
        base = cls.preset(settings.pop("preset", None) or "default")
        fields = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(str(key) for key in settings if key not in fields)
        if unknown:
            raise ValueError(f"Unknown controller settings {unknown}; expected some of {fields} or 'preset'.")
        return dataclasses.replace(base, **settings)

    def get_config(self) -> dict[str, Any]:
        """Returns the settings as a JSON-serialisable dict; `ControllerConfig(**config)` rebuilds them."""
        return dataclasses.asdict(self)


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    array = np.asarray(array).copy(order="C")  # np.ascontiguousarray would turn a scalar into shape (1,)
    return {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "data": base64.b64encode(array.tobytes()).decode("ascii"),
    }


def _decode_array(payload: Mapping[str, Any]) -> np.ndarray:
    data = base64.b64decode(payload["data"])
    return np.frombuffer(data, dtype=np.dtype(payload["dtype"])).reshape(tuple(payload["shape"])).copy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


class _PolicyNetwork(keras.Model):
    """Teacher-forced policy: input token ids (B, T) -> masked logits (B, T, V) over all options.

    The logits of every decision live in one row of width `V = sum(choice_counts)`; a constant mask keeps
    each step's softmax inside its own decision's slice, which is the same as one softmax head per decision.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        units: int,
        num_layers: int,
        mask: np.ndarray,
        temperature: float | None,
        tanh_constant: float | None,
        clip_ratio: float,
        entropy_weight: float,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="token_embedding")
        self.lstm_layers = [
            keras.layers.LSTM(units, return_sequences=True, unit_forget_bias=False, name=f"lstm_{i}")
            for i in range(num_layers)
        ]
        self.head = keras.layers.Dense(mask.shape[-1], name="logits")
        self._mask = mask.astype("float32")
        self._temperature = temperature
        self._tanh_constant = tanh_constant
        self._clip_ratio = clip_ratio
        self._entropy_weight = entropy_weight

    def call(self, inputs):
        x = self.embedding(inputs)
        for layer in self.lstm_layers:
            x = layer(x)
        logits = self.head(x)
        if self._temperature is not None:
            logits = logits / self._temperature
        if self._tanh_constant is not None:
            logits = self._tanh_constant * keras.ops.tanh(logits)
        return logits + keras.ops.convert_to_tensor(self._mask)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # PPO's clipped surrogate, one ratio per decision, every decision of an architecture sharing its
        # advantage; summed over decisions (the gradient of the sequence's log-probability), mean over
        # the minibatch. Minus the entropy bonus.
        actions = keras.ops.cast(y["actions"], "int32")
        old_log_probs = keras.ops.cast(y["old_log_probs"], "float32")
        advantages = keras.ops.expand_dims(keras.ops.cast(y["advantages"], "float32"), -1)
        log_probs_all = keras.ops.log_softmax(y_pred, axis=-1)
        one_hot = keras.ops.one_hot(actions, self._mask.shape[-1], dtype="float32")
        log_probs = keras.ops.sum(log_probs_all * one_hot, axis=-1)
        ratio = keras.ops.exp(log_probs - old_log_probs)
        clipped = keras.ops.clip(ratio, 1.0 - self._clip_ratio, 1.0 + self._clip_ratio)
        surrogate = keras.ops.minimum(ratio * advantages, clipped * advantages)
        entropy = -keras.ops.sum(keras.ops.exp(log_probs_all) * log_probs_all, axis=-1)
        loss = -keras.ops.mean(keras.ops.sum(surrogate, axis=-1))
        return loss - self._entropy_weight * keras.ops.mean(keras.ops.sum(entropy, axis=-1))


class Controller:
    """LSTM policy that proposes architectures as token sequences, trained with PPO.

    Each architecture is a sequence of `len(choice_counts)` tokens; token `t` is an integer in
    `[0, choice_counts[t])`. The controller samples the tokens one at a time, each from a softmax over that
    decision's options, and feeds each sampled token back as the next step's input. `observe` gives it the
    reward of an architecture it proposed, together with the log-probabilities recorded when it was sampled,
    so trials may finish out of order and in parallel. Every `minibatch_size` observations it makes a PPO
    update. It implements `keras_mnas.search.policy.TokenPolicy`, registered there as `"controller"`.

    The advantage of an observation is `reward - baseline`, with the baseline taken **before** that reward
    is folded into the exponential moving average: a baseline must not depend on the action it judges (else
    the gradient is biased: each reward would partly cancel itself). The first reward initialises the
    baseline and has advantage 0. (With `advantage_normalization="rank"` the minibatch is the baseline.)

    The default settings (`ControllerConfig()`) differ from the paper's (`ControllerConfig.nasnet()`) in five
    places: a larger learning rate, so the policy moves within a few hundred trials; rank-normalised
    advantages, so a few disastrous cells do not drown the small differences between good ones; a tanh
    bound on the logits with a larger entropy bonus, which keep the policy from collapsing onto one
    architecture; and elite mutation: after the first 20 rewards, three proposals in four are a one-decision
    change, not proposed before, of the best of the ten best architectures observed that has one left,
    the change drawn with the LSTM's own probabilities; the LSTM learns from their rewards as from its own
    samples, and proposes alone once the elites' neighbourhoods are exhausted, until a better one is found.
    `docs/benchmarks.md` compares them and says how they were chosen.

    Args:
        choice_counts: Number of options of each decision, in order. Entries are ints >= 1; a decision with
            a single option is fixed: it always yields token 0 and costs nothing.
        config: The settings, a `ControllerConfig`; `None` for the defaults.
        seed: Seed of the initial weights and of the sampling; `None` draws one from the OS.
        **settings: Settings that replace the config's, by `ControllerConfig` field name (`units=16`, ...).

    Raises:
        ValueError: for bad `choice_counts`, `seed` or settings.

    Example:

    ```python
    controller = Controller([5, 5, 5, 5, 5, 5], seed=0)
    for _ in range(40):
        tokens, log_probs = controller.sample()
        reward = evaluate(tokens)  # e.g. accuracy * (latency / target) ** -0.07
        stats = controller.observe(tokens, log_probs, reward)
        if stats is not None:
            print(stats["mean_reward"], stats["entropy"])
    state = controller.get_state()  # JSON-serialisable
    restored = Controller.from_state(state)
    ```
    """

    def __init__(
        self,
        choice_counts: Sequence[int],
        config: ControllerConfig | None = None,
        *,
        seed: int | None = None,
        **settings: Any,
    ):
        if config is None:
            config = ControllerConfig()
        if not isinstance(config, ControllerConfig):
            raise ValueError(
                f"config must be a ControllerConfig or None; received {type(config).__name__}. Use "
                "Controller.from_preset(name, choice_counts) for a preset."
            )
        self.config = dataclasses.replace(config, **settings) if settings else config
        self.choice_counts = self._validate_choice_counts(choice_counts)
        self.seed = check_int("seed", seed, allow_none=True)
        # Only decisions with more than one option are steps of the LSTM.
        self._active = [t for t, count in enumerate(self.choice_counts) if count > 1]
        counts = [self.choice_counts[t] for t in self._active]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._num_options = int(self._offsets[-1])
        steps = len(self._active)
        mask = np.full((steps, max(self._num_options, 1)), -1e9, dtype=np.float32)
        for step in range(steps):
            mask[step, self._offsets[step] : self._offsets[step + 1]] = 0.0
        self._mask = mask

        self._rng = np.random.default_rng(self.seed)
        self._baseline: float | None = None
        self._pending: list[dict[str, Any]] = []
        # The best architectures observed: [reward, tokens], best first, distinct tokens.
        self._elites: list[list] = []
        # The iterated local search's current start, [reward, tokens, tried], when it is not the best elite;
        # and the last restart proposed, which becomes the start once its reward is observed.
        self._climb: list | None = None
        self._restart: list[int] | None = None
        # With a surrogate: every observation folded into a PPO update, [tokens, reward]; with `_pending`,
        # every reward observed. It changes only at an update, so it is saved with the weights.
        self._history: list[list] = []
        # The surrogate's data, kept up to date by `observe`: option ids -> latest reward, in arrival order
        # (rebuilt from `_history` and `_pending` on load); and the model fitted at an observation count.
        self._observed_rewards: dict[tuple[int, ...], float] = {}
        self._model_cache: tuple[int, RewardModel] | None = None
        self._num_observed = 0
        self._num_updates = 0
        self._loads = 0  # set_state calls: each may change the weights without an update
        self._model: _PolicyNetwork | None = None
        self._optimizer: keras.optimizers.Optimizer | None = None
        self._np_weights: list[np.ndarray] = []
        if steps:
            self._build(mask)

    # ------------------------------------------------------------------ construction and validation

    @staticmethod
    def _validate_choice_counts(choice_counts: Sequence[int]) -> list[int]:
        if isinstance(choice_counts, (str, bytes)) or not isinstance(choice_counts, Sequence):
            raise ValueError(f"choice_counts must be a sequence of ints >= 1; received {choice_counts!r}.")
        if len(choice_counts) == 0:
            raise ValueError("choice_counts must have at least one decision; received an empty sequence.")
        for position, count in enumerate(choice_counts):
            if not is_integer(count) or count < 1:
                raise ValueError(
                    f"choice_counts entries must be ints >= 1; received {count!r} at position {position}."
                )
        return [int(count) for count in choice_counts]

    def _build(self, mask: np.ndarray) -> None:
        self._model = _PolicyNetwork(
            vocab_size=1 + self._num_options,  # id 0 is the start token; then every option of every step
            embedding_dim=self.config.embedding_dim or self.config.units,
            units=self.config.units,
            num_layers=self.config.num_layers,
            mask=mask,
            temperature=self.config.temperature,
            tanh_constant=self.config.tanh_constant,
            clip_ratio=self.config.clip_ratio,
            entropy_weight=self.config.entropy_weight,
            name="controller_policy",
        )
        self._model(np.zeros((1, len(self._active)), dtype=np.int32))  # creates the weights
        # The initial weights come from the controller's own seeded generator, not Keras' initialisers, so a
        # seed gives the same controller on every backend.
        init_rng = np.random.default_rng(None if self.seed is None else [self.seed, 1])
        self._model.set_weights(
            [
                init_rng.uniform(-self.config.init_range, self.config.init_range, size=w.shape).astype(
                    np.float32
                )
                for w in self._model.get_weights()
            ]
        )
        self._optimizer = keras.optimizers.Adam(learning_rate=self.config.learning_rate)
        self._model.compile(optimizer=self._optimizer)
        self._optimizer.build(self._model.trainable_variables)
        self._refresh_numpy_weights()

    def _refresh_numpy_weights(self) -> None:
        self._np_weights = [np.asarray(w, dtype=np.float64) for w in self._model.get_weights()]
        weights = iter(self._np_weights)
        self._np_embedding = next(weights)
        self._np_lstm = [(next(weights), next(weights), next(weights)) for _ in range(self.config.num_layers)]
        self._np_head_kernel = next(weights)
        self._np_head_bias = next(weights)

    @classmethod
    def from_preset(cls, name: str, choice_counts: Sequence[int], **settings: Any) -> Controller:
        """Creates a controller from named settings; `settings` replace any of them.

        Args:
            name: A `ControllerConfig.presets()` name: `"default"` or `"nasnet"` (the paper's).
            choice_counts: Number of options of each decision.
            **settings: `seed` or settings that replace the preset's, e.g. `learning_rate=0.01`.

        Returns:
            A `Controller`.

        Example:

        ```python
        controller = Controller.from_preset("nasnet", [5] * 6, seed=0)
        ```
        """
        return cls(choice_counts, ControllerConfig.preset(name), **settings)

    def get_config(self) -> dict[str, Any]:
        """Returns `choice_counts`, the settings and `seed` as JSON-serialisable data."""
        return {"choice_counts": list(self.choice_counts), **self.config.get_config(), "seed": self.seed}

    # ------------------------------------------------------------------ properties

    #: The keys of `get_state()` that change only at a PPO update (the weights and optimizer slots, most of
    #: the state). `MnasOracle` stores them in a file of their own, written once per update, not per trial.
    checkpoint_keys = ("weights", "optimizer", "history")

    @property
    def checkpoint_version(self) -> tuple[int, int]:
        """Changes whenever the state under `checkpoint_keys` changes: the update count and the model."""
        return (self._num_updates, id(self._model), self._loads)

    @property
    def baseline(self) -> float | None:
        """The exponential moving average of the observed rewards (`None` before the first)."""
        return self._baseline

    @property
    def num_observed(self) -> int:
        """How many rewards `observe` has received."""
        return self._num_observed

    @property
    def num_updates(self) -> int:
        """How many PPO updates have been made."""
        return self._num_updates

    @property
    def pending(self) -> int:
        """How many observations wait in the minibatch for the next update."""
        return len(self._pending)

    # ------------------------------------------------------------------ the policy in NumPy

    def _input_ids(self, steps_tokens: np.ndarray) -> np.ndarray:
        """Step tokens (B, T) -> the ids fed at each step: start token, then each previous option's id."""
        batch = steps_tokens.shape[0]
        ids = np.zeros((batch, steps_tokens.shape[1]), dtype=np.int64)
        if steps_tokens.shape[1] > 1:
            ids[:, 1:] = 1 + self._offsets[:-2][None, :] + steps_tokens[:, :-1]
        return ids

    def _step(self, ids: np.ndarray, state: list[tuple[np.ndarray, np.ndarray]], step: int):
        """One LSTM step for a batch, exactly as Keras' LSTMCell computes it (gates i, f, c, o)."""
        x = self._np_embedding[ids]
        new_state = []
        for (kernel, recurrent, bias), (h, c) in zip(self._np_lstm, state, strict=True):
            z = x @ kernel + h @ recurrent + bias
            units = self.config.units
            gates = _sigmoid(z)  # i, f, o use all but the third quarter; cheaper than three calls
            c = gates[:, units : 2 * units] * c + gates[:, :units] * np.tanh(z[:, 2 * units : 3 * units])
            h = gates[:, 3 * units :] * np.tanh(c)
            new_state.append((h, c))
            x = h
        lo, hi = self._offsets[step], self._offsets[step + 1]
        logits = x @ self._np_head_kernel[:, lo:hi] + self._np_head_bias[lo:hi]
        if self.config.temperature is not None:
            logits = logits / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * np.tanh(logits)
        return _log_softmax(logits), new_state

    def _zero_state(self, batch: int):
        zeros = np.zeros((batch, self.config.units))
        return [(zeros, zeros) for _ in range(self.config.num_layers)]

    def _teacher_forced_log_probs(
        self, steps_tokens: np.ndarray, full: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Log-probabilities (B, T) of given step tokens, and the entropies (B, T) of each step.

        With `full`, the second array is instead every option's log-probability, (B, sum of the options),
        each step's given the given tokens before it.
        """
        ids = self._input_ids(steps_tokens)
        state = self._zero_state(steps_tokens.shape[0])
        log_probs = np.zeros(steps_tokens.shape)
        second = np.zeros((steps_tokens.shape[0], self._num_options) if full else steps_tokens.shape)
        for step in range(steps_tokens.shape[1]):
            log_p, state = self._step(ids[:, step], state, step)
            log_probs[:, step] = np.take_along_axis(log_p, steps_tokens[:, step : step + 1], axis=1)[:, 0]
            if full:
                second[:, self._offsets[step] : self._offsets[step + 1]] = log_p
            else:
                second[:, step] = -np.sum(np.exp(log_p) * log_p, axis=1)
        return log_probs, second

    # ------------------------------------------------------------------ public API

    def sample(self) -> tuple[list[int], list[float]]:
        """Samples one architecture.

        Returns:
            `(tokens, log_probs)`: one int token per decision, `0 <= tokens[t] < choice_counts[t]`, and the
            log-probability of each token under the current policy (0.0 for single-option decisions). Pass
            both to `observe` with the architecture's reward, whenever it is known.

        Example:

        ```python
        tokens, log_probs = Controller([3, 1, 4], seed=0).sample()
        assert len(tokens) == len(log_probs) == 3 and tokens[1] == 0
        ```
        """
        mutate = self.config.elite_mutation
        if (
            self._elites
            and mutate > 0
            and self._num_observed >= self.config.elite_warmup
            and self._rng.random() < mutate
        ):
            tokens = self._screen() if self.config.surrogate == "screen" else self._mutate_elite()
            if tokens is not None:
                return tokens, self.log_probs(tokens)
        warm = self._elites and self._num_observed >= self.config.elite_warmup
        if self.config.surrogate == "samples" and warm:
            tokens = self._screen(neighbours=False)
            if tokens is not None:
                return tokens, self.log_probs(tokens)
        tokens = [0] * len(self.choice_counts)
        log_probs = [0.0] * len(self.choice_counts)
        state = self._zero_state(1)
        ids = np.zeros((1,), dtype=np.int64)
        for step, position in enumerate(self._active):
            log_p, state = self._step(ids, state, step)
            probs = np.exp(log_p[0])
            # Inverse-CDF sampling with one uniform draw per decision: cheap and exactly reproducible.
            token = int(np.searchsorted(np.cumsum(probs), self._rng.random() * probs.sum(), side="right"))
            token = min(token, len(probs) - 1)
            tokens[position] = token
            log_probs[position] = float(log_p[0, token])
            ids = np.array([1 + self._offsets[step] + token], dtype=np.int64)
        return tokens, log_probs

    def _mutate_elite(self) -> list[int] | None:
        """One decision of an elite changed, as `neighbour_search` says; `None` when none is left to try."""
        if self.config.neighbour_search == "random":
            tokens = list(self._elites[int(self._rng.integers(len(self._elites)))][1])
            position = self._active[int(self._rng.integers(len(self._active)))]
            # Another option of that decision, uniformly.
            token = int(self._rng.integers(self.choice_counts[position] - 1))
            tokens[position] = token + (token >= tokens[position])
            return tokens
        if self.config.perturbation:
            candidates = ([self._climb] if self._climb is not None else []) + self._elites[:1]
        else:
            candidates = self._elites
        for _, elite, tried in candidates:  # best first
            untried = [
                option
                for step, position in enumerate(self._active)
                for option in range(self._offsets[step], self._offsets[step + 1])
                if option not in tried and option - self._offsets[step] != elite[position]
            ]
            if untried:
                break
        else:
            return self._perturb_best() if self.config.perturbation else None
        steps = np.array([[elite[t] for t in self._active]], dtype=np.int64)
        if self.config.surrogate == "neighbours":
            model, _ = self._reward_model()
            ids = np.repeat(steps + self._offsets[None, :-1], len(untried), axis=0)
            for row, option in enumerate(untried):
                step = int(np.searchsorted(self._offsets, option, side="right")) - 1
                ids[row, step] = option
            option = untried[int(np.argmax(model.upper_bound(ids, self.config.surrogate_exploration)))]
        else:
            # The LSTM's probability of each new option given the elite's earlier decisions: one pass over
            # the elite scores every change at once.
            _, distributions = self._teacher_forced_log_probs(steps, full=True)
            weights = np.exp(distributions[0, untried])
            drawn = np.searchsorted(np.cumsum(weights), self._rng.random() * weights.sum(), side="right")
            option = untried[min(int(drawn), len(untried) - 1)]
        tried.add(option)
        step = int(np.searchsorted(self._offsets, option, side="right")) - 1
        tokens = list(elite)
        tokens[self._active[step]] = option - int(self._offsets[step])
        return tokens

    def _reward_model(self) -> tuple[RewardModel, dict[tuple[int, ...], float]]:
        """The surrogate fitted to every distinct architecture observed, and those architectures' rewards.

        Keyed by option ids. The model grows by the architectures observed since the last call and is
        refitted only when a reward arrived, so a proposal costs a few triangular solves, not a factorisation.
        """
        observed = self._observed_rewards
        if self._model_cache is None or self._model_cache[0] != self._num_observed:
            model = self._model_cache[1] if self._model_cache is not None else None
            if model is None:
                model = RewardModel(len(self._active), self._num_options)
            if len(observed) > len(model.keys):  # keys only ever join the end of the dict
                model.add(np.array(list(itertools.islice(observed, len(model.keys), None)), dtype=np.int64))
            model.fit(np.fromiter(observed.values(), dtype=np.float64, count=len(observed)))
            self._model_cache = (self._num_observed, model)
        return self._model_cache[1], observed

    def _option_ids(self, tokens: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(self._offsets[step]) + tokens[t] for step, t in enumerate(self._active))

    def _sample_steps(self, count: int) -> np.ndarray:
        """`count` architectures sampled from the LSTM at once, as step tokens (count, steps)."""
        steps = np.zeros((count, len(self._active)), dtype=np.int64)
        state = self._zero_state(count)
        ids = np.zeros((count,), dtype=np.int64)
        for step in range(len(self._active)):
            log_p, state = self._step(ids, state, step)
            cumulative = np.cumsum(np.exp(log_p), axis=1)
            draws = self._rng.random(count)[:, None] * cumulative[:, -1:]
            steps[:, step] = np.minimum(np.sum(cumulative <= draws, axis=1), log_p.shape[1] - 1)
            ids = 1 + self._offsets[step] + steps[:, step]
        return steps

    def _screen(self, neighbours: bool = True) -> list[int] | None:
        """The candidate with the surrogate's highest upper bound: LSTM samples and the elites' neighbours.

        Architectures already observed are left out; `None` when no candidate is left.
        """
        model, observed = self._reward_model()
        candidates: dict[tuple[int, ...], None] = {}
        for row in self._sample_steps(self.config.surrogate_candidates):
            candidates[tuple(int(t) for t in row)] = None
        for _, elite, tried in self._elites if neighbours else []:
            base = [elite[t] for t in self._active]
            for step in range(len(self._active)):
                for token in range(self.choice_counts[self._active[step]]):
                    if token != base[step] and int(self._offsets[step]) + token not in tried:
                        candidates[(*base[:step], token, *base[step + 1 :])] = None
        offsets = [int(offset) for offset in self._offsets[:-1]]
        fresh = [
            ids for steps in candidates
            if (ids := tuple(o + t for o, t in zip(offsets, steps, strict=True))) not in observed
        ]
        if not fresh:
            return None
        ids = np.array(fresh, dtype=np.int64)
        best = ids[int(np.argmax(model.upper_bound(ids, self.config.surrogate_exploration)))]
        tokens = [0] * len(self.choice_counts)
        for step, position in enumerate(self._active):
            tokens[position] = int(best[step] - self._offsets[step])
        for _, elite, tried in self._elites:
            option = self._changed_option(elite, tokens)
            if option is not None:
                tried.add(option)
        return tokens

    def _perturb_best(self) -> list[int]:
        """The best elite with `perturbation` decisions changed uniformly at random: a restart's start."""
        tokens = list(self._elites[0][1])
        count = min(self.config.perturbation, len(self._active))
        for step in sorted(self._rng.choice(len(self._active), size=count, replace=False)):
            position = self._active[int(step)]
            token = int(self._rng.integers(self.choice_counts[position] - 1))
            tokens[position] = token + (token >= tokens[position])
        self._restart = tokens
        return tokens

    def log_probs(self, tokens: Sequence[int]) -> list[float]:
        """Log-probability of each token of an architecture under the current policy.

        Args:
            tokens: One int per decision.

        Returns:
            One float per decision (0.0 for single-option decisions); their sum is the architecture's
            log-probability.
        """
        tokens = self._validate_tokens(tokens)
        result = [0.0] * len(self.choice_counts)
        if self._active:
            steps = np.array([[tokens[t] for t in self._active]], dtype=np.int64)
            values, _ = self._teacher_forced_log_probs(steps)
            for step, position in enumerate(self._active):
                result[position] = float(values[0, step])
        return result

    def _validate_tokens(self, tokens: Sequence[int]) -> list[int]:
        if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence):
            raise ValueError(f"tokens must be a sequence of ints; received {tokens!r}.")
        if len(tokens) != len(self.choice_counts):
            raise ValueError(
                f"Expected {len(self.choice_counts)} tokens (one per decision); received {len(tokens)}."
            )
        for position, (token, count) in enumerate(zip(tokens, self.choice_counts, strict=True)):
            if not is_integer(token) or not 0 <= token < count:
                raise ValueError(f"Token {position} must be an int in [0, {count}); received {token!r}.")
        return [int(token) for token in tokens]

    def observe(self, tokens: Sequence[int], log_probs: Sequence[float], reward: float) -> dict | None:
        """Records the reward of an architecture sampled earlier; updates the policy when a minibatch fills.

        Args:
            tokens: The architecture's tokens, as returned by `sample`.
            log_probs: The log-probabilities returned by `sample` **for these tokens, when they were
                sampled**: PPO's ratio compares the current policy against the one that made the proposal,
                so observations may arrive in any order, after any number of updates.
            reward: The architecture's reward (a finite float).

        Returns:
            `None`, or after a PPO update a dict of statistics: `mean_reward`, `max_reward` (over the
            minibatch), `baseline` (after this reward), `mean_advantage`, `entropy` (mean over the minibatch
            of the summed per-decision entropies under the updated policy), `policy_loss` (PPO loss before
            the update), `approx_kl` (mean of old minus new log-probability of the minibatch's architectures),
            `clip_fraction` (share of decisions whose ratio left the clip range), `num_updates`.
        """
        tokens = self._validate_tokens(tokens)
        if isinstance(log_probs, (str, bytes)) or not isinstance(log_probs, Sequence):
            raise ValueError(f"log_probs must be a sequence of floats; received {log_probs!r}.")
        if len(log_probs) != len(self.choice_counts):
            raise ValueError(
                f"Expected {len(self.choice_counts)} log_probs (one per decision); received {len(log_probs)}."
            )
        log_probs = [float(value) for value in log_probs]
        if not all(math.isfinite(value) and value <= 1e-6 for value in log_probs):
            raise ValueError(f"log_probs must be finite and <= 0; received {log_probs!r}.")
        if isinstance(reward, bool) or not isinstance(reward, (int, float, np.integer, np.floating)):
            raise ValueError(f"reward must be a finite number; received {reward!r}.")
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"reward must be a finite number; received {reward!r}.")

        # The baseline judging this reward is the one from before it (see the class docstring).
        advantage = 0.0 if self._baseline is None else reward - self._baseline
        if self._baseline is None:
            self._baseline = reward
        else:
            self._baseline = (
                self.config.baseline_decay * self._baseline + (1.0 - self.config.baseline_decay) * reward
            )
        self._num_observed += 1
        self._remember_elite(tokens, reward)
        if self.config.surrogate is not None:
            self._observed_rewards[self._option_ids(tokens)] = reward
        if self.config.perturbation and self.config.elite_mutation > 0 and self._active:
            self._follow_climb(tokens, reward)
        self._pending.append(
            {"tokens": tokens, "log_probs": log_probs, "reward": reward, "advantage": advantage}
        )
        if len(self._pending) < self.config.minibatch_size:
            return None
        return self._update()

    def _remember_elite(self, tokens: list[int], reward: float) -> None:
        if (self.config.elite_mutation <= 0 and self.config.elite_replay <= 0) or not self._active:
            return
        # An architecture one decision away from an elite is that elite's neighbour tried.
        for _, elite, tried in self._elites:
            option = self._changed_option(elite, tokens)
            if option is not None:
                tried.add(option)
        if any(elite == tokens for _, elite, _ in self._elites):
            return
        tried = set()
        for _, elite, _ in self._elites:
            option = self._changed_option(tokens, elite)
            if option is not None:
                tried.add(option)
        self._elites.append([reward, list(tokens), tried])
        # Stable: of equal rewards the earlier observed stays ahead.
        self._elites.sort(key=lambda item: -item[0])
        del self._elites[self.config.elite_size :]

    def _follow_climb(self, tokens: list[int], reward: float) -> None:
        """Moves the iterated local search's start: to an observed restart, or to a better neighbour."""
        if self._climb is not None:
            option = self._changed_option(self._climb[1], tokens)
            if option is not None:
                self._climb[2].add(option)
                if reward > self._climb[0]:  # first improvement: climb on from there
                    self._climb = [reward, list(tokens), self._known_neighbours(tokens)]
        if self._restart is not None and tokens == self._restart:
            self._restart = None
            self._climb = [reward, list(tokens), self._known_neighbours(tokens)]
        if self._climb is not None and self._climb[1] == self._elites[0][1]:
            self._climb = None  # the climb reached the best: the best elite's own search goes on

    def _known_neighbours(self, tokens: list[int]) -> set[int]:
        """The changes of `tokens` that lead to an elite or to the current climb's start: known already."""
        others = [elite for _, elite, _ in self._elites] + ([self._climb[1]] if self._climb else [])
        return {option for other in others if (option := self._changed_option(tokens, other)) is not None}

    def _changed_option(self, origin: list[int], tokens: list[int]) -> int | None:
        """The option id `tokens` takes at the one decision where it differs from `origin`, else `None`."""
        differing = [step for step, t in enumerate(self._active) if origin[t] != tokens[t]]
        if len(differing) != 1:
            return None
        step = differing[0]
        return int(self._offsets[step]) + tokens[self._active[step]]

    def _update(self) -> dict[str, Any]:
        batch, self._pending = self._pending, []
        fresh = len(batch)  # the statistics describe the new observations, not the replayed elites
        if self.config.surrogate is not None:
            self._history.extend([list(item["tokens"]), item["reward"]] for item in batch)
        replayed = self._elites[: self.config.elite_replay] if self._active else []
        if replayed:
            # On-policy for the current weights: their ratio starts at 1, as a fresh sample's would.
            steps = np.array([[tokens[t] for t in self._active] for _, tokens, _ in replayed], dtype=np.int64)
            current, _ = self._teacher_forced_log_probs(steps)
            for (reward, tokens, _), values in zip(replayed, current, strict=True):
                log_probs = [0.0] * len(self.choice_counts)
                for step, position in enumerate(self._active):
                    log_probs[position] = float(values[step])
                batch = [*batch, {"tokens": tokens, "log_probs": log_probs, "reward": reward,
                                  "advantage": reward - self._baseline}]
        rewards = np.array([item["reward"] for item in batch])
        advantages = np.array([item["advantage"] for item in batch])
        if self.config.advantage_normalization == "std":
            advantages = advantages - advantages.mean()
            std = advantages.std()
            advantages = advantages / std if std > 1e-12 else advantages
        elif self.config.advantage_normalization == "rank":
            # Ranks of the rewards themselves: the minibatch is its own baseline, and any monotone
            # transform of the reward gives the same update.
            advantages = centred_ranks(rewards)
        stats: dict[str, Any] = {
            "mean_reward": float(rewards[:fresh].mean()),
            "max_reward": float(rewards[:fresh].max()),
            "baseline": float(self._baseline),
            "mean_advantage": float(np.mean([item["advantage"] for item in batch[:fresh]])),
        }
        self._num_updates += 1
        stats["num_updates"] = self._num_updates
        if not self._active:
            stats.update(entropy=0.0, policy_loss=0.0, approx_kl=0.0, clip_fraction=0.0)
            return stats

        steps_tokens = np.array([[item["tokens"][t] for t in self._active] for item in batch], dtype=np.int64)
        old = np.array([[item["log_probs"][t] for t in self._active] for item in batch], dtype=np.float32)
        x = self._input_ids(steps_tokens).astype(np.int32)
        y = {
            "actions": (steps_tokens + self._offsets[None, :-1]).astype(np.int32),
            "old_log_probs": old,
            "advantages": advantages.astype(np.float32),
        }
        losses = [float(np.asarray(self._model.train_on_batch(x, y))) for _ in range(self.config.ppo_epochs)]
        self._refresh_numpy_weights()
        # Statistics from the compiled Keras forward pass: batched NumPy matmuls would hit a multi-threaded
        # BLAS, which is slow on a busy machine; one-row sampling does not.
        log_p = _log_softmax(np.asarray(self._model.predict_on_batch(x), dtype=np.float64))
        new = np.take_along_axis(log_p, y["actions"][..., None].astype(np.int64), axis=-1)[..., 0]
        entropies = -np.sum(np.exp(log_p) * log_p, axis=-1)
        ratio = np.exp(new - old)
        stats.update(
            entropy=float(entropies.sum(axis=1).mean()),
            policy_loss=losses[0],
            approx_kl=float((old - new).sum(axis=1).mean()),
            clip_fraction=float(np.mean(np.abs(ratio - 1.0) > self.config.clip_ratio)),
        )
        return stats

    # ------------------------------------------------------------------ state

    def get_state(self) -> dict[str, Any]:
        """Returns everything needed to continue exactly where the controller stands, as plain JSON data.

        Weights and optimizer variables are base64 strings of their raw bytes, with shape and dtype; the
        random state is the NumPy bit generator's state; the pending minibatch keeps each observation's
        sampling-time log-probabilities and advantage.

        Example:

        ```python
        state = json.loads(json.dumps(controller.get_state()))
        twin = Controller.from_state(state)  # samples and learns exactly as `controller` would
        ```
        """
        return {
            "format": STATE_FORMAT,
            "config": self.get_config(),
            **self._encoded_variables(),
            "baseline": self._baseline,
            "rng": self._rng.bit_generator.state,
            "pending": [dict(item) for item in self._pending],
            "elites": [[reward, list(tokens), sorted(tried)] for reward, tokens, tried in self._elites],
            "climb": None
            if self._climb is None
            else [self._climb[0], list(self._climb[1]), sorted(self._climb[2])],
            "restart": None if self._restart is None else list(self._restart),
            "history": [[list(tokens), reward] for tokens, reward in self._history],
            "num_observed": self._num_observed,
            "num_updates": self._num_updates,
        }

    def _encoded_variables(self) -> dict[str, list]:
        # The oracle saves the state after every trial, but weights and optimizer variables only change at a
        # PPO update: encode them (about 1.4 MB of base64 for 100 units) once per update, not once per save.
        cache_key = (self._num_updates, id(self._model))
        if getattr(self, "_variables_cache", (None, None))[0] != cache_key:
            encoded = {
                "weights": []
                if self._model is None
                else [_encode_array(w) for w in self._model.get_weights()],
                "optimizer": (
                    []
                    if self._optimizer is None
                    else [
                        _encode_array(np.asarray(keras.ops.convert_to_numpy(v)))
                        for v in self._optimizer.variables
                    ]
                ),
            }
            self._variables_cache = (cache_key, encoded)
        return dict(self._variables_cache[1])

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a state from `get_state`; the controller's configuration must be the same.

        Raises:
            ValueError: if the state is not a controller state, or was made with another configuration.
        """
        self._variables_cache = (None, None)  # the variables are about to change
        self._loads += 1
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            received = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(
                f"Expected a controller state of format {STATE_FORMAT!r}; received {received!r}."
            )
        mine, theirs = self.get_config(), {**_SETTINGS_BEFORE_SAVED, **state["config"]}
        differing = sorted(key for key in mine if key != "seed" and mine[key] != theirs.get(key))
        if differing:
            details = ", ".join(
                f"{key}: state has {theirs.get(key)!r}, controller has {mine[key]!r}" for key in differing
            )
            raise ValueError(
                f"The state was saved by a controller with another configuration ({details}). Use "
                "Controller.from_state(state) to rebuild the saved controller."
            )
        if self._model is not None:
            weights = [_decode_array(item) for item in state["weights"]]
            expected = [w.shape for w in self._model.get_weights()]
            if [w.shape for w in weights] != expected:
                raise ValueError(
                    f"State weights have shapes {[w.shape for w in weights]}; expected {expected}."
                )
            self._model.set_weights(weights)
            variables = self._optimizer.variables
            if len(state["optimizer"]) != len(variables):
                raise ValueError(
                    f"State has {len(state['optimizer'])} optimizer variables; expected {len(variables)}."
                )
            for variable, item in zip(variables, state["optimizer"], strict=True):
                variable.assign(_decode_array(item))
            self._refresh_numpy_weights()
        self.seed = theirs.get("seed")
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self._rng = rng
        self._baseline = None if state["baseline"] is None else float(state["baseline"])
        self._pending = [
            {
                "tokens": [int(t) for t in item["tokens"]],
                "log_probs": [float(v) for v in item["log_probs"]],
                "reward": float(item["reward"]),
                "advantage": float(item["advantage"]),
            }
            for item in state["pending"]
        ]
        # Absent from states saved before elites existed: those controllers had none; states saved before
        # the neighbours tried were kept list none.
        self._elites = [
            [float(item[0]), [int(t) for t in item[1]], {int(o) for o in (item[2] if len(item) > 2 else [])}]
            for item in state.get("elites", [])
        ]
        # Absent from states saved before iterated local search: those controllers had neither.
        climb, restart = state.get("climb"), state.get("restart")
        self._climb = None
        if climb is not None:
            self._climb = [float(climb[0]), [int(t) for t in climb[1]], {int(o) for o in climb[2]}]
        self._restart = None if restart is None else [int(t) for t in restart]
        # Absent from states saved before the surrogate: those controllers kept no history.
        self._history = [
            [[int(t) for t in tokens], float(reward)] for tokens, reward in state.get("history", [])
        ]
        self._observed_rewards = {}
        for tokens, reward in [*self._history, *((item["tokens"], item["reward"]) for item in self._pending)]:
            self._observed_rewards[self._option_ids(tokens)] = reward
        self._model_cache = None
        self._num_observed = int(state["num_observed"])
        self._num_updates = int(state["num_updates"])

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Controller:
        """Rebuilds a controller, configuration and all, from `get_state`'s output."""
        if not isinstance(state, Mapping) or "config" not in state:
            raise ValueError(
                f"Expected a controller state from Controller.get_state(); received {state!r:.80}."
            )
        config = {**_SETTINGS_BEFORE_SAVED, **state["config"]}
        choice_counts, seed = config.pop("choice_counts"), config.pop("seed", None)
        controller = cls(choice_counts, ControllerConfig(**config), seed=seed)
        controller.set_state(state)
        return controller
