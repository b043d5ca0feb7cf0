import json

import keras_tuner
import pytest

from keras_mnas.search import EvolutionOracle


def build_space(hp):
    hp.Choice("op", ["a", "b", "c"])
    hp.Boolean("flag")
    hp.Fixed("fixed", 7)
    hp.Int("units", 8, 32, step=8)
    with hp.conditional_scope("op", ["c"]):
        hp.Choice("c_only", [1, 2])


def score(values):
    # The best architecture: op=c, flag=True, units=32, c_only=2.
    total = {"a": 0.0, "b": 0.1, "c": 0.2}[values["op"]] + 0.1 * values["flag"] + values["units"] / 320
    return total + 0.05 * values.get("c_only", 0)


class FakeTuner(keras_tuner.Tuner):
    def run_trial(self, trial, *args, **kwargs):
        return {"reward": score(trial.hyperparameters.values)}


def make_tuner(tmp_path, max_trials, overwrite=True, **kwargs):
    kwargs = {"population_size": 4, "sample_size": 2, "seed": 5, **kwargs}
    return FakeTuner(
        oracle=EvolutionOracle(max_trials=max_trials, **kwargs),
        hypermodel=build_space,
        directory=str(tmp_path),
        project_name="evo",
        overwrite=overwrite,
    )


def completed_values(tuner):
    trials = [tuner.oracle.trials[t] for t in tuner.oracle.end_order]
    return [t.hyperparameters.values for t in trials if t.status == "COMPLETED"]


def test_children_mutate_one_hyperparameter_of_a_tournament_winner(tmp_path):
    tuner = make_tuner(tmp_path, 20)
    tuner.search(verbose=0)
    values = completed_values(tuner)
    assert len({json.dumps(v, sort_keys=True) for v in values}) == len(values) == 20, "no repeats"
    oracle = tuner.oracle
    assert oracle.mutations >= 10 and len(oracle.population()) == 4
    # Every mutated child differs from some earlier architecture in one active decision (a conditional one
    # may appear or vanish with it).
    for index in range(5, len(values)):
        child = values[index]
        differences = [
            sum(child.get(k) != parent.get(k) for k in ("op", "flag", "units")) for parent in values[:index]
        ]
        assert min(differences) <= 1
    # The scores rise: the best of the space (0.2 + 0.1 + 0.1 + 0.1) is found in 20 of its 30 architectures.
    assert max(score(v) for v in values) == pytest.approx(0.5)


def test_resumed_search_goes_on_as_an_uninterrupted_one(tmp_path):
    reference = make_tuner(tmp_path / "ref", 16)
    reference.search(verbose=0)
    first = make_tuner(tmp_path / "resumed", 9)
    first.search(verbose=0)
    second = make_tuner(tmp_path / "resumed", 16, overwrite=False)
    second.search(verbose=0)
    assert completed_values(second) == completed_values(reference)


def test_minimised_objective_keeps_the_lowest_scores():
    oracle = EvolutionOracle(objective="latency_ms", max_trials=5)
    assert oracle.objective.direction == "min"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"population_size": 0}, "population_size"),
        ({"population_size": 5, "sample_size": 6}, "sample_size"),
        ({"max_trials": "ten"}, "max_trials"),
        ({"objective": ["reward", "latency_ms"]}, "single objective"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EvolutionOracle(**kwargs)


def test_a_continuous_hyperparameter_is_refused(tmp_path):
    def space(hp):
        hp.Float("rate", 0.0, 1.0)

    tuner = FakeTuner(
        oracle=EvolutionOracle(max_trials=3, seed=1),
        hypermodel=space,
        directory=str(tmp_path),
        project_name="float",
    )
    with pytest.raises(ValueError, match="rate"):
        tuner.search(verbose=0)
