import collections
import doctest
import json

import keras
import numpy as np
import pytest
from _fake_source import FOUR_BLOCKS, NETWORK, TWO_BLOCKS, FakeSource

import keras_mnas
from keras_mnas.counting import count_layer, count_model_macs
from keras_mnas.latency import convert_to_tflite
from keras_mnas.latency.lut import Calibration, LatencyLookupTable, LayerConfig, network_configs
from keras_mnas.latency.lut import kernels as kernels_lib
from keras_mnas.latency.lut.calibration import fit_terms
from keras_mnas.latency.lut.configs import network_layer_names
from keras_mnas.latency.lut.kernels import FEATURES, entry_features, entry_times, kernel_type
from keras_mnas.testing import model_op_profile
from keras_mnas.tflite import tflite_op_summary

# The fake phone's cost of an operator: microseconds per operator, per thousand output elements.
COSTS = (3.0, 0.8)


def test_docstring_examples():
    result = doctest.testmod(kernels_lib)
    assert result.attempted > 0 and result.failed == 0


def test_nothing_fuses_across_entries():
    # The table's unit is right only if a network runs exactly its entries' operators: no kernel spans two.
    arch = FOUR_BLOCKS  # a pooling skip, a plain conv, SE, identity residuals
    configs = network_configs(arch, **NETWORK)
    summed = collections.Counter()
    alone = {}  # each entry's operator time alone, under the fake phone's cost per operator
    for config in configs:
        keras.backend.clear_session()
        entry = convert_to_tflite(config.build_model())
        summed.update(tflite_op_summary(entry)["op_counts"])
        alone[config.key] = sum(us for _, _, us in model_op_profile(entry, COSTS)) / 1000
    keras.backend.clear_session()
    network = convert_to_tflite(keras_mnas.build_model(arch, **NETWORK))
    whole = tflite_op_summary(network)["op_counts"]
    assert dict(summed) == whole
    # A network's operator profile, cut by the layer names its tensors carry, gives each entry exactly the
    # operators it runs alone: the profile names are those LiteRT gives ("[output tensor]:index").
    profile = model_op_profile(network, COSTS)
    by_node = {name: {"node_type": kind, "avg_ms": us / 1000} for name, kind, us in profile}
    assert all(name.startswith("[") for name in by_node)
    keys, names = [c.key for c in configs], network_layer_names(arch, **NETWORK)
    times = entry_times(by_node, keys, names)
    assert times == pytest.approx(alone, rel=1e-9)
    # With XNNPACK the network is one delegate node: it cannot be cut.
    delegated = model_op_profile(network, COSTS, use_xnnpack=True)
    with pytest.raises(ValueError, match="delegate='none'"):
        entry_times({name: {"node_type": kind, "avg_ms": us} for name, kind, us in delegated}, keys, names)
    # The network's output is renamed: it ends the last entry, even when that entry is this one operator.
    head, top = "head:i40_o64@2x2", "pooling:max_i64@2x2"
    pooled = {"[m/top_activation/Relu;m/top_conv/convolution]:0": {"avg_ms": 0.2},
              "[StatefulPartitionedCall:0]:1": {"avg_ms": 0.05}}  # fmt: skip
    top_names = [("top_conv", "top_bn", "top_activation"), ("max_pool",)]
    assert entry_times(pooled, [head, top], top_names) == {head: 0.2, top: 0.05}
    with pytest.raises(ValueError, match="names no layer"):
        entry_times({"[Identity]:0": {"avg_ms": 1.0}}, [configs[0].key], [("stem",)])
    with pytest.raises(ValueError, match="no operator for the entries"):
        entry_times(by_node, ["x", *keys], [("x",), *names])
    # Batch normalisation and ReLU fold into the convolutions: no op of their own.
    assert set(whole) <= {
        "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "MEAN", "MUL", "LOGISTIC",
        "FULLY_CONNECTED", "SOFTMAX",
    }  # fmt: skip


