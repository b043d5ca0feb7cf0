import keras
import keras_tuner
import pytest

from keras_mnas.testing import ScriptedLatency


def small_model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def test_answers_in_call_order_then_repeats_the_last_value():
    latency = ScriptedLatency([2.0, 1.5])
    model = small_model()
    figures = [latency.measure(model).median_ms for _ in range(3)]
    assert figures == [2.0, 1.5, 1.5]
    assert latency.calls == 3
    assert latency.measure(model, quantization="int8").quantization == "int8"


def test_none_fails_that_call_like_a_source_that_cannot_measure():
    latency = ScriptedLatency([1.0, None, 3.0])
    model = small_model()
    assert latency.measure(model).median_ms == 1.0
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="call 2"):
        latency.measure(model)
    assert latency.measure(model).median_ms == 3.0


@pytest.mark.parametrize("script", [[], [0.0], [-1.0], ["fast"], [True], [float("nan")], [float("inf")]])
def test_rejects_a_script_that_is_not_positive_milliseconds(script):
    with pytest.raises(ValueError, match="ScriptedLatency"):
        ScriptedLatency(script)


def test_scripted_spreads_flag_the_figures_they_belong_to():
    latency = ScriptedLatency([2.0, 1.0], spreads=[0.01, 0.08])
    model = small_model()
    first, second, third = (latency.measure(model) for _ in range(3))
    assert (first.spread, first.unstable) == (0.01, False)
    assert (second.spread, second.unstable) == (0.08, True)
    assert (third.median_ms, third.spread) == (1.0, 0.08)  # the last entry repeats, spread and all
    assert ScriptedLatency([2.0]).measure(model).unstable is False


@pytest.mark.parametrize(
    "spreads, match",
    [
        ([0.01], "one spread per latency: 2 latencies, received 1"),
        ([0.01, -0.1], "-0.1"),
        ([0.01, "x"], "'x'"),
    ],
)
def test_rejects_spreads_that_do_not_match_the_script(spreads, match):
    with pytest.raises(ValueError, match=match):
        ScriptedLatency([2.0, 1.0], spreads=spreads)
