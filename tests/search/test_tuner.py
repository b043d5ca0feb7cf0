import contextlib
import io
import json
import math
import pathlib
import re

import keras
import keras_tuner
import numpy as np
import pytest
from sklearn.datasets import load_digits
from tensorboard.backend.event_processing import event_accumulator

from keras_mnas import applications
from keras_mnas.builder import build_model
from keras_mnas.counting import count_model_macs
from keras_mnas.latency import (
    HostLatency,
    LatencyLookupTable,
    LatencyResult,
    LatencySource,
    convert_to_tflite,
)
from keras_mnas.search import MnasHyperModel, MnasReward, MnasSearchSpace, MnasTuner
from keras_mnas.search.latency_table import predict_candidate
from keras_mnas.search.project import SearchProject
from keras_mnas.testing import ScriptedLatency
from keras_mnas.utils.tf_memory import custom_gradient_names

TINY_SKELETON = [(1, 16, 1, 1), (6, 24, 1, 2), (6, 32, 2, 2)]


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = np.kron(data.images.astype("float32") / 16.0, np.ones((2, 2), "float32"))[..., None]  # 16x16x1
    return (x[:600], data.target[:600]), (x[1500:], data.target[1500:])


def tiny_space(channels=1):
    return MnasSearchSpace(
        TINY_SKELETON,
        input_shape=(16, 16, channels),
        classes=10,
        depth_multiplier=0.5,
        head_filters=32,
        fixed_blocks={0: "r1_k3_s11_e1_i32_o16_noskip"},
    )


@pytest.fixture(scope="module")
def scripted_search(tmp_path_factory, digits):
    """One search of three tiny candidates with scripted latencies, read by several tests.

    Each search traces three candidates, most of a test's time: the tests below check different things
    about the same search, so they share it. Two latencies are unstable, one is not; the TensorBoard
    callback logs the HParams view; minibatches of 2 make the controller learn within the search.
    """
    (x, y), (x_val, y_val) = digits
    directory = tmp_path_factory.mktemp("scripted_search")
    log_dir = directory / "tb"
    tuner = MnasTuner(
        space=tiny_space(),
        latency=ScriptedLatency([2.0, 1.0, 4.0], spreads=[0.012, 0.083, 0.051]),
        target_latency_ms=2.0,
        max_trials=3,
        seed=1,
        controller={"minibatch_size": 2},
        directory=str(directory),
        project_name="habits",
    )
    gradients_before = custom_gradient_names()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tuner.search(
            x,
            y,
            validation_data=(x_val, y_val),
            epochs=1,
            batch_size=64,
            verbose=0,
            callbacks=[keras.callbacks.TensorBoard(log_dir=str(log_dir))],
        )
    new_gradients = custom_gradient_names() - gradients_before
    return {"tuner": tuner, "out": out.getvalue(), "new_gradients": new_gradients, "log_dir": log_dir}


