import doctest
import itertools
import json
import random

import keras
import keras_tuner
import numpy as np
import pytest

import keras_mnas
from keras_mnas.architecture import ArchSpec
from keras_mnas.counting import count_model_macs
from keras_mnas.latency import (
    HostLatency,
    LatencyLookupTable,
    LatencyResult,
    LatencySource,
    LayerConfig,
    MissingEntryError,
    model_configs,
    network_configs,
    search_space_configs,
)
from keras_mnas.latency import lut as lut_lib
from keras_mnas.search import MnasSearchSpace

SHAPE = (32, 32, 3)
NETWORK = dict(input_shape=SHAPE, classes=10)
TWO_BLOCKS = ArchSpec.from_strings(
    ["r1_k3_s22_e3_i16_o16", "r2_k5_s22_i16_o24_se0.25_dconv"], stem_filters=16
)
FOUR_BLOCKS = ArchSpec.from_strings(
    [
        "r2_k3_s22_e6_i16_o24_poolskip",
        "r1_k3_s22_i24_o32_conv",
        "r2_k5_s11_e3_i32_o32_se0.25",
        "r1_k3_s22_e6_i32_o40",
    ],
    stem_filters=16,
)


class FakeSource(LatencySource):
    """Latency = overhead + ms_per_mac * mult-adds, times `network_factor` for a whole network.

    A one-piece model of the table has a stem or a head, never both; a whole network has both.
    """

    name = "fake"

    def __init__(
        self,
        *,
        overhead_ms=0.05,
        ms_per_mac=1e-6,
        network_factor=1.0,
        normalization_ms=0.0,
        label="a",
        spread=None,
    ):
        self.spread = spread  # (cv, robust_cv) of every result, when given
        self.normalization_ms = normalization_ms  # the input normalisation has no mult-adds
        self.overhead_ms = overhead_ms
        self.ms_per_mac = ms_per_mac
        self.network_factor = network_factor
        self.label = label
        self.measured = []

    def config(self):
        return {**super().config(), "label": self.label}

    def expected(self, model):
        names = {layer.name for layer in model.layers}
        factor = self.network_factor if {"stem_conv", "top_conv"} <= names else 1.0
        normalization = self.normalization_ms if "normalization" in names else 0.0
        return self.overhead_ms + factor * self.ms_per_mac * count_model_macs(model) + normalization

    def measure(self, model, *, quantization="float32", representative_data=None):
        self.measured.append((model, quantization, representative_data))
        ms = self.expected(model)
        cv, robust_cv = self.spread or (0.0, None)
        return LatencyResult(
            ms,
            ms,
            ms,
            cv * ms,
            cv,
            7,
            1,
            1,
            "fake:dev",
            quantization,
            provenance={"device": "fake", "model": model.name},
            robust_cv=robust_cv,
        )


@pytest.fixture(scope="module")
def profiled():
    """A fake-profiled table with every entry of TWO_BLOCKS and FOUR_BLOCKS at 32x32, uncalibrated."""
    source = FakeSource()
    table = LatencyLookupTable(profiler=source)
    table.profile_architectures([TWO_BLOCKS, FOUR_BLOCKS], progress=False, **NETWORK)
    return table, source


def fresh_copy(table, **kwargs):
    return LatencyLookupTable.from_dict(json.loads(json.dumps(table.to_dict())), **kwargs)


# ------------------------------------------------------------------------------------------------------
# Configurations.


