import doctest
import itertools
import random

import keras_tuner
import pytest

from keras_mnas.counting import count_model_macs
from keras_mnas.latency import LatencyResult, LatencySource
from keras_mnas.latency.lut import LatencyLookupTable, MissingEntryError, network_configs, network_keys
from keras_mnas.search import MnasSearchSpace
from keras_mnas.search.latency_table import (
    Prefilter,
    budget_filter,
    predict_candidate,
    profile_space,
    search_space_configs,
)

SHAPE = (32, 32, 3)
NETWORK = dict(input_shape=SHAPE, classes=10)


class FakeSource(LatencySource):
    """Latency = overhead + ms_per_mac * mult-adds, plus `normalization_ms` for the input normalisation."""

    name = "fake"

    def __init__(self, *, overhead_ms=0.05, ms_per_mac=1e-6, normalization_ms=0.0):
        self.overhead_ms, self.ms_per_mac, self.normalization_ms = overhead_ms, ms_per_mac, normalization_ms

    def expected(self, model):
        normalization = self.normalization_ms if any(x.name == "normalization" for x in model.layers) else 0.0
        return self.overhead_ms + self.ms_per_mac * count_model_macs(model) + normalization

    def measure(self, model, *, quantization="float32", representative_data=None):
        ms = self.expected(model)
        return LatencyResult(ms, ms, ms, 0.0, 0.0, 7, 1, 1, "fake:dev", quantization)


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
        union.update(network_keys(arch, input_shape=SHAPE, classes=10))
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
        assert set(network_keys(arch, input_shape=(96, 96, 3))) <= keys


def test_the_space_helpers_need_a_space_and_a_table():
    table = LatencyLookupTable()
    for call in (
        lambda: search_space_configs("a1"),
        lambda: profile_space(table, "a1"),
        lambda: predict_candidate(table, "a1", {}),
        lambda: budget_filter(table, "a1", 1.0),
    ):
        with pytest.raises(ValueError, match="MnasSearchSpace"):
            call()
    with pytest.raises(TypeError, match="LatencyLookupTable"):
        Prefilter("lut.json", MnasSearchSpace(input_shape=SHAPE), 1.0)


def test_the_space_methods_docstring_examples():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for method in (MnasSearchSpace.network_kwargs, MnasSearchSpace.layer_configs):
        for test in finder.find(method, globs={"MnasSearchSpace": MnasSearchSpace}):
            runner.run(test)
    assert runner.summarize(verbose=False) == (0, 1)  # layer_configs' example is too slow to run here


def test_the_space_gives_its_entries_and_how_its_candidates_are_built():
    space = MnasSearchSpace(input_shape=(48, 40, 3), classes=7, depth_multiplier=0.5)
    assert space.network_kwargs() == {"input_shape": (48, 40, 3), "classes": 7, "depth_multiplier": 0.5}
    arch = space.decode(space.default_values())
    model = space.build(arch)
    # A candidate built by the space is predicted from exactly the entries its spec gives.
    assert network_configs(arch, **space.network_kwargs()) == network_configs(
        arch, input_shape=(48, 40, 3), classes=7, depth_multiplier=0.5
    )
    assert {layer.name for layer in model.layers} >= {"stem_conv", "top_conv", "predictions"}
    configs = space.layer_configs()
    assert configs == search_space_configs(space)
    assert set(network_keys(arch, **space.network_kwargs())) <= {c.key for c in configs}
    with_preprocessing = space.layer_configs(include_preprocessing=True)
    assert [c for c in with_preprocessing if c.kind == "preprocessing"] == [
        network_configs(arch, **space.network_kwargs(), include_preprocessing=True)[0]
    ]
    assert len(with_preprocessing) == len(configs) + 1


def few_choices_space(skeleton, **choices):
    """A space at SHAPE with one SE ratio, skip op, width and layer count per block: quick to profile."""
    settings = dict(se_ratios=(0.0,), skip_ops=("none",), filter_multipliers=(1.0,), layer_deltas=(0,))
    return MnasSearchSpace(skeleton, input_shape=SHAPE, classes=10, **{**settings, **choices})