def test_search_reports_metrics_and_keeps_keras_tuner_habits(scripted_search, digits, capsys):
    _, (x_val, _) = digits
    tuner = scripted_search["tuner"]
    # Memory stays flat: TensorFlow keeps no earlier candidate's training graph, only the last one's.
    assert len(scripted_search["new_gradients"]) == 1
    records = tuner.trial_records()
    assert len(records) == 3
    reward = MnasReward.soft(2.0)
    for record in records:
        assert {"accuracy", "latency_ms", "reward", "params", "macs"} <= set(record)
        assert record["reward"] == pytest.approx(reward(record["accuracy"], record["latency_ms"]), rel=1e-6)
        assert record["params"] > 0 and record["macs"] > 0
    assert sorted(r["latency_ms"] for r in records) == [1.0, 2.0, 4.0]
    out = scripted_search["out"]
    assert "architecture: r1_k3_s11_e1_i32_o16_noskip" in out and "best so far" in out
    # Each trial says where the search is: its place among max_trials, its time, the time spent and left.
    header = r"^Trial \d+ COMPLETED \(trial (\d) of 3\) in [\d a-z]+ s; [\d a-z]+ s elapsed, (.*)$"
    headers = re.findall(header, out, re.M)
    assert [ordinal for ordinal, _ in headers] == ["1", "2", "3"]
    assert all(re.fullmatch(r"about [\d a-z]+ s left", left) for _, left in headers[:2])
    assert headers[2][1] == "the last trial"
    # One figures line per trial, naming the reward's metric once (an unstable latency says so after it).
    figures = [line for line in out.splitlines() if line.startswith("  latency ")]
    assert len(figures) == 3
    figure = r"  latency \d+\.\d\d ms( \(unstable: \d+\.\d% spread\))?, "
    for line in figures:
        assert re.fullmatch(figure + r"val_accuracy \d\.\d{4}, reward \d\.\d{4}", line), line
    tuner.results_summary(1)
    summary = capsys.readouterr().out  # the keras-mnas results table (tests/cli), not KerasTuner's lines
    assert summary.startswith("Results summary: the 1 best of 3 trials") and "Score" not in summary
    best_model = tuner.get_best_models(1)[0]
    assert best_model.predict(x_val[:2], verbose=0).shape == (2, 10)
    # The project alone (no script) rebuilds the same model: the hypermodel's build settings are recorded.
    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert tuner.oracle.search_config["build"] == {"include_preprocessing": False, "bn_momentum": 0.5}
    project = pathlib.Path(tuner.project_dir)
    rebuilt, trained = SearchProject(project).build_model(best_trial.trial_id)
    assert trained
    expected = best_model.predict(x_val[:2], verbose=0)
    np.testing.assert_allclose(rebuilt.predict(x_val[:2], verbose=0), expected, rtol=1e-5, atol=1e-6)
    best_hp = tuner.get_best_hyperparameters(1)[0]
    arch = tuner.best_architectures(1)[0]
    assert arch == tuner.hypermodel.architecture(best_hp)
    assert applications.MnasNet(arch, input_shape=(64, 64, 3), classes=5).output.shape == (None, 5)
    # The Pareto front holds the non-dominated trials, fastest first.
    front = tuner.pareto_front()
    for a in front:
        for b in records:
            assert not (b["accuracy"] >= a["accuracy"] and b["latency_ms"] < a["latency_ms"])
    assert [r["latency_ms"] for r in front] == sorted(r["latency_ms"] for r in front)
    # Rescoring needs no training and uses the new target.
    hard = tuner.rescore(target_latency_ms=1.5, alpha=0.0, beta=-1.0)
    rule = MnasReward.hard(1.5)
    assert {r["trial_id"]: r["reward"] for r in hard} == pytest.approx(
        {r["trial_id"]: rule(r["accuracy"], r["latency_ms"]) for r in records}
    )


@pytest.mark.parametrize(
    "ms, shown",
    [
        (0.0483, "0.0483"),
        (0.054, "0.0540"),
        (0.5, "0.500"),
        (1.0, "1.00"),
        (12.919, "12.92"),
        (math.nan, "nan"),
    ],
)
def test_progress_lines_keep_three_digits_of_sub_millisecond_latencies(ms, shown):
    # Proxy-task candidates run for tens of microseconds: "0.05 ms" for each would hide their differences.
    from keras_mnas.search.tuner import _format_ms

    assert _format_ms(ms) == shown


def test_each_trial_shows_and_records_whether_its_latency_was_unstable(scripted_search):
    # A source warns only of its first unstable figure; the trial lines must tell which trials it concerns.
    tuner = scripted_search["tuner"]
    figures = [line for line in scripted_search["out"].splitlines() if line.startswith("  latency ")]
    by_latency = {float(line.split()[1]): line for line in figures}
    assert "unstable" not in by_latency[2.0]
    assert "latency 1.00 ms (unstable: 8.3% spread), val_accuracy" in by_latency[1.0]
    assert "latency 4.00 ms (unstable: 5.1% spread), val_accuracy" in by_latency[4.0]
    spreads = {r["latency_ms"]: r["latency_spread"] for r in tuner.trial_records()}
    assert spreads == pytest.approx({2.0: 0.012, 1.0: 0.083, 4.0: 0.051})


