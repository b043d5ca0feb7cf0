import json
import os

import keras_tuner
import pytest

from keras_mnas.search.oracle import MnasOracle, hyperparameter_options


def build_space(hp):
    hp.Choice("op", ["a", "b", "c"])
    hp.Boolean("flag")
    hp.Fixed("fixed", 7)
    hp.Int("units", 8, 32, step=8)
    hp.Float("rate", 0.0, 0.5, step=0.25)
    with hp.conditional_scope("op", ["c"]):
        hp.Choice("c_only", [1, 2])
    return None


def score(values):
    # A deterministic "accuracy": the best architecture is op=c, flag=True, units=32, rate=0.5, c_only=2.
    total = {"a": 0.0, "b": 0.1, "c": 0.2}[values["op"]] + 0.1 * values["flag"] + values["units"] / 320
    total += values["rate"] / 10 + (0.05 * values.get("c_only", 0))
    return total


class FakeTuner(keras_tuner.Tuner):
    """Reports a reward computed from the hyperparameters: no model is trained."""

    def __init__(self, *args, fail_when=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_when = fail_when
        self.evaluated = []

    def run_trial(self, trial, *args, **kwargs):
        values = dict(trial.hyperparameters.values)
        self.evaluated.append(values)
        if self.fail_when and self.fail_when(values):
            raise keras_tuner.errors.FailedTrialError("this one fails")
        return {"reward": score(values)}


def make_tuner(tmp_path, max_trials, overwrite=True, seed=3, fail_when=None, **oracle_kwargs):
    oracle = MnasOracle(max_trials=max_trials, seed=seed, controller={"minibatch_size": 4}, **oracle_kwargs)
    return FakeTuner(
        oracle=oracle,
        hypermodel=build_space,
        directory=str(tmp_path),
        project_name="fake",
        overwrite=overwrite,
        fail_when=fail_when,
    )


def test_options_of_every_discrete_hyperparameter():
    hp = keras_tuner.HyperParameters()
    build_space(hp)
    options = {p.name: hyperparameter_options(p) for p in hp.space}
    assert options["op"] == ["a", "b", "c"]
    assert options["flag"] == [False, True]
    assert options["fixed"] == [7]
    assert options["units"] == [8, 16, 24, 32]
    assert options["rate"] == [0.0, 0.25, 0.5]


def test_continuous_float_is_rejected_by_name():
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-4, 1e-2, sampling="log")
    with pytest.raises(ValueError, match="Float 'lr' has no `step`"):
        hyperparameter_options(hp.space[0])


def test_search_over_a_generic_space_with_conditions(tmp_path):
    tuner = make_tuner(tmp_path, max_trials=12)
    tuner.search(verbose=0)
    assert len(tuner.evaluated) == 12
    for values in tuner.evaluated[1:]:
        assert set(values) >= {"op", "flag", "fixed", "units", "rate"}
        assert ("c_only" in values) == (values["op"] == "c")  # inactive hyperparameters get no value
    hashes = {json.dumps(v, sort_keys=True) for v in tuner.evaluated}
    assert len(hashes) == 12, "an architecture was trained twice"
    oracle = tuner.oracle
    completed = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    assert oracle.controller.num_observed == len(completed) + oracle.reused_proposals
    best = tuner.get_best_hyperparameters(1)[0]
    assert score(best.values) == max(score(v) for v in tuner.evaluated)


def test_known_architectures_are_reused_not_retrained(tmp_path):
    def tiny(hp):
        hp.Choice("x", [0, 1])
        hp.Choice("y", [0, 1])

    class Tiny(FakeTuner):
        def run_trial(self, trial, *args, **kwargs):
            self.evaluated.append(dict(trial.hyperparameters.values))
            return {"reward": trial.hyperparameters["x"] + 0.5 * trial.hyperparameters["y"]}

    oracle = MnasOracle(max_trials=10, seed=0, max_resamples=20, controller={"minibatch_size": 2})
    tuner = Tiny(oracle=oracle, hypermodel=tiny, directory=str(tmp_path), project_name="tiny")
    tuner.search(verbose=0)
    distinct = {json.dumps(v, sort_keys=True) for v in tuner.evaluated}
    assert len(distinct) == len(tuner.evaluated) == 4  # the whole space, each trained once, then stop
    assert oracle.reused_proposals > 0
    assert oracle.controller.num_observed == 4 + oracle.reused_proposals


