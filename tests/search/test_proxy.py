import numpy as np
import pytest

from keras_mnas.search.proxy import kendall_tau, proxy_check, repeat_tau


def test_kendall_tau_counts_agreeing_pairs():
    assert kendall_tau([1, 2, 3], [4, 5, 6]) == 1.0
    assert kendall_tau([1, 2, 3], [6, 5, 4]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="same value"):
        kendall_tau([1, 2, 3], [5, 5, 5])
    with pytest.raises(ValueError, match="equally long"):
        kendall_tau([1, 2], [1, 2, 3])


def test_proxy_check_reports_rank_agreement_and_the_noise_of_repeated_training():
    rng = np.random.default_rng(0)
    truth = {c: 0.5 + 0.04 * c for c in range(8)}
    noise = iter(rng.normal(0, 0.01, size=100))
    report = proxy_check(
        list(truth),
        cheap_score=lambda c: truth[c] - 0.3,
        full_score=lambda c: truth[c] + next(noise),
        repeats=4,
    )
    assert report.tau > 0.7 and len(report.repeats) == 4
    assert 0 < report.cv < 0.05
    assert "Kendall tau" in report.describe()
    with pytest.raises(ValueError, match="at least 5"):
        proxy_check([1, 2], cheap_score=float, full_score=float)
    with pytest.raises(ValueError, match="cheap_score must return a finite number"):
        proxy_check(list(range(5)), cheap_score=lambda c: None, full_score=float)


def test_repeat_tau_averages_the_agreement_of_every_two_repeats():
    first, second, reversed_ = [1, 2, 3, 4], [1, 2, 4, 3], [4, 3, 2, 1]
    assert repeat_tau([first, second]) == pytest.approx(4 / 6)
    # Pairs: (first, second) 4/6, (first, reversed) -1, (second, reversed) -4/6.
    assert repeat_tau([first, second, reversed_]) == pytest.approx((4 / 6 - 1 - 4 / 6) / 3)
    with pytest.raises(ValueError, match="at least 2 repeats"):
        repeat_tau([first])