def test_docstring_examples():
    result = doctest.testmod(lut_lib, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_keys_round_trip_for_every_kind():
    configs = [
        *network_configs("a1", input_shape=(96, 80, 3), include_preprocessing=True, padding="symmetric"),
        *network_configs("small", input_shape=(64, 64, 3), include_top=False, pooling="max"),
        *network_configs(FOUR_BLOCKS, classifier_activation=None, **NETWORK),
    ]
    assert {c.kind for c in configs} == set(lut_lib.KINDS)
    for config in configs:
        assert LayerConfig.from_key(config.key) == config


def test_mbconv_with_expansion_one_is_the_depthwise_separable_layer():
    mbconv = LayerConfig("layer", (8, 8), 16, 16, op="mbconv", kernel_size=3, expanded_filters=16)
    dconv = LayerConfig("layer", (8, 8), 16, 16, op="dconv", kernel_size=3)
    assert mbconv == dconv and mbconv.key == "layer:dconv_k3_s11_i16_o16_noskip@8x8"


@pytest.mark.parametrize(
    "key",
    [
        "layer:mbconv_k3_s22_i16_o24@8x8",  # mbconv without its expanded width
        "layer:dconv_k3_s22_i16_e48_o24@8x8",  # an expanded width on a non-MBConv layer
        "layer:mbconv_k3_s22_i16_e48_o24_bogus@8x8",
        "layer:conv_k3_s22_i16_o24_identity@8x8",  # identity is written as no skip token
        "stem:k3_s22_i3_o32",  # no resolution
        "widget:i3@8x8",
        "head:i320@3x3",
        "layer:conv_k3_s2_i16_o24@8x8",
        "",
    ],
)
def test_malformed_keys_are_refused(key):
    with pytest.raises(ValueError, match="Malformed layer configuration key"):
        LayerConfig.from_key(key)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="block"), "kind"),
        (dict(input_size=(8,)), "input_size"),
        (dict(input_filters=0), "input_filters"),
        (dict(op="sepconv"), "op"),
        (dict(skip="dense"), "skip"),
        (dict(padding="valid"), "padding"),
        (dict(kind="pooling", mode="sum"), "mode"),
        (dict(kind="preprocessing", input_filters=1, output_filters=1), "needs 3 input channels"),
    ],
)
def test_bad_configurations_are_refused(kwargs, match):
    fields = dict(kind="layer", input_size=(8, 8), input_filters=16, output_filters=16, op="dconv")
    fields.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LayerConfig(**fields)


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        ("a1", {}),
        ("b1", dict(include_preprocessing=True, padding="symmetric")),
        ("small", dict(include_top=False, pooling="avg", depth_multiplier=0.5)),
        ("d1", dict(include_top=False)),
        (FOUR_BLOCKS, dict(classes=7, classifier_activation=None)),
    ],
)
def test_a_built_model_reads_as_the_configs_of_its_spec(arch, kwargs):
    model = keras_mnas.build_model(arch, input_shape=(48, 40, 3), **kwargs)
    expected = network_configs(arch, input_shape=(48, 40, 3), **kwargs)
    assert model_configs(model) == expected
    assert lut_lib.network_keys(arch, input_shape=(48, 40, 3), **kwargs) == [c.key for c in expected]
    # The pieces' mult-adds add up to the network's: the table covers every layer that computes.
    pieces = sum(count_model_macs(c.build_model()) for c in expected)
    assert pieces == count_model_macs(model)


def test_model_configs_refuses_other_models_and_undefined_shapes():
    inputs = keras.Input((16, 16, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match=r"not built by keras_mnas\.build_model"):
        model_configs(other)
    with pytest.raises(ValueError, match="concrete shape"):
        model_configs(keras_mnas.build_model(TWO_BLOCKS, input_shape=(None, None, 3), classes=3))


def test_network_configs_refuses_bad_inputs():
    with pytest.raises(ValueError, match="input_shape"):
        network_configs("a1", input_shape=(None, 32, 3))
    with pytest.raises(ValueError, match="padding"):
        network_configs("a1", padding="valid")
    with pytest.raises(ValueError, match="classes"):
        network_configs("a1", classes=0)
    with pytest.raises(ValueError, match="Unknown architecture"):
        network_configs("a7")
    with pytest.raises(ValueError, match="needs 3 input channels; received 1"):
        lut_lib.network_keys("a1", input_shape=(32, 32, 1), include_preprocessing=True)
    # As in build_model: the string "False" is truthy and would add a preprocessing entry.
    with pytest.raises(ValueError, match="include_preprocessing must be True or False; received 'False'"):
        network_configs("a1", include_preprocessing="False")


def test_search_space_configs_are_exactly_the_union_over_all_architectures():
    # Small enough to enumerate every architecture: 2 searched blocks x 32 choices.
    space = MnasSearchSpace(
        [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 2)],
        conv_ops=("dconv", "mbconv3"),
        kernel_sizes=(3,),
        se_ratios=(0.0, 0.25),
        skip_ops=("identity", "none"),
        filter_multipliers=(0.75, 1.0),
        layer_deltas=(0, 1),
        input_shape=SHAPE,
        classes=10,
    )
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    union = set()
    for combination in itertools.product(*(p.values for p in hp.space)):
        arch = space.decode(dict(zip([p.name for p in hp.space], combination, strict=True)))
        union.update(lut_lib.network_keys(arch, input_shape=SHAPE, classes=10))
    assert {c.key for c in search_space_configs(space)} == union


