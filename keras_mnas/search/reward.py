"""MnasNet's multi-objective reward: accuracy traded against measured latency.

`R(m) = ACC(m) * (LAT(m) / T) ** w`, with `w = alpha` if `LAT(m) <= T` else `beta`. The paper's soft
constraint (`alpha = beta = -0.07`, "twice as slow is worth about 5% relative accuracy") explores around the
target and yields several Pareto-optimal models from one search; the hard constraint (`alpha = 0, beta =
-1`) ignores latency under the target and punishes it sharply above.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from keras_mnas.utils.checks import is_number

SOFT_EXPONENT = -0.07
#: The largest target latency accepted, in milliseconds (over 16 minutes per inference).
MAX_TARGET_MS = 1e6
#: The largest exponent magnitude accepted: beyond it, a latency a few times off the target already makes the
#: reward vanish or overflow (the paper's soft constraint is 0.07, the hard one 1).
MAX_EXPONENT = 10.0


def _finite(name, value, positive=False, bound=None):
    # `is_number` refuses booleans, and integers too large to be floats, without an OverflowError.
    if not is_number(value):
        raise ValueError(f"{name} must be a finite number; received {_shown(value)}.")
    value = float(value)
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive; received {value!r}.")
    if bound is not None and abs(value) > bound:
        limits = f"<= {bound:g}" if positive else f"in [-{bound:g}, {bound:g}]"
        raise ValueError(f"{name} must be {limits}; received {value!r}.")
    return value


def _shown(value):
    shown = repr(value)
    return shown if len(shown) <= 120 else f"{shown[:60]}...{shown[-30:]} ({len(shown)} characters)"


@dataclasses.dataclass(frozen=True)
class MnasReward:
    """The reward of a candidate from its accuracy and latency.

    Args:
        target_latency_ms: The target latency T, in milliseconds.
        alpha: Exponent applied when the latency is at or under the target.
        beta: Exponent applied when the latency is over the target.
        metric: Name of the accuracy metric the reward reads (a Keras history key, e.g. `"val_accuracy"`).

    Example:

    >>> reward = MnasReward.soft(target_latency_ms=75.0)
    >>> round(reward(accuracy=0.75, latency_ms=150.0), 4)
    0.7145
    >>> MnasReward.hard(75.0)(accuracy=0.75, latency_ms=150.0)
    0.375
    """

    target_latency_ms: float
    alpha: float = SOFT_EXPONENT
    beta: float = SOFT_EXPONENT
    metric: str = "val_accuracy"

    def __post_init__(self):
        object.__setattr__(
            self,
            "target_latency_ms",
            _finite("target_latency_ms", self.target_latency_ms, positive=True, bound=MAX_TARGET_MS),
        )
        object.__setattr__(self, "alpha", _finite("alpha", self.alpha, bound=MAX_EXPONENT))
        object.__setattr__(self, "beta", _finite("beta", self.beta, bound=MAX_EXPONENT))
        if (
            not isinstance(self.metric, str)
            or not self.metric.isascii()
            or not self.metric.isprintable()
            or not 0 < len(self.metric) <= 100
            or self.metric != self.metric.strip()
        ):
            raise ValueError(
                "metric must be a metric name such as 'val_accuracy' (1 to 100 printable ASCII characters, "
                f"no surrounding spaces); received {_shown(self.metric)}."
            )

    @classmethod
    def soft(cls, target_latency_ms: float, metric: str = "val_accuracy") -> MnasReward:
        """The paper's default soft constraint: `alpha = beta = -0.07`."""
        return cls(target_latency_ms, SOFT_EXPONENT, SOFT_EXPONENT, metric)

    @classmethod
    def hard(cls, target_latency_ms: float, metric: str = "val_accuracy") -> MnasReward:
        """The hard constraint: `alpha = 0, beta = -1`."""
        return cls(target_latency_ms, 0.0, -1.0, metric)

    @property
    def is_hard(self) -> bool:
        return self.alpha == 0 and self.beta <= -1

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        accuracy = _finite("accuracy", accuracy)
        latency_ms = _finite("latency_ms", latency_ms, positive=True)
        exponent = self.alpha if latency_ms <= self.target_latency_ms else self.beta
        try:
            reward = accuracy * (latency_ms / self.target_latency_ms) ** exponent
        except OverflowError:
            reward = math.inf
        if not math.isfinite(reward):
            # A latency many orders of magnitude off the target: no reward can be computed from it.
            raise ValueError(
                f"latency_ms={latency_ms!r} is too far from the target ({self.target_latency_ms:g} ms) for a "
                f"finite reward with exponent {exponent:g} and accuracy {accuracy!r}."
            )
        return reward

    def score_arrays(self, accuracy: ArrayLike, latency_ms: ArrayLike) -> np.ndarray:
        """The reward of many candidates at once, e.g. a whole benchmark table, in one numpy expression.

        Args:
            accuracy: Accuracies, broadcastable against `latency_ms`.
            latency_ms: Latencies in milliseconds, all finite and positive.

        Returns:
            A float64 array of rewards.

        Example:

        >>> MnasReward.hard(10.0).score_arrays([0.9, 0.9], [5.0, 20.0]).tolist()
        [0.9, 0.45]
        """
        latency = np.asarray(latency_ms, dtype=np.float64)
        if not np.all(np.isfinite(latency) & (latency > 0)):
            raise ValueError(f"latency_ms must hold finite, positive numbers; received {latency_ms!r}.")
        exponent = np.where(latency <= self.target_latency_ms, self.alpha, self.beta)
        with np.errstate(over="ignore"):  # an overflow is reported below, by value
            rewards = np.asarray(accuracy, dtype=np.float64) * (latency / self.target_latency_ms) ** exponent
        if not np.all(np.isfinite(rewards)):
            # Same rule as one candidate: a latency too far from the target has no finite reward.
            raise ValueError(
                f"latency_ms holds values too far from the target ({self.target_latency_ms:g} ms) for a "
                f"finite reward; received {latency_ms!r}."
            )
        return rewards

    def upper_bound(self, latency_ms: float, best_accuracy: float = 1.0) -> float:
        """The largest reward a model of this latency can reach: what pre-training filters compare."""
        return self(best_accuracy, latency_ms)

    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MnasReward:
        """Rebuilds a reward from `get_config()`; refuses anything else by name."""
        known = {field.name for field in dataclasses.fields(cls)}
        if not isinstance(config, dict) or not set(config) <= known:
            raise ValueError(
                f"config must be a dict of {sorted(known)} from MnasReward.get_config(); received "
                f"{_shown(config)}."
            )
        return cls(**config)

    def describe(self) -> str:
        kind = "soft" if self.alpha == self.beta == SOFT_EXPONENT else "hard" if self.is_hard else "custom"
        return (
            f"{kind} reward: {self.metric} x (latency / {self.target_latency_ms:g} ms) ^ "
            f"({self.alpha:g} if under the target, {self.beta:g} over it)"
        )