def test_budget_filter_rejects_only_candidates_far_over_the_budget():
    table = LatencyLookupTable(profiler=FakeSource())
    space = few_choices_space([(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 2)], conv_ops=("conv", "dconv"))
    profile_space(table, space, progress=False)
    cheap = {**space.default_values(), "block2_conv_op": "dconv", "block3_conv_op": "dconv"}
    costly = {
        **space.default_values(),
        "block2_conv_op": "conv",
        "block3_conv_op": "conv",
        "block3_kernel": 5,
    }
    cheap_ms, costly_ms = predict_candidate(table, space, cheap), predict_candidate(table, space, costly)
    assert costly_ms > 1.5 * cheap_ms
    skip = budget_filter(table, space, budget_ms=cheap_ms, tolerance=0.1)
    assert skip(costly) and not skip(cheap)
    assert not budget_filter(table, space, budget_ms=cheap_ms, tolerance=costly_ms / cheap_ms)(costly)
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
            budget_filter(table, space, budget, tolerance=tolerance)
    with pytest.raises(ValueError, match="hyperparameter values"):
        skip(42)


def test_candidates_that_normalise_their_inputs_are_predicted_with_that_entry():
    source = FakeSource(normalization_ms=0.03)
    table = LatencyLookupTable(profiler=source)
    space = few_choices_space([(1, 16, 1, 1), (6, 24, 2, 2)])
    profile_space(table, space, progress=False)
    values = space.default_values()
    with pytest.raises(MissingEntryError, match=r"preprocessing:i3@32x32"):
        predict_candidate(table, space, values, include_preprocessing=True)
    assert profile_space(table, space, include_preprocessing=True, progress=False) == 1  # only the new entry
    # As MnasHyperModel(include_preprocessing=True) builds the candidate, normalisation included.
    model = space.build(space.decode(values), include_preprocessing=True)
    predicted = predict_candidate(table, space, values, include_preprocessing=True)
    assert predicted == pytest.approx(source.expected(model))
    without = predict_candidate(table, space, values)
    assert predicted == pytest.approx(without + 0.03)
    budget = without + 0.01
    assert budget_filter(table, space, budget, tolerance=0.0, include_preprocessing=True)(values)
    assert not budget_filter(table, space, budget, tolerance=0.0)(values)


def test_one_prefilter_decides_for_the_tuner_and_for_budget_filter():
    source = FakeSource(normalization_ms=0.03)
    table = LatencyLookupTable(profiler=source)
    space = few_choices_space([(1, 16, 1, 1), (6, 24, 2, 2)])
    profile_space(table, space, progress=False)
    values = space.default_values()
    predicted = predict_candidate(table, space, values)
    prefilter = Prefilter(table, space, predicted, tolerance=0.5)
    assert prefilter.limit_ms == pytest.approx(1.5 * predicted)
    assert prefilter.predict(values) == predicted and not prefilter(values)
    assert prefilter.exceeds(1.51 * predicted) and not prefilter.exceeds(1.5 * predicted)
    assert "limit" in repr(prefilter)
    skip = budget_filter(table, space, predicted, tolerance=0.5)
    assert isinstance(skip, Prefilter) and skip.limit_ms == prefilter.limit_ms
    # Without the preprocessing entry every prediction would fail: such a prefilter is refused up front...
    refused = r"must hold the entry of the input preprocessing .*preprocessing:i3"
    with pytest.raises(ValueError, match=refused):
        Prefilter(table, space, 1.0, include_preprocessing=True)
    with pytest.raises(ValueError, match="include_preprocessing must be True or False"):
        Prefilter(table, space, 1.0, include_preprocessing="yes")
    # ... unless the table profiles what it lacks on demand.
    table.profiler, table.on_missing = source, "profile"
    on_demand = Prefilter(table, space, predicted, tolerance=0.0, include_preprocessing=True)
    assert on_demand.predict(values) == pytest.approx(predicted + 0.03) and on_demand(values)
