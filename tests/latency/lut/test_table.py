import doctest
import json
import subprocess
import sys

import keras
import pytest
from _fake_source import FOUR_BLOCKS, NETWORK, SHAPE, TWO_BLOCKS, FakeSource

import keras_mnas
from keras_mnas.architecture import ArchSpec
from keras_mnas.latency import HostLatency, LatencyResult, LatencySource
from keras_mnas.latency.lut import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LatencyLookupTable,
    LayerConfig,
    MissingEntryError,
    network_configs,
)
from keras_mnas.latency.lut import table as table_lib


@pytest.fixture(scope="module")
def profiled():
    """A fake-profiled table with every entry of TWO_BLOCKS and FOUR_BLOCKS at 32x32, uncalibrated."""
    source = FakeSource()
    table = LatencyLookupTable(profiler=source)
    table.profile_architectures([TWO_BLOCKS, FOUR_BLOCKS], progress=False, **NETWORK)
    return table, source


def fresh_copy(table, **kwargs):
    return LatencyLookupTable.from_dict(json.loads(json.dumps(table.to_dict())), **kwargs)


def test_docstring_examples():
    result = doctest.testmod(table_lib, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


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
    with pytest.raises(ValueError, match=r"not made by keras_mnas"):
        table.measure(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)]))


def test_predictions_need_no_model_building(profiled, monkeypatch):
    table = profiled[0]

    def no_building(*args, **kwargs):
        raise AssertionError("a prediction built a model")

    monkeypatch.setattr(keras_mnas.builder, "build_model", no_building)
    monkeypatch.setattr(LayerConfig, "build_model", no_building)
    assert table.predict(FOUR_BLOCKS, **NETWORK) > 0


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
    assert data["format"] == FORMAT_NAME and data["format_version"] == FORMAT_VERSION
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
        (
            lambda d: d.update(calibration={"scale": -1.0, "intercept_ms": 0.0}),
            "`Calibration.scale` must be a finite number > 0",
        ),
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


def test_the_latency_package_imports_nothing_of_the_search_package():
    # The search depends on latency, never the other way round: no import cycle, and the table reads no
    # search-space internals.
    code = (
        "import sys; import keras_mnas.latency; import keras_mnas.latency.lut; "
        "print(sorted(m for m in sys.modules if m.startswith('keras_mnas.search')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_an_adaptive_calibration_measures_half_as_given_then_what_it_is_least_sure_of():
    from keras_mnas.search import MnasSearchSpace

    space = MnasSearchSpace(
        skeleton=[(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2)],
        kernel_sizes=(3,),
        filter_multipliers=(1.0,),
        layer_deltas=(0,),
        fixed_blocks={0: "r1_k3_s11_e1_i16_o16_noskip"},
        input_shape=SHAPE,
        classes=10,
        head_filters=64,
    )
    network = space.network_kwargs()
    source = FakeSource(network_factor=1.3)
    table = LatencyLookupTable(profiler=source)
    pool = space.sample_architectures(8, seed=0)
    calibration = table.calibrate(pool, count=4, progress=False, **network)

    rows = calibration.measurements
    assert [row["chosen"] for row in rows] == ["as given"] * 2 + ["least certain"] * 2
    assert [row["architecture"] for row in rows[:2]] == [arch.to_dict() for arch in pool[:2]]
    # Each chosen one is what the bootstrap fits on the measurements before it disagreed on most, and it
    # carries what the calibration of those measurements predicted for it.
    first_choice = table.choose_calibration(rows[:2], pool[2:], 1, **network)[0]
    assert rows[2]["architecture"] == first_choice.to_dict()
    assert all(row["predicted_before_ms"] > 0 for row in rows[2:])
    names = [{layer.name for layer in model.layers} for model, *_ in source.measured]
    whole_networks = [n for n in names if {"stem_conv", "top_conv"} <= n]
    assert len(whole_networks) == 4  # four measured end to end, whatever the pool's size

    with pytest.raises(ValueError, match="received only 8"):
        table.calibrate(pool, count=9, progress=False, **network)
    with pytest.raises(ValueError, match="count"):
        table.calibrate(pool, count=1, progress=False, **network)
    with pytest.raises(ValueError, match="at least 2 measurements"):
        table.choose_calibration(rows[:1], pool, 1, **network)

    # Measured another way (other processes, another machine): `measure` gets each batch, the source
    # profiles the entries only.
    batches = []

    def measure(archs):
        batches.append([arch.to_dict() for arch in archs])
        return [1.25 * table.lut_ms(arch, **network) for arch in archs]

    source.measured.clear()
    calibration = table.calibrate(pool, count=4, progress=False, measure=measure, **network)
    assert [len(batch) for batch in batches] == [2, 1, 1]  # half as given, then one per refit
    assert [row["architecture"] for row in calibration.measurements] == [a for b in batches for a in b]
    assert all(row["measured_ms"] == pytest.approx(1.25 * row["lut_ms"]) for row in calibration.measurements)
    assert not any("top_conv" in {layer.name for layer in m.layers} for m, *_ in source.measured)
    with pytest.raises(ValueError, match="one positive number of milliseconds per architecture"):
        table.calibrate(pool, count=4, progress=False, measure=lambda archs: [1.0], **network)
    with pytest.raises(ValueError, match="one positive number"):
        table.calibrate(pool, count=4, progress=False, measure=lambda archs: [-1.0] * len(archs), **network)