def test_default_space_size_and_coverage():
    space = MnasSearchSpace(input_shape=(96, 96, 3))
    configs = search_space_configs(space)
    keys = {c.key for c in configs}
    assert len(keys) == len(configs)
    # Searched blocks 2-6 of MobileNetV2's skeleton: a first layer for 4 ops x 2 kernels x 2 SE x 2 skips (an
    # identity skip cannot apply when the shape changes) x 3 widths x 3 incoming widths (1 for block 2), and a
    # repeated layer for 4 x 2 x 2 x 3 skips x 3 widths; plus the fixed first block, the fixed last block for
    # 3 incoming widths, the stem, the head and the classifier.
    first, repeated = 4 * 2 * 2 * 2 * 3, 4 * 2 * 2 * 3 * 3
    assert len(configs) == (first + repeated) + 4 * (3 * first + repeated) + 1 + 3 + 3
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    rng = random.Random(0)
    for _ in range(200):
        arch = space.decode({p.name: rng.choice(p.values) for p in hp.space})
        assert set(lut_lib.network_keys(arch, input_shape=(96, 96, 3))) <= keys


def test_search_space_configs_needs_a_space():
    with pytest.raises(ValueError, match="MnasSearchSpace"):
        search_space_configs("a1")


# ------------------------------------------------------------------------------------------------------
# Profiling, composition, calibration.


def test_each_distinct_configuration_is_profiled_once(profiled):
    table, source = profiled
    distinct = {c.key for arch in (TWO_BLOCKS, FOUR_BLOCKS) for c in network_configs(arch, **NETWORK)}
    assert set(table.keys) == distinct
    assert len(source.measured) == len(distinct) + 1  # and the baseline
    count = len(source.measured)
    assert table.profile_architectures([TWO_BLOCKS], progress=False, **NETWORK) == 0
    assert len(source.measured) == count


def test_entries_are_net_of_the_baseline_and_add_up_to_the_network(profiled):
    table, source = profiled
    assert table.baseline["median_ms"] == pytest.approx(source.overhead_ms)
    head = network_configs(TWO_BLOCKS, **NETWORK)[-2]
    assert table.entry_ms(head) == pytest.approx(source.ms_per_mac * head.input_filters * 1280 * 4 * 4)
    for arch in (TWO_BLOCKS, FOUR_BLOCKS):
        whole = source.expected(keras_mnas.build_model(arch, **NETWORK))
        # Uncalibrated: the sum of net entries plus one invocation's fixed cost.
        assert table.predict(arch, **NETWORK) == pytest.approx(whole, rel=1e-9)


def test_calibration_recovers_scale_and_intercept_and_predicts_unseen_networks():
    source = FakeSource(overhead_ms=0.2, ms_per_mac=2e-6, network_factor=1.3)
    table = LatencyLookupTable(profiler=source)
    calibration = table.calibrate([TWO_BLOCKS, FOUR_BLOCKS], progress=False, **NETWORK)
    assert calibration.scale == pytest.approx(1.3, rel=1e-9)
    assert calibration.intercept_ms == pytest.approx(0.2, rel=1e-9)
    assert max(abs(e) for e in calibration.relative_errors) < 1e-9
    assert [m["architecture"]["blocks"] for m in calibration.measurements] == [
        list(TWO_BLOCKS.block_strings),
        list(FOUR_BLOCKS.block_strings),
    ]
    unseen = TWO_BLOCKS.replace(blocks=(*TWO_BLOCKS.blocks, FOUR_BLOCKS.blocks[2]))
    table.profile_architectures([unseen], progress=False, **NETWORK)
    truth = source.expected(keras_mnas.build_model(unseen, **NETWORK))
    assert table.predict(unseen, **NETWORK) == pytest.approx(truth, rel=1e-9)


