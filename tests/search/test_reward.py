import math

import numpy as np
import pytest

from keras_mnas.search.reward import MnasReward


def test_soft_reward_trades_latency_for_accuracy_as_the_paper_says():
    reward = MnasReward.soft(75.0)
    # "2x latency is worth about +5% relative accuracy"
    assert reward(0.75 * 1.05, 150.0) == pytest.approx(reward(0.75, 75.0), rel=0.002)
    assert reward(0.75, 37.5) > reward(0.75, 75.0) == 0.75 > reward(0.75, 150.0)


def test_hard_reward_ignores_latency_under_target_and_punishes_over():
    reward = MnasReward.hard(75.0)
    assert reward(0.7, 10.0) == reward(0.7, 75.0) == 0.7
    assert reward(0.7, 150.0) == pytest.approx(0.35)
    assert reward.is_hard and not MnasReward.soft(75.0).is_hard


def test_custom_exponents_and_config_round_trip():
    reward = MnasReward(20.0, alpha=-0.02, beta=-0.5, metric="val_top5")
    assert reward(0.9, 40.0) == pytest.approx(0.9 * 2**-0.5)
    assert MnasReward.from_config(reward.get_config()) == reward
    assert "custom" in reward.describe()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target_latency_ms": 0}, "target_latency_ms must be positive"),
        ({"target_latency_ms": -5.0}, "target_latency_ms must be positive"),
        ({"target_latency_ms": math.inf}, "target_latency_ms must be a finite number"),
        ({"target_latency_ms": 10.0, "alpha": math.nan}, "alpha must be a finite number"),
        ({"target_latency_ms": 10.0, "metric": ""}, "metric must be"),
    ],
)
def test_bad_reward_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MnasReward(**kwargs)


@pytest.mark.parametrize("latency", [0.0, -1.0, math.nan, math.inf])
def test_bad_latency_never_becomes_a_reward(latency):
    with pytest.raises(ValueError, match="latency_ms"):
        MnasReward.soft(10.0)(0.9, latency)


def test_score_arrays_scores_a_whole_table_like_the_scalar_reward():
    accuracy = np.array([0.9, 0.9, 0.9, 0.5])
    latency = np.array([10.0, 20.0, 5.0, 7.5])
    for reward in (MnasReward.soft(10.0), MnasReward.hard(10.0), MnasReward(10.0, alpha=-0.2, beta=-0.5)):
        scores = reward.score_arrays(accuracy, latency)
        assert scores.shape == (4,)
        np.testing.assert_allclose(scores, [reward(a, t) for a, t in zip(accuracy, latency, strict=True)])
    soft = MnasReward.soft(10.0).score_arrays(accuracy, latency)
    assert soft[2] > soft[0] > soft[1]  # faster earns a bonus, slower pays
    for bad in ([0.0], [-1.0], [np.nan], [np.inf]):
        with pytest.raises(ValueError, match="latency_ms must hold finite, positive numbers"):
            MnasReward.soft(10.0).score_arrays([0.9], bad)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: MnasReward(2**1100), "target_latency_ms must be a finite number; received 1358"),
        (lambda: MnasReward(1e7), "target_latency_ms must be <= 1e"),
        (lambda: MnasReward(0.2, alpha=-200), r"alpha must be in \[-10, 10\]; received -200.0"),
        (lambda: MnasReward(0.2, beta=True), "beta must be a finite number; received True"),
        (lambda: MnasReward(0.2, metric=" val_accuracy"), "metric must be a metric name"),
        (lambda: MnasReward(0.2, alpha=-10)(0.9, 1e-300), "latency_ms=1e-300 is too far from the target"),
        (lambda: MnasReward(0.2)(2**1100, 0.1), "accuracy must be a finite number"),
        (lambda: MnasReward.from_config({"target": 1.0}), "config must be a dict of"),
    ],
)
def test_rewards_never_overflow_and_name_what_is_wrong(call, match):
    # Each of these raised OverflowError, or returned an infinite reward.
    with pytest.raises(ValueError, match=match):
        call()


def test_score_arrays_refuses_an_overflowing_reward_like_a_single_candidate():
    reward = MnasReward(0.2, alpha=-10.0, beta=-10.0)
    with pytest.raises(ValueError, match="too far from the target"):
        reward(0.9, 1e-40)
    with pytest.raises(ValueError, match="too far from the target"):
        reward.score_arrays([0.9, 0.9], [1e-40, 0.2])
    assert reward.score_arrays([0.9], [0.2]).tolist() == [0.9]


def test_absolute_reward_is_symmetric_around_the_target_and_round_trips():
    from keras_mnas.search.reward import AbsoluteReward, reward_from_config

    reward = AbsoluteReward(10.0)
    assert reward(0.8, 10.0) == 0.8
    # 50% slower and 50% faster cost the same: 0.10 x 0.5.
    assert reward(0.8, 15.0) == pytest.approx(0.75) == reward(0.8, 5.0)
    assert reward.score_arrays([0.8, 0.8], [15.0, 30.0]) == pytest.approx([0.75, 0.6])
    assert reward_from_config(reward.get_config()) == reward
    assert reward_from_config(MnasReward.soft(5.0).get_config()) == MnasReward.soft(5.0)
    assert "absolute" in reward.describe()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target_latency_ms": 0}, "target_latency_ms must be positive"),
        ({"target_latency_ms": 10.0, "beta": math.inf}, "beta must be a finite number"),
        ({"target_latency_ms": 10.0, "metric": " x"}, "metric must be"),
    ],
)
def test_bad_absolute_reward_arguments(kwargs, match):
    from keras_mnas.search.reward import AbsoluteReward

    with pytest.raises(ValueError, match=match):
        AbsoluteReward(**kwargs)
    with pytest.raises(ValueError, match="form"):
        AbsoluteReward.from_config({"target_latency_ms": 10.0})
