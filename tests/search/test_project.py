"""SearchProject reads a search directory's JSON files the way KerasTuner wrote them, without the tuner."""

import json
import warnings

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_mnas.counting import count_model_macs
from keras_mnas.latency import LatencyLookupTable, LatencyResult, LatencySource
from keras_mnas.search import MnasSearchSpace, MnasTuner
from keras_mnas.search.project import SearchProject, SearchProjectError, find_projects

SPACE = MnasSearchSpace(
    [(1, 16, 1, 1), (6, 24, 1, 2)],
    input_shape=(16, 16, 1),
    classes=10,
    depth_multiplier=0.5,
    head_filters=32,
    fixed_blocks={0: "r1_k3_s11_e1_i32_o16_noskip"},
)
VALUES = {
    "block2_conv_op": "mbconv3",
    "block2_kernel": 5,
    "block2_se": 0.0,
    "block2_skip": "none",
    "block2_filters": 1.0,
    "block2_layers": 0,
}


def metric(direction, *observations):
    """A KerasTuner metric: each observation is (step, [value per execution])."""
    return {
        "direction": direction,
        "observations": [{"value": values, "step": step} for step, values in observations],
    }


def write_trial(project, trial_id, status="COMPLETED", score=None, values=None, metrics=None, message=None):
    directory = project / f"trial_{trial_id}"
    directory.mkdir(parents=True)
    state = {
        "trial_id": trial_id,
        "hyperparameters": {"space": [], "values": values if values is not None else dict(VALUES)},
        "metrics": {"metrics": metrics or {}},
        "score": score,
        "best_step": 0,
        "status": status,
        "message": message,
    }
    (directory / "trial.json").write_text(json.dumps(state))
    return directory


def write_project(path, search_config=None, start_order=()):
    path.mkdir(parents=True, exist_ok=True)
    oracle = {"start_order": list(start_order), "end_order": list(start_order)}
    if search_config is not None:
        oracle["mnas"] = {"search_config": search_config}
    (path / "oracle.json").write_text(json.dumps(oracle))
    return path


def mnas_config(**reward):
    return {
        "space": SPACE.get_config(),
        "reward": {
            "target_latency_ms": 2.0,
            "alpha": -0.07,
            "beta": -0.07,
            "metric": "val_accuracy",
            **reward,
        },
        "latency": {"name": "host"},
        "quantization": "float32",
    }


def test_records_take_each_metrics_best_value_like_keras_tuner(tmp_path):
    project = write_project(tmp_path / "p", mnas_config(), start_order=["10", "2"])
    write_trial(
        project,
        "2",
        score=0.5,
        metrics={
            # Two executions per epoch are averaged; the best epoch follows the direction.
            "val_accuracy": metric("max", (0, [0.4, 0.6]), (1, [0.3, 0.5])),
            "val_loss": metric("min", (0, [2.0]), (1, [1.5])),
            "latency_ms": metric(None, (0, [3.0])),
            "params": metric("min", (0, [1000.0])),
        },
    )
    write_trial(project, "10", status="FAILED", message="Traceback ...\nValueError: boom")
    read = SearchProject(project)
    assert [t.trial_id for t in read.trials] == ["10", "2"]  # the order the trials started
    trial = read.trial("2")
    assert trial.metrics["val_accuracy"] == pytest.approx(0.5)
    assert trial.metrics["val_loss"] == pytest.approx(1.5)
    records = {r["trial_id"]: r for r in read.records()}
    assert records["2"]["accuracy"] == pytest.approx(0.5) and records["2"]["latency_ms"] == 3.0
    assert records["2"]["architecture"] == SPACE.decode(VALUES).to_dict()
    assert records["10"]["status"] == "FAILED" and records["10"]["accuracy"] is None
    assert read.pareto_front() == [records["2"]]  # failed trials are never on the front
    assert read.target_latency_ms == 2.0 and read.metric == "val_accuracy"


def test_the_reward_metric_is_the_accuracy_column(tmp_path):
    project = write_project(tmp_path / "p", mnas_config(metric="int8_val_accuracy"))
    write_trial(
        project,
        "0",
        score=0.3,
        metrics={"val_accuracy": metric("max", (0, [0.9])), "int8_val_accuracy": metric("max", (0, [0.7]))},
    )
    record = SearchProject(project).records()[0]
    assert record["accuracy"] == pytest.approx(0.7) and record["metrics"]["val_accuracy"] == pytest.approx(
        0.9
    )


