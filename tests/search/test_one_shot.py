"""Supernet training (TuNAS's warm-up, resume after a kill) and scoring a candidate with inherited weights."""

import json

import numpy as np
import pytest

from keras_mnas.search.one_shot import (
    evaluate_path,
    kind_balanced_sampler,
    train_supernet,
    uniform_sampler,
    warmup_probability,
)
from keras_mnas.search.space import MnasSearchSpace
from keras_mnas.search.supernet import Supernet


def small_space(**kwargs):
    settings = dict(
        fixed_blocks={},
        conv_ops=("dconv", "mbconv3"),
        layer_deltas=(0, 1),
        input_shape=(16, 16, 3),
        classes=3,
        stem_filters=8,
        head_filters=16,
    )
    settings.update(kwargs)
    return MnasSearchSpace(((1, 8, 1, 1), (6, 12, 2, 2)), **settings)


def toy_data(count=48, seed=0, noise=0.3):
    # Three classes a network can tell apart in a few steps: the colour channel that is brightest.
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=count)
    images = rng.normal(0, noise, size=(count, 16, 16, 3)).astype("float32")
    images[np.arange(count), :, :, labels] += 1.0
    return images, labels


@pytest.fixture(scope="module")
def trained():
    """A supernet over every kind of operation, trained with the default optimizer (shared).

    On paths drawn uniformly and trained alone, as when the figures of the optimizer test below were measured.
    """
    images, labels = toy_data(256, noise=1.0)
    supernet = Supernet(small_space(conv_ops=("conv", "dconv", "mbconv3", "mbconv6")))
    sample = uniform_sampler(supernet.space)
    train_supernet(
        supernet, images[:192], labels[:192], steps=40, batch_size=32, sample=sample, widest_first=False
    )
    train, valid = (images[:192], labels[:192]), (images[192:], labels[192:])
    return {"supernet": supernet, "train": train, "valid": valid}


def test_random_paths_learn_with_the_default_optimizer(trained):
    # Paths drawn apart from training's. With Adam at 3e-3, or TuNAS's rate scaled down to this batch
    # (0.165 x 32 / 256), these paths stayed between 0.39 and 0.77 after the same 40 steps.
    supernet, (x, _), (x_val, y_val) = trained["supernet"], trained["train"], trained["valid"]
    for values in supernet.space.sample_values(4, seed=5):
        accuracy, _ = evaluate_path(supernet, values, x_val, y_val, calibration_x=x, calibration_batches=2)
        assert accuracy > 0.9, supernet.space.architecture(values).block_strings  # chance is 1/3


class KilledError(Exception):
    pass


def test_warmup_falls_linearly_to_zero_over_the_first_quarter():
    assert warmup_probability(0, 40) == 1.0
    assert warmup_probability(5, 40) == pytest.approx(0.5)
    assert warmup_probability(10, 40) == warmup_probability(39, 40) == 0.0


@pytest.mark.parametrize("widest_first", [False, True])
def test_training_resumes_after_a_kill_where_it_stopped(tmp_path, widest_first):
    import keras

    images, labels = toy_data()
    steps = 6

    def optimizer():
        return keras.optimizers.Adam(1e-2)

    # A smaller space than the others (no SE, one layer count): resuming does not depend on the choices.
    space = small_space(se_ratios=(0.0,), skip_ops=("identity", "none"), layer_deltas=(0,))
    settings = dict(steps=steps, batch_size=8, widest_first=widest_first)
    straight = Supernet(space)
    train_supernet(straight, images, labels, optimizer=optimizer(), **settings)

    def kill_at_4(step, loss):
        assert np.isfinite(loss)
        if step == 4:
            raise KilledError

    killed = Supernet(space)
    with pytest.raises(KilledError):
        train_supernet(
            killed,
            images,
            labels,
            optimizer=optimizer(),
            directory=tmp_path,
            checkpoint_every=2,
            on_step=kill_at_4,
            **settings,
        )
    state = json.loads((tmp_path / "supernet_state.json").read_text())
    assert state["step"] == 4
    resumed = Supernet(space, seed=7)  # a fresh process: other initial weights, restored from disk
    train_supernet(resumed, images, labels, optimizer=optimizer(), directory=tmp_path, **settings)
    assert json.loads((tmp_path / "supernet_state.json").read_text())["step"] == steps
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"optimizer-{steps}.npz",
        f"supernet-{steps}.weights.h5",
        "supernet_state.json",
    ]
    for want, got in zip(straight.model.weights, resumed.model.weights, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, err_msg=want.path)
    # After training on many paths, a path extracted stand-alone still computes what the supernet does.
    values = resumed.space.sample_values(1, seed=4)[0]
    expected = resumed.extract(values).predict(images[:4], verbose=0)
    np.testing.assert_allclose(resumed.predict(images[:4], values), expected, atol=1e-5)


