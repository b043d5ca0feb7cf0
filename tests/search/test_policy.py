"""Tests of the token-policy protocol: the registry, RandomPolicy, MnasOracle driven by a custom policy."""

import json

import keras_tuner
import numpy as np
import pytest

from keras_mnas.search import Controller, ControllerConfig
from keras_mnas.search.oracle import MnasOracle
from keras_mnas.search.policy import (
    PolicyFactory,
    RandomPolicy,
    TokenPolicy,
    controller_policy,
    get_policy,
    register_policy,
    resolve_policy,
)


class Sweep:
    """A tiny policy for the tests: proposes every architecture in order, and remembers what it was told."""

    def __init__(self, choice_counts, seed=None):
        self.choice_counts = list(choice_counts)
        self.seed = seed
        self.next = 0
        self.rewards = []

    def sample(self):
        index, tokens = self.next, []
        self.next += 1
        for count in reversed(self.choice_counts):
            index, token = divmod(index, count)
            tokens.append(token)
        return tokens[::-1], self.log_probs(tokens)

    def observe(self, tokens, log_probs, reward):
        self.rewards.append(reward)
        if len(self.rewards) % 2 == 0:
            return {"mean_reward": float(np.mean(self.rewards[-2:])), "note": "not a number"}
        return None

    def log_probs(self, tokens):
        return [0.0] * len(self.choice_counts)

    def get_state(self):
        return {
            "choice_counts": self.choice_counts,
            "seed": self.seed,
            "next": self.next,
            "rewards": self.rewards,
        }

    @classmethod
    def from_state(cls, state):
        policy = cls(state["choice_counts"], state["seed"])
        policy.next, policy.rewards = state["next"], list(state["rewards"])
        return policy


register_policy("test-sweep", Sweep)


def build_space(hp):
    hp.Choice("op", ["a", "b", "c"])
    hp.Int("units", 8, 32, step=8)
    return None


class FakeTuner(keras_tuner.Tuner):
    """Reports a reward computed from the hyperparameters: no model is trained."""

    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        return {"reward": {"a": 0.0, "b": 0.1, "c": 0.2}[values["op"]] + values["units"] / 320}


def make_tuner(tmp_path, controller, max_trials, overwrite=True):
    oracle = MnasOracle(max_trials=max_trials, seed=5, controller=controller)
    return FakeTuner(
        oracle=oracle, hypermodel=build_space, directory=str(tmp_path), project_name="p", overwrite=overwrite
    )


def test_the_registered_policies_follow_the_protocol():
    for name in ("controller", "random", "test-sweep"):
        factory = get_policy(name)
        assert isinstance(factory, PolicyFactory) and factory.name == name
        policy = factory([3, 1, 4], 0)
        assert isinstance(policy, TokenPolicy)
        tokens, log_probs = policy.sample()
        assert len(tokens) == len(log_probs) == 3 and tokens[1] == 0
        assert type(factory.from_state(json.loads(json.dumps(policy.get_state())))) is type(policy)
    assert isinstance(get_policy("controller")([2], 0), Controller)


def test_controller_argument_forms():
    assert resolve_policy(None).get_config() == {
        "name": "controller",
        "config": ControllerConfig().get_config(),
    }
    nasnet = {"name": "controller", "config": ControllerConfig.nasnet().get_config()}
    assert resolve_policy("nasnet").get_config() == nasnet
    assert resolve_policy(ControllerConfig.nasnet()).get_config() == nasnet
    assert resolve_policy({"preset": "nasnet"}).get_config() == nasnet
    assert resolve_policy(controller_policy(ControllerConfig.nasnet())).get_config() == nasnet
    assert resolve_policy(Controller).get_config() == resolve_policy(None).get_config()
    assert resolve_policy("random") is resolve_policy(RandomPolicy) is get_policy("random")
    assert resolve_policy(Sweep).name == "test-sweep"


@pytest.mark.parametrize(
    "controller, match",
    [
        ("enas", r"'enas' is neither a controller preset \['default', 'nasnet'\] nor a registered policy"),
        ({"units": 0}, "units` must be an integer >= 1"),
        ({"preset": "enas"}, "Unknown controller preset 'enas'"),
        ({"learning_rte": 0.1}, r"Unknown controller settings \['learning_rte'\]"),
        (3, "controller must be None, a preset name, a ControllerConfig"),
        (lambda counts, seed: RandomPolicy(counts, seed), "is not registered"),
        (PolicyFactory("mine", RandomPolicy, RandomPolicy.from_state), "Policy 'mine' is not registered"),
    ],
)
def test_bad_controllers_are_refused_when_the_oracle_is_made(controller, match):
    with pytest.raises(ValueError, match=match):
        MnasOracle(max_trials=3, controller=controller)


