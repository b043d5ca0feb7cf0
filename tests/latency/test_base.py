import json
import math

import numpy as np
import pytest

from keras_mnas.latency import QUANTIZATIONS, LatencyResult, LatencySource
from keras_mnas.latency.base import percentile_cv
from keras_mnas.utils.checks import check_seconds


def make_result(**overrides):
    fields = dict(
        median_ms=6.0,
        mean_ms=6.1,
        p90_ms=6.4,
        std_ms=0.2,
        cv=0.2 / 6.1,
        runs=50,
        warmup_runs=10,
        threads=1,
        source="host",
        quantization="float32",
        tflite_bytes=1234,
        sha256="ab" * 32,
        provenance={"cpu": "test cpu", "per_repeat_median_ms": [6.0]},
    )
    fields.update(overrides)
    return LatencyResult(**fields)


@pytest.mark.parametrize("field", ["median_ms", "mean_ms", "p90_ms", "std_ms", "cv", "robust_cv"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, "6"])
def test_result_rejects_non_finite_negative_or_non_numbers(field, bad):
    with pytest.raises(ValueError, match=field):
        make_result(**{field: bad})


def test_result_rejects_zero_median():
    with pytest.raises(ValueError, match="median_ms must be positive"):
        make_result(median_ms=0.0)


def test_result_accepts_zero_spread():
    # A prediction (or a perfectly steady timer) has no spread; that is not an error.
    result = make_result(std_ms=0.0, cv=0.0, runs=0)
    assert result.std_ms == 0.0


def test_result_rejects_unknown_quantization():
    with pytest.raises(ValueError, match="int8"):
        make_result(quantization="float16")


def test_round_trip_through_dict_and_json():
    result = make_result()
    assert LatencyResult.from_dict(result.to_dict()) == result
    assert LatencyResult.from_dict(json.loads(result.to_json())) == result


def test_from_dict_rejects_unknown_fields():
    data = make_result().to_dict()
    data["latency"] = 3.0
    with pytest.raises(ValueError, match="latency"):
        LatencyResult.from_dict(data)


def test_from_dict_revalidates():
    data = make_result().to_dict()
    data["median_ms"] = -2.0
    with pytest.raises(ValueError, match="median_ms"):
        LatencyResult.from_dict(data)


def test_unstable_flags_a_high_coefficient_of_variation():
    assert not make_result(cv=0.02).unstable
    assert make_result(cv=0.08).unstable


def test_unstable_judges_the_robust_spread_when_known():
    # Outliers inflate cv; the middle 90% of the runs is what decides.
    assert not make_result(cv=0.8, robust_cv=0.02).unstable
    assert make_result(cv=0.02, robust_cv=0.08).unstable
    assert make_result(cv=0.8, robust_cv=0.02).spread == 0.02


def test_results_saved_without_robust_cv_still_load():
    data = make_result(cv=0.08).to_dict()
    del data["robust_cv"]
    result = LatencyResult.from_dict(data)
    assert result.robust_cv is None and result.unstable


def test_percentile_cv_matches_the_cv_of_normal_times():
    rng = np.random.default_rng(0)
    times = rng.normal(10.0, 0.3, 200_000)
    p5, median, p95 = np.percentile(times, [5, 50, 95])
    assert percentile_cv(p5, median, p95) == pytest.approx(0.03, rel=0.02)
    with pytest.raises(ValueError, match="median"):
        percentile_cv(1.0, 0.0, 2.0)


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "1", True])
def test_check_seconds_names_the_argument(bad):
    with pytest.raises(ValueError, match="`wait_s` must be a finite number of seconds"):
        check_seconds("wait_s", bad)
    check_seconds("wait_s", 0, allow_zero=True)
    with pytest.raises(ValueError, match="> 0"):
        check_seconds("wait_s", 0)


def test_latency_source_is_abstract_and_config_names_it():
    with pytest.raises(TypeError):
        LatencySource()

    class Fixed(LatencySource):
        name = "fixed"

        def measure(self, model, *, quantization="float32", representative_data=None):
            return make_result(source=self.name, quantization=quantization)

    source = Fixed()
    assert source.config() == {"name": "fixed"}
    assert source.measure(None, quantization="int8").quantization == "int8"
    assert set(QUANTIZATIONS) == {"float32", "int8"}


def test_host_users_do_not_import_adbutils_and_android_names_load_on_use():
    import subprocess
    import sys

    code = (
        "import sys, keras_mnas.latency as latency; "
        "assert 'adbutils' not in sys.modules, 'adbutils imported'; "
        "from keras_mnas.latency import AndroidDevicePool, AndroidLatency, list_devices; "
        "assert 'adbutils' in sys.modules; "
        "assert AndroidLatency.__module__ == 'keras_mnas.latency.android.source'; "
        "assert set(latency.__all__) <= set(dir(latency))"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_an_unknown_name_of_the_package_is_an_attribute_error():
    import keras_mnas.latency

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        keras_mnas.latency.Nope  # noqa: B018