def test_failed_trials_never_reach_the_controller(tmp_path):
    tuner = make_tuner(
        tmp_path, max_trials=8, fail_when=lambda v: v.get("op") == "a", max_consecutive_failed_trials=100
    )
    tuner.search(verbose=0)
    failed = [t for t in tuner.oracle.trials.values() if t.status == "FAILED"]
    completed = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    assert failed, "the test needs at least one failure"
    assert all("this one fails" in t.message for t in failed)
    assert tuner.oracle.controller.num_observed == len(completed) + tuner.oracle.reused_proposals


def test_seed_zero_reproduces_like_any_other_seed(tmp_path):
    # KerasTuner itself turns seed=0 into a random seed.
    first = make_tuner(tmp_path / "first", max_trials=6, seed=0)
    first.search(verbose=0)
    second = make_tuner(tmp_path / "second", max_trials=6, seed=0)
    second.search(verbose=0)
    assert first.oracle.seed == 0
    assert first.evaluated == second.evaluated


def test_resume_continues_exactly_where_it_stood(tmp_path):
    straight = make_tuner(tmp_path / "straight", max_trials=10)
    straight.search(verbose=0)
    first = make_tuner(tmp_path / "resumed", max_trials=5)
    first.search(verbose=0)
    second = make_tuner(tmp_path / "resumed", max_trials=10, overwrite=False)
    second.search(verbose=0)
    assert first.evaluated + second.evaluated == straight.evaluated
    assert second.oracle.controller.num_observed == straight.oracle.controller.num_observed
    assert second.oracle.controller_updates == straight.oracle.controller_updates


def test_state_files_are_valid_json_and_written_atomically(tmp_path):
    tuner = make_tuner(tmp_path, max_trials=3)
    tuner.search(verbose=0)
    project = tmp_path / "fake"
    leftovers = [name for _, _, files in os.walk(project) for name in files if name.endswith(".tmp")]
    assert leftovers == []
    state = json.loads((project / "oracle.json").read_text())
    assert state["mnas"]["controller"]["config"]["minibatch_size"] == 4
    assert sorted(state["mnas"]["observed"]) == sorted(tuner.oracle.end_order)


def test_resume_with_other_settings_is_refused(tmp_path):
    first = make_tuner(tmp_path, max_trials=2)
    first.oracle.search_config = {"reward": {"target_latency_ms": 5.0}}
    first.search(verbose=0)
    oracle = MnasOracle(max_trials=4, seed=3, controller={"minibatch_size": 4})
    oracle.search_config = {"reward": {"target_latency_ms": 9.0}}
    with pytest.raises(ValueError, match=r"reward.target_latency_ms: saved 5.0, now 9.0"):
        FakeTuner(oracle=oracle, hypermodel=build_space, directory=str(tmp_path), project_name="fake")
    oracle = MnasOracle(max_trials=4, seed=3, controller={"minibatch_size": 4})
    oracle.search_config = {"reward": {"target_latency_ms": 9.0}}
    oracle.allow_config_change = True
    FakeTuner(oracle=oracle, hypermodel=build_space, directory=str(tmp_path), project_name="fake")


