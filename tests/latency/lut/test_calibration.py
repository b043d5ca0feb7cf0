import doctest

import numpy as np
import pytest

from keras_mnas.latency.lut import calibration as calibration_lib
from keras_mnas.latency.lut import fit_line, prediction_report, spearman


def test_docstring_examples():
    result = doctest.testmod(calibration_lib, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_fit_line_weights_relative_errors_and_refuses_undetermined_fits():
    assert fit_line([1.0, 2.0, 4.0], [3.0, 5.0, 9.0]) == pytest.approx((2.0, 1.0))
    # Off a line, it minimises the squared relative errors: ordinary least squares and any nudge do worse.
    x, y = np.array([1.0, 2.0, 10.0, 11.0]), np.array([1.0, 2.0, 13.0, 12.0])

    def loss(line):
        return float(np.sum((np.polyval(line, x) / y - 1) ** 2))

    best = fit_line(x, y)
    assert loss(best) < loss(np.polyfit(x, y, 1))
    for nudge in [(0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01)]:
        assert loss(best) < loss(np.add(best, nudge))
    for x, y, match in [
        ([1.0], [1.0], "at least 2"),
        ([1.0, 1.0], [1.0, 2.0], "same predicted latency"),
        ([1.0, 2.0], [1.0, -2.0], "positive"),
        ([1.0, 2.0], [1.0], "as many"),
    ]:
        with pytest.raises(ValueError, match=match):
            fit_line(x, y)


def test_fit_line_can_keep_the_intercept_non_negative():
    x, y = np.array([1.0, 2.0, 4.0]), np.array([0.4, 2.1, 4.0])
    free_scale, free_intercept = fit_line(x, y)
    assert free_intercept < 0
    scale, intercept = fit_line(x, y, nonnegative_intercept=True)
    assert intercept == 0.0

    def loss(scale, intercept):
        return float(np.sum(((scale * x + intercept) / y - 1) ** 2))

    # The best line with a non-negative intercept: a grid of others does no better.
    best = loss(scale, intercept)
    assert best > loss(free_scale, free_intercept)  # the constraint costs something here
    for other_intercept in (0.0, 0.01, 0.05, 0.2):
        for other_scale in np.linspace(0.5 * scale, 1.5 * scale, 101):
            assert best <= loss(other_scale, other_intercept) + 1e-12
    # A free fit that already has a non-negative intercept is left as it is.
    assert fit_line([1.0, 2.0, 4.0], [3.0, 5.0, 9.0], nonnegative_intercept=True) == pytest.approx(
        (2.0, 1.0)
    )


def test_prediction_report_gives_the_figures_lut_eval_prints():
    predicted, measured = [1.0, 2.1, 3.9, 3.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.25]
    report = prediction_report(predicted, measured)
    errors = [abs(p / m - 1) for p, m in zip(predicted, measured, strict=True)]
    assert set(report) == {
        "within_10_percent",
        "within_5_percent",
        "spearman",
        "median_abs_error",
        "max_abs_error",
    }
    assert report["within_10_percent"] == sum(e <= 0.10 for e in errors) / 5 == 0.6
    assert report["within_5_percent"] == sum(e <= 0.05 for e in errors) / 5
    assert report["spearman"] == spearman(predicted, measured)
    assert report["median_abs_error"] == pytest.approx(sorted(errors)[2])
    assert report["max_abs_error"] == pytest.approx(0.3)
    assert prediction_report([2.0], [2.0])["spearman"] is None  # one model has no ranking
    for predicted, measured, match in [
        ([1.0], [1.0, 2.0], "as many predictions as measurements"),
        ([], [], "at least one"),
        ([1.0], [0.0], "`measured` must be a finite number > 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            prediction_report(predicted, measured)
