"""A small table built on this CPU predicts held-out networks about as well as a second measurement does."""

import statistics

import keras
import pytest

from keras_mnas.latency import HostLatency, LatencyLookupTable, convert_to_tflite
from keras_mnas.search import MnasSearchSpace


@pytest.mark.exclusive_cpu  # tables against re-measurements: a training beside it skews the timings
def test_a_host_table_predicts_held_out_networks_within_its_noise_floor():
    # A tiny space (two small searched blocks at 64x64, with and without SE and residuals): the table is
    # built, calibrated as a user's would be (10 measurements: a line) and checked in seconds.
    space = MnasSearchSpace(
        skeleton=[(1, 16, 1, 1), (6, 24, 2, 2), (6, 40, 2, 2)],
        conv_ops=("dconv", "mbconv6"),
        kernel_sizes=(3,),
        se_ratios=(0.0, 0.25),
        skip_ops=("identity",),
        filter_multipliers=(1.0,),
        layer_deltas=(0, 1),
        fixed_blocks={0: "r1_k3_s11_e1_i32_o16_noskip"},
        input_shape=(64, 64, 3),
        classes=10,
        head_filters=256,
    )
    network = space.network_kwargs()
    host = HostLatency(runs=20, warmup_runs=3, min_seconds=0.05)
    table = LatencyLookupTable(profiler=host)
    held_out = space.sample_architectures(4, seed=0)
    table.profile_architectures(held_out, progress=False, **network)

    def tflite(arch):
        keras.backend.clear_session()
        return convert_to_tflite(space.build(arch))

    held_out_files = [tflite(arch) for arch in held_out]
    measured, remeasured = [], []

    def measure_with_the_held_out(archs):
        # The held-out networks are timed between the calibration's, as benchmarks/latency.py does, so that
        # a change of the machine's load during the test touches both alike.
        figures = []
        for index, arch in enumerate(archs):
            figures.append(host.measure_tflite(tflite(arch)).median_ms)
            if index % 2 == 1 and index // 2 < len(held_out_files):
                tflite_bytes = held_out_files[index // 2]
                measured.append(host.measure_tflite(tflite_bytes).median_ms)
                remeasured.append(host.measure_tflite(tflite_bytes).median_ms)  # a fresh interpreter
        return figures

    calibration = space.sample_architectures(10, seed=1, exclude=held_out)
    table.calibrate(calibration, progress=False, measure=measure_with_the_held_out, **network)
    assert len(measured) == len(held_out)

    predicted = [table.predict(arch, **network) for arch in held_out]
    predicted_errors = [abs(p / m - 1) for p, m in zip(predicted, measured, strict=True)]
    noise_errors = [abs(r / m - 1) for r, m in zip(remeasured, measured, strict=True)]
    # The predictor's typical error is of the order of the host's own: a calibration off by 10% or more
    # fails this. The allowance covers a busy machine, where a fresh interpreter right after the first agrees
    # far better than measurements of other networks, seconds apart, do.
    assert statistics.median(predicted_errors) <= 2 * statistics.median(noise_errors) + 0.08, (
        predicted_errors,
        noise_errors,
    )
    assert max(predicted_errors) <= 0.3, predicted_errors