def test_open_finds_projects_and_trials_by_number(tmp_path):
    write_trial(write_project(tmp_path / "runs" / "one", mnas_config()), "007")
    assert find_projects(tmp_path / "runs") == [str(tmp_path / "runs" / "one")]
    project = SearchProject.open(tmp_path / "runs")
    assert project.name == "one"
    assert project.trial(7).trial_id == project.trial("7").trial_id == "007"
    with pytest.raises(SearchProjectError, match=r"No trial '8'.*trials: 007"):
        project.trial("8")
    write_project(tmp_path / "runs" / "two", mnas_config())
    with pytest.raises(SearchProjectError, match=r"several search projects \(one, two\)"):
        SearchProject.open(tmp_path / "runs")
    assert SearchProject.open(tmp_path / "runs", "two").name == "two"
    with pytest.raises(SearchProjectError, match=r"No search project 'three'.*one, two"):
        SearchProject.open(tmp_path / "runs", "three")
    with pytest.raises(SearchProjectError, match="not a search directory"):
        SearchProject.open(tmp_path)


def test_the_best_trial_is_the_completed_one_of_highest_reward(tmp_path):
    project = write_project(tmp_path / "p", mnas_config(), start_order=["0", "1", "2", "3", "4"])
    write_trial(project, "0", status="RUNNING")
    with pytest.raises(SearchProjectError, match=r"no completed trial with a reward yet \(trials: 0 running"):
        SearchProject(project).best_trial()
    write_trial(project, "1", score=0.5)
    write_trial(project, "2", score=0.7)
    write_trial(project, "3", score=0.7)  # as good, started later
    write_trial(project, "4", status="FAILED", score=0.9)
    assert SearchProject(project).best_trial().trial_id == "2"
    plain = write_project(tmp_path / "plain")  # no reward recorded: "best" has no meaning
    write_trial(plain, "0", score=0.8)
    with pytest.raises(SearchProjectError, match=r"not run by MnasTuner.*Name the trial by its id"):
        SearchProject(plain).best_trial()


def test_a_project_without_a_mnas_space_still_lists_its_trials(tmp_path):
    project = write_project(tmp_path / "plain")  # a plain KerasTuner oracle: no "mnas" section
    write_trial(
        project, "0", values={"units": 32}, score=0.8, metrics={"val_accuracy": metric("max", (0, [0.8]))}
    )
    read = SearchProject(project)
    record = read.records()[0]
    assert read.space is None and record["architecture"] is None and record["values"] == {"units": 32}
    with pytest.raises(SearchProjectError, match="recorded no MnasSearchSpace"):
        read.build_model("0")


def test_build_model_loads_the_checkpoint_or_says_it_is_untrained(tmp_path):
    project = write_project(tmp_path / "p", mnas_config())
    trained = write_trial(project, "0")
    write_trial(project, "1")
    other = dict(VALUES, block2_conv_op="mbconv6")  # a wider expansion: other weight shapes
    mismatched = write_trial(project, "2", values=other)
    reference = SPACE.build(SPACE.decode(VALUES), bn_momentum=0.9)
    for weight in reference.weights:
        weight.assign(np.random.default_rng(0).normal(size=weight.shape).astype("float32"))
    reference.save_weights(str(trained / "checkpoint.weights.h5"))
    reference.save_weights(str(mismatched / "checkpoint.weights.h5"))  # wrong widths for trial 2

    read = SearchProject(project)
    model, was_trained = read.build_model("0")
    assert was_trained
    x = np.random.default_rng(1).random((2, 16, 16, 1), dtype=np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(reference(x)), rtol=1e-5, atol=1e-6
    )
    model, was_trained = read.build_model("1")
    assert not was_trained and model.output.shape == (None, 10)
    with pytest.raises(SearchProjectError, match="does not fit the architecture rebuilt from trial 2"):
        read.build_model("2")  # Keras' own warnings about it are folded into the error


def test_a_partial_load_keras_only_warns_about_is_refused(tmp_path, monkeypatch):
    project = write_project(tmp_path / "p", mnas_config())
    write_trial(project, "0")
    SPACE.build(SPACE.decode(VALUES)).save_weights(str(project / "trial_0" / "checkpoint.weights.h5"))
    load = keras.Model.load_weights

    def load_and_warn(self, path, *args, **kwargs):
        load(self, path, *args, **kwargs)
        warnings.warn(
            "Skipping nested container at 'x': no matching group found in the saved file. Affected layers "
            "will retain their freshly-initialized weights.",
            stacklevel=2,
        )

    monkeypatch.setattr(keras.Model, "load_weights", load_and_warn)
    with pytest.raises(SearchProjectError, match="freshly-initialized"):
        SearchProject(project).build_model("0")