def test_a_candidate_is_scored_with_inherited_weights_and_its_own_batch_norm_statistics(trained):
    supernet, (images, labels) = trained["supernet"], trained["train"]
    x_val, y_val = trained["valid"]
    values = supernet.space.default_values()
    accuracy, model = evaluate_path(supernet, values, x_val, y_val, calibration_x=images)
    assert accuracy > 0.6  # chance is 1/3
    # The statistics are the candidate's own now, not the supernet's.
    bn = model.get_layer("stem_bn")
    assert not np.allclose(
        np.asarray(bn.moving_mean), np.asarray(supernet.model.get_layer("stem_bn").moving_mean)
    )
    with pytest.raises(ValueError, match="x must be"):
        train_supernet(supernet, images[:, :8], labels, steps=1)
    from keras_mnas.search.one_shot import OneShotHyperModel

    with pytest.raises(ValueError, match="include_preprocessing=True"):
        OneShotHyperModel(supernet, include_preprocessing=True)


def test_a_one_shot_search_with_the_absolute_reward_resumes_and_exports_its_winner(tmp_path, trained):
    from keras_mnas.search.one_shot import OneShotHyperModel
    from keras_mnas.search.reward import AbsoluteReward
    from keras_mnas.search.tuner import MnasTuner
    from keras_mnas.testing import ScriptedLatency

    supernet, (images, labels), (x_val, y_val) = trained["supernet"], trained["train"], trained["valid"]
    reward = AbsoluteReward(2.0)

    def tuner(**kwargs):
        return MnasTuner(
            OneShotHyperModel(supernet, calibration_batches=2, batch_size=32),
            latency=ScriptedLatency([2.0, 1.0, 3.0]),
            max_trials=3,
            seed=1,
            directory=tmp_path,
            project_name="one_shot",
            **kwargs,
        )

    searched = tuner(reward=reward)
    searched.search(images, labels, validation_data=(x_val, y_val), epochs=1, verbose=0)
    records = searched.trial_records()
    assert len(records) == 3 and all(0 <= r["metrics"]["val_accuracy"] <= 1 for r in records)
    for record in records:  # TuNAS's sum, not MnasNet's product, is what the oracle maximised
        assert record["reward"] == pytest.approx(reward(record["accuracy"], record["latency_ms"]), rel=1e-6)
    # A reloaded search (overwrite=False) keeps the absolute reward, its records and its best trial.
    reloaded = tuner(reward="absolute", target_latency_ms=2.0, overwrite=False)
    assert reloaded.reward == reward
    assert [r["reward"] for r in reloaded.trial_records()] == [r["reward"] for r in records]
    best_id = searched.oracle.get_best_trials(1)[0].trial_id
    assert reloaded.oracle.get_best_trials(1)[0].trial_id == best_id
    rescored = reloaded.rescore(target_latency_ms=1.0)
    assert rescored[0]["reward"] == max(AbsoluteReward(1.0)(r["accuracy"], r["latency_ms"]) for r in records)
    with pytest.raises(ValueError, match="absolute reward has no alpha"):
        reloaded.rescore(alpha=-0.07)
    with pytest.raises(ValueError, match="reward"):  # another reward is another search
        tuner(target_latency_ms=2.0, overwrite=False)
    with pytest.raises(ValueError, match="absolute reward has no alpha"):
        tuner(reward="absolute", target_latency_ms=2.0, alpha=-0.07)
    # The winner is the supernet's candidate, with its BN statistics re-estimated on the training images.
    best = reloaded.get_best_models(1)[0]
    values = reloaded.oracle.get_best_trials(1)[0].hyperparameters.values
    accuracy, _ = evaluate_path(
        supernet, values, x_val, y_val, calibration_x=images, calibration_batches=2, batch_size=32
    )
    predictions = best.predict(x_val, verbose=0)
    assert float(np.mean(np.argmax(predictions, -1) == y_val)) == pytest.approx(accuracy)