def test_hard_constraint_skips_models_that_cannot_win(tmp_path, digits):
    (x, y), (x_val, y_val) = digits
    fits = []

    class CountFits(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            fits.append(1)

    tuner = MnasTuner(
        space=tiny_space(),
        latency=ScriptedLatency([1.0, 1000.0]),
        target_latency_ms=1.0,
        reward="hard",
        max_trials=2,
        seed=2,
        directory=str(tmp_path),
        project_name="hard",
    )
    tuner.search(
        x, y, validation_data=(x_val, y_val), epochs=1, batch_size=64, verbose=0, callbacks=[CountFits()]
    )
    records = {r["latency_ms"]: r for r in tuner.trial_records()}
    assert len(fits) == 1, "the ruled-out model was trained"
    skipped = records[1000.0]
    assert skipped["skipped"] and skipped["accuracy"] is None
    assert skipped["reward"] == pytest.approx(1.0 / 1000.0)  # the bound: 100% accuracy at that latency
    assert all(t.status == "COMPLETED" for t in tuner.oracle.trials.values())


def test_diverging_training_fails_the_trial_with_its_reason(tmp_path, digits):
    (x, y), (x_val, y_val) = digits
    x_nan = x.copy()
    x_nan[:] = np.nan
    tuner = MnasTuner(
        space=tiny_space(),
        latency=ScriptedLatency([1.0]),
        target_latency_ms=1.0,
        max_trials=2,
        seed=3,
        directory=str(tmp_path),
        project_name="nan",
    )
    tuner.search(x_nan, y, validation_data=(x_val, y_val), epochs=1, batch_size=64, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2
    assert all(t.status == "FAILED" and "diverged" in t.message for t in trials)
    assert tuner.oracle.controller.num_observed == 0  # failures never reach the controller


def test_a_trial_at_chance_level_is_warned_about(tmp_path, digits, capsys):
    # A candidate that cannot learn (a learning rate of 1e-12) against labels it cannot predict (shuffled):
    # its accuracy is chance, 1/10, and the progress says so.
    from keras_mnas.search.tuner import chance_threshold

    (x, y), (x_val, y_val) = digits
    y_val = np.random.default_rng(0).permutation(y_val)
    tuner = MnasTuner(
        MnasHyperModel(tiny_space(), learning_rate=1e-12),
        latency=ScriptedLatency([2.0]),
        target_latency_ms=2.0,
        max_trials=1,
        seed=1,
        directory=str(tmp_path),
        project_name="chance",
    )
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=1, batch_size=64, verbose=0)
    out = capsys.readouterr().out
    assert tuner.trial_records()[0]["accuracy"] <= chance_threshold(10)
    assert "WARNING: val_accuracy" in out
    assert "is at chance level (1/10 = 0.100, warned at or below 0.150)" in out


@pytest.mark.parametrize("classes, threshold", [(2, 0.55), (10, 0.15), (20, 0.1), (1000, 0.002)])
def test_chance_level_is_one_over_the_classes_plus_a_margin(classes, threshold):
    from keras_mnas.search.tuner import chance_threshold

    assert chance_threshold(classes) == pytest.approx(threshold)
    with pytest.raises(ValueError, match="classes"):
        chance_threshold(1)


def test_export_best_with_host_latency(tmp_path, digits):
    from ai_edge_litert.interpreter import Interpreter

    from keras_mnas.latency import HostLatency

    (x, y), (x_val, y_val) = digits
    # RGB in [0, 255], for a hypermodel whose candidates normalise their inputs themselves.
    x, x_val = (np.repeat(a, 3, axis=-1) * 255.0 for a in (x, x_val))
    tuner = MnasTuner(
        MnasHyperModel(tiny_space(channels=3), include_preprocessing=True),
        latency=HostLatency(runs=5, warmup_runs=1),
        target_latency_ms=0.05,
        max_trials=1,
        seed=4,
        directory=str(tmp_path),
        project_name="export",
    )
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=1, batch_size=64, verbose=0)
    record = tuner.trial_records()[0]
    assert 0 < record["latency_ms"] < 50 and math.isfinite(record["reward"])
    paths = tuner.export_best(tmp_path / "best")
    reloaded = keras.saving.load_model(paths["keras"])
    np.testing.assert_allclose(
        reloaded.predict(x_val[:4], verbose=0),
        tuner.get_best_models(1)[0].predict(x_val[:4], verbose=0),
        atol=1e-5,
    )
    interpreter = Interpreter(model_path=paths["tflite"])
    interpreter.allocate_tensors()
    assert tuple(interpreter.get_input_details()[0]["shape"]) == (1, 16, 16, 3)
    # The architecture file rebuilds the searched model exactly: width multiplier, input shape, classes,
    # preprocessing, head and BatchNormalization settings included.
    config = json.loads(pathlib.Path(paths["architecture"]).read_text())
    assert config["arch"] == tuner.best_architectures(1)[0].to_dict()
    assert config["depth_multiplier"] == 0.5 and config["include_preprocessing"] is True
    rebuilt = build_model(**config)
    assert rebuilt.count_params() == reloaded.count_params()
    rebuilt.set_weights(reloaded.get_weights())
    np.testing.assert_allclose(
        rebuilt.predict(x_val[:4], verbose=0), reloaded.predict(x_val[:4], verbose=0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "needs target_latency_ms"),
        ({"target_latency_ms": 0.0}, "target_latency_ms must be positive"),
        ({"target_latency_ms": -3.0}, "target_latency_ms must be positive"),
        ({"target_latency_ms": float("nan")}, "target_latency_ms must be a finite number"),
        ({"target_latency_ms": float("inf")}, "target_latency_ms must be a finite number"),
        ({"target_latency_ms": 1.0, "reward": "medium"}, "reward must be 'soft', 'hard', 'absolute'"),
        ({"target_latency_ms": 1.0, "reward": "absolute", "alpha": -0.07}, "absolute reward has no alpha"),
        ({"target_latency_ms": 1.0, "max_trials": 0}, "max_trials` must be an integer >= 1"),
        ({"target_latency_ms": 1.0, "max_trials": -2}, "max_trials` must be an integer >= 1"),
        ({"target_latency_ms": 1.0, "controller": {"units": 0}}, "units` must be an integer >= 1"),
        ({"target_latency_ms": 1.0, "controller": {"lr": 0.1}}, r"Unknown controller settings \['lr'\]"),
        (
            {"target_latency_ms": 1.0, "quantization": "int4"},
            r"`quantization` must be one of \('float32', 'int8'\); received 'int4'",
        ),
        ({"target_latency_ms": 1.0, "evaluate_int8": True}, "evaluate_int8=True scores the int8 model"),
        (
            {"target_latency_ms": 1.0, "quantization": "int8", "evaluate_int8": True, "metric": "val_auc"},
            "the reward must read 'val_accuracy'",
        ),
    ],
)
def test_bad_tuner_arguments_are_rejected_by_name(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MnasTuner(space=tiny_space(), directory=str(tmp_path), project_name="bad", **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"latency": "phone"}, "`latency` must be a keras_mnas.latency.LatencySource; received 'phone'"),
        ({"quantization": "int8", "evaluate_int8": 1}, "`evaluate_int8` must be True or False; received 1"),
    ],
)
def test_tuner_arguments_of_the_wrong_type_are_rejected_by_name(tmp_path, kwargs, match):
    with pytest.raises(TypeError, match=match):
        MnasTuner(
            space=tiny_space(), target_latency_ms=1.0, directory=str(tmp_path), project_name="bad", **kwargs
        )


