"""EvolutionOracle: regularized evolution (aging evolution) as a KerasTuner Oracle.

Real et al., "Regularized Evolution for Image Classifier Architecture Search" (AAAI 2019): a population of the
`population_size` most recently evaluated architectures; each new architecture mutates one decision of the
best of `sample_size` members drawn at random (a tournament), and joins the population while the oldest
member leaves it. The first `population_size` architectures are drawn at random.

The population is the last `population_size` completed trials in the order they ended, so it is read from
the trials themselves: the oracle's only state of its own is its random generator, saved in `oracle.json`
with everything `DurableOracle` keeps. A search resumed after a kill goes on exactly as it would have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras_tuner
import numpy as np

from keras_mnas.search.durable import COMPLETED, RUNNING, STATE_SECTION, STOPPED, DurableOracle
from keras_mnas.search.oracle import check_direction, hyperparameter_options, single_objective
from keras_mnas.utils.checks import check_int

#: Mutations tried per trial before a never-tried random architecture is drawn instead.
MAX_MUTATION_ATTEMPTS = 100


class EvolutionOracle(DurableOracle):
    """A KerasTuner Oracle running regularized evolution over any space of discrete hyperparameters.

    Each trial mutates one hyperparameter of a tournament's winner: `sample_size` members are drawn from the
    population (the `population_size` trials completed last), the one with the best score is the parent,
    and one of its active hyperparameters with more than one option takes another value at random. An
    architecture already evaluated is not trained again: the mutation is drawn anew (and after
    `MAX_MUTATION_ATTEMPTS` a never-tried architecture is drawn at random). Until the population is full the
    trials are random. Saves, crash accounting and resumption come from `DurableOracle`.

    Args:
        objective: One objective, as in `keras_tuner.Oracle`; by default `"reward"`, maximised.
        max_trials: Maximum number of trials.
        population_size: Members of the population (Real et al.: 100; 50 suits searches of a few hundred).
        sample_size: Members drawn for each tournament, at most `population_size` (Real et al.: 25; 10 here).
        seed: Random seed of the mutations and of KerasTuner's own random draws.
        **kwargs: The other arguments of `DurableOracle` and `keras_tuner.Oracle` (`max_crashes_per_trial`,
            `trial_timeout`, `hyperparameters`, `max_consecutive_failed_trials`, ...).

    Raises:
        ValueError: for a bad argument, or (when the search starts) a hyperparameter that is not discrete.

    Example:

    ```python
    oracle = EvolutionOracle(objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=200, seed=1)
    tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=build_model)  # any KerasTuner tuner takes it
    ```
    """

    def __init__(
        self,
        objective: Any = None,
        max_trials: int = 100,
        *,
        population_size: int = 50,
        sample_size: int = 10,
        seed: int | None = None,
        **kwargs: Any,
    ):
        objective = single_objective(objective, "EvolutionOracle")
        max_trials = check_int("max_trials", max_trials, minimum=1)
        self.population_size = check_int("population_size", population_size, minimum=1)
        self.sample_size = check_int("sample_size", sample_size, minimum=1, maximum=self.population_size)
        super().__init__(objective=objective, max_trials=max_trials, seed=seed, **kwargs)
        check_direction(self, objective)
        self._rng = np.random.default_rng(self.seed)
        self.mutations = 0
        self.random_proposals = 0

    # ------------------------------------------------------------------------------------------------------
    # The population

    def population(self) -> list:
        """The current population: the last `population_size` completed trials with a score, oldest first."""
        members = []
        for trial_id in reversed(self.end_order):
            trial = self.trials[trial_id]
            if trial.status == COMPLETED and trial.score is not None and math.isfinite(trial.score):
                members.append(trial)
                if len(members) == self.population_size:
                    break
        return members[::-1]

    def _tournament(self, population: list):
        picks = self._rng.choice(len(population), size=self.sample_size, replace=False)
        sign = 1.0 if self.objective.direction == "max" else -1.0
        # Ties go to the earliest drawn, so the choice depends on the random draw alone.
        return max((population[int(i)] for i in picks), key=lambda trial: sign * trial.score)

    def _mutate(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """`values` with one active hyperparameter changed at random; None when nothing can change."""
        space = self.hyperparameters.space
        mutable = [hp for hp in space if hp.name in values and len(hyperparameter_options(hp)) > 1]
        if not mutable:
            return None
        chosen = mutable[int(self._rng.integers(len(mutable)))]
        others = [option for option in hyperparameter_options(chosen) if option != values[chosen.name]]
        wanted = dict(values)
        wanted[chosen.name] = others[int(self._rng.integers(len(others)))]
        # Conditional hyperparameters: a value only when active, as KerasTuner samples them; one that the
        # mutation switched on starts from a random option.
        hps = keras_tuner.HyperParameters()
        for hp in space:
            hps.merge([hp])
            if hps.is_active(hp):
                options = hyperparameter_options(hp)
                value = wanted.get(hp.name)
                if hp.name not in wanted or value not in options:
                    value = options[int(self._rng.integers(len(options)))]
                hps.values[hp.name] = value
        return dict(hps.values)

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        del trial_id
        if not self.hyperparameters.space:
            # Nothing declared yet: the first trial runs the defaults and reveals the space, as in KerasTuner.
            return {"status": RUNNING, "values": None}
        for hp in self.hyperparameters.space:
            hyperparameter_options(hp)  # a continuous hyperparameter fails here, naming itself
        population = self.population()
        if len(population) >= self.population_size:
            parent = self._tournament(population)
            for _ in range(MAX_MUTATION_ATTEMPTS):
                child = self._mutate(parent.hyperparameters.values)
                if child is None:
                    break
                if not self._was_tried(self._values_hash(child)):
                    self.mutations += 1
                    return {"status": RUNNING, "values": child}
        values = self._untried_random_values()
        if values is None:
            return {"status": STOPPED, "values": None}
        self.random_proposals += 1
        return {"status": RUNNING, "values": values}

    # ------------------------------------------------------------------------------------------------------
    # State

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state[STATE_SECTION].update(
            evolution={
                "rng": self._rng.bit_generator.state,
                "mutations": self.mutations,
                "random_proposals": self.random_proposals,
            }
        )
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        section = state[STATE_SECTION].get("evolution")
        if section is None:
            raise ValueError(
                "This project was not written by EvolutionOracle (its oracle.json has no 'evolution' state). "
                "Use another project_name, or overwrite=True to start a new search."
            )
        rng = np.random.default_rng()
        rng.bit_generator.state = section["rng"]
        self._rng = rng
        self.mutations = int(section["mutations"])
        self.random_proposals = int(section["random_proposals"])