def test_the_supernet_scores_a_path_as_the_extracted_candidate_does_with_the_same_statistics(trained):
    from keras_mnas.search.one_shot import PathScorer, reestimate_batch_norm

    supernet, (images, _), (x_val, y_val) = trained["supernet"], trained["train"], trained["valid"]
    before = [np.asarray(v) for v in supernet.model.non_trainable_variables]
    scorer = PathScorer(
        supernet,
        x_val,
        y_val,
        calibration_x=images,
        calibration_batches=3,
        batch_size=24,
        evaluation_batch_size=40,
    )
    batch = PathScorer(supernet, x_val, y_val, bn="batch", evaluation_batch_size=64)
    for values in supernet.space.sample_values(2, seed=11):
        model = supernet.extract(values)
        reestimate_batch_norm(model, images, batches=3, batch_size=24)
        expected = model.predict(x_val, verbose=0)
        scored = scorer.score(values)
        np.testing.assert_allclose(scored.predictions, expected, atol=1e-5)
        assert scored.accuracy == float(np.mean(np.argmax(expected, -1) == y_val))
        loss = -np.mean(np.log(expected[np.arange(len(y_val)), y_val]))
        assert scored.loss == pytest.approx(loss, rel=1e-4)
        # The candidate it hands out carries the statistics it scored with.
        np.testing.assert_allclose(scorer.extract(values).predict(x_val, verbose=0), expected, atol=1e-5)
        # bn="batch": the validation batch normalised by its own statistics (the candidate's dropout aside,
        # what it computes in training mode).
        fresh = supernet.extract(values)
        reestimate_batch_norm(fresh, x_val, batches=1, batch_size=len(x_val))
        np.testing.assert_allclose(
            batch.score(values).predictions, fresh.predict(x_val, verbose=0), atol=1e-5
        )
    # Scoring never writes the supernet's variables.
    for want, got in zip(before, supernet.model.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)
    with pytest.raises(ValueError, match="bn must be one of"):
        PathScorer(supernet, x_val, y_val, bn="moving")
    with pytest.raises(ValueError, match="y must hold one label per image"):
        PathScorer(supernet, x_val, y_val[:-1])


def test_kind_balanced_sampler_draws_every_kind_of_operation_equally_often():
    space = small_space(conv_ops=("conv", "dconv", "mbconv3", "mbconv6"))
    sample, rng = kind_balanced_sampler(space), np.random.default_rng(0)
    draws = [sample(rng) for _ in range(400)]
    ops = [values[space.hp_name(i, "conv_op")] for values in draws for i in space.searched_blocks]
    share = {op: ops.count(op) / len(ops) for op in space.conv_ops}
    # Uniform over the four choices would give mbconv half of the draws; by kind, a third.
    expected = {"conv": 1 / 3, "dconv": 1 / 3, "mbconv3": 1 / 6, "mbconv6": 1 / 6}
    assert share == pytest.approx(expected, abs=0.05)
    assert all(space.architecture(values) for values in draws[:20])  # every draw is a candidate of the space
    with pytest.raises(TypeError, match="MnasSearchSpace"):
        kind_balanced_sampler("not a space")