def test_kernel_types_and_features():
    se = LayerConfig.from_key("layer:mbconv_k5_s22_i24_e72_o40_se6_poolskip@48x48")
    assert kernel_type(se) == "mbconv_se"
    assert kernel_type(LayerConfig.from_key("layer:conv_k3_s11_i32_o32@16x16")) == "conv"
    assert kernel_type(LayerConfig.from_key("classifier:i1280_o1000_softmax@4x4")) == "top"
    features = entry_features(se, 0.25)
    assert features["mbconv_se:ms"] == 0.25 and features["mbconv_se:count"] == 1.0
    assert set(features) <= set(FEATURES)
    # Weights: expand 24x72, depthwise 5x5x72, project 72x40, SE 2x72x6 (+ biases), the skip's 1x1 conv
    # 24x40, and the batch normalisations' scales and offsets.
    weights = 24 * 72 + 25 * 72 + 72 * 40 + (2 * 72 * 6 + 6 + 72) + 24 * 40 + 2 * (72 + 72 + 40 + 40)
    assert features["weight_mb"] == pytest.approx(weights * 4 / 1e6)
    # A wider layer moves more activations.
    wider = LayerConfig.from_key("layer:mbconv_k5_s22_i24_e144_o40_se6_poolskip@48x48")
    assert entry_features(wider, 0.25)["activation_mb"] > features["activation_mb"]
    with pytest.raises(ValueError, match="Malformed"):
        entry_features("layer:nonsense@1x1", 0.1)


@pytest.mark.parametrize(
    "key",
    [
        "layer:conv_k3_s22_i16_o24_se6_poolskip@16x16",  # SE after a plain conv
        "layer:conv_k3_s11_i24_o24_poolskip@8x8",  # a pooling skip without a projection
        "layer:dconv_k5_s11_i24_o24_se6@8x8",
        "layer:mbconv_k5_s22_i24_e72_o40_se6_poolskip@16x16",
    ],
)
def test_layer_entries_count_what_their_models_compute(key):
    config = LayerConfig.from_key(key)
    model = config.build_model()
    convolutions = count_model_macs(model)
    assert count_layer(config.to_plan(), config.input_size).macs == convolutions
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert kernels_lib.traffic(config)[1] == trainable
    # What the runtime computes beyond the convolutions: SE's mean and rescaling, the skip's averaging.
    ho, wo = config.output_size
    se_channels = (config.output_filters if config.op == "conv" else config.expanded_filters) * bool(
        config.se_filters
    )
    pooled = config.input_size[0] * config.input_size[1] * config.input_filters * (config.skip == "pool")
    assert kernels_lib.mult_adds(config) == convolutions + 2 * ho * wo * se_channels + pooled


def test_fit_terms_recovers_weights_and_stays_non_negative():
    rng = np.random.default_rng(0)
    rows = [{"a": float(a), "b": float(b)} for a, b in rng.uniform(0.5, 3.0, size=(40, 2))]
    measured = [0.4 + 1.5 * r["a"] + 0.2 * r["b"] for r in rows]
    terms, intercept = fit_terms(rows, measured, ridge=0.0)
    assert terms == pytest.approx({"a": 1.5, "b": 0.2}, rel=1e-6) and intercept == pytest.approx(0.4)
    # A feature that only lowers the latency gets weight 0, not a negative one.
    falling = [m - 0.3 * r["b"] for m, r in zip(measured, rows, strict=True)]
    terms, _ = fit_terms(rows, falling, ridge=0.0)
    assert terms["b"] == 0.0 and terms["a"] > 0
    # The ridge pulls a weight the data cannot tell apart from another towards its prior.
    twins = [{"a": r["a"], "c": r["a"]} for r in rows]
    terms, _ = fit_terms(twins, measured, prior={"a": 1.0}, ridge=0.1)
    assert terms["a"] > terms["c"]
    # A kernel type no measurement holds keeps its prior weight: it is not predicted to cost nothing.
    terms, _ = fit_terms(rows, measured, prior={"a": 1.0, "unseen": 1.0}, ridge=0.1)
    assert terms["unseen"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="as many"):
        fit_terms(rows, measured[:-1])
    with pytest.raises(ValueError, match="positive"):
        fit_terms(rows[:2], [1.0, 0.0])
    with pytest.raises(ValueError, match="ridge"):
        fit_terms(rows, measured, ridge=-1)


def test_calibration_refuses_bad_terms():
    with pytest.raises(ValueError, match="scale 1"):
        Calibration(1.2, 0.0, terms={"conv:ms": 1.0})
    with pytest.raises(ValueError, match="terms"):
        Calibration(1.0, 0.0, terms={"conv:ms": -1.0})
    with pytest.raises(ValueError, match="apply_features"):
        Calibration(1.0, 0.0, terms={"conv:ms": 1.0}).apply(2.0)