def test_unreadable_files_are_reported_by_name(tmp_path):
    project = write_project(tmp_path / "p", mnas_config())
    (project / "trial_0").mkdir()
    (project / "trial_0" / "trial.json").write_text("{")
    with pytest.raises(SearchProjectError, match=r"trial_0/trial\.json"):
        SearchProject(project)
    (project / "oracle.json").write_text("[]")
    with pytest.raises(SearchProjectError, match="oracle state"):
        SearchProject(project)


def test_build_model_uses_the_recorded_hypermodel_settings(tmp_path):
    rgb_space = MnasSearchSpace.from_config({**SPACE.get_config(), "input_shape": [16, 16, 3]})
    config = {**mnas_config(), "space": rgb_space.get_config()}
    recorded = write_project(
        tmp_path / "recorded", {**config, "build": {"include_preprocessing": True, "bn_momentum": 0.99}}
    )
    write_trial(recorded, "0")
    model, _ = SearchProject(recorded).build_model("0")
    layer_names = [layer.name for layer in model.layers]
    assert "rescaling" in layer_names and "normalization" in layer_names
    assert model.get_layer("stem_bn").momentum == pytest.approx(0.99)
    with pytest.raises(SearchProjectError, match="built its candidates with include_preprocessing=True"):
        SearchProject(recorded).build_model("0", include_preprocessing=False)

    # A project without recorded settings: the caller's word, else MnasHyperModel's defaults.
    older = write_project(tmp_path / "unrecorded", config)
    write_trial(older, "0")
    model, _ = SearchProject(older).build_model("0")
    assert "rescaling" not in [layer.name for layer in model.layers]
    assert model.get_layer("stem_bn").momentum == pytest.approx(0.9)
    model, _ = SearchProject(older).build_model("0", include_preprocessing=True)
    assert "rescaling" in [layer.name for layer in model.layers]


class MacsLatency(LatencySource):
    """A fake device whose latency is a fixed cost plus one per mult-add: the lookup table adds up exactly."""

    name = "macs"

    def measure(self, model, *, quantization="float32", representative_data=None):
        ms = 0.02 + 1e-5 * count_model_macs(model)
        return LatencyResult(ms, ms, ms, 0.0, 0.0, 1, 0, 1, self.name, quantization)


def test_records_read_back_are_the_tuners_for_an_int8_search_with_a_prefilter(tmp_path):
    data = load_digits()
    x = np.kron(data.images.astype("float32") / 16.0, np.ones((2, 2), "float32"))[..., None]  # 16x16x1
    space = MnasSearchSpace.from_config(
        {**SPACE.get_config(), "skeleton": [[1, 16, 1, 1], [6, 24, 1, 2], [6, 32, 2, 2]]}
    )
    table = LatencyLookupTable(profiler=MacsLatency(), on_missing="profile", quantization="int8")
    tuner = MnasTuner(
        space=space,
        latency=MacsLatency(),
        target_latency_ms=0.42,
        reward="hard",
        quantization="int8",
        evaluate_int8=True,
        prefilter=table,
        max_trials=4,
        seed=7,
        # The LSTM's own samples: with this seed they include candidates on both sides of the limit.
        controller={"elite_mutation": 0.0},
        directory=str(tmp_path),
        project_name="int8_prefilter",
    )
    tuner.search(x[:300], data.target[:300], validation_data=(x[1500:1600], data.target[1500:1600]),
                 epochs=1, batch_size=100, verbose=0)  # fmt: skip
    records = tuner.trial_records()
    assert len(records) == 4
    # Both kinds of trials, so that every field is compared with a value in it.
    assert any(r["prefiltered"] for r in records) and not all(r["prefiltered"] for r in records)
    trained = next(r for r in records if not r["skipped"])
    assert 0 <= trained["int8_accuracy"] <= 1 and 0 <= trained["float_accuracy"] <= 1
    assert trained["checkpoint"] is not None
    assert SearchProject(tmp_path / "int8_prefilter").records() == records
