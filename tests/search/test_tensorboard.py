"""SearchLogger's events files, read back with TensorBoard's own readers and its HParams backend."""

import os

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from tensorboard import context as tb_context
from tensorboard.backend.event_processing import data_provider, event_accumulator, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import (
    api_pb2,
    backend_context,
    get_experiment,
    list_session_groups,
    metadata,
)
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.util import tensor_util

from keras_mnas.search.results import plot_pareto
from keras_mnas.search.tensorboard import (
    DEFAULT_METRICS,
    SearchLogger,
    tensorboard_dir_from_callbacks,
)

METRICS = {"val_accuracy": 0.8125, "latency_ms": 3.25, "reward": 0.7734, "params": 123456, "macs": 9876543}
HPARAMS = {
    "block2_conv_op": "mbconv6",
    "block2_kernel": 5,
    "block2_se": 0.25,
    "block2_skip": True,
    "width": 48,
    "dropout": 0.125,
}


def space():
    hp = keras_tuner.HyperParameters()
    hp.Choice("block2_conv_op", ["conv", "dconv", "mbconv3", "mbconv6"])
    hp.Choice("block2_kernel", [3, 5])
    hp.Choice("block2_se", [0.0, 0.25])
    hp.Boolean("block2_skip")
    hp.Int("width", 16, 64, step=16)
    hp.Float("dropout", 0.0, 0.5)  # no step: an interval
    return hp


def accumulator(run_dir):
    acc = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0}
    )
    acc.Reload()
    return acc


def hparams_content(acc, tag):
    return acc.PluginTagToContent(metadata.PLUGIN_NAME)[tag]


def scalars(acc):
    """`{tag: [(step, value), ...]}` of the run's scalar-plugin summaries."""
    try:
        tags = acc.PluginTagToContent("scalars")
    except KeyError:  # no scalar in this run
        tags = {}
    return {
        tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
        for tag in tags
    }


def events_files(directory):
    return sorted(name for name in os.listdir(directory) if "tfevents" in name)


