"""Token policies: what proposes architectures to `MnasOracle`, and how a saved one is rebuilt.

A search space of discrete decisions is, to a policy, a list of `choice_counts`: decision `t` has
`choice_counts[t]` options, and an architecture is one token per decision. A policy samples architectures and
learns from their rewards; `MnasOracle` maps tokens to hyperparameter values, runs the trials and keeps the
policy's state in its `oracle.json`.

Two policies are registered: `"controller"`, MnasNet's LSTM `Controller` trained with PPO (the default), and
`"random"`, uniform random search without replacement. A new policy is a class with the four methods of
`TokenPolicy`, a constructor `(choice_counts, seed)` and a `from_state` classmethod, registered by name with
`register_policy`: the name is saved with the search, so a resumed search rebuilds the same policy.

Example:

```python
class Greedy:
    def __init__(self, choice_counts, seed=None): ...
    def sample(self): ...                         # -> (tokens, log_probs)
    def observe(self, tokens, log_probs, reward): ...
    def log_probs(self, tokens): ...
    def get_state(self): ...                      # JSON data
    @classmethod
    def from_state(cls, state): ...

register_policy("greedy", Greedy)
oracle = MnasOracle(max_trials=50, controller="greedy", seed=0)
```
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from keras_mnas.search.controller import Controller, ControllerConfig
from keras_mnas.utils.checks import check_int, is_integer

RANDOM_STATE_FORMAT = "keras_mnas.search.RandomPolicy/1"


@runtime_checkable
class TokenPolicy(Protocol):
    """What `MnasOracle` asks of a policy over architecture tokens.

    Tokens are ints, one per decision, `0 <= tokens[t] < choice_counts[t]`. Log-probabilities are one float
    per decision; a policy that has none (random search) returns those of its sampling distribution.
    """

    def sample(self) -> tuple[list[int], list[float]]:
        """Proposes one architecture: `(tokens, log_probs)`."""

    def observe(
        self, tokens: Sequence[int], log_probs: Sequence[float], reward: float
    ) -> dict[str, Any] | None:
        """Learns the reward of a proposal, with the log-probabilities it was sampled with.

        Returns `None`, or a dict of statistics when the policy updated itself (the oracle records the
        numbers among them as `controller_updates`).
        """

    def log_probs(self, tokens: Sequence[int]) -> list[float]:
        """The log-probability of each token of an architecture under the current policy."""

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the policy stands, as JSON data.

        Optional: a policy whose state has bulky parts that change rarely (a network's weights) names their
        keys in a `checkpoint_keys` attribute, and gives a `checkpoint_version` property that changes
        whenever they do. `MnasOracle` then writes those parts to a file of their own when they change,
        instead of with every trial.
        """


@dataclasses.dataclass(frozen=True)
class PolicyFactory:
    """A named way to make a `TokenPolicy` for a space, and to rebuild one from its saved state.

    Args:
        name: The name the policy is registered under; it is saved with the search.
        create: `(choice_counts, seed) -> TokenPolicy`.
        from_state: `state -> TokenPolicy`, the inverse of the policy's `get_state`.
        config: The policy's settings as JSON data, recorded with the search so that a resume with other
            settings is noticed.
    """

    name: str
    create: Callable[[list[int], int | None], TokenPolicy]
    from_state: Callable[[Mapping[str, Any]], TokenPolicy]
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, choice_counts: Sequence[int], seed: int | None = None) -> TokenPolicy:
        """Makes a policy for a space of `choice_counts`, seeded with `seed`."""
        return self.create(list(choice_counts), seed)

    def get_config(self) -> dict[str, Any]:
        """The policy's name and settings, as JSON data."""
        return {"name": self.name, "config": dict(self.config)}


_POLICIES: dict[str, PolicyFactory] = {}