def test_a_change_of_any_recorded_setting_is_refused(tmp_path):
    build = {"include_preprocessing": True, "bn_momentum": 0.9}
    latency = {"name": "host", "runs": 50, "min_seconds": 0.1}
    first = make_tuner(tmp_path, max_trials=2)
    first.oracle.search_config = {"reward": {"target_latency_ms": 5.0}, "build": build, "latency": latency}
    first.search(verbose=0)

    def resume(build, latency):
        oracle = MnasOracle(max_trials=4, seed=3, controller={"minibatch_size": 4})
        oracle.search_config = {"reward": {"target_latency_ms": 5.0}, "build": build, "latency": latency}
        return FakeTuner(oracle=oracle, hypermodel=build_space, directory=str(tmp_path), project_name="fake")

    resume(build, latency).search(verbose=0)  # the same settings resume
    with pytest.raises(ValueError, match=r"build.include_preprocessing: saved True, now False"):
        resume({**build, "include_preprocessing": False}, latency)
    with pytest.raises(ValueError, match=r"latency.min_seconds: saved 0.1, now 0.5"):
        resume(build, {**latency, "min_seconds": 0.5})
    with pytest.raises(ValueError, match=r"latency.runs: saved 50, now 10"):
        resume(build, {**latency, "runs": 10})
    # A setting the saved search lacks is a change too: the shim for projects older than a setting is gone.
    with pytest.raises(ValueError, match=r"latency.warmup: saved None, now 5"):
        resume(build, {**latency, "warmup": 5})


def test_silent_worker_trial_is_handed_out_again_and_counted_once(tmp_path):
    tuner = make_tuner(tmp_path, max_trials=5, trial_timeout=0.01)
    oracle = tuner.oracle
    tuner._populate_initial_space()
    first = oracle.create_trial("tuner0")
    import time

    time.sleep(0.05)
    again = oracle.create_trial("tuner1")
    assert again.trial_id == first.trial_id  # tuner0 went silent: its trial runs on tuner1
    again.status = "COMPLETED"
    oracle.update_trial(again.trial_id, {"reward": 0.5})
    oracle.end_trial(again)
    observed = oracle.controller.num_observed
    first.status = "COMPLETED"  # the presumed-dead worker reports late
    oracle.end_trial(first)
    assert oracle.controller.num_observed == observed
    assert oracle.end_order.count(first.trial_id) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_trials": 0}, "max_trials` must be an integer >= 1"),
        ({"max_trials": 5, "trial_timeout": -1}, "trial_timeout` must be None or a finite number of seconds"),
        ({"max_trials": 5, "controller": 3}, "controller must be None, a preset name, a ControllerConfig"),
        ({"max_trials": 5, "seed": "x"}, "seed` must be None or an integer"),
        ({"max_trials": 5, "objective": ["a", "b"]}, "single objective"),
    ],
)
def test_bad_oracle_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MnasOracle(**kwargs)


def test_objectives_by_name_and_bad_directions():
    assert MnasOracle(objective="latency_ms", max_trials=2).objective.direction == "min"
    assert MnasOracle(max_trials=2).objective.name == "reward"
    with pytest.raises(ValueError, match="objective 'reward' with direction 'sideways'"):
        MnasOracle(objective=keras_tuner.Objective("reward", "sideways"), max_trials=2)
    with pytest.raises(ValueError, match="Could not infer optimization direction"):
        MnasOracle(objective="val_mystery", max_trials=2)  # KerasTuner's own message


def test_kerastuner_internals_are_touched_only_by_the_durable_oracle():
    import pathlib
    import re

    import keras_mnas

    internals = re.compile(
        r"\._(retry_queue|id_to_hash|tried_so_far|seed_state|project_dir|tuner_ids|compute_values_hash|"
        r"random_values)\b"
    )
    package = pathlib.Path(keras_mnas.__file__).parent
    users = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if internals.search(path.read_text(encoding="utf-8"))
    )
    assert users == ["search/durable.py"]