def test_fit_line_weights_relative_errors_and_refuses_undetermined_fits():
    assert lut_lib.fit_line([1.0, 2.0, 4.0], [3.0, 5.0, 9.0]) == pytest.approx((2.0, 1.0))
    # Off a line, it minimises the squared relative errors: ordinary least squares and any nudge do worse.
    x, y = np.array([1.0, 2.0, 10.0, 11.0]), np.array([1.0, 2.0, 13.0, 12.0])

    def loss(line):
        return float(np.sum((np.polyval(line, x) / y - 1) ** 2))

    best = lut_lib.fit_line(x, y)
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
            lut_lib.fit_line(x, y)


def test_fit_line_can_keep_the_intercept_non_negative():
    x, y = np.array([1.0, 2.0, 4.0]), np.array([0.4, 2.1, 4.0])
    free_scale, free_intercept = lut_lib.fit_line(x, y)
    assert free_intercept < 0
    scale, intercept = lut_lib.fit_line(x, y, nonnegative_intercept=True)
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
    assert lut_lib.fit_line([1.0, 2.0, 4.0], [3.0, 5.0, 9.0], nonnegative_intercept=True) == pytest.approx(
        (2.0, 1.0)
    )


def test_noisy_calibration_timings_never_predict_a_negative_latency(profiled):
    # Two calibration networks whose timings, by noise, fit a line with a negative intercept (as a CI run on a
    # busy machine once measured): a smaller network must still get a positive prediction, not an error.
    table = fresh_copy(profiled[0])
    small = table.lut_ms(TWO_BLOCKS, **NETWORK)
    calibration = table.fit_calibration(
        [{"lut_ms": 2 * small, "measured_ms": 1.0 * small}, {"lut_ms": 4 * small, "measured_ms": 4.0 * small}]
    )
    assert calibration.intercept_ms == 0.0 and calibration.scale > 0
    assert 0 < table.predict(TWO_BLOCKS, **NETWORK) < calibration.apply(2 * small)


def test_a_fit_with_a_non_positive_scale_is_refused(profiled):
    table = fresh_copy(profiled[0])
    with pytest.raises(ValueError, match="non-positive scale"):
        table.fit_calibration([{"lut_ms": 1.0, "measured_ms": 3.0}, {"lut_ms": 2.0, "measured_ms": 1.0}])
    with pytest.raises(ValueError, match="lut_ms"):
        table.fit_calibration([{"lut_ms": 1.0}, {"measured_ms": 1.0}])
    assert table.calibration is None


def test_int8_profiling_passes_representative_inputs_of_each_entry():
    source = FakeSource()
    table = LatencyLookupTable(profiler=source, quantization="int8")
    table.profile(network_configs(TWO_BLOCKS, **NETWORK)[:2], progress=False)
    for model, quantization, data in source.measured:
        assert quantization == "int8"
        assert data.shape[1:] == tuple(model.inputs[0].shape[1:])
    with pytest.raises(ValueError, match="float32"):
        table.measure(keras_mnas.build_model(TWO_BLOCKS, **NETWORK))


def test_a_table_holds_one_source_only(profiled):
    table = fresh_copy(profiled[0])
    with pytest.raises(ValueError, match="One table describes one source"):
        table.profile(network_configs("small", **NETWORK), source=FakeSource(label="b"), progress=False)
    with pytest.raises(ValueError, match="One table describes one source"):
        fresh_copy(profiled[0], profiler=FakeSource(label="b"))
    with pytest.raises(ValueError, match="needs a latency source"):
        table.profile(network_configs("small", **NETWORK), progress=False)


def test_constructor_refuses_bad_settings():
    with pytest.raises(ValueError, match="LatencySource"):
        LatencyLookupTable(profiler="host")
    with pytest.raises(ValueError, match="quantization"):
        LatencyLookupTable(quantization="int4")
    with pytest.raises(ValueError, match="on_missing"):
        LatencyLookupTable(on_missing="guess")
    with pytest.raises(ValueError, match="needs a profiler"):
        LatencyLookupTable(on_missing="profile")
    with pytest.raises(ValueError, match="another lookup table"):
        LatencyLookupTable(profiler=LatencyLookupTable())


# ------------------------------------------------------------------------------------------------------
# Predicting, as a latency source and as a filter.


def test_missing_entries_are_named(profiled):
    table = profiled[0]
    with pytest.raises(MissingEntryError) as error:
        table.predict("small", **NETWORK)
    missing = error.value.configs
    assert missing and all(c.key not in table for c in missing)
    assert missing[0].key in str(error.value) and "profile" in str(error.value)
    with pytest.raises(MissingEntryError, match="layer:conv_k9"):
        table.entry_ms("layer:conv_k9_s11_i8_o8_noskip@4x4")


