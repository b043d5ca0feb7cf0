import hashlib
import json
import os
import threading
import time

import keras
import numpy as np
import pytest

from keras_mnas import tflite as tflite_lib
from keras_mnas.latency import HostLatency, LatencyResult, TFLiteLatencySource
from keras_mnas.tflite import convert_to_tflite

# Few runs keep the tests fast; the defaults are for real measurements.
FAST = dict(runs=5, warmup_runs=1, min_seconds=0)


def small_model(name="small", input_shape=(32, 32, 3), seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name=f"{name}_input")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name=f"{name}_c1")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    outputs = keras.layers.Dense(4, name=f"{name}_logits")(x)
    return keras.Model(inputs, outputs, name=name)


def big_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3), name="big_input")
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="big_c0")(inputs)
    for i in range(1, 4):
        x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name=f"big_c{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="big_pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="big_logits")(x), name="big")


def test_measure_returns_a_complete_result():
    model = small_model()
    source = HostLatency(**FAST)
    result = source.measure(model)
    assert isinstance(result, LatencyResult)
    assert result.source == "host"
    assert result.quantization == "float32"
    assert (result.runs, result.warmup_runs, result.threads) == (5, 1, 1)
    assert 0 < result.median_ms <= result.p90_ms * 1.0000001
    # The figure describes exactly the flatbuffer convert_to_tflite makes for this model.
    tflite_bytes = convert_to_tflite(model)
    assert result.tflite_bytes == len(tflite_bytes)
    assert result.sha256 == hashlib.sha256(tflite_bytes).hexdigest()
    for key in ("cpu", "python", "litert", "tensorflow", "conversion_seconds", "cache_key"):
        assert key in result.provenance, key
    json.dumps(result.to_dict())  # Everything recorded is JSON-serialisable.


def test_a_much_larger_model_measures_slower():
    source = HostLatency(runs=10, warmup_runs=2)
    small = source.measure(small_model())
    big = source.measure(big_model())
    # ~2000x the multiply-adds (117M vs 55k); a 10x margin survives a noisy shared machine.
    assert big.median_ms > 10 * small.median_ms, (big.median_ms, small.median_ms)


def test_int8_measurement_is_recorded_as_int8():
    model = small_model()
    data = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    result = HostLatency(**FAST).measure(model, quantization="int8", representative_data=data)
    assert result.quantization == "int8"
    assert result.sha256 != HostLatency(**FAST).measure(model).sha256


def test_second_measure_is_a_cache_hit_without_conversion(count_conversions):
    model = small_model()
    source = HostLatency(**FAST)
    first = source.measure(model)
    second = source.measure(model)
    assert second is first
    assert count_conversions == ["float32"]


def test_the_host_shares_the_conversion_path_and_the_cache(count_conversions, monkeypatch):
    # The host implements only measure_tflite; measure (convert once, then the cache) is the shared one.
    assert HostLatency.measure is TFLiteLatencySource.measure
    timed = []
    real = HostLatency.measure_tflite

    def counting(self, tflite_bytes, **kwargs):
        timed.append(kwargs["quantization"])
        return real(self, tflite_bytes, **kwargs)

    monkeypatch.setattr(HostLatency, "measure_tflite", counting)
    source = HostLatency(**FAST)
    assert source.cache  # on by default for the host
    model = small_model()
    first = source.measure(model)
    assert count_conversions == timed == ["float32"]
    assert source.measure(model) is first
    assert count_conversions == timed == ["float32"]  # neither converted nor timed again
    source.measure(small_model(seed=1))
    data = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    source.measure(model, quantization="int8", representative_data=data)
    assert count_conversions == timed == ["float32", "float32", "int8"]


def test_cache_false_measures_every_time(count_conversions, tmp_path):
    source = HostLatency(cache=False, **FAST)
    model = small_model()
    first = source.measure(model)
    second = source.measure(model)
    assert second is not first and len(count_conversions) == 2
    assert "cache_key" not in first.provenance
    with pytest.raises(ValueError, match="cache_dir"):
        HostLatency(cache=False, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="`cache`"):
        HostLatency(cache="yes")


def test_cache_misses_when_weights_or_quantization_change(count_conversions):
    model = small_model()
    source = HostLatency(**FAST)
    first = source.measure(model)
    model.set_weights([w + 1.0 for w in model.get_weights()])
    source.measure(model)
    assert len(count_conversions) == 2
    data = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    int8 = source.measure(model, quantization="int8", representative_data=data)
    assert count_conversions == ["float32", "float32", "int8"]
    assert int8.provenance["cache_key"] != first.provenance["cache_key"]
    # ...and hits again once everything matches.
    source.measure(model, quantization="int8", representative_data=data.copy())
    assert len(count_conversions) == 3


