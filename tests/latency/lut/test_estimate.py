import doctest

import pytest
from _fake_source import SHAPE, FakeSource

import keras_mnas
from keras_mnas.latency.lut import LatencyLookupTable, MissingEntryError, network_configs
from keras_mnas.latency.lut import estimate as estimate_lib
from keras_mnas.latency.lut.configs import LayerConfig
from keras_mnas.latency.lut.estimate import EntryEstimator
from keras_mnas.search import MnasSearchSpace


def test_docstring_examples():
    result = doctest.testmod(estimate_lib)
    assert result.attempted > 0 and result.failed == 0


def test_each_kernel_type_is_estimated_from_its_configuration():
    # Times that are products of sizes, as kernels' are: the log-space regressors recover unseen entries.
    def time(config):
        return 2e-8 * estimate_lib.mult_adds(config) ** 0.9 * (1.5 if config.op == "conv" else 1.0)

    configs = [
        LayerConfig(
            "layer", (s, s), c, c * m, op=op, kernel_size=k, expanded_filters=c * e if op == "mbconv" else 0
        )
        for s in (8, 16, 32, 64)
        for c in (8, 16, 24, 32, 48)
        for m in (1, 2)
        for k in (3, 5)
        for op, e in (("conv", 1), ("mbconv", 3), ("mbconv", 6))
    ]
    held_out = configs[1::7]
    estimator = EntryEstimator.fit({c.key: time(c) for c in configs if c not in held_out})
    assert set(estimator.coefficients) == {"conv", "mbconv"}  # enough entries for a regressor each
    errors = [abs(estimator.predict(c) / time(c) - 1) for c in held_out]
    assert max(errors) < 0.06, errors  # the ridge penalty shrinks the exact power law a little
    # A kernel type without entries of its own borrows the regressor over every layer entry.
    dconv = LayerConfig("layer", (16, 16), 16, 32, op="dconv", kernel_size=3)
    assert estimator.predict(dconv) > 0
    with pytest.raises(ValueError, match="Only layer entries are estimated"):
        estimator.predict(LayerConfig("head", (4, 4), 32, 64))


@pytest.fixture(scope="module")
def sparse():
    """A table of a small space's random architectures with a third of its layer entries removed."""
    space = MnasSearchSpace(
        skeleton=[(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2)],
        fixed_blocks={0: "r1_k3_s11_e1_i16_o16_noskip"},
        input_shape=SHAPE,
        classes=10,
        head_filters=64,
    )
    network = space.network_kwargs()
    source = FakeSource()
    table = LatencyLookupTable(profiler=source)
    archs = space.sample_architectures(20, seed=3)
    table.profile_architectures(archs, progress=False, **network)
    data = table.to_dict()
    layers = sorted(key for key in data["entries"] if key.startswith("layer:"))
    for key in layers[::3]:
        del data["entries"][key]
    return LatencyLookupTable.from_dict(data, on_missing="estimate"), archs, network, source


def test_a_table_estimates_the_layers_it_lacks_and_keeps_only_measurements(sparse):
    table, archs, network, source = sparse
    entries = len(table)
    errors = []
    for arch in archs:
        estimated = table.estimated(network_configs(arch, **network))
        assert all(c.kind == "layer" for c in estimated)
        model = keras_mnas.build_model(arch, **network)
        result = table.measure(model)
        assert result.median_ms == pytest.approx(table.predict(arch, **network))
        assert result.provenance.get("estimated_entries", 0) == len(estimated)
        errors.append(abs(result.median_ms / source.expected(model) - 1))
    assert sum(bool(table.estimated(network_configs(a, **network))) for a in archs) >= 10
    assert sorted(errors)[len(errors) // 2] < 0.05 and max(errors) < 0.2, errors
    assert len(table) == entries  # estimates are not stored

    # Without "estimate", the prediction names the missing entries; a missing classifier is never estimated.
    strict = LatencyLookupTable.from_dict(table.to_dict())
    unseen = next(a for a in archs if table.estimated(network_configs(a, **network)))
    with pytest.raises(MissingEntryError):
        strict.predict(unseen, **network)
    with pytest.raises(MissingEntryError, match="classifier"):
        table.predict(unseen, **{**network, "classes": 7})
