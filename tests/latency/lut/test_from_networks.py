"""A phone table from whole networks' operator profiles, end to end through adb to the fake phone."""

import json

import pytest

from keras_mnas.latency import AndroidDevicePool, AndroidLatency, LatencyLookupTable, network_configs
from keras_mnas.latency.lut import IN_NETWORK_FORMAT_VERSION, check_op_profile_source
from keras_mnas.search import MnasSearchSpace
from keras_mnas.testing import AdbDouble, FakeBenchmark, FakePhone, fake_benchmark_binary

pytestmark = pytest.mark.usefixtures("no_real_adb")

# A small space at 32x32: conversions of its networks and entries take a fraction of a second each.
SPACE = MnasSearchSpace(
    skeleton=[(1, 16, 1, 1), (6, 24, 2, 2), (6, 40, 2, 2)],
    conv_ops=("dconv", "mbconv3"),
    kernel_sizes=(3, 5),
    se_ratios=(0.0, 0.25),
    skip_ops=("identity", "pool"),
    filter_multipliers=(1.0,),
    layer_deltas=(0,),
    input_shape=(32, 32, 3),
    classes=10,
)
NETWORK = {"input_shape": SPACE.input_shape, "classes": SPACE.classes}
INVOKE_MS = 0.4  # the fake phone's fixed cost of one invocation, beyond its operators
# Its cost of one operator, in microseconds: per operator, and per thousand output elements. Large enough that
# the profile's 1-microsecond resolution does not matter.
COSTS = (20.0, 5.0)
FAST = dict(runs=3, warmup_runs=1, repeats=1, min_seconds=0.0, call_timeout_s=5.0, run_timeout_s=5.0,
            cool_poll_s=0.02, max_cool_wait_s=0.5, lease_wait_s=0.5)  # fmt: skip


@pytest.fixture
def phone_source(tmp_path):
    """An AndroidLatency profiling operators without a delegate, on a phone costing its model's operators."""
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(fake_benchmark_binary("arm64-v8a"))
    phone = FakePhone(
        "P", benchmark=FakeBenchmark(latency_ms=INVOKE_MS, relative_std=0.0, model_op_costs=COSTS)
    )
    # Through the in-process adb double only: the real adb server too would double the test's time, and
    # test_android.py checks op profiles through both.
    with AdbDouble([phone]) as server:

        def make(pool=False, **kwargs):
            options = {"delegate": "none", "op_profile": True, **FAST, **kwargs}
            if pool:
                options.pop("lease_wait_s")  # a pool's own setting, not a phone's
                return AndroidDevicePool([phone.serial], binary=binary, adb_port=server.port, **options)
            return AndroidLatency(phone.serial, binary=binary, adb_port=server.port, **options)

        yield make, phone


def test_a_table_from_networks_predicts_held_out_networks_and_matches_entries_alone(phone_source, tmp_path):
    make, phone = phone_source
    source = make()
    networks, held_out = SPACE.sample_architectures(4, seed=0), SPACE.sample_architectures(2, seed=1)
    table = LatencyLookupTable(profiler=source, path=tmp_path / "phone.json")
    covered = table.profile_from_networks(networks, progress=False, **NETWORK)
    entries = {c.key for arch in networks for c in network_configs(arch, **NETWORK)}
    assert covered == len(entries) == len(table)
    # One benchmark run per network, plus the baseline: not one per entry.
    assert len(phone.benchmark_runs) == len(networks) + 1
    assert all(run.flags["use_xnnpack"] == "false" for run in phone.benchmark_runs)
    # The held-out networks' other entries are profiled alone; then a line calibration on two networks.
    missing = table.missing(c for arch in held_out for c in network_configs(arch, **NETWORK))
    assert table.profile(missing, progress=False) == len(missing)
    table.calibrate(networks[:2], progress=False, method="line", **NETWORK)
    # The operators leave out the invocation, which the calibration's fixed cost takes up.
    assert table.calibration.intercept_ms == pytest.approx(INVOKE_MS, abs=0.05)
    for arch in held_out:
        measured = source.measure(SPACE.build(arch)).median_ms
        assert table.predict(arch, **NETWORK) == pytest.approx(measured, rel=0.01)

    # Entry by entry on the same phone, the entries the networks covered get the same times (to the
    # profile's resolution of 1 microsecond per operator).
    alone = LatencyLookupTable(profiler=make())
    alone.profile(network_configs(networks[0], **NETWORK)[:4], progress=False)
    assert len(alone) == 4
    for key in alone.keys:
        assert table.entry_ms(key) == pytest.approx(alone.entry_ms(key), abs=0.002)

    # The file keeps each network's figure, and reads back with the same predictions.
    data = json.loads((tmp_path / "phone.json").read_text())
    assert data["format_version"] == IN_NETWORK_FORMAT_VERSION
    assert any(len(entry.get("in_network_ms", [])) > 1 for entry in data["entries"].values())
    loaded = LatencyLookupTable.load(tmp_path / "phone.json")
    assert loaded.predict(held_out[0], **NETWORK) == table.predict(held_out[0], **NETWORK)


def test_profiling_from_networks_needs_operator_profiles_without_a_delegate(phone_source):
    make, phone = phone_source
    refused = (({"delegate": "xnnpack"}, "delegate='none'"), ({"op_profile": False}, "op_profile"))
    for options, message in refused:
        table = LatencyLookupTable(profiler=make(**options))
        with pytest.raises(ValueError, match=message):
            table.profile_from_networks(SPACE.sample_architectures(1), progress=False, **NETWORK)
    assert phone.benchmark_runs == []  # refused before measuring anything
    pool_settings = {"name": "android-pool", "phone_settings": [{"op_profile": True, "delegate": "gpu"}]}
    with pytest.raises(ValueError, match="delegate='gpu'"):
        check_op_profile_source(pool_settings)


def test_a_pool_of_phones_profiles_from_networks(phone_source):
    make, _ = phone_source
    table = LatencyLookupTable(profiler=make(pool=True))
    network = SPACE.sample_architectures(1, seed=2)[0]
    assert table.profile_from_networks([network], progress=False, **NETWORK) == len(
        {c.key for c in network_configs(network, **NETWORK)}
    )
    assert all(table.entry_ms(c) > 0 for c in network_configs(network, **NETWORK))
    with pytest.raises(ValueError, match="delegate='none'"):
        LatencyLookupTable(profiler=make(pool=True, delegate="xnnpack")).profile_from_networks(
            [network], progress=False, **NETWORK
        )