def test_registering_names():
    with pytest.raises(ValueError, match="other than the controller presets"):
        register_policy("nasnet", Sweep)
    with pytest.raises(ValueError, match="already registered as 'random'"):
        register_policy("random", Sweep)
    with pytest.raises(ValueError, match="callable `from_state"):
        register_policy("no-state", lambda counts, seed: Sweep(counts, seed))
    assert register_policy("test-sweep", Sweep) == get_policy("test-sweep")  # the same again is harmless
    with pytest.raises(ValueError, match=r"No policy is registered as 'nope'; registered: \["):
        get_policy("nope")


def test_random_policy_is_distinct_seeded_and_resumes_exactly():
    policy = RandomPolicy([3, 1, 2], seed=4)
    first = [policy.sample() for _ in range(3)]
    assert len({tuple(tokens) for tokens, _ in first}) == 3
    assert first[0][1] == policy.log_probs(first[0][0]) == [-np.log(3), 0.0, -np.log(2)]
    assert policy.observe(*first[0], 1.0) is None
    twin = RandomPolicy.from_state(json.loads(json.dumps(policy.get_state())))
    assert [twin.sample() for _ in range(3)] == [policy.sample() for _ in range(3)]
    with pytest.raises(RuntimeError, match="proposed all 6 architectures"):
        policy.sample()
    assert [RandomPolicy([5] * 6, seed=1).sample() for _ in range(2)] == [
        RandomPolicy([5] * 6, seed=1).sample() for _ in range(2)
    ]
    with pytest.raises(ValueError, match=r"choice_counts\[1\]` must be an integer >= 1"):
        RandomPolicy([3, 0])


@pytest.mark.parametrize("controller", ["test-sweep", Sweep])
def test_a_custom_policy_drives_the_oracle_and_is_rebuilt_by_name_on_reload(tmp_path, controller):
    tuner = make_tuner(tmp_path, controller, max_trials=5)
    tuner.search(verbose=0)
    oracle = tuner.oracle
    assert isinstance(oracle.controller, Sweep) and oracle.controller.seed == 5
    completed = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    assert len(completed) == 5
    # The sweep proposes the space in order; the discovery trial (the defaults: a, 8) is its first proposal,
    # so the sweep re-proposes it once and learns from the known reward instead of training it again.
    values = [(t.hyperparameters["op"], t.hyperparameters["units"]) for t in completed]
    assert values == [("a", 8), ("a", 16), ("a", 24), ("a", 32), ("b", 8)]
    assert len(oracle.controller.rewards) == 5 + oracle.reused_proposals
    # Only the numbers of the policy's statistics are kept, with the count of observed rewards.
    assert oracle.controller_updates[0] == {
        "update": 1,
        "observed": 2,
        "mean_reward": pytest.approx(np.mean(oracle.controller.rewards[:2])),
    }
    saved = json.loads((tmp_path / "p" / "oracle.json").read_text())["mnas"]
    assert saved["policy"] == "test-sweep"
    assert saved["controller"] == oracle.controller.get_state()

    # Reloaded by a tuner built with the default controller: the saved policy is rebuilt by its name.
    resumed = make_tuner(tmp_path, None, max_trials=7, overwrite=False)
    assert isinstance(resumed.oracle.controller, Sweep)
    assert resumed.oracle.controller.get_state() == saved["controller"]
    resumed.search(verbose=0)
    values = [t.hyperparameters.values for t in resumed.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(values) == 7 and {"op": "b", "units": 24} in values


def test_random_policy_drives_the_oracle(tmp_path):
    tuner = make_tuner(tmp_path, "random", max_trials=6)
    tuner.search(verbose=0)
    completed = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(completed) == 6 and tuner.oracle.controller_updates == []
    saved = json.loads((tmp_path / "p" / "oracle.json").read_text())["mnas"]
    assert saved["policy"] == "random" and saved["controller"]["format"] == "keras_mnas.search.RandomPolicy/1"