def test_bad_search_arguments_are_rejected_before_any_trial(tmp_path, digits):
    (x, y), _ = digits
    latency = ScriptedLatency([1.0])
    tuner = MnasTuner(
        space=tiny_space(),
        latency=latency,
        target_latency_ms=1.0,
        max_trials=2,
        directory=str(tmp_path),
        project_name="args",
    )
    with pytest.raises(ValueError, match="pass validation_data"):
        tuner.search(x, y, epochs=1)
    with pytest.raises(ValueError, match="`epochs` must be an integer >= 1; received 0"):
        tuner.search(x, y, validation_split=0.2, epochs=0)
    assert latency.calls == 0 and not tuner.oracle.trials


def test_tensorboard_hparams_view_of_a_search(scripted_search):
    from test_tensorboard import group_metrics, hparams_backend

    tuner, log_dir = scripted_search["tuner"], scripted_search["log_dir"]
    experiment, groups = hparams_backend(log_dir)
    assert {m.name.tag for m in experiment.metric_infos} == {
        "val_accuracy",
        "latency_ms",
        "reward",
        "params",
        "macs",
        "latency_spread",
    }
    assert "block2_conv_op" in {h.name for h in experiment.hparam_infos}
    records = {r["trial_id"]: r for r in tuner.trial_records()}
    assert set(groups) == set(records)  # one row per trial
    for trial_id, group in groups.items():
        metrics = group_metrics(group)
        assert metrics["latency_ms"] == pytest.approx(records[trial_id]["latency_ms"])
        assert metrics["reward"] == pytest.approx(records[trial_id]["reward"], rel=1e-5)
    search_run = event_accumulator.EventAccumulator(str(log_dir / "search"))
    search_run.Reload()
    tags = search_run.Tags()
    assert "controller/mean_reward" in tags["tensors"] + tags["scalars"]
    assert "search/pareto" in tags["tensors"] + tags["images"]