def test_atomic_saves_make_any_kerastuner_oracle_write_atomically(tmp_path, monkeypatch):
    from keras_mnas.search import durable

    written = []
    write = durable.atomic_write_json
    monkeypatch.setattr(
        durable, "atomic_write_json", lambda path, obj, **kw: written.append(path) or write(path, obj, **kw)
    )
    oracle_class = type("Random", (durable.AtomicSaves, keras_tuner.oracles.RandomSearchOracle), {})
    oracle = oracle_class(objective=keras_tuner.Objective("reward", "max"), max_trials=2, seed=1)
    tuner = FakeTuner(oracle=oracle, hypermodel=build_space, directory=str(tmp_path), project_name="r")
    tuner.search(verbose=0)
    names = {os.path.relpath(path, tmp_path / "r") for path in written}
    assert {
        "oracle.json",
        os.path.join("trial_0", "trial.json"),
        os.path.join("trial_1", "trial.json"),
    } <= names


def test_state_written_per_trial_does_not_grow_with_the_policy(tmp_path, monkeypatch):
    # The LSTM's weights and optimizer slots (about 1.4 MB at 100 units) go to a file of their own, written
    # only when a policy update changed them; oracle.json keeps the small per-trial state.
    from keras_mnas.search import oracle as oracle_module
    from keras_mnas.utils import io

    written = []
    real = io.atomic_write_bytes

    def counting(path, data, **kwargs):
        written.append((os.path.basename(path), len(data)))
        return real(path, data, **kwargs)

    monkeypatch.setattr(io, "atomic_write_bytes", counting)
    monkeypatch.setattr(oracle_module, "atomic_write_bytes", counting)
    tuner = make_tuner(tmp_path, 24)
    tuner.search(verbose=0)
    oracle_writes = [size for name, size in written if name == "oracle.json"]
    checkpoints = [name for name, _ in written if name.startswith(oracle_module.CHECKPOINT_PREFIX)]
    assert max(oracle_writes) < 50_000, "oracle.json carries the policy's weights again"
    # At most one checkpoint per policy update (minibatches of 4), plus the first.
    assert 1 <= len(checkpoints) <= 1 + tuner.oracle.controller.num_updates
    project = tmp_path / "fake"
    on_disk = sorted(p.name for p in project.iterdir() if p.name.startswith(oracle_module.CHECKPOINT_PREFIX))
    saved = json.loads((project / "oracle.json").read_text())["mnas"]["controller"]
    assert on_disk == [saved["checkpoint_file"]], "old checkpoints are left behind"
    # What does pile up per trial is KerasTuner's own bookkeeping (trial ids, hashes, run times) and the
    # statistics of each update: well under a kilobyte a trial.
    saved_sizes = [size for name, size in written if name == "oracle.json"]
    per_trial = len(saved_sizes) // 24
    growth = (saved_sizes[-1] - saved_sizes[4 * per_trial]) / (24 - 4)
    assert growth < 1000, f"oracle.json grows by {growth:.0f} bytes a trial"
    # A fresh oracle reloads the pair and goes on from the same controller.
    resumed = make_tuner(tmp_path, 24, overwrite=False)
    assert resumed.oracle.controller.get_state() == tuner.oracle.controller.get_state()


def test_resume_with_the_reward_surrogate_continues_exactly_and_keeps_its_history_with_the_weights(tmp_path):
    def tuner(path, max_trials, overwrite=True):
        oracle = MnasOracle(
            max_trials=max_trials,
            seed=3,
            controller={"minibatch_size": 4, "elite_warmup": 2, "surrogate": "screen", "units": 8},
        )
        return FakeTuner(
            oracle=oracle, hypermodel=build_space, directory=str(path), project_name="fake",
            overwrite=overwrite,
        )

    straight = tuner(tmp_path / "straight", 12)
    straight.search(verbose=0)
    first = tuner(tmp_path / "resumed", 6)
    first.search(verbose=0)
    saved = json.loads((tmp_path / "resumed" / "fake" / "oracle.json").read_text())["mnas"]["controller"]
    assert "history" not in saved, "the history is written with the weights, once per policy update"
    second = tuner(tmp_path / "resumed", 12, overwrite=False)
    assert len(second.oracle.controller.get_state()["history"]) == 4  # one update of 4 made before the stop
    second.search(verbose=0)
    assert first.evaluated + second.evaluated == straight.evaluated
    assert second.oracle.controller_updates == straight.oracle.controller_updates