@pytest.fixture(scope="module")
def inflated():
    """A fake source whose whole networks cost 1.4 times their layers, profiled on both architectures."""
    source = FakeSource(network_factor=1.4)
    table = LatencyLookupTable(profiler=source)
    table.profile_architectures([TWO_BLOCKS, FOUR_BLOCKS], progress=False, **NETWORK)
    return table, source


def test_per_kernel_calibration_learns_in_network_costs(inflated):
    table, source = inflated
    archs = [TWO_BLOCKS, FOUR_BLOCKS]
    calibration = table.calibrate(archs, progress=False, method="kernels", **NETWORK)
    assert calibration.method == "kernels" and calibration.scale == 1.0
    for arch in archs:
        measured = source.expected(keras_mnas.build_model(arch, **NETWORK))
        assert table.predict(arch, **NETWORK) == pytest.approx(measured, rel=0.02)
        # Predicting a built model and an architecture agree, and the fast path equals the features' sum.
        features = table.features(network_configs(arch, **NETWORK))
        assert table.predict(arch, **NETWORK) == pytest.approx(calibration.apply_features(features))
    assert max(abs(e) for e in calibration.relative_errors) < 0.02
    result = table.measure(keras_mnas.build_model(TWO_BLOCKS, **NETWORK))
    assert result.provenance["method"].endswith("calibrated (kernels)")
    assert table.config()["calibration"]["method"] == "kernels"

    # Saved and loaded, it predicts the same; and "auto" with two measurements fits a line.
    copy = LatencyLookupTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert copy.calibration.terms == calibration.terms
    assert copy.predict(FOUR_BLOCKS, **NETWORK) == table.predict(FOUR_BLOCKS, **NETWORK)
    rows = [dict(m) for m in calibration.measurements]
    assert copy.fit_calibration(rows).method == "line"
    # A per-kernel fit works the features out from the architecture when the rows do not carry them.
    bare = [{k: v for k, v in row.items() if k != "features"} for row in rows]
    assert copy.fit_calibration(bare, method="kernels").terms == pytest.approx(calibration.terms)
    with pytest.raises(ValueError, match="'features', or its 'architecture'"):
        copy.fit_calibration([{"lut_ms": 1.0, "measured_ms": 2.0}] * 2, method="kernels")
    with pytest.raises(ValueError, match="method"):
        copy.fit_calibration(rows, method="forest")


def test_version_1_tables_are_read_as_line_calibrated(inflated):
    table, _ = inflated
    table.calibrate([TWO_BLOCKS, FOUR_BLOCKS], progress=False, method="line", **NETWORK)
    data = json.loads(json.dumps(table.to_dict()))
    data["format_version"] = 1
    for key in ("method", "terms"):
        del data["calibration"][key]
    old = LatencyLookupTable.from_dict(data)
    assert old.calibration.method == "line"
    assert old.predict(TWO_BLOCKS, **NETWORK) == pytest.approx(table.predict(TWO_BLOCKS, **NETWORK))


def test_auto_keeps_the_per_kernel_calibration_only_where_it_predicts_better():
    rng = np.random.default_rng(1)
    conv, mbconv = rng.uniform(0.2, 2.0, 40), rng.uniform(0.2, 2.0, 40)

    def rows(measured):
        return [
            {"lut_ms": c + m, "features": {"conv:ms": c, "mbconv:ms": m}, "measured_ms": y}
            for c, m, y in zip(conv, mbconv, measured, strict=True)
        ]

    table = LatencyLookupTable()
    # Kernel types that cost differently in a network: one scale cannot fit them, one weight each can.
    by_type = table.fit_calibration(rows(0.3 + 2.0 * conv + 1.0 * mbconv))
    assert by_type.method == "kernels"
    seen = {name: by_type.terms[name] for name in ("conv:ms", "mbconv:ms")}
    assert seen == pytest.approx({"conv:ms": 2.0, "mbconv:ms": 1.0}, rel=0.05)
    # Kernel types none of the measured networks holds cost their time alone, not nothing.
    assert by_type.terms["dconv_se:ms"] == pytest.approx(1.0)
    # One common factor: the line is exact, and the ridge of the per-kernel fit only costs accuracy.
    common = table.fit_calibration(rows(0.3 + 1.6 * (conv + mbconv)))
    assert common.method == "line" and common.scale == pytest.approx(1.6)
    # Below KERNEL_MEASUREMENTS there are too few measurements to choose on: a line.
    assert table.fit_calibration(rows(0.3 + 2.0 * conv + 1.0 * mbconv)[:10]).method == "line"