def register_policy(
    name: str,
    create: Callable[..., TokenPolicy],
    from_state: Callable[[Mapping[str, Any]], TokenPolicy] | None = None,
) -> PolicyFactory:
    """Registers a policy under a name, so `MnasOracle(controller=name)` makes it and a resume rebuilds it.

    Args:
        name: The policy's name; not a controller preset name (`"default"`, `"nasnet"`).
        create: `(choice_counts, seed) -> TokenPolicy`, e.g. the policy's class.
        from_state: `state -> TokenPolicy`; by default `create.from_state`.

    Returns:
        The registered `PolicyFactory`.

    Raises:
        ValueError: if the name is taken by another policy or a preset, or no `from_state` is known.

    Example:

    ```python
    register_policy("greedy", Greedy)  # Greedy(choice_counts, seed) and Greedy.from_state(state)
    ```
    """
    if not isinstance(name, str) or not name or name in ControllerConfig.presets():
        raise ValueError(
            f"A policy name must be a non-empty string other than the controller presets "
            f"{sorted(ControllerConfig.presets())}; received {name!r}."
        )
    if from_state is None:
        from_state = getattr(create, "from_state", None)
    if not callable(create) or not callable(from_state):
        raise ValueError(
            f"Policy {name!r} needs a callable `create(choice_counts, seed)` and a callable "
            f"`from_state(state)` (or a `from_state` attribute of `create`); received {create!r}."
        )
    factory = PolicyFactory(name, create, from_state)
    known = _POLICIES.get(name)
    if known is not None and (known.create, known.from_state) != (create, from_state):
        raise ValueError(f"Another policy is already registered as {name!r}: {known.create!r}.")
    _POLICIES[name] = factory
    return factory


def get_policy(name: str) -> PolicyFactory:
    """The policy factory registered under `name`.

    Raises:
        ValueError: for an unknown name, listing the registered ones.
    """
    if name not in _POLICIES:
        raise ValueError(f"No policy is registered as {name!r}; registered: {sorted(_POLICIES)}.")
    return _POLICIES[name]


def controller_policy(config: ControllerConfig | None = None) -> PolicyFactory:
    """The factory of MnasNet's LSTM `Controller` with the given settings (by default the defaults).

    Example:

    ```python
    oracle = MnasOracle(max_trials=50, controller=controller_policy(ControllerConfig.nasnet()))
    ```
    """
    config = ControllerConfig() if config is None else config

    def create(choice_counts: list[int], seed: int | None) -> Controller:
        return Controller(choice_counts, config, seed=seed)

    return PolicyFactory("controller", create, Controller.from_state, config.get_config())


def resolve_policy(controller: Any) -> PolicyFactory:
    """Reads `MnasOracle`'s `controller` argument as a registered `PolicyFactory`.

    Args:
        controller: `None` (the LSTM controller with the default settings), a controller preset name
            (`"nasnet"`, `"default"`), a `ControllerConfig`, a dict of its settings (optionally with a
            `"preset"` key), the name of a registered policy (`"random"`), or a registered factory.

    Returns:
        A `PolicyFactory`.

    Raises:
        ValueError: for anything else, an unknown name or setting, or an unregistered factory.
    """
    if controller is None or isinstance(controller, ControllerConfig):
        return controller_policy(controller)
    if isinstance(controller, Mapping):
        return controller_policy(ControllerConfig.from_config(controller))
    if isinstance(controller, str):
        if controller in ControllerConfig.presets():
            return controller_policy(ControllerConfig.preset(controller))
        if controller not in _POLICIES:
            raise ValueError(
                f"controller {controller!r} is neither a controller preset "
                f"{sorted(ControllerConfig.presets())} nor a registered policy {sorted(_POLICIES)}."
            )
        return _POLICIES[controller]
    if isinstance(controller, PolicyFactory):
        known = _POLICIES.get(controller.name)
        if known is None or known.from_state != controller.from_state:
            raise ValueError(
                f"Policy {controller.name!r} is not registered: a resumed search could not rebuild it. "
                "Register it with register_policy(name, factory) first."
            )
        return controller
    if controller is Controller:
        return controller_policy()
    if callable(controller):
        for factory in _POLICIES.values():
            if factory.create == controller:
                return factory
        raise ValueError(
            f"The policy factory {controller!r} is not registered: a resumed search could not rebuild it. "
            "Register it with keras_mnas.search.policy.register_policy(name, factory) and pass the name."
        )
    raise ValueError(
        "controller must be None, a preset name, a ControllerConfig, a dict of its settings, or a "
        f"registered policy (its name or factory); received {type(controller).__name__}."
    )


