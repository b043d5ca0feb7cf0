"""The one-shot benchmark: the reference is measured apart from what the search scores on."""

import numpy as np
import one_shot  # benchmarks/one_shot.py, put on sys.path by this folder's conftest
import pytest

from keras_mnas.search.proxy import kendall_tau


def test_reference_draws_are_the_validation_images_with_noise_of_their_own():
    (x_train, _), (x_valid, y_valid), (x_reference, y_reference) = one_shot.digits(
        0.6, seed=3, copies=2, reference_draws=3
    )
    assert x_train.shape == (2400, 16, 16, 1) and x_valid.shape == (597, 16, 16, 1)
    assert x_reference.shape == (3 * 597, 16, 16, 1)
    np.testing.assert_array_equal(y_reference, np.tile(y_valid, 3))
    draws = x_reference.reshape(3, 597, 16, 16, 1)
    # The same images under different noise: the draws differ from each other and from the validation
    # draw by noise of the stated size, about sqrt(2) x 0.6 per pixel.
    for first, second in ((draws[0], draws[1]), (draws[2], x_valid), (draws[0], x_valid)):
        assert abs(np.std(first - second) - 0.6 * np.sqrt(2)) < 0.01


def test_reference_draws_leave_the_training_and_validation_data_as_they_were():
    without = one_shot.digits(0.6, seed=3, copies=2)
    with_draws = one_shot.digits(0.6, seed=3, copies=2, reference_draws=4)
    for plain, drawn in zip(without[:2], with_draws[:2], strict=True):
        np.testing.assert_array_equal(plain[0], drawn[0])
        np.testing.assert_array_equal(plain[1], drawn[1])
    assert without[2][0].shape == (0, 16, 16, 1) and len(without[2][1]) == 0


def test_one_training_is_judged_against_trainings_it_is_not_part_of():
    truth = np.arange(8, dtype=float)
    rng = np.random.default_rng(0)
    # Three trainings, each with a large error of its own that its validation score shares.
    errors = rng.normal(0, 4, (3, 8))
    reference_runs = truth + errors
    scored_once = truth + errors
    one_training, cheap_tau = one_shot.held_out_taus(truth, scored_once, reference_runs)
    # Against a mean that held it, a training would look better than it is.
    with_itself = np.mean([kendall_tau(scored_once[k], reference_runs.mean(axis=0)) for k in range(3)])
    assert one_training < with_itself - 0.1
    others = [np.delete(reference_runs, k, axis=0).mean(axis=0) for k in range(3)]
    assert cheap_tau == pytest.approx(np.mean([kendall_tau(truth, rest) for rest in others]))


def test_the_rank_set_spreads_over_the_costs_not_around_the_typical_one():
    rng = np.random.default_rng(0)
    costs = rng.lognormal(0, 0.5, 1000)  # crowded around the typical cost, with a long tail
    picks = one_shot.spread_by_cost(costs, 30)
    assert len(set(picks)) == 30
    ranks = np.argsort(np.argsort(costs))[picks]
    # One from each thirtieth of the candidates sorted by cost, smallest to largest.
    np.testing.assert_array_equal(np.floor(ranks * 30 / 1000), np.arange(30))
    assert costs[picks].min() < np.quantile(costs, 0.02) and costs[picks].max() > np.quantile(costs, 0.98)


@pytest.mark.parametrize("count", [0, 7])
def test_the_rank_set_refuses_a_count_it_cannot_pick(count):
    with pytest.raises(ValueError, match="between 1 and the 6 candidates; received " + str(count)):
        one_shot.spread_by_cost([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], count)