def test_uniform_sampler_gives_the_kind_with_several_choices_most_draws():
    space = small_space(conv_ops=("conv", "dconv", "mbconv3", "mbconv6"))
    sample, rng = uniform_sampler(space), np.random.default_rng(0)
    ops = [
        values[space.hp_name(i, "conv_op")]
        for values in (sample(rng) for _ in range(400))
        for i in space.searched_blocks
    ]
    assert {op: ops.count(op) / len(ops) for op in space.conv_ops} == pytest.approx(
        dict.fromkeys(space.conv_ops, 0.25), abs=0.05
    )
    with pytest.raises(TypeError, match="MnasSearchSpace"):
        uniform_sampler("not a space")


def test_train_supernet_trains_every_kind_of_operation_equally_often_by_default(monkeypatch):
    images, labels = toy_data(32)
    supernet = Supernet(small_space(conv_ops=("conv", "dconv", "mbconv3", "mbconv6")))
    drawn = []
    encode = supernet.encode

    def recording_encode(values, **kwargs):
        drawn.extend(values[supernet.space.hp_name(i, "conv_op")] for i in supernet.space.searched_blocks)
        return encode(values, **kwargs)

    monkeypatch.setattr(supernet, "encode", recording_encode)
    train_supernet(supernet, images, labels, steps=150, batch_size=4)
    kinds = ["mbconv" if op.startswith("mbconv") else op for op in drawn]
    assert {kind: kinds.count(kind) / len(kinds) for kind in ("conv", "dconv", "mbconv")} == pytest.approx(
        dict.fromkeys(("conv", "dconv", "mbconv"), 1 / 3), abs=0.08
    )


@pytest.mark.parametrize("widest_first", [None, False], ids=["default", "path-alone"])
def test_each_path_trains_at_its_widest_before_the_path_by_default(monkeypatch, widest_first):
    from keras_mnas.search.supernet import _SLOT_FIELDS

    images, labels = toy_data(32)
    supernet = Supernet(small_space())
    trained_paths = []
    train_on_batch = supernet.model.train_on_batch

    def recording_train_on_batch(inputs, *args, **kwargs):
        trained_paths.append(np.asarray(inputs[1][0]))  # every row holds the batch's path
        return train_on_batch(inputs, *args, **kwargs)

    def output_widths(path):
        starts = np.cumsum([0] + [slot.size for slot in supernet.slots[:-1]])
        at = _SLOT_FIELDS.index("output")
        return np.array(
            [path[start + len(slot.kinds) + at] for start, slot in zip(starts, supernet.slots, strict=True)]
        )

    monkeypatch.setattr(supernet.model, "train_on_batch", recording_train_on_batch)
    # No warm-up: every step trains its path as sampled.
    chosen = {} if widest_first is None else {"widest_first": widest_first}
    train_supernet(supernet, images, labels, steps=6, batch_size=4, warmup_fraction=0.0, **chosen)
    if widest_first is None:
        assert int(supernet.model.optimizer.iterations) == len(trained_paths) == 12
        widths = [
            (output_widths(w), output_widths(s))
            for w, s in zip(trained_paths[::2], trained_paths[1::2], strict=True)
        ]
        assert all((wide >= narrow).all() for wide, narrow in widths)
        assert any((wide > narrow).any() for wide, narrow in widths)  # six draws, not all at the widest
        # Every layer a path uses is at its widest: one width per layer (0 where a path skips it).
        per_layer = np.array([wide for wide, _ in widths]).T
        assert all(len(set(layer) - {0.0}) == 1 for layer in per_layer)
    else:
        assert int(supernet.model.optimizer.iterations) == len(trained_paths) == 6
    with pytest.raises(TypeError, match="widest_first"):
        train_supernet(supernet, images, labels, steps=1, widest_first="yes")


def test_widest_first_sizes_the_default_schedule_to_end_with_the_last_update():
    images, labels = toy_data(32)
    supernet = Supernet(small_space())
    # Warm-up over half the steps: its steps train one path, the others two.
    train_supernet(supernet, images, labels, steps=8, batch_size=4, warmup_fraction=0.5, widest_first=True)
    optimizer = supernet.model.optimizer
    updates = int(optimizer.iterations)
    assert 8 < updates < 16
    # The learning rate reaches 0 with the last update, not before.
    assert float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-6)
    optimizer.iterations.assign(updates - 1)
    assert float(optimizer.learning_rate) > 0.0