def test_missing_entries_can_be_profiled_on_demand_and_saved(profiled, tmp_path):
    source = FakeSource()
    table = fresh_copy(profiled[0], profiler=source, on_missing="profile")
    table.save(tmp_path / "lut.json")
    before = len(table)
    predicted = table.predict("small", **NETWORK)
    assert predicted == pytest.approx(source.expected(keras_mnas.build_model("small", **NETWORK)), rel=1e-9)
    assert len(LatencyLookupTable.load(tmp_path / "lut.json")) > before


def test_measure_predicts_a_built_model_as_a_latency_source(profiled):
    table, source = profiled
    model = keras_mnas.build_model(FOUR_BLOCKS, **NETWORK)
    count = len(source.measured)
    result = table.measure(model)
    assert isinstance(table, LatencySource) and table.name == "lut"
    assert isinstance(result, LatencyResult)
    assert result.source == "lut" and result.runs == 0 and result.cv == 0.0
    assert result.provenance["prediction"] is True
    assert result.provenance["table_source"] == {"name": "fake", "label": "a"}
    assert result.median_ms == pytest.approx(source.expected(model), rel=1e-9)
    assert len(source.measured) == count  # predicted, not measured
    assert table.config()["source"] == {"name": "fake", "label": "a"}
    with pytest.raises(ValueError, match=r"not built by keras_mnas"):
        table.measure(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)]))


def few_choices_space(skeleton, **choices):
    """A space at SHAPE with one SE ratio, skip op, width and layer count per block: quick to profile."""
    settings = dict(se_ratios=(0.0,), skip_ops=("none",), filter_multipliers=(1.0,), layer_deltas=(0,))
    return MnasSearchSpace(skeleton, input_shape=SHAPE, classes=10, **{**settings, **choices})


def test_budget_filter_rejects_only_candidates_far_over_the_budget():
    table = LatencyLookupTable(profiler=FakeSource())
    space = few_choices_space([(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 2)], conv_ops=("conv", "dconv"))
    table.profile_space(space, progress=False)
    cheap = {**space.default_values(), "block2_conv_op": "dconv", "block3_conv_op": "dconv"}
    costly = {
        **space.default_values(),
        "block2_conv_op": "conv",
        "block3_conv_op": "conv",
        "block3_kernel": 5,
    }
    cheap_ms, costly_ms = table.predict_candidate(space, cheap), table.predict_candidate(space, costly)
    assert costly_ms > 1.5 * cheap_ms
    skip = table.budget_filter(space, budget_ms=cheap_ms, tolerance=0.1)
    assert skip(costly) and not skip(cheap)
    assert not table.budget_filter(space, budget_ms=cheap_ms, tolerance=costly_ms / cheap_ms)(costly)
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    for name, value in costly.items():
        hp.values[name] = value
    assert skip(hp) and skip(space.decode(costly)) and skip({"block3_kernel": 5})
    arch = space.decode(costly)
    assert table.far_over_budget(arch, cheap_ms, tolerance=0.1, **NETWORK)
    assert not table.far_over_budget(arch, costly_ms, tolerance=0.0, **NETWORK)
    for budget, tolerance in [(0, 0.1), (-1.0, 0.1), ("5", 0.1), (5.0, -0.1)]:
        with pytest.raises(ValueError, match=r"budget_ms|tolerance"):
            table.budget_filter(space, budget, tolerance=tolerance)
    with pytest.raises(ValueError, match="hyperparameter values"):
        skip(42)


def test_candidates_that_normalise_their_inputs_are_predicted_with_that_entry():
    source = FakeSource(normalization_ms=0.03)
    table = LatencyLookupTable(profiler=source)
    space = few_choices_space([(1, 16, 1, 1), (6, 24, 2, 2)])
    table.profile_space(space, progress=False)
    values = space.default_values()
    with pytest.raises(MissingEntryError, match=r"preprocessing:i3@32x32"):
        table.predict_candidate(space, values, include_preprocessing=True)
    assert table.profile_space(space, include_preprocessing=True, progress=False) == 1  # only the new entry
    # As MnasHyperModel(include_preprocessing=True) builds the candidate, normalisation included.
    model = space.build(space.decode(values), include_preprocessing=True)
    predicted = table.predict_candidate(space, values, include_preprocessing=True)
    assert predicted == pytest.approx(source.expected(model))
    without = table.predict_candidate(space, values)
    assert predicted == pytest.approx(without + 0.03)
    budget = without + 0.01
    assert table.budget_filter(space, budget, tolerance=0.0, include_preprocessing=True)(values)
    assert not table.budget_filter(space, budget, tolerance=0.0)(values)