#: TuNAS's default coefficient of the absolute reward.
ABSOLUTE_BETA = -0.10


@dataclasses.dataclass(frozen=True)
class AbsoluteReward:
    """TuNAS's absolute reward: `Q + beta * |T / T0 - 1|`, which aims at the target latency from both sides.

    MnasNet's reward is a product with an exponent; TuNAS (Bender et al., 2020) found that it "typically
    needed 7 searches to achieve the desired latency", and replaced it with a sum that costs a candidate
    `|beta|` of accuracy for every 100% it is away from the target, faster or slower. Its interface is
    `MnasReward`'s: call it, score arrays, round-trip its config (`reward_from_config` reads either).

    Args:
        target_latency_ms: The target latency T0, in milliseconds.
        beta: The coefficient (negative: being off the target costs reward), -0.10 by default.
        metric: Name of the accuracy metric the reward reads (a Keras history key, e.g. `"val_accuracy"`).

    Example:

    >>> reward = AbsoluteReward(10.0)
    >>> round(reward(accuracy=0.8, latency_ms=15.0), 4), round(reward(accuracy=0.8, latency_ms=5.0), 4)
    (0.75, 0.75)
    """

    target_latency_ms: float
    beta: float = ABSOLUTE_BETA
    metric: str = "val_accuracy"

    def __post_init__(self):
        # The same checks as MnasReward's, with its messages.
        checked = MnasReward(self.target_latency_ms, 0.0, self.beta, self.metric)
        object.__setattr__(self, "target_latency_ms", checked.target_latency_ms)
        object.__setattr__(self, "beta", checked.beta)

    @property
    def is_hard(self) -> bool:
        """Always False: the absolute reward has no budget past which a candidate is worthless."""
        return False

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        accuracy = _finite("accuracy", accuracy)
        latency_ms = _finite("latency_ms", latency_ms, positive=True)
        return accuracy + self.beta * abs(latency_ms / self.target_latency_ms - 1.0)

    def score_arrays(self, accuracy: ArrayLike, latency_ms: ArrayLike) -> np.ndarray:
        """The reward of many candidates at once.

        Example:

        >>> AbsoluteReward(10.0).score_arrays([0.9, 0.9], [10.0, 20.0]).tolist()
        [0.9, 0.8]
        """
        latency = np.asarray(latency_ms, dtype=np.float64)
        if not np.all(np.isfinite(latency) & (latency > 0)):
            raise ValueError(f"latency_ms must hold finite, positive numbers; received {latency_ms!r}.")
        return np.asarray(accuracy, dtype=np.float64) + self.beta * np.abs(
            latency / self.target_latency_ms - 1
        )

    def upper_bound(self, latency_ms: float, best_accuracy: float = 1.0) -> float:
        """The largest reward a model of this latency can reach."""
        return self(best_accuracy, latency_ms)

    def get_config(self) -> dict[str, Any]:
        return {"form": "absolute", **dataclasses.asdict(self)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AbsoluteReward:
        """Rebuilds a reward from `get_config()`; refuses anything else by name."""
        known = {field.name for field in dataclasses.fields(cls)}
        if (
            not isinstance(config, dict)
            or config.get("form") != "absolute"
            or not set(config) - {"form"} <= known
        ):
            raise ValueError(
                f"config must be a dict of 'form': 'absolute' and {sorted(known)} from "
                f"AbsoluteReward.get_config(); received {_shown(config)}."
            )
        return cls(**{key: value for key, value in config.items() if key != "form"})

    def describe(self) -> str:
        return (
            f"absolute reward: {self.metric} + {self.beta:g} x |latency / {self.target_latency_ms:g} ms - 1|"
        )


def reward_from_config(config: dict[str, Any]) -> MnasReward | AbsoluteReward:
    """Either reward from its `get_config()`: `AbsoluteReward` when `config["form"]` says so.

    Example:

    >>> reward_from_config(AbsoluteReward(12.0).get_config())
    AbsoluteReward(target_latency_ms=12.0, beta=-0.1, metric='val_accuracy')
    """
    if isinstance(config, dict) and config.get("form") == "absolute":
        return AbsoluteReward.from_config(config)
    return MnasReward.from_config(config)