class RecordingHostLatency(HostLatency):
    """Host latency that remembers what it was asked to measure."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.requests = []

    def measure(self, model, *, quantization="float32", representative_data=None):
        self.requests.append((quantization, representative_data))
        return super().measure(model, quantization=quantization, representative_data=representative_data)


def test_int8_search_scores_the_int8_model_and_exports_it(tmp_path, digits):
    pytest.importorskip("tensorflow_model_optimization")
    tf_keras = pytest.importorskip("tf_keras")
    from keras_mnas.latency import tflite_op_summary
    from keras_mnas.quantization import evaluate_tflite, float_ops

    (x, y), (x_val, y_val) = digits
    latency = RecordingHostLatency(runs=5, warmup_runs=1)
    settings = dict(
        space=tiny_space(),
        latency=latency,
        target_latency_ms=0.05,
        quantization="int8",
        evaluate_int8=True,
        max_trials=1,
        seed=4,
        directory=str(tmp_path),
        project_name="int8",
    )
    tuner = MnasTuner(**settings)
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=2, batch_size=32, verbose=0)
    # The int8 model's latency, calibrated on 100 training inputs.
    (quantization, calibration), *_ = latency.requests
    assert quantization == "int8" and calibration.shape == (100, 16, 16, 1)
    training_rows = {row.tobytes() for row in x}
    assert all(row.tobytes() in training_rows for row in calibration)
    record = tuner.trial_records()[0]
    assert 0 <= record["int8_accuracy"] <= 1 and 0 <= record["float_accuracy"] <= 1
    assert record["accuracy"] == record["int8_accuracy"]
    assert record["reward"] == pytest.approx(MnasReward.soft(0.05)(record["accuracy"], record["latency_ms"]))
    # The recorded int8 accuracy is the one of the int8 conversion of the best epoch's model.
    best = tuner.get_best_models(1)[0]
    int8_bytes = convert_to_tflite(best, quantization="int8", representative_data=calibration)
    assert evaluate_tflite(int8_bytes, x_val, y_val) == pytest.approx(
        record["int8_accuracy"], abs=1.5 / len(y_val)
    )
    # Resuming with another quantization is refused; with the same settings it reloads.
    with pytest.raises(ValueError, match="quantization"):
        MnasTuner(**{**settings, "quantization": "float32", "evaluate_int8": False})
    assert MnasTuner(**settings).trial_records() == tuner.trial_records()
    # By default the export is what the search measured: int8.
    paths = tuner.export_best(tmp_path / "best")
    int8_file = pathlib.Path(paths["tflite"]).read_bytes()
    assert float_ops(int8_file) == [] and tflite_op_summary(int8_file)["inputs"][0]["dtype"] == "int8"
    qat_val_accuracy = []  # the fine-tuned quantization-aware model's own validation accuracy, per epoch
    recorder = tf_keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: qat_val_accuracy.append(logs["val_accuracy"])
    )
    paths = tuner.export_best(
        tmp_path / "best_qat",
        quantization="qat",
        x=x[:256],
        y=y[:256],
        epochs=1,
        batch_size=64,
        validation_data=(x_val, y_val),
        callbacks=[recorder],
        verbose=0,
    )
    qat_file = pathlib.Path(paths["tflite"]).read_bytes()
    assert float_ops(qat_file) == [] and tflite_op_summary(qat_file)["inputs"][0]["dtype"] == "int8"
    # The exported file is the fine-tuned model: its int8 accuracy is the one the quantization-aware model
    # reached (it simulated the int8 rounding). The simulation and the int8 kernels round a little apart,
    # which flips a few of this barely trained model's close calls; another model's file misses by far more.
    assert len(qat_val_accuracy) == 1
    assert evaluate_tflite(qat_file, x_val, y_val) == pytest.approx(qat_val_accuracy[0], abs=0.05)
    reloaded = keras.saving.load_model(paths["keras"])
    np.testing.assert_allclose(
        reloaded.predict(x_val[:4], verbose=0), best.predict(x_val[:4], verbose=0), atol=1e-5
    )


def test_bad_int8_search_and_export_arguments(tmp_path, digits):
    (x, y), (x_val, y_val) = digits
    latency = ScriptedLatency([1.0])
    tuner = MnasTuner(
        space=tiny_space(),
        latency=latency,
        target_latency_ms=1.0,
        quantization="int8",
        evaluate_int8=True,
        max_trials=1,
        directory=str(tmp_path),
        project_name="bad_int8",
    )
    with pytest.raises(ValueError, match="array of training inputs"):
        tuner.search(list(x), y, validation_data=(x_val, y_val), epochs=1)
    with pytest.raises(ValueError, match=r"validation_data=\(x_val, y_val\) arrays"):
        tuner.search(x, y, validation_split=0.2, epochs=1)
    assert latency.calls == 0 and not tuner.oracle.trials
    with pytest.raises(ValueError, match="`quantization` must be one of"):
        tuner.export_best(tmp_path / "best", quantization="int4")
    with pytest.raises(ValueError, match="pass the training data as x="):
        tuner.export_best(tmp_path / "best", quantization="qat", x=x)
    with pytest.raises(
        ValueError, match=r"export_best\(quantization='int8'\) does not use \['y', 'epochs'\]"
    ):
        tuner.export_best(tmp_path / "best", quantization="int8", x=x, y=y, epochs=2)
    with pytest.raises(ValueError, match=r"does not use \['x', 'batch_size'\]"):
        tuner.export_best(tmp_path / "best", quantization="float32", x=x, batch_size=8)
    with pytest.raises(ValueError, match="pass x=<training inputs>"):
        tuner.export_best(tmp_path / "best", quantization="int8")
    with pytest.raises(ValueError, match="needs a completed trial"):
        tuner.export_best(tmp_path / "best", quantization="int8", x=x)


class MacsLatency(LatencySource):
    """A deterministic device: a fixed cost, a cost per mult-add and one for input normalisation; counts its
    measurements."""

    name = "macs"

    def __init__(self):
        self.calls = 0

    def measure(self, model, *, quantization="float32", representative_data=None):
        self.calls += 1
        normalizes = any(layer.name == "normalization" for layer in model.layers)
        ms = 0.02 + 1e-5 * count_model_macs(model) + (0.01 if normalizes else 0.0)
        return LatencyResult(ms, ms, ms, 0.0, 0.0, 1, 0, 1, self.name, quantization)


class CountingHyperModel(MnasHyperModel):
    """Remembers the architecture of every candidate it builds."""

    def __init__(self, space):
        super().__init__(space)
        self.built = []

    def build(self, hp):
        self.built.append(self.architecture(hp))
        return super().build(hp)


def test_prefilter_skips_candidates_predicted_far_over_a_hard_budget_before_building(
    tmp_path, digits, capsys
):
    (x, y), (x_val, y_val) = digits
    space = tiny_space()
    # Entries are profiled (on the fake device, in milliseconds) as candidates need them.
    table = LatencyLookupTable(profiler=MacsLatency(), on_missing="profile")
    target, tolerance = 0.42, 0.25
    settings = dict(
        latency=MacsLatency(),
        target_latency_ms=target,
        reward="hard",
        prefilter=table,
        prefilter_tolerance=tolerance,
        max_trials=4,
        seed=7,
        # The LSTM's own samples: with this seed they include candidates on both sides of the limit.
        controller={"elite_mutation": 0.0},
        directory=str(tmp_path),
        project_name="prefilter",
    )
    hypermodel = CountingHyperModel(space)
    tuner = MnasTuner(hypermodel, **settings)
    hypermodel.built.clear()  # KerasTuner builds the space's first choices once to discover it
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=1, batch_size=64, verbose=0)
    out = capsys.readouterr().out
    records = tuner.trial_records()
    assert len(records) == 4 and all(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    limit = target * (1 + tolerance)
    built, prefiltered = [], []
    for record in records:
        arch = hypermodel.architecture(tuner.oracle.get_trial(record["trial_id"]).hyperparameters)
        predicted = predict_candidate(table, space, arch)
        if predicted > limit:
            prefiltered.append(arch)
            assert record["prefiltered"] and record["skipped"] and record["accuracy"] is None
            assert record["latency_ms"] == pytest.approx(predicted)
            assert record["latency_spread"] is None  # a prediction: no runs disagreed
            assert record["reward"] == 0.0  # never above a trained candidate
            trial = tuner.oracle.get_trial(record["trial_id"])
            # What 100% accuracy would score at that latency, for the record.
            assert trial.metrics.get_last_value("reward_bound") == pytest.approx(target / predicted)
            cost = space.cost(arch)
            assert (record["params"], record["macs"]) == (cost.trainable_params, cost.macs)
        else:
            built.append(arch)
            assert not record["prefiltered"]
            assert record["latency_ms"] == pytest.approx(predicted)  # the fake device adds up exactly
    assert prefiltered and built, "the seed should give both kinds of candidates"
    # A candidate predicted far over the budget is never built, measured or trained.
    assert {str(a) for a in hypermodel.built} == {str(a) for a in built}
    assert tuner.latency.calls == len(built)
    assert out.count("skipped before building") == 2 * len(prefiltered)  # the trial's line and its summary
    assert "predicted latency" in out
    assert all(not r["prefiltered"] for r in tuner.pareto_front())
    # The best trial is a trained one, whatever the bounds of the skipped ones: its model loads.
    best = tuner.oracle.get_best_trials(1)[0]
    assert str(hypermodel.architecture(best.hyperparameters)) in {str(a) for a in built}
    assert tuner.get_best_models(1)[0].output.shape == (None, 10)
    # The prefilter is part of the search's settings: resuming with another one is refused.
    assert tuner.oracle.search_config["prefilter"]["tolerance"] == tolerance
    assert len(MnasTuner(CountingHyperModel(space), **settings).trial_records()) == 4
    with pytest.raises(ValueError, match=r"prefilter\.tolerance: saved 0\.25, now 0\.5"):
        MnasTuner(CountingHyperModel(space), **{**settings, "prefilter_tolerance": 0.5})
    with pytest.raises(ValueError, match="prefilter"):
        MnasTuner(CountingHyperModel(space), **{**settings, "prefilter": None})


def test_prefilter_predicts_candidates_with_the_input_preprocessing_the_hypermodel_adds(tmp_path, digits):
    (x, y), (x_val, y_val) = digits
    x, x_val = (255.0 * np.repeat(images, 3, axis=-1) for images in (x, x_val))  # RGB in [0, 255]
    space = tiny_space(channels=3)
    table = LatencyLookupTable(profiler=MacsLatency(), on_missing="profile")
    tuner = MnasTuner(
        MnasHyperModel(space, include_preprocessing=True),
        latency=MacsLatency(),
        target_latency_ms=0.01,  # below every candidate: each one is predicted far over it
        reward="hard",
        prefilter=table,
        max_trials=3,
        seed=7,
        directory=str(tmp_path),
        project_name="prefilter_preprocessing",
    )
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=1, verbose=0)
    records = tuner.trial_records()
    assert len(records) == 3 and all(r["prefiltered"] for r in records)
    assert tuner.latency.calls == 0
    assert "preprocessing:i3@16x16" in table  # profiled on demand, as the hypermodel builds candidates
    for record in records:
        arch = tuner.hypermodel.architecture(tuner.oracle.get_trial(record["trial_id"]).hyperparameters)
        predicted = predict_candidate(table, space, arch, include_preprocessing=True)
        assert record["latency_ms"] == pytest.approx(predicted)
        # The fake device charges 0.01 ms for the normalisation: the prediction counts it.
        assert predicted == pytest.approx(predict_candidate(table, space, arch) + 0.01)


def test_without_a_prefilter_the_search_settings_say_so(tmp_path):
    tuner = MnasTuner(
        space=tiny_space(),
        latency=ScriptedLatency([1.0]),
        target_latency_ms=1.0,
        reward="hard",
        directory=str(tmp_path),
        project_name="old",
    )
    assert tuner.oracle.search_config["prefilter"] is None


def test_a_prefilter_profiled_on_another_runtime_is_refused(tmp_path):
    from keras_mnas.latency import AndroidLatency
    from keras_mnas.testing import fake_benchmark_binary

    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(fake_benchmark_binary("arm64-v8a"))
    phone = AndroidLatency("PHONE1", binary=binary, delegate="xnnpack")
    settings = dict(
        space=tiny_space(),
        target_latency_ms=1.0,
        reward="hard",
        directory=str(tmp_path),
        project_name="prefilter_runtime",
    )

    def table_from(source):
        table = LatencyLookupTable()
        table.source_config = source.config()
        return table

    with pytest.raises(ValueError, match=r"source 'host' vs 'android'"):
        MnasTuner(latency=phone, prefilter=table_from(HostLatency()), **settings)
    # A table read off operator profiles runs without a delegate: not the runtime of an XNNPACK search.
    no_delegate = AndroidLatency("PHONE1", binary=binary, delegate="none", op_profile=True)
    with pytest.raises(ValueError, match=r"delegate 'none' vs 'xnnpack'"):
        MnasTuner(latency=phone, prefilter=table_from(no_delegate), **settings)
    # Other runs or another phone of the search's pool: the same runtime.
    quicker = AndroidLatency("PHONE2", binary=binary, delegate="xnnpack", runs=20)
    tuner = MnasTuner(latency=phone, prefilter=table_from(quicker), **settings)
    assert tuner.prefilter.source_config["runs"] == 20


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prefilter": "lut.json"}, "prefilter must be a keras_mnas.latency.LatencyLookupTable"),
        ({"prefilter": HostLatency()}, "prefilter must be a keras_mnas.latency.LatencyLookupTable"),
        ({"prefilter_tolerance": -0.1}, "prefilter_tolerance must be a non-negative finite number"),
        ({"prefilter_tolerance": float("nan")}, "prefilter_tolerance must be a non-negative finite number"),
        ({"prefilter_tolerance": float("inf")}, "prefilter_tolerance must be a non-negative finite number"),
        ({"prefilter_tolerance": True}, "prefilter_tolerance must be a non-negative finite number"),
        ({"prefilter_tolerance": "0.2"}, "prefilter_tolerance must be a non-negative finite number"),
        ({"reward": "soft"}, "prefilter skips candidates far over a hard latency budget"),
        ({"quantization": "int8"}, "the table holds float32 timings"),
        ({"hypermodel": keras_tuner.HyperModel()}, "it needs a MnasHyperModel"),
        (
            {"hypermodel": MnasHyperModel(tiny_space(channels=3), include_preprocessing=True)},
            r"must hold the entry of the input preprocessing .*\(preprocessing:i3@16x16\)",
        ),
    ],
)
def test_bad_prefilter_arguments_are_rejected_by_name(tmp_path, kwargs, match):
    settings = dict(
        space=tiny_space(),
        latency=ScriptedLatency([1.0]),
        target_latency_ms=1.0,
        reward="hard",
        prefilter=LatencyLookupTable(),
        directory=str(tmp_path),
        project_name="bad_prefilter",
    )
    if "hypermodel" in kwargs:
        settings.pop("space")
    settings.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MnasTuner(**settings)