class RandomPolicy:
    """Uniform random search without replacement: every proposal is an architecture not proposed before.

    It learns nothing from rewards, which makes it the baseline every learning policy must beat. Its
    log-probabilities are those of uniform sampling, `-log(choice_counts[t])` per decision.

    Args:
        choice_counts: Number of options of each decision.
        seed: Seed of the random order; `None` draws one from the OS.

    Raises:
        ValueError: for bad `choice_counts` or `seed`.

    Example:

    ```python
    policy = RandomPolicy([5] * 6, seed=0)
    tokens, log_probs = policy.sample()
    twin = RandomPolicy.from_state(policy.get_state())  # proposes what `policy` would next
    ```
    """

    def __init__(self, choice_counts: Sequence[int], seed: int | None = None):
        if isinstance(choice_counts, (str, bytes)) or not isinstance(choice_counts, Sequence):
            raise ValueError(f"choice_counts must be a sequence of ints >= 1; received {choice_counts!r}.")
        self.choice_counts = [
            check_int(f"choice_counts[{i}]", count, minimum=1) for i, count in enumerate(choice_counts)
        ]
        self.seed = check_int("seed", seed, allow_none=True)
        self._rng = np.random.default_rng(self.seed)
        self._seen: set[tuple[int, ...]] = set()
        self._total = math.prod(self.choice_counts)

    def sample(self) -> tuple[list[int], list[float]]:
        """Proposes an architecture not proposed before.

        Raises:
            RuntimeError: once every architecture of the space has been proposed.
        """
        if len(self._seen) >= self._total:
            raise RuntimeError(f"RandomPolicy has proposed all {self._total} architectures.")
        while True:  # rejection sampling: cheap while the seen set is a small part of the space
            tokens = tuple(int(self._rng.integers(count)) for count in self.choice_counts)
            if tokens not in self._seen:
                self._seen.add(tokens)
                return list(tokens), self.log_probs(tokens)

    def observe(self, tokens: Sequence[int], log_probs: Sequence[float], reward: float) -> None:
        """Ignores the reward: random search does not learn."""
        del tokens, log_probs, reward

    def log_probs(self, tokens: Sequence[int]) -> list[float]:
        """The log-probability of each token under uniform sampling."""
        if len(tokens) != len(self.choice_counts) or not all(
            is_integer(t) and 0 <= t < c for t, c in zip(tokens, self.choice_counts, strict=True)
        ):
            raise ValueError(f"Expected one token per decision of {self.choice_counts}; received {tokens!r}.")
        return [-math.log(count) if count > 1 else 0.0 for count in self.choice_counts]

    def get_state(self) -> dict[str, Any]:
        """The random state and the architectures proposed so far, as JSON data."""
        return {
            "format": RANDOM_STATE_FORMAT,
            "choice_counts": list(self.choice_counts),
            "seed": self.seed,
            "rng": self._rng.bit_generator.state,
            "seen": sorted(list(tokens) for tokens in self._seen),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RandomPolicy:
        """Rebuilds a policy from `get_state`'s output."""
        if not isinstance(state, Mapping) or state.get("format") != RANDOM_STATE_FORMAT:
            raise ValueError(f"Expected a RandomPolicy state; received {state!r:.80}.")
        policy = cls(state["choice_counts"], seed=state["seed"])
        policy._rng.bit_generator.state = state["rng"]
        policy._seen = {tuple(int(t) for t in tokens) for tokens in state["seen"]}
        return policy


# The LSTM controller with its default settings; `resolve_policy` makes it with other settings under the same
# name, since `Controller.from_state` rebuilds any of them.
_POLICIES["controller"] = controller_policy()
register_policy("random", RandomPolicy)