def test_predictions_need_no_model_building(profiled, monkeypatch):
    table = profiled[0]

    def no_building(*args, **kwargs):
        raise AssertionError("a prediction built a model")

    monkeypatch.setattr(keras_mnas.builder, "build_model", no_building)
    monkeypatch.setattr(LayerConfig, "build_model", no_building)
    assert table.predict(FOUR_BLOCKS, **NETWORK) > 0


# ------------------------------------------------------------------------------------------------------
# Files.


def test_entries_keep_the_spread_the_unstable_flag_judges(tmp_path):
    from keras_mnas.cli.lut import _unstable_entries

    # Outliers made cv large, the bulk of the runs was steady: the saved table must not call it unstable.
    steady = LatencyLookupTable(profiler=FakeSource(spread=(0.9, 0.01)))
    steady.profile_architectures([TWO_BLOCKS], progress=False, **NETWORK)
    loaded = LatencyLookupTable.load(steady.save(tmp_path / "steady.json"))
    assert {record["robust_cv"] for record in loaded.to_dict()["entries"].values()} == {0.01}
    assert _unstable_entries(loaded) == []
    # A source that knows no percentiles: the cv decides, as for `LatencyResult.unstable`.
    plain = LatencyLookupTable(profiler=FakeSource(spread=(0.9, None)))
    plain.profile_architectures([TWO_BLOCKS], progress=False, **NETWORK)
    assert "robust_cv" not in next(iter(plain.to_dict()["entries"].values()))
    assert len(_unstable_entries(plain)) == len(plain)


def test_json_round_trip_keeps_entries_calibration_and_provenance(profiled, tmp_path):
    table = fresh_copy(profiled[0])
    table.fit_calibration(
        [{"lut_ms": 1.0, "measured_ms": 1.5, "note": "x"}, {"lut_ms": 2.0, "measured_ms": 2.7}]
    )
    path = table.save(tmp_path / "lut.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    assert data["format"] == lut_lib.FORMAT_NAME and data["format_version"] == lut_lib.FORMAT_VERSION
    assert data["keras_mnas_version"] == keras_mnas.__version__ and data["created"] and data["updated"]
    assert data["source"] == {"name": "fake", "label": "a"} and data["quantization"] == "float32"
    # Per-measurement facts (the model's name) are dropped, so all entries share one provenance record.
    assert data["provenance"] == [{"result_source": "fake:dev", "device": "fake"}]
    assert {record["provenance"] for record in data["entries"].values()} == {0}
    loaded = LatencyLookupTable.load(path)
    assert loaded.path == str(path)
    assert loaded.keys == table.keys and loaded.baseline == table.baseline
    assert loaded.calibration == table.calibration
    assert loaded.predict(FOUR_BLOCKS, **NETWORK) == table.predict(FOUR_BLOCKS, **NETWORK)
    assert loaded.to_dict() == table.to_dict()
    assert not list(tmp_path.glob(".partial-*"))  # written atomically


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.update(format="something-else"), "Not a keras-mnas latency table"),
        (lambda d: d.update(format_version=99), "format version 99"),
        (lambda d: d.update(entries=[]), "'entries' must be an object"),
        (
            lambda d: d["entries"].update({"layer:conv_k3@4x4": d["baseline"]}),
            "Malformed layer configuration",
        ),
        (lambda d: next(iter(d["entries"].values())).update(median_ms=-1.0), "positive 'median_ms'"),
        (lambda d: next(iter(d["entries"].values())).update(provenance=5), "provenance' index"),
        (lambda d: d.update(calibration={"scale": 1.0}), "intercept_ms"),
        (lambda d: d.update(calibration={"scale": -1.0, "intercept_ms": 0.0}), "scale must be positive"),
    ],
)
def test_malformed_table_files_are_refused(profiled, tmp_path, change, match):
    data = json.loads(json.dumps(profiled[0].to_dict()))
    change(data)
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        LatencyLookupTable.load(path)