def test_identically_built_models_share_a_key_and_changes_split_it():
    source = HostLatency(**FAST)
    key = source.cache_key(small_model())
    assert source.cache_key(small_model()) == key  # Rebuilt with the same names and seed.
    assert source.cache_key(small_model(seed=1)) != key  # Other weights.
    assert source.cache_key(small_model(input_shape=(48, 48, 3))) != key  # Other input size.
    assert HostLatency(runs=6, warmup_runs=1).cache_key(small_model()) != key
    assert HostLatency(threads=2, **FAST).cache_key(small_model()) != key
    data = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    int8_key = source.cache_key(small_model(), quantization="int8", representative_data=data)
    other_data_key = source.cache_key(small_model(), quantization="int8", representative_data=data + 0.5)
    assert len({key, int8_key, other_data_key}) == 3


def test_disk_cache_survives_a_new_instance_but_not_new_settings(tmp_path, count_conversions):
    model = small_model()
    first = HostLatency(cache_dir=tmp_path, **FAST).measure(model)
    files = os.listdir(tmp_path)
    assert files == [f"{first.provenance['cache_key']}.json"]  # No temp files left behind.

    again = HostLatency(cache_dir=tmp_path, **FAST).measure(model)
    assert again == first
    assert len(count_conversions) == 1

    HostLatency(cache_dir=tmp_path, runs=6, warmup_runs=1).measure(model)
    assert len(count_conversions) == 2
    assert len(os.listdir(tmp_path)) == 2


def test_corrupt_disk_cache_entry_is_remeasured_and_replaced(tmp_path, count_conversions):
    model = small_model()
    source = HostLatency(cache_dir=tmp_path, **FAST)
    path = tmp_path / f"{source.cache_key(model)}.json"
    path.write_text("{ not json")
    result = source.measure(model)
    assert len(count_conversions) == 1
    assert LatencyResult.from_dict(json.loads(path.read_text())["result"]) == result


def test_measure_refuses_undefined_spatial_dims():
    dynamic = small_model(input_shape=(None, None, 3))
    with pytest.raises(ValueError, match=r"\(None, None, None, 3\).*input_shape"):
        HostLatency(**FAST).measure(dynamic)


@pytest.mark.parametrize("garbage", [b"\x00" * 64, b"TFL3" * 50])
def test_garbage_bytes_raise(garbage):
    with pytest.raises(ValueError, match="TFLite"):
        HostLatency(**FAST).measure_tflite(garbage)


def test_truncated_model_raises():
    tflite_bytes = convert_to_tflite(small_model())
    with pytest.raises((ValueError, RuntimeError)):
        HostLatency(**FAST).measure_tflite(tflite_bytes[: len(tflite_bytes) // 2])


def test_a_tflite_model_with_dynamic_spatial_dims_is_not_timed():
    import tensorflow as tf

    model = small_model(input_shape=(None, None, 3))
    fn = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((1, None, None, 3), tf.float32)],
    )
    tflite_bytes = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn).convert()
    with pytest.raises(ValueError, match=r"shape signature \[1, -1, -1, 3\]"):
        HostLatency(**FAST).measure_tflite(tflite_bytes)


def test_runtime_failure_raises_instead_of_returning_a_number(monkeypatch):
    tflite_bytes = convert_to_tflite(small_model())
    real_load = tflite_lib.load_interpreter

    class Failing:
        def __init__(self, interpreter):
            self._interpreter = interpreter

        def __getattr__(self, name):
            return getattr(self._interpreter, name)

        def invoke(self):
            raise RuntimeError("XNNPack delegate failed to reshape runtime")

    monkeypatch.setattr(tflite_lib, "load_interpreter", lambda *a, **k: Failing(real_load(*a, **k)))
    with pytest.raises(RuntimeError, match="failed to reshape runtime"):
        HostLatency(**FAST).measure_tflite(tflite_bytes)


def test_repeats_time_fresh_interpreters():
    tflite_bytes = convert_to_tflite(small_model())
    result = HostLatency(runs=4, warmup_runs=0, repeats=3, min_seconds=0).measure_tflite(tflite_bytes)
    assert result.runs == 12
    medians = result.provenance["per_repeat_median_ms"]
    assert len(medians) == 3
    assert result.median_ms == pytest.approx(float(np.median(medians)), rel=1e-12)


def test_config_records_the_settings_that_change_the_figure():
    config = HostLatency(threads=2, runs=20, warmup_runs=3, repeats=2).config()
    assert config["name"] == "host"
    assert (config["threads"], config["runs"], config["warmup_runs"], config["repeats"]) == (
        2,
        20,
        3,
        2,
    )