def hparams_backend(log_dir):
    """The HParams dashboard's backend over `log_dir`: what the HPARAMS tab shows."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(log_dir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(log_dir))
    context = backend_context.Context(
        base_plugin.TBContext(logdir=str(log_dir), data_provider=provider, multiplexer=mux)
    )
    request_context = tb_context.RequestContext()
    experiment = get_experiment.Handler(request_context, context, "", api_pb2.GetExperimentRequest()).run()
    request = api_pb2.ListSessionGroupsRequest(
        allowed_statuses=[
            api_pb2.STATUS_UNKNOWN,
            api_pb2.STATUS_SUCCESS,
            api_pb2.STATUS_FAILURE,
            api_pb2.STATUS_RUNNING,
        ],
        aggregation_type=api_pb2.AGGREGATION_AVG,
        slice_size=1000,
    )
    groups = list_session_groups.Handler(request_context, context, "", request).run().session_groups
    return experiment, {group.name: group for group in groups}


def group_metrics(group):
    return {m.name.tag: m.value for m in group.metric_values if m.name.group == ""}


# ----------------------------------------------------------------------------------------------------------
# Experiment


def test_experiment_declares_domains_and_metrics(tmp_path):
    SearchLogger(tmp_path, hyperparameters=space())
    # Written at construction: the dashboard knows the domains before any trial ends.
    acc = accumulator(tmp_path)
    experiment = metadata.parse_experiment_plugin_data(hparams_content(acc, metadata.EXPERIMENT_TAG))
    infos = {info.name: info for info in experiment.hparam_infos}
    assert list(infos) == list(HPARAMS)
    conv = infos["block2_conv_op"]
    assert conv.type == api_pb2.DATA_TYPE_STRING
    assert [v.string_value for v in conv.domain_discrete.values] == ["conv", "dconv", "mbconv3", "mbconv6"]
    assert [v.number_value for v in infos["block2_kernel"].domain_discrete.values] == [3, 5]
    assert [v.number_value for v in infos["block2_se"].domain_discrete.values] == [0.0, 0.25]
    assert [v.bool_value for v in infos["block2_skip"].domain_discrete.values] == [False, True]
    assert [v.number_value for v in infos["width"].domain_discrete.values] == [16, 32, 48, 64]
    assert infos["dropout"].HasField("domain_interval")
    interval = infos["dropout"].domain_interval
    assert (interval.min_value, interval.max_value) == (0, 0.5)
    assert [m.name.tag for m in experiment.metric_infos] == list(DEFAULT_METRICS)
    assert all(m.name.group == "" for m in experiment.metric_infos)
    display = {m.name.tag: m.display_name for m in experiment.metric_infos}
    assert display["latency_ms"] == "latency (ms)"
    assert display["val_accuracy"] == "validation accuracy"


def test_experiment_is_written_once_and_replaced_when_the_space_changes(tmp_path):
    SearchLogger(tmp_path, hyperparameters=space())
    first = events_files(tmp_path)
    SearchLogger(tmp_path, hyperparameters=space())  # a resumed search: same experiment, nothing new
    assert events_files(tmp_path) == first
    grown = space()
    grown.Choice("block3_kernel", [3, 5, 7])
    SearchLogger(tmp_path, hyperparameters=grown)
    # TensorBoard keeps the first experiment of a run: the outdated one is gone, not shadowing the new one.
    assert len(events_files(tmp_path)) == 1 and events_files(tmp_path) != first
    acc = accumulator(tmp_path)
    assert len(acc.Tensors(metadata.EXPERIMENT_TAG)) == 1
    experiment = metadata.parse_experiment_plugin_data(hparams_content(acc, metadata.EXPERIMENT_TAG))
    assert "block3_kernel" in [info.name for info in experiment.hparam_infos]


def test_without_a_space_the_experiment_names_the_hyperparameters_without_domains(tmp_path):
    logger = SearchLogger(tmp_path)
    assert events_files(tmp_path) == []  # nothing known yet
    logger.log_trial("00", {"units": 8, "act": "relu"}, METRICS)
    experiment = metadata.parse_experiment_plugin_data(
        hparams_content(accumulator(tmp_path), metadata.EXPERIMENT_TAG)
    )
    infos = {info.name: info for info in experiment.hparam_infos}
    assert set(infos) == {"units", "act"}
    # No made-up domain: the dashboard's filters would hide trials outside it.
    assert not infos["units"].HasField("domain_discrete") and not infos["units"].HasField("domain_interval")


# ----------------------------------------------------------------------------------------------------------
# Trials


def test_trial_session_carries_hparams_and_exactly_the_declared_metrics(tmp_path):
    logger = SearchLogger(tmp_path, hyperparameters=space())
    logger.log_trial("07", HPARAMS, {**METRICS, "loss": 0.3, "skipped": 0.0}, "COMPLETED")
    acc = accumulator(tmp_path / "07")
    start = metadata.parse_session_start_info_plugin_data(
        hparams_content(acc, metadata.SESSION_START_INFO_TAG)
    )
    assert start.group_name == "07"  # KerasTuner's group name for this trial: both sessions share one row
    hparams = {
        name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
        for name, value in start.hparams.items()
    }
    assert hparams == HPARAMS
    logged = scalars(acc)
    assert set(logged) == set(DEFAULT_METRICS)  # "loss" and "skipped" are not declared metrics
    for name, value in METRICS.items():
        assert logged[name] == [(0, pytest.approx(value, rel=1e-6))]
    end = metadata.parse_session_end_info_plugin_data(hparams_content(acc, metadata.SESSION_END_INFO_TAG))
    assert end.status == api_pb2.STATUS_SUCCESS


def test_missing_or_non_finite_metrics_are_left_out(tmp_path):
    logger = SearchLogger(tmp_path, hyperparameters=space())
    # A trial skipped before training: no accuracy.
    logger.log_trial("01", HPARAMS, {**METRICS, "val_accuracy": None, "macs": float("nan")})
    assert set(scalars(accumulator(tmp_path / "01"))) == {"latency_ms", "reward", "params"}


def test_failed_trial_is_visible_with_its_status_and_no_metrics(tmp_path):
    logger = SearchLogger(tmp_path, hyperparameters=space())
    logger.log_trial("02", HPARAMS, METRICS, status="FAILED")
    acc = accumulator(tmp_path / "02")
    end = metadata.parse_session_end_info_plugin_data(hparams_content(acc, metadata.SESSION_END_INFO_TAG))
    assert end.status == api_pb2.STATUS_FAILURE
    assert scalars(acc) == {}
    start = metadata.parse_session_start_info_plugin_data(
        hparams_content(acc, metadata.SESSION_START_INFO_TAG)
    )
    assert start.hparams["block2_conv_op"].string_value == "mbconv6"


def test_log_trial_is_idempotent_across_calls_and_resumes(tmp_path):
    logger = SearchLogger(tmp_path, hyperparameters=space())
    logger.log_trial("03", HPARAMS, METRICS)
    files = events_files(tmp_path / "03")
    logger.log_trial("03", HPARAMS, METRICS)
    SearchLogger(tmp_path, hyperparameters=space()).log_trial("03", HPARAMS, METRICS)  # resumed search
    assert events_files(tmp_path / "03") == files
    acc = accumulator(tmp_path / "03")
    assert len(acc.Tensors(metadata.SESSION_START_INFO_TAG)) == 1
    assert len(scalars(acc)["reward"]) == 1


def test_a_retried_trial_replaces_its_session(tmp_path):
    logger = SearchLogger(tmp_path, hyperparameters=space())
    logger.log_trial("04", HPARAMS, {}, status="FAILED")
    logger.log_trial("04", HPARAMS, METRICS, status="COMPLETED")
    assert len(events_files(tmp_path / "04")) == 1
    acc = accumulator(tmp_path / "04")
    assert len(acc.Tensors(metadata.SESSION_START_INFO_TAG)) == 1
    end = metadata.parse_session_end_info_plugin_data(hparams_content(acc, metadata.SESSION_END_INFO_TAG))
    assert end.status == api_pb2.STATUS_SUCCESS
    assert scalars(acc)["reward"] == [(0, pytest.approx(METRICS["reward"]))]


def test_no_partial_files_are_left(tmp_path):
    logger = SearchLogger(tmp_path, hyperparameters=space())
    logger.log_trial("05", HPARAMS, METRICS)
    logger.log_controller([{"update": 1, "mean_reward": 0.5}])
    leftovers = [name for _, _, names in os.walk(tmp_path) for name in names if "partial" in name]
    assert leftovers == []


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lg: lg.log_trial("../x", HPARAMS, METRICS), "trial_id"),
        (lambda lg: lg.log_trial("search", HPARAMS, METRICS), "trial_id"),
        (lambda lg: lg.log_trial("06", HPARAMS, METRICS, status="DONE"), "`status` must be one of"),
        (lambda lg: lg.log_trial("06", {"block2_kernel": [3]}, METRICS), "bool, int, float or str"),
        (lambda lg: lg.log_trial("06", HPARAMS, {"reward": "high"}), "must be a number or None"),
        (lambda lg: lg.log_trial("06", HPARAMS, [0.5]), "metrics must be a dict"),
        (lambda lg: lg.log_controller({"update": 1}), "updates must be a list"),
        (
            lambda lg: lg.log_controller([{"update": 0, "entropy": 1.0}]),
            r"`updates\[0\]\['update'\]` must be an integer >= 1; received 0",
        ),
        (lambda lg: lg.log_pareto(b"GIF89a....", step=1), "PNG image"),
        (lambda lg: lg.log_pareto(plot_png(), step=-1), "`step` must be an integer >= 0; received -1"),
    ],
)
def test_errors_say_what_was_expected_and_received(tmp_path, call, message):
    logger = SearchLogger(tmp_path, hyperparameters=space())
    with pytest.raises(ValueError, match=message):
        call(logger)


def test_constructor_errors(tmp_path):
    with pytest.raises(ValueError, match="`metrics` must be a non-empty list of metric names"):
        SearchLogger(tmp_path, metrics="reward")
    with pytest.raises(ValueError, match=r"keras_tuner\.HyperParameters"):
        SearchLogger(tmp_path, hyperparameters={"units": [1, 2]})


# ----------------------------------------------------------------------------------------------------------
# Search-level run


def updates(n):
    return [
        {
            "update": i,
            "observed": 20 * i,
            "mean_reward": 0.5 + i / 100,
            "baseline": 0.4 + i / 100,
            "entropy": 5.0 - i / 10,
            "policy_loss": -0.01 * i,
        }
        for i in range(1, n + 1)
    ]


def test_controller_scalars_at_their_update_steps_without_duplicates_after_resume(tmp_path):
    SearchLogger(tmp_path).log_controller(updates(3))
    resumed = SearchLogger(tmp_path)  # a new process on the same directory
    resumed.log_controller(updates(5))
    resumed.log_controller(updates(5))  # nothing new: no new file
    assert len(events_files(tmp_path / "search")) == 2
    logged = scalars(accumulator(tmp_path / "search"))
    assert set(logged) == {
        "controller/observed",
        "controller/mean_reward",
        "controller/baseline",
        "controller/entropy",
        "controller/policy_loss",
    }
    for name in ("mean_reward", "baseline", "entropy", "policy_loss"):
        expected = [(u["update"], pytest.approx(u[name], rel=1e-6, abs=1e-7)) for u in updates(5)]
        assert logged[f"controller/{name}"] == expected
    assert resumed.logged_controller_steps() == 5


def test_pareto_image_decodes_as_png(tmp_path):
    logger = SearchLogger(tmp_path)
    png = plot_png()
    logger.log_pareto(png, step=4)
    logger.log_pareto(png, step=4)  # already logged at this step
    acc = accumulator(tmp_path / "search")
    assert acc.PluginTagToContent("images").keys() == {"search/pareto"}
    events = acc.Tensors("search/pareto")
    assert [e.step for e in events] == [4]
    width, height, encoded = tensor_util.make_ndarray(events[0].tensor_proto)
    assert encoded.startswith(b"\x89PNG\r\n\x1a\n")
    image = tf.io.decode_png(encoded).numpy()
    reference = tf.io.decode_png(png).numpy()
    assert (int(width), int(height)) == (reference.shape[1], reference.shape[0])
    np.testing.assert_array_equal(image, reference)


def plot_png():
    records = [
        {"trial_id": "0", "accuracy": 0.9, "latency_ms": 10.0},
        {"trial_id": "1", "accuracy": 0.8, "latency_ms": 12.0},
        {"trial_id": "2", "accuracy": 0.7, "latency_ms": 5.0},
    ]
    return plot_pareto(records, target_latency_ms=8.0)


def test_clear_removes_only_this_loggers_files(tmp_path):
    logger = SearchLogger(tmp_path, hyperparameters=space())
    logger.log_trial("00", HPARAMS, METRICS)
    logger.log_controller(updates(2))
    other = tmp_path / "00" / "execution0"
    with tf.summary.create_file_writer(str(other)).as_default():
        tf.summary.scalar("epoch_loss", 1.0, step=0)
    logger.clear()
    remaining = [name for _, _, names in os.walk(tmp_path) for name in names if "tfevents" in name]
    assert len(remaining) == 1 and ".mnas-" not in remaining[0]
    assert logger.logged_controller_steps() == 0


# ----------------------------------------------------------------------------------------------------------
# The HParams dashboard, with KerasTuner's own TensorBoard sessions in the same directory


def write_keras_tuner_like_session(log_dir, trial_id, hparams):
    """What KerasTuner writes with a TensorBoard callback: a session in execution0, curves below it."""
    run = os.path.join(log_dir, trial_id, "execution0")
    with tf.summary.create_file_writer(run).as_default():
        hparams_summary.hparams(hparams, trial_id=trial_id)
    for split, value in (("train", 0.7), ("validation", 0.6)):
        with tf.summary.create_file_writer(os.path.join(run, split)).as_default():
            tf.summary.scalar("epoch_accuracy", value, step=0)


def test_hparams_dashboard_shows_one_row_per_trial_with_all_metrics(tmp_path):
    logger = SearchLogger(tmp_path, hyperparameters=space())
    other = {**HPARAMS, "block2_conv_op": "dconv", "block2_kernel": 3}
    for trial_id, hparams in (("00", HPARAMS), ("01", other)):
        write_keras_tuner_like_session(tmp_path, trial_id, hparams)
    logger.log_trial("00", HPARAMS, METRICS)
    logger.log_trial("01", other, {**METRICS, "val_accuracy": 0.5, "latency_ms": 1.5})
    logger.log_controller(updates(2))
    logger.log_pareto(plot_png(), step=2)

    experiment, groups = hparams_backend(tmp_path)
    assert [m.name.tag for m in experiment.metric_infos] == list(DEFAULT_METRICS)
    assert sorted(groups) == ["00", "01"]  # the search run and KerasTuner's sessions add no rows
    assert sorted(s.name for s in groups["00"].sessions) == ["00", "00/execution0"]
    assert group_metrics(groups["00"]) == pytest.approx(METRICS, rel=1e-6)
    assert group_metrics(groups["01"])["latency_ms"] == pytest.approx(1.5)
    assert group_metrics(groups["01"])["val_accuracy"] == pytest.approx(0.5)
    assert groups["01"].hparams["block2_conv_op"].string_value == "dconv"


def test_real_keras_tuner_search_with_a_tensorboard_callback(tmp_path):
    """KerasTuner's own TensorBoard integration and SearchLogger's sessions make one row per trial."""

    def build(hp):
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(hp.Choice("units", [2, 4])), keras.layers.Dense(2)]
        )
        model.compile(
            "sgd",
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            run_eagerly=True,  # no tracing: faster on 8 samples
        )
        return model

    log_dir = tmp_path / "logs"
    callbacks = [keras.callbacks.TensorBoard(str(log_dir), write_graph=False, profile_batch=0)]
    tuner = keras_tuner.RandomSearch(
        build, objective="val_accuracy", max_trials=2, seed=1, directory=str(tmp_path / "project")
    )
    x = np.random.default_rng(0).random((8, 4))
    y = np.arange(8) % 2
    tuner.search(x, y, validation_data=(x, y), epochs=1, callbacks=callbacks, verbose=0)

    logger = SearchLogger(tensorboard_dir_from_callbacks(callbacks), tuner.oracle.hyperparameters)
    expected = {}
    for trial in tuner.oracle.trials.values():
        metrics = {name: trial.metrics.get_best_value(name) for name in trial.metrics.metrics}
        metrics.update(latency_ms=1.0 + int(trial.trial_id), reward=0.5, params=10, macs=100)
        logger.log_trial(trial.trial_id, trial.hyperparameters.values, metrics, trial.status)
        expected[trial.trial_id] = metrics

    _, groups = hparams_backend(log_dir)
    assert sorted(groups) == sorted(expected)
    for trial_id, group in groups.items():
        assert len(group.sessions) == 2  # KerasTuner's execution0 and ours
        assert set(group_metrics(group)) == set(DEFAULT_METRICS)
        assert group_metrics(group)["latency_ms"] == pytest.approx(expected[trial_id]["latency_ms"])
        assert group_metrics(group)["val_accuracy"] == pytest.approx(expected[trial_id]["val_accuracy"])


# ----------------------------------------------------------------------------------------------------------


def test_tensorboard_dir_from_callbacks(tmp_path):
    class MyTensorBoard(keras.callbacks.TensorBoard):
        pass

    assert tensorboard_dir_from_callbacks(None) is None
    assert tensorboard_dir_from_callbacks([]) is None
    assert tensorboard_dir_from_callbacks([keras.callbacks.EarlyStopping()]) is None
    callbacks = [keras.callbacks.EarlyStopping(), keras.callbacks.TensorBoard(tmp_path / "tb")]
    assert tensorboard_dir_from_callbacks(callbacks) == str(tmp_path / "tb")
    assert tensorboard_dir_from_callbacks((MyTensorBoard("sub"),)) == "sub"
    with pytest.raises(ValueError, match="callbacks must be a list"):
        tensorboard_dir_from_callbacks(keras.callbacks.TensorBoard("x"))


# ----------------------------------------------------------------------------------------------------------
# A real MnasTuner search with a TensorBoard callback


def test_a_mnas_search_is_one_session_per_trial_without_flat_curves(tmp_path):
    from sklearn.datasets import load_digits

    from keras_mnas.search import MnasSearchSpace, MnasTuner
    from keras_mnas.testing import ScriptedLatency

    data = load_digits()
    x = np.kron(data.images[:96].astype("float32") / 16.0, np.ones((2, 2), "float32"))[..., None]
    space = MnasSearchSpace(
        [(1, 16, 1, 1), (6, 24, 1, 2)],
        input_shape=(16, 16, 1),
        classes=10,
        depth_multiplier=0.5,
        head_filters=32,
        fixed_blocks={0: "r1_k3_s11_e1_i32_o16_noskip"},
    )
    log_dir = tmp_path / "tb"
    tuner = MnasTuner(
        space=space,
        latency=ScriptedLatency([1.0, 2.0], spreads=[0.01, 0.02]),
        target_latency_ms=2.0,
        max_trials=2,
        seed=1,
        directory=str(tmp_path),
        project_name="p",
    )
    epochs = []  # what a user's callback sees: the reward, as before
    seen = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append(sorted(logs)))
    callbacks = [keras.callbacks.TensorBoard(str(log_dir)), seen]
    tuner.search(x[:64], data.target[:64], validation_data=(x[64:], data.target[64:96]), epochs=2,
                 batch_size=32, verbose=0, callbacks=callbacks)  # fmt: skip
    records = {r["trial_id"]: r for r in tuner.trial_records()}
    assert len(records) == 2 and all(r["latency_ms"] and r["params"] and r["macs"] for r in records.values())
    assert all("reward" in logged for logged in epochs) and len(epochs) == 4

    # The HParams dashboard: one row per trial, of one session (KerasTuner's own, without metrics, is gone).
    _, groups = hparams_backend(log_dir)
    assert sorted(groups) == sorted(records)
    for trial_id, group in groups.items():
        assert [s.name for s in group.sessions] == [trial_id]
        assert group_metrics(group)["latency_ms"] == pytest.approx(records[trial_id]["latency_ms"])
        assert group_metrics(group)["params"] == pytest.approx(records[trial_id]["params"])

    # The Scalars view: training curves (the reward's among them) but no flat latency/params/macs curves.
    curves = {}
    for run, _, names in os.walk(log_dir):
        if any("tfevents" in name for name in names):
            for tag, points in scalars(accumulator(run)).items():
                curves.setdefault(tag, []).append(len(points))
    assert curves["epoch_reward"] == [2, 2] and curves["epoch_loss"] == [2, 2, 2, 2]
    flat = {"epoch_latency_ms", "epoch_params", "epoch_macs", "epoch_latency_spread"} & set(curves)
    assert not flat, flat
