"""Tests of the reward surrogate: finds a planted optimum sooner, resumes exactly, round-trips."""

import dataclasses
import itertools
import json

import numpy as np
import pytest

from keras_mnas.search import Controller, ControllerConfig

COUNTS = [4] * 5


def _additive_landscape(seed):
    """A reward additive in the decisions, with its optimum planted at a random architecture."""
    rng = np.random.default_rng(seed)
    terms = rng.normal(size=(len(COUNTS), max(COUNTS)))
    optimum = [int(t) for t in rng.integers(max(COUNTS), size=len(COUNTS))]
    for decision, token in enumerate(optimum):
        terms[decision, token] = terms[decision].max() + 0.5

    def reward(tokens):
        return float(sum(terms[decision, token] for decision, token in enumerate(tokens)))

    return reward, optimum


def _distinct_until_found(settings, seed, cap=200):
    """How many distinct architectures a search evaluates until it evaluates the optimum (cap if never)."""
    reward, optimum = _additive_landscape(seed)
    controller = Controller(COUNTS, seed=seed, units=8, minibatch_size=50, **settings)
    seen = set()
    for _ in range(4 * cap):
        tokens, log_probs = controller.sample()
        if tuple(tokens) not in seen:
            seen.add(tuple(tokens))
            if tokens == optimum:
                return len(seen)
        controller.observe(tokens, log_probs, reward(tokens))
        if len(seen) >= cap:
            break
    return cap


@pytest.mark.parametrize("surrogate", ["screen", "neighbours", "samples"])
def test_the_surrogate_finds_a_planted_optimum_in_fewer_architectures(surrogate):
    seeds = range(4)
    without = [_distinct_until_found({}, seed) for seed in seeds]
    with_model = [_distinct_until_found({"surrogate": surrogate}, seed) for seed in seeds]
    # 1,024 architectures; the plain elite search walks each elite's 15 neighbours in the LSTM's order.
    assert np.median(with_model) < np.median(without), (with_model, without)
    assert max(with_model) < 200, with_model


def _drive(controller, steps):
    out = []
    for _ in range(steps):
        tokens, log_probs = controller.sample()
        reward = float(sum(tokens)) + 0.3 * tokens[0] * tokens[1]
        out.append((tokens, controller.observe(tokens, log_probs, reward)))
    return out


@pytest.mark.parametrize("surrogate", ["screen", "neighbours", "samples"])
def test_resume_with_the_surrogate_proposes_and_learns_as_the_original(surrogate):
    settings = dict(units=8, minibatch_size=4, elite_warmup=3, surrogate=surrogate, surrogate_candidates=4)
    a = Controller(COUNTS, seed=11, **settings)
    _drive(a, 10)  # two updates: eight observations in the history, two pending
    saved = json.loads(json.dumps(a.get_state()))
    assert len(saved["history"]) == 8 and len(saved["pending"]) == 2
    assert "history" in Controller.checkpoint_keys  # written with the weights, once per update
    continued = _drive(a, 12)
    b = Controller.from_state(saved)
    resumed = _drive(b, 12)
    assert [t for t, _ in resumed] == [t for t, _ in continued]
    for (_, sa), (_, sb) in zip(continued, resumed, strict=True):
        assert (sa is None) == (sb is None)
        if sa is not None:
            assert sb["mean_reward"] == pytest.approx(sa["mean_reward"])
    # The default keeps no history: its saved state does not grow with the observations.
    plain = Controller(COUNTS, seed=11, units=8, minibatch_size=4)
    _drive(plain, 10)
    assert plain.get_state()["history"] == []


def test_screened_proposals_are_never_architectures_already_observed():
    controller = Controller(
        [3, 3], seed=2, units=8, elite_mutation=0.99, elite_warmup=1, surrogate="screen",
        surrogate_candidates=2,
    )
    observed = set()
    for _ in range(9):  # the whole space of 9: every proposal after the first is new until none is left
        tokens, log_probs = controller.sample()
        assert tuple(tokens) not in observed or len(observed) == 1
        observed.add(tuple(tokens))
        controller.observe(tokens, log_probs, float(tokens[0] - tokens[1]))
    assert len(observed) >= 8


def test_surrogate_settings_round_trip_and_are_checked():
    config = ControllerConfig(surrogate="screen", surrogate_candidates=np.int64(8), surrogate_exploration=2)
    assert (config.surrogate_candidates, config.surrogate_exploration) == (8, 2.0)
    assert ControllerConfig(**json.loads(json.dumps(config.get_config()))) == config
    assert ControllerConfig.from_config({"surrogate": "neighbours"}).surrogate == "neighbours"
    assert Controller.from_state(Controller([3, 3], config, seed=0, units=8).get_state()).config == (
        dataclasses.replace(config, units=8)
    )
    for settings, message in [
        ({"surrogate": "gp"}, "surrogate` must be one of"),
        ({"surrogate_candidates": -1}, "surrogate_candidates` must be an integer >= 0"),
        ({"surrogate_exploration": -0.5}, "surrogate_exploration` must be a finite number >= 0"),
        ({"surrogate": "neighbours", "neighbour_search": "random"}, "neighbour_search='exhaustive'"),
        ({"surrogate": "screen", "elite_mutation": 0.0}, "expected elite_mutation > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            ControllerConfig(**settings)


def test_a_state_saved_before_the_surrogate_loads_without_one():
    controller = Controller([3, 3, 3], seed=4, units=8, minibatch_size=4, elite_warmup=2)
    _drive(controller, 7)
    state = json.loads(json.dumps(controller.get_state()))
    for key in ("surrogate", "surrogate_candidates", "surrogate_exploration"):
        del state["config"][key]
    del state["history"]
    restored = Controller.from_state(state)
    assert restored.config.surrogate is None
    assert [restored.sample()[0] for _ in range(5)] == [controller.sample()[0] for _ in range(5)]


def test_the_reward_model_fits_an_additive_and_pairwise_table():
    # Every architecture of a small space observed but one: the model ranks the held-out ones by their reward.
    controller = Controller([3, 3, 3], seed=0, units=8, surrogate="screen", minibatch_size=100)
    rng = np.random.default_rng(0)
    single, pair = rng.normal(size=(3, 3)), rng.normal(size=(3, 3)) * 0.5
    cells = [list(cell) for cell in itertools.product(range(3), repeat=3)]

    def reward(tokens):
        return float(single[np.arange(3), tokens].sum() + pair[tokens[0], tokens[1]])

    train, held_out = cells[::2], cells[1::2]
    for tokens in train:
        controller.observe(tokens, controller.log_probs(tokens), reward(tokens))
    model, observed = controller._reward_model()
    assert len(observed) == len(train)
    predicted = model.upper_bound(np.array(held_out) + np.array([0, 3, 6]), exploration=0.0)
    truth = np.array([reward(tokens) for tokens in held_out])
    assert np.corrcoef(predicted, truth)[0, 1] > 0.8