def test_save_needs_a_path_and_a_new_table_never_overwrites_a_file(tmp_path):
    with pytest.raises(ValueError, match="needs a path"):
        LatencyLookupTable().save()
    (tmp_path / "lut.json").write_text("{}")
    with pytest.raises(ValueError, match="already exists"):
        LatencyLookupTable(profiler=FakeSource(), path=tmp_path / "lut.json")


def test_an_interrupted_profile_keeps_what_it_measured(tmp_path):
    class Failing(FakeSource):
        def measure(self, model, **kwargs):
            if len(self.measured) == 3:  # the baseline and two entries got through
                raise KeyboardInterrupt
            return super().measure(model, **kwargs)

    table = LatencyLookupTable(profiler=Failing(), path=tmp_path / "lut.json")
    with pytest.raises(KeyboardInterrupt):
        table.profile(network_configs(FOUR_BLOCKS, **NETWORK), progress=False)
    saved = LatencyLookupTable.load(tmp_path / "lut.json", profiler=FakeSource())
    assert len(saved) == 2 and saved.baseline is not None
    assert saved.keys == [c.key for c in network_configs(FOUR_BLOCKS, **NETWORK)[:2]]


def test_remeasuring_and_a_new_baseline_update_the_entries(profiled, capsys):
    source = FakeSource(overhead_ms=0.05)
    table = fresh_copy(profiled[0], profiler=source)
    configs = network_configs(TWO_BLOCKS, **NETWORK)
    before = table.predict(TWO_BLOCKS, **NETWORK)
    source.overhead_ms = 0.08  # every piece, and the baseline, now costs 0.03 ms more
    assert table.profile(configs, remeasure=True) == len({c.key for c in configs})
    assert "Profiling layer configurations" in capsys.readouterr().err
    # Entries are stored as measured: until the baseline is measured again they carry the extra cost.
    assert table.predict(TWO_BLOCKS, **NETWORK) == pytest.approx(before + 0.03 * len(configs))
    assert table.measure_baseline() == pytest.approx(0.08)
    assert table.predict(TWO_BLOCKS, **NETWORK) == pytest.approx(before + 0.03)


# ------------------------------------------------------------------------------------------------------
# A real source.


def test_host_round_trip_at_a_tiny_resolution(tmp_path):
    host = HostLatency(runs=5, warmup_runs=1)
    table = LatencyLookupTable(profiler=host, path=tmp_path / "host.json")
    wide = ArchSpec.from_strings(["r2_k5_s11_e6_i16_o48", "r2_k5_s22_e6_i48_o96"], stem_filters=32)
    archs = [TWO_BLOCKS, wide]  # about 10x apart in mult-adds, so noise cannot flip their order
    calibration = table.calibrate(archs, progress=False, **NETWORK)
    assert calibration.scale > 0 and len(calibration.measurements) == 2
    loaded = LatencyLookupTable.load(tmp_path / "host.json", profiler=HostLatency(runs=5, warmup_runs=1))
    assert len(loaded) == len({c.key for a in archs for c in network_configs(a, **NETWORK)})
    assert loaded.baseline["median_ms"] > 0
    record = loaded.to_dict()["provenance"][0]
    assert record["result_source"] == "host" and record["cpu"] and record["litert"]
    assert loaded.to_dict()["source"] == host.config()
    for arch, measurement in zip(archs, calibration.measurements, strict=True):
        predicted = loaded.measure(keras_mnas.build_model(arch, **NETWORK)).median_ms
        assert predicted == pytest.approx(calibration.apply(measurement["lut_ms"]), rel=1e-6)
        if calibration.intercept_ms > 0:
            # Two points fix a free line: each calibration model is predicted its measured figure. (Noisy
            # timings can ask for a negative intercept; the line then goes through the origin instead.)
            assert predicted == pytest.approx(measurement["measured_ms"], rel=1e-6)
    assert all(loaded.entry_ms(key) >= 0 for key in loaded.keys)
    with pytest.raises(ValueError, match="One table describes one source"):
        LatencyLookupTable.load(tmp_path / "host.json", profiler=HostLatency(runs=6, warmup_runs=1))
