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
        "median_error",
        "shift",
    }
    assert report["within_10_percent"] == sum(e <= 0.10 for e in errors) / 5 == 0.6
    assert report["within_5_percent"] == sum(e <= 0.05 for e in errors) / 5
    assert report["spearman"] == spearman(predicted, measured)
    assert report["median_abs_error"] == pytest.approx(sorted(errors)[2])
    assert report["max_abs_error"] == pytest.approx(0.3)
    assert prediction_report([2.0], [2.0])["spearman"] is None  # one model has no ranking
    assert report["median_error"] == pytest.approx(0.0) and report["shift"] is None


def test_prediction_report_tells_a_shift_across_the_board_from_scattered_errors():
    measured = [1.0, 2.0, 3.0, 4.0, 5.0]
    slower = prediction_report([0.93 * m for m in measured[:4]] + [5.1], measured)  # the device slowed down
    assert slower["median_error"] == pytest.approx(-0.07) and slower["shift"] == pytest.approx(-0.07)
    scattered = prediction_report([0.9, 2.2, 2.8, 4.3, 4.6], measured)  # as large, but both ways
    assert scattered["shift"] is None and scattered["max_abs_error"] >= 0.07
    small = prediction_report([1.03 * m for m in measured], measured)  # within a measurement's noise
    assert small["median_error"] == pytest.approx(0.03) and small["shift"] is None
    for predicted, measured, match in [
        ([1.0], [1.0, 2.0], "as many predictions as measurements"),
        ([], [], "at least one"),
        ([1.0], [0.0], "`measured` must be a finite number > 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            prediction_report(predicted, measured)


def _networks(rng, count):
    """Feature sums of random networks: kernels a and b in every one, c and d in one network in ten."""
    rows = []
    for _ in range(count):
        row = {"a:ms": rng.uniform(0.5, 2.0), "b:ms": rng.uniform(0.5, 2.0)}
        for rare in ("c:ms", "d:ms"):
            if rng.random() < 0.1:
                row[rare] = rng.uniform(0.5, 2.0)
        rows.append(row)
    return rows


def _latency(row, rng):
    weights = {"a:ms": 1.3, "b:ms": 0.8, "c:ms": 1.8, "d:ms": 0.5}  # in-network cost per ms alone
    true = 0.2 + sum(weights[name] * value for name, value in row.items())
    return true * (1 + rng.normal(0, 0.02))


def _p95_error(rows, test, truth, prior):
    """The 95th percentile of the relative error on `test` of a per-kernel fit on `rows`."""
    terms, intercept = calibration_lib.fit_terms(rows, [truth[id(r)] for r in rows], prior=prior, ridge=0.01)
    fitted = calibration_lib.Calibration(1.0, intercept, terms=terms)
    return np.percentile([abs(fitted.apply_features(r) / truth[id(r)] - 1) for r in test], 95)


def test_bootstrap_spread_points_at_the_kernels_the_measurements_lack():
    rows = [{"a:ms": 1.0 + i / 10} for i in range(10)]
    measured = [1.3 * r["a:ms"] for r in rows]
    candidates = [{"a:ms": 1.5}, {"a:ms": 1.5, "c:ms": 0.5}]
    prior = {"a:ms": 1.0, "c:ms": 1.0}
    familiar, unseen = calibration_lib.bootstrap_spread(rows, measured, candidates, prior=prior)
    assert unseen > familiar
    with pytest.raises(ValueError, match="fits"):
        calibration_lib.bootstrap_spread(rows, measured, [{"a:ms": 1.0}], fits=1)
    with pytest.raises(ValueError, match="as many"):
        calibration_lib.bootstrap_spread(rows, measured[:-1], [{"a:ms": 1.0}])


def test_measuring_where_the_fits_disagree_predicts_unseen_networks_better_than_random_picks():
    # The adaptive sampling of LatencyLookupTable.calibrate, on numbers: 8 random measurements, then 8 more
    # chosen two at a time where bootstrap fits disagree, against 8 more drawn at random from the same pool.
    prior = {name: 1.0 for name in ("a:ms", "b:ms", "c:ms", "d:ms")}
    adaptive_errors, random_errors = [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        start, pool, test = _networks(rng, 8), _networks(rng, 200), _networks(rng, 300)
        truth = {id(row): _latency(row, rng) for row in start + pool + test}

        chosen, left = list(start), list(pool)
        while len(chosen) < 16:
            spread = calibration_lib.bootstrap_spread(
                chosen, [truth[id(r)] for r in chosen], left, prior=prior, ridge=0.01, seed=seed
            )
            for i in sorted(range(len(left)), key=lambda i: -spread[i])[:2]:
                chosen.append(left[i])
            left = [r for r in left if all(r is not c for c in chosen)]
        adaptive_errors.append(_p95_error(chosen, test, truth, prior))
        random_errors.append(_p95_error(start + pool[:8], test, truth, prior))
    assert np.mean(adaptive_errors) < 0.8 * np.mean(random_errors), (adaptive_errors, random_errors)