def test_a_fast_model_is_timed_for_min_seconds_not_just_runs():
    tflite_bytes = convert_to_tflite(small_model())  # tens of microseconds per invoke
    start = time.perf_counter()
    result = HostLatency(runs=5, warmup_runs=1, repeats=2, min_seconds=0.05).measure_tflite(tflite_bytes)
    assert time.perf_counter() - start >= 2 * 0.05  # each fresh interpreter timed for at least 50 ms
    assert result.runs > 2 * 5
    assert HostLatency(min_seconds=0.05).config()["min_seconds"] == 0.05


def _scripted_times(monkeypatch, times_us):
    # Replaces the timer's runs with fixed figures: the statistics, not the machine, are under test.
    times = np.round(np.asarray(times_us, dtype=np.float64) * 1000).astype(np.int64)
    monkeypatch.setattr(HostLatency, "_time_once", lambda self, tflite_bytes: times)


def test_a_few_preempted_runs_do_not_flag_a_steady_figure(monkeypatch, caplog):
    # 2,000 runs of about 50 us, 10 of them pre-empted for 5 ms: cv is huge, the bulk is steady.
    rng = np.random.default_rng(0)
    times = np.concatenate([rng.normal(50, 0.5, 1990), np.full(10, 5000)])
    _scripted_times(monkeypatch, rng.permutation(times))
    with caplog.at_level("WARNING", logger="keras_mnas.latency"):
        result = HostLatency(**FAST).measure_tflite(convert_to_tflite(small_model()))
    assert result.median_ms == pytest.approx(0.05, rel=0.02)
    assert result.cv > 0.5
    assert result.robust_cv == pytest.approx(0.01, abs=0.003)
    assert not result.unstable and "Unstable" not in caplog.text


def test_a_machine_busy_for_much_of_the_measurement_is_flagged(monkeypatch, caplog):
    # A third of the runs shared the core with another process and took twice as long; two were pre-empted.
    _scripted_times(monkeypatch, [50] * 200 + [100] * 100 + [5000] * 2)
    with caplog.at_level("WARNING", logger="keras_mnas.latency"):
        result = HostLatency(**FAST).measure_tflite(convert_to_tflite(small_model()))
    assert result.robust_cv > 0.05 and result.unstable
    assert "Unstable latency measurement" in caplog.text and "is the host busy" in caplog.text
    # The warning names the statistic the flag judged, and no other: not the plain cv the outliers inflate.
    assert result.cv > 3 * result.spread
    assert f"spread {100 * result.spread:.1f}% over 302 runs" in caplog.text
    assert f"{100 * result.cv:.1f}%" not in caplog.text and "cv" not in caplog.text


def test_a_source_warns_once_then_logs_later_unstable_figures_at_info(monkeypatch, caplog):
    # A search on a noisy host would otherwise print the same warning for nearly every candidate.
    _scripted_times(monkeypatch, [50] * 200 + [100] * 100)
    source = HostLatency(**FAST)
    tflite_bytes = convert_to_tflite(small_model())
    with caplog.at_level("INFO", logger="keras_mnas.latency"):
        results = [source.measure_tflite(tflite_bytes) for _ in range(3)]
    assert all(result.unstable for result in results)  # every figure stays flagged
    records = [r for r in caplog.records if "Unstable latency measurement" in r.getMessage()]
    assert [r.levelname for r in records] == ["WARNING", "INFO", "INFO"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="keras_mnas.latency"):
        HostLatency(**FAST).measure_tflite(tflite_bytes)  # another source warns on its own
    assert "Unstable latency measurement" in caplog.text


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(runs=0),
        dict(threads=0),
        dict(warmup_runs=-1),
        dict(repeats=1.5),
        dict(min_seconds=-0.1),
        dict(min_seconds=float("nan")),
        dict(min_seconds="1"),
    ],
)
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        HostLatency(**kwargs)


def test_concurrent_measures_of_one_model_agree(count_conversions):
    model = small_model()
    # A median of 50 runs of microseconds each: steady enough to compare, and still instant.
    source = HostLatency(runs=50, warmup_runs=5, min_seconds=0)
    results = []
    errors = []

    def work():
        try:
            results.append(source.measure(model))
        except Exception as e:  # Reported below.
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 2
    first, second = results
    # Both timed the same flatbuffer of the same model, with the same settings...
    assert first.sha256 and first.sha256 == second.sha256
    assert first.provenance["cache_key"] == second.provenance["cache_key"]
    settings = ("source", "quantization", "tflite_bytes", "runs", "warmup_runs", "threads")
    assert [getattr(first, name) for name in settings] == [getattr(second, name) for name in settings]
    # ...and found the same latency. Two threads timing at once share two cores with the other thread's
    # conversion and whatever else runs, so allow a wide margin: a mixed-up model or unit misses it by far.
    low, high = sorted([first.median_ms, second.median_ms])
    assert low > 0 and high / low < 4, (first.median_ms, second.median_ms)
    assert source.measure(model) in results  # Later calls hit the cache.
    assert len(count_conversions) <= 2
