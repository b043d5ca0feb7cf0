"""Tests of the LSTM/PPO search controller: sampling, learning, exact resume, validation."""

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_mnas.search import Controller, ControllerConfig


def _drive(controller, steps, reward_fn):
    """Samples and observes `steps` architectures in order; returns (tokens, stats) per step."""
    out = []
    for _ in range(steps):
        tokens, log_probs = controller.sample()
        out.append((tokens, controller.observe(tokens, log_probs, reward_fn(tokens))))
    return out


def _shaped(tokens):
    return float(tokens[0] == 3) + 0.1 * tokens[-1]


def test_sample_shapes_and_ranges():
    counts = [3, 1, 4, 2, 1]
    controller = Controller(counts, seed=0, units=16)
    for _ in range(50):
        tokens, log_probs = controller.sample()
        assert len(tokens) == len(log_probs) == len(counts)
        assert all(isinstance(t, int) and 0 <= t < n for t, n in zip(tokens, counts, strict=True))
        assert tokens[1] == tokens[4] == 0 and log_probs[1] == log_probs[4] == 0.0
        assert all(lp <= 0 for lp in log_probs)


def test_sampling_frequencies_match_reported_probabilities():
    controller = Controller([4, 3], seed=1, units=8, init_range=1.0)  # a far-from-uniform policy
    draws = [controller.sample()[0] for _ in range(4000)]
    first = np.bincount([d[0] for d in draws], minlength=4) / len(draws)
    expected = np.exp([controller.log_probs([k, 0])[0] for k in range(4)])
    assert expected.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(first, expected, atol=0.03)
    # The second decision is conditioned on the first token: its distribution after each differs.
    after = [np.exp([controller.log_probs([k, j])[1] for j in range(3)]) for k in range(4)]
    for probs in after:
        assert probs.sum() == pytest.approx(1.0, abs=1e-6)
    assert max(np.abs(after[0] - after[k]).max() for k in range(1, 4)) > 1e-3


def test_numpy_sampling_equals_keras_forward_pass():
    controller = Controller([5, 2, 1, 7], seed=2, units=12, num_layers=2, temperature=1.5, tanh_constant=2.0)
    samples = [controller.sample() for _ in range(16)]
    active = [0, 1, 3]
    steps = np.array([[tokens[t] for t in active] for tokens, _ in samples])
    logits = np.asarray(controller._model(controller._input_ids(steps).astype("int32")), dtype=np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    keras_lp = np.take_along_axis(log_p, (steps + controller._offsets[None, :-1])[..., None], -1)[..., 0]
    numpy_lp = np.array([[lps[t] for t in active] for _, lps in samples])
    np.testing.assert_allclose(numpy_lp, keras_lp, atol=1e-5)
    for tokens, lps in samples:
        np.testing.assert_allclose(controller.log_probs(tokens), lps, atol=1e-12)


def test_single_option_decisions_cost_nothing_and_keep_positions():
    with_fixed = Controller([1, 5, 1, 1, 5], seed=3, units=8)
    without = Controller([5, 5], seed=3, units=8)
    for _ in range(5):
        tokens, _ = with_fixed.sample()
        assert tokens[0] == tokens[2] == tokens[3] == 0
        assert [tokens[1], tokens[4]] == without.sample()[0]
    all_fixed = Controller([1, 1], seed=0, minibatch_size=2)
    assert all_fixed.sample() == ([0, 0], [0.0, 0.0])
    assert all_fixed.observe([0, 0], [0.0, 0.0], 0.5) is None
    assert all_fixed.observe([0, 0], [0.0, 0.0], 0.7)["mean_reward"] == pytest.approx(0.6)


def test_ppo_learns_a_rewarded_sequence():
    # Reward 1 for one of 64 sequences, 0 otherwise. The untrained policy proposes it 1.6% of the time; a
    # working update makes it the most likely proposal, a broken one (no update, wrong sign) cannot.
    target = [2, 0, 3]
    controller = Controller([4, 4, 4], seed=0, elite_mutation=0.0)  # the PPO step alone
    _drive(controller, 400, lambda tokens: float(tokens == target))
    probability = float(np.exp(sum(controller.log_probs(target))))
    assert probability > 0.5, probability
    recent = [controller.sample()[0] == target for _ in range(100)]
    assert sum(recent) > 40


def test_update_stats_and_baseline_before_reward():
    controller = Controller([3, 3], seed=0, minibatch_size=3, baseline_decay=0.5)
    rewards = [1.0, 2.0, 4.0]
    baselines = []
    for k, reward in enumerate(rewards):
        tokens, log_probs = controller.sample()
        stats = controller.observe(tokens, log_probs, reward)
        baselines.append(controller.baseline)
        assert (stats is None) == (k < 2)
        assert controller.pending == (k + 1) % 3
    # EMA: 1 -> 0.5 * 1 + 0.5 * 2 = 1.5 -> 0.5 * 1.5 + 0.5 * 4 = 2.75
    assert baselines == pytest.approx([1.0, 1.5, 2.75])
    # Advantages use the baseline from *before* each reward: 0 (first), 2 - 1, 4 - 1.5.
    assert stats["mean_advantage"] == pytest.approx((0 + 1 + 2.5) / 3)
    assert stats["mean_reward"] == pytest.approx(7 / 3)
    assert stats["max_reward"] == 4.0
    assert stats["baseline"] == pytest.approx(2.75)
    assert stats["num_updates"] == controller.num_updates == 1
    for key in ("entropy", "policy_loss", "approx_kl", "clip_fraction"):
        assert np.isfinite(stats[key]), key
    assert 0 < stats["entropy"] <= 2 * np.log(3) + 1e-6


def test_out_of_order_observations_use_their_sampling_time_log_probs():
    controller = Controller(
        [4, 4, 4],
        seed=5,
        minibatch_size=4,
        learning_rate=0.05,
        entropy_weight=0.0,
        advantage_normalization=None,  # raw `reward - baseline`, so the expected loss is easy to write down
        elite_mutation=0.0,  # LSTM samples only: their rewards differ, so the update moves the policy
    )
    early = [controller.sample() for _ in range(4)]  # proposed under the initial policy
    _drive(controller, 4, lambda tokens: float(tokens[0] == 1))  # an update happens meanwhile
    assert controller.num_updates == 1
    expected_terms = []
    for (tokens, log_probs), reward in zip(early, [1.0, 0.0, 0.5, 0.2], strict=True):
        current = np.array(controller.log_probs(tokens))
        assert not np.allclose(current, log_probs, atol=1e-4)  # the policy did move
        advantage = reward - controller.baseline
        ratio = np.exp(current - np.array(log_probs))
        clipped = np.clip(ratio, 1 - controller.config.clip_ratio, 1 + controller.config.clip_ratio)
        expected_terms.append(np.minimum(ratio * advantage, clipped * advantage).sum())
        stats = controller.observe(tokens, log_probs, reward)
    # The update's loss is PPO's clipped surrogate with the *sampling-time* log-probabilities.
    assert stats["policy_loss"] == pytest.approx(-np.mean(expected_terms), rel=1e-4, abs=1e-6)
    assert stats["clip_fraction"] >= 0


def test_exact_resume_through_json():
    config = dict(minibatch_size=4, ppo_epochs=2, learning_rate=0.01, units=16)
    a = Controller([4, 1, 3, 5], seed=7, **config)
    _drive(a, 10, _shaped)  # two updates, two observations pending
    saved = json.loads(json.dumps(a.get_state()))
    assert saved == a.get_state()
    continued = _drive(a, 11, _shaped)
    b = Controller.from_state(saved)
    assert b.pending == 2 and b.num_updates == 2 and b.num_observed == 10
    resumed = _drive(b, 11, _shaped)
    assert [t for t, _ in resumed] == [t for t, _ in continued]
    stats_a = [s for _, s in continued if s is not None]
    stats_b = [s for _, s in resumed if s is not None]
    assert len(stats_a) == len(stats_b) == 3
    for sa, sb in zip(stats_a, stats_b, strict=True):
        assert sa.keys() == sb.keys()
        for key in sa:
            assert sb[key] == pytest.approx(sa[key], rel=1e-5, abs=1e-7), key
    for wa, wb in zip(a._model.get_weights(), b._model.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)
    # A fresh controller of the same configuration continues identically too (set_state on an instance).
    c = Controller([4, 1, 3, 5], seed=123, **config)
    c.set_state(saved)
    assert [t for t, _ in _drive(c, 11, _shaped)] == [t for t, _ in continued]


def test_state_is_compact_json_without_pickles():
    state = Controller([5] * 6, seed=0).get_state()
    text = json.dumps(state)
    assert "weights" in state and "optimizer" in state and "rng" in state and "pending" in state
    weight = state["weights"][0]
    assert set(weight) == {"dtype", "shape", "data"} and weight["dtype"] == "float32"
    assert len(text) < 2_000_000


def test_set_state_rejects_other_configurations():
    state = Controller([3, 3], seed=0, units=8).get_state()
    with pytest.raises(ValueError, match="units: state has 8, controller has 16"):
        Controller([3, 3], seed=0, units=16).set_state(state)
    with pytest.raises(ValueError, match="choice_counts"):
        Controller([3, 4], seed=0, units=8).set_state(state)
    with pytest.raises(ValueError, match="format"):
        Controller([3, 3], units=8).set_state({"weights": []})


def test_same_seed_same_controller_and_different_seeds_differ():
    a, b, c = (Controller([5] * 6, seed=s, units=8) for s in (0, 0, 1))
    samples_a = [a.sample()[0] for _ in range(20)]
    assert samples_a == [b.sample()[0] for _ in range(20)]
    assert samples_a != [c.sample()[0] for _ in range(20)]


def test_presets():
    nasnet = Controller.from_preset("nasnet", [5] * 6, seed=0)
    assert nasnet.config == ControllerConfig.nasnet() == ControllerConfig.presets()["nasnet"]
    config = nasnet.config
    assert (config.units, config.num_layers, config.learning_rate, config.entropy_weight) == (
        100,
        1,
        0.00035,
        1e-5,
    )
    assert (config.baseline_decay, config.minibatch_size, config.init_range) == (0.95, 20, 0.1)
    assert config.temperature is None and config.tanh_constant is None
    weights = nasnet._model.get_weights()
    assert max(np.abs(w).max() for w in weights) <= 0.1
    assert Controller.from_preset("nasnet", [2], learning_rate=0.01).config.learning_rate == 0.01
    default = Controller([2])
    assert default.config == ControllerConfig() == ControllerConfig.preset("default")
    assert default.get_config() == {
        **dataclasses.asdict(ControllerConfig()),
        "choice_counts": [2],
        "seed": None,
    }
    with pytest.raises(ValueError, match="Unknown controller preset 'enas'"):
        Controller.from_preset("enas", [2])


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ([[]], {}, "at least one decision"),
        ([[3, 0]], {}, "ints >= 1; received 0 at position 1"),
        ([[3, 2.0]], {}, "ints >= 1; received 2.0"),
        (["abc"], {}, "sequence of ints"),
        ([[3]], {"learning_rate": 0.0}, "learning_rate` must be a finite number > 0 and <= 10; received 0.0"),
        ([[3]], {"baseline_decay": 1.0}, "baseline_decay` must be a finite number >= 0 and < 1; received 1"),
        ([[3]], {"minibatch_size": 0}, "minibatch_size` must be an integer >= 1 and <= 100000; received 0"),
        ([[3]], {"units": 2.5}, "units` must be an integer >= 1"),
        ([[3]], {"clip_ratio": 1.5}, "clip_ratio"),
        ([[3]], {"entropy_weight": -1e-3}, "entropy_weight"),
        ([[3]], {"ppo_epochs": 0}, "ppo_epochs"),
        ([[3]], {"temperature": 0}, "temperature"),
        ([[3]], {"tanh_constant": -1.0}, "tanh_constant"),
        ([[3]], {"init_range": float("nan")}, "init_range"),
        ([[3]], {"seed": 1.5}, "seed` must be None or an integer"),
        (
            [[3]],
            {"advantage_normalization": "zscore"},
            r"advantage_normalization` must be one of \(None, 'std'",
        ),
    ],
)
def test_argument_validation(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Controller(*args, **kwargs)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"units": 0}, "units` must be an integer >= 1 and <= 4096; received 0"),
        ({"embedding_dim": 0}, "embedding_dim` must be None or an integer >= 1"),
        ({"learning_rate": True}, "learning_rate` must be a finite number > 0 and <= 10; received True"),
        ({"clip_ratio": 0.0}, "clip_ratio` must be a finite number > 0 and < 1; received 0.0"),
        ({"tanh_constant": float("inf")}, "tanh_constant` must be None or a finite number > 0"),
        ({"advantage_normalization": "zscore"}, "advantage_normalization` must be one of"),
    ],
)
def test_controller_config_refuses_bad_settings_when_made(settings, message):
    with pytest.raises(ValueError, match=message):
        ControllerConfig(**settings)
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(ControllerConfig.nasnet(), **settings)


def test_controller_config_is_frozen_canonical_and_round_trips():
    config = ControllerConfig(learning_rate=1, units=np.int64(16), temperature=2)
    assert (config.learning_rate, config.units, config.temperature) == (1.0, 16, 2.0)
    assert type(config.units) is int and type(config.learning_rate) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.units = 8
    assert ControllerConfig(**json.loads(json.dumps(config.get_config()))) == config
    assert ControllerConfig.from_config({"preset": "nasnet", "units": 16}) == dataclasses.replace(
        ControllerConfig.nasnet(), units=16
    )
    assert ControllerConfig.from_config({}) == ControllerConfig()
    with pytest.raises(ValueError, match=r"Unknown controller settings \['lr'\]"):
        ControllerConfig.from_config({"lr": 0.1})
    with pytest.raises(ValueError, match="Unknown controller preset 'enas'"):
        ControllerConfig.from_config({"preset": "enas"})
    # A Controller takes the config, and settings that replace some of it.
    controller = Controller([3, 3], ControllerConfig.nasnet(), seed=0, units=8)
    assert controller.config == dataclasses.replace(ControllerConfig.nasnet(), units=8)
    with pytest.raises(ValueError, match="config must be a ControllerConfig"):
        Controller([3, 3], {"units": 8})


def test_observe_validation():
    controller = Controller([3, 2], seed=0, units=8)
    tokens, log_probs = controller.sample()
    with pytest.raises(ValueError, match="Expected 2 tokens"):
        controller.observe([0], log_probs, 1.0)
    with pytest.raises(ValueError, match=r"Token 1 must be an int in \[0, 2\); received 2"):
        controller.observe([0, 2], log_probs, 1.0)
    with pytest.raises(ValueError, match="Expected 2 log_probs"):
        controller.observe(tokens, [0.0], 1.0)
    with pytest.raises(ValueError, match="reward must be a finite number"):
        controller.observe(tokens, log_probs, float("nan"))
    with pytest.raises(ValueError, match="log_probs must be finite and <= 0"):
        controller.observe(tokens, [0.5, -1.0], 1.0)
    assert controller.num_observed == 0  # nothing half-recorded


def test_rank_normalised_advantages_ignore_the_reward_scale():
    # With rank normalisation, rewards that differ by a monotone transform give the very same update.
    def run(transform):
        controller = Controller([3, 3], seed=4, units=8, minibatch_size=5, advantage_normalization="rank")
        stats = [s for _, s in _drive(controller, 10, lambda t: transform(t[0] + 0.5 * t[1])) if s]
        return stats, controller.log_probs([2, 2])

    stats_a, log_probs_a = run(lambda r: r)
    stats_b, log_probs_b = run(lambda r: 100 * r**3 - 7)
    assert [s["policy_loss"] for s in stats_a] == pytest.approx([s["policy_loss"] for s in stats_b], rel=1e-5)
    np.testing.assert_allclose(log_probs_a, log_probs_b, rtol=1e-5)
    assert stats_a[0]["mean_reward"] != pytest.approx(stats_b[0]["mean_reward"])


def test_controller_learns_on_jax_and_its_state_loads_on_tensorflow(tmp_path):
    pytest.importorskip("jax")
    # The PPO step is plain Keras (train_on_batch on a Model with a custom compute_loss): it must run on
    # another backend, and the JSON state must not depend on the backend that wrote it.
    code = textwrap.dedent(
        """
        import json, os, sys
        os.environ["KERAS_BACKEND"] = "jax"
        import keras
        from keras_mnas.search import Controller, ControllerConfig
        assert keras.backend.backend() == "jax"
        controller = Controller([4, 4, 4], seed=0, units=16, minibatch_size=10, elite_mutation=0.0)
        for _ in range(200):
            tokens, log_probs = controller.sample()
            controller.observe(tokens, log_probs, float(tokens == [2, 0, 3]))
        state = controller.get_state()
        state["probe"] = controller.log_probs([2, 0, 3])
        json.dump(state, open(sys.argv[1], "w"))
        """
    )
    path = tmp_path / "state.json"
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    state = json.loads(path.read_text())
    probe = state.pop("probe")
    assert np.exp(sum(probe)) > 0.3  # learnt on JAX (the untrained policy gives it 1/64)
    restored = Controller.from_state(state)  # on this process's backend, TensorFlow
    np.testing.assert_allclose(restored.log_probs([2, 0, 3]), probe, atol=1e-6)
    assert restored.num_observed == 200 and restored.num_updates == 20
    tokens, log_probs = restored.sample()
    assert restored.observe(tokens, log_probs, 0.0) is None  # and it carries on


def test_elite_mutation_proposes_neighbours_of_the_best_and_survives_a_reload():
    controller = Controller(
        [4, 1, 4, 4],
        seed=3,
        units=8,
        elite_mutation=0.9,
        elite_size=2,
        minibatch_size=5,
        neighbour_search="random",
        elite_warmup=0,
    )
    for _ in range(12):
        tokens, log_probs = controller.sample()
        controller.observe(tokens, log_probs, float(sum(tokens)))
    elites = [tokens for _, tokens, _ in controller.get_state()["elites"]]
    assert len(elites) == 2
    twin = Controller.from_state(json.loads(json.dumps(controller.get_state())))
    proposals = [controller.sample() for _ in range(40)]
    assert [twin.sample() for _ in range(40)] == proposals
    def distance(a, b):
        return sum(x != y for x, y in zip(a, b, strict=True))

    neighbours = [tokens for tokens, _ in proposals if any(distance(tokens, e) == 1 for e in elites)]
    assert len(neighbours) >= 25, "most proposals change one decision of an elite"
    assert all(tokens[1] == 0 for tokens, _ in proposals), "a fixed decision is never mutated"
    with pytest.raises(ValueError, match="elite_mutation"):
        ControllerConfig(elite_mutation=1.0)


def _distance(a, b):
    return sum(x != y for x, y in zip(a, b, strict=True))


def test_exhaustive_neighbour_search_tries_each_change_of_the_best_once_then_moves_on():
    controller = Controller([3, 1, 4], seed=4, units=8, elite_mutation=0.99, elite_size=1, elite_warmup=1)
    start = [0, 0, 0]
    controller.observe(start, controller.log_probs(start), 1.0)
    # Its 2 + 3 neighbours, each once, before anything else; the fixed decision never changes.
    proposals = []
    for _ in range(5):
        tokens, log_probs = controller.sample()
        proposals.append(tokens)
        controller.observe(tokens, log_probs, 0.5)  # worse: the start stays the best
    assert sorted(proposals) == sorted([[1, 0, 0], [2, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3]])
    # A better neighbour found: the search moves to its neighbourhood, skipping the start, already known.
    controller.observe([0, 0, 2], controller.log_probs([0, 0, 2]), 2.0)
    moved = []
    for _ in range(4):
        tokens, log_probs = controller.sample()
        moved.append(tokens)
        controller.observe(tokens, log_probs, 0.0)
    assert sorted(moved) == sorted([[1, 0, 2], [2, 0, 2], [0, 0, 1], [0, 0, 3]])
    # Every neighbourhood of the one elite tried: the LSTM proposes, and the search carries on.
    tokens, _ = controller.sample()
    assert tokens[1] == 0


def test_neighbours_known_from_observations_are_not_proposed_and_the_tried_ones_survive_a_reload():
    controller = Controller([4, 4, 4], seed=6, units=8, elite_mutation=0.99, elite_size=2, elite_warmup=0)
    best = [1, 2, 3]
    controller.observe(best, controller.log_probs(best), 1.0)
    for tokens in ([0, 2, 3], [1, 0, 3], [1, 2, 0]):  # observed some other way, e.g. sampled by the LSTM
        controller.observe(tokens, controller.log_probs(tokens), 0.1)
    first = [controller.sample()[0] for _ in range(3)]
    twin = Controller.from_state(json.loads(json.dumps(controller.get_state())))
    rest = [controller.sample()[0] for _ in range(3)]
    assert [twin.sample()[0] for _ in range(3)] == rest
    proposed = first + rest
    assert all(_distance(tokens, best) == 1 for tokens in proposed)
    assert len({tuple(t) for t in proposed}) == 6
    assert not {(0, 2, 3), (1, 0, 3), (1, 2, 0)} & {tuple(t) for t in proposed}


def test_elite_warmup_leaves_the_first_proposals_to_the_lstm():
    def run(**settings):
        controller = Controller([5, 5, 5], seed=2, units=8, **{"elite_mutation": 0.9, **settings})
        proposals = []
        for _ in range(6):
            tokens, log_probs = controller.sample()
            proposals.append(tokens)
            controller.observe(tokens, log_probs, float(sum(tokens)))
        return proposals, controller.sample()[0]

    warm, after = run(elite_warmup=6)
    lstm_only, lstm_next = run(elite_mutation=0.0)
    assert warm == lstm_only  # the same draws: before the warm-up ends no mutation is even considered
    assert after != lstm_next


def test_a_state_saved_before_exhaustive_neighbour_search_resumes_with_random_mutation():
    controller = Controller([4, 4], seed=1, units=8, neighbour_search="random", elite_warmup=0)
    _drive(controller, 5, lambda tokens: float(tokens[0]))
    state = json.loads(json.dumps(controller.get_state()))
    for key in ("neighbour_search", "elite_warmup"):
        del state["config"][key]
    state["elites"] = [item[:2] for item in state["elites"]]
    restored = Controller.from_state(state)
    assert restored.config.neighbour_search == "random" and restored.config.elite_warmup == 0
    assert [restored.sample() for _ in range(5)] == [controller.sample() for _ in range(5)]
    with pytest.raises(ValueError, match="neighbour_search"):
        ControllerConfig(neighbour_search="greedy")


def test_iterated_local_search_restarts_from_a_perturbed_best_and_climbs_from_there():
    controller = Controller(
        [4, 4, 4], seed=3, units=8, elite_mutation=0.99, elite_size=1, elite_warmup=1, perturbation=2
    )
    best = [0, 0, 0]
    controller.observe(best, controller.log_probs(best), 1.0)
    for _ in range(9):  # the best's 9 neighbours, all worse: a local optimum
        tokens, log_probs = controller.sample()
        assert _distance(tokens, best) == 1
        controller.observe(tokens, log_probs, 0.5)
    restart, log_probs = controller.sample()
    assert _distance(restart, best) == 2, "stuck: the best with 2 decisions changed"
    controller.observe(restart, log_probs, 0.1)  # worse than the best, and still climbed from
    tokens, log_probs = controller.sample()
    assert _distance(tokens, restart) == 1
    controller.observe(tokens, log_probs, 0.2)  # better than the restart: the climb moves there
    twin = Controller.from_state(json.loads(json.dumps(controller.get_state())))
    moved = [controller.sample()[0] for _ in range(3)]
    assert all(_distance(t, tokens) == 1 and t != restart for t in moved)
    assert [twin.sample()[0] for _ in range(3)] == moved
    # A neighbour better than the best ends the climb: the best elite's own neighbourhood comes next.
    found = moved[0]
    controller.observe(found, controller.log_probs(found), 2.0)
    assert controller.get_state()["climb"] is None
    assert all(_distance(controller.sample()[0], found) == 1 for _ in range(3))


def test_without_perturbation_the_search_moves_to_the_next_elite_and_old_states_resume_that_way():
    controller = Controller([4, 4], seed=5, units=8, elite_mutation=0.99, elite_size=2, elite_warmup=1)
    first, second = [0, 0], [3, 3]
    controller.observe(first, controller.log_probs(first), 1.0)
    controller.observe(second, controller.log_probs(second), 0.9)
    for _ in range(6):  # the best's neighbourhood
        tokens, log_probs = controller.sample()
        assert _distance(tokens, first) == 1
        controller.observe(tokens, log_probs, 0.0)
    state = json.loads(json.dumps(controller.get_state()))
    del state["config"]["perturbation"], state["climb"], state["restart"]
    restored = Controller.from_state(state)
    assert restored.config.perturbation == 0
    tokens = restored.sample()[0]
    assert _distance(tokens, second) == 1 and tokens == controller.sample()[0]
    with pytest.raises(ValueError, match="perturbation"):
        ControllerConfig(perturbation=-1)
    with pytest.raises(ValueError, match="neighbour_search='exhaustive'"):
        ControllerConfig(perturbation=2, neighbour_search="random")


def test_elite_replay_keeps_teaching_the_policy_the_best_architecture_found():
    def run(replay):
        controller = Controller(
            [4, 4, 4], seed=7, units=8, minibatch_size=5, elite_warmup=10**6, elite_replay=replay
        )
        best = [3, 3, 3]
        controller.observe(best, controller.log_probs(best), 10.0)
        stats = [s for _, s in _drive(controller, 14, lambda tokens: float(tokens[0] == 0)) if s]
        return sum(controller.log_probs(best)), stats

    replayed, replay_stats = run(2)
    once, _ = run(0)
    assert replayed > once + 0.1
    # The statistics describe the new observations only: the second and third minibatches lack the 10.
    assert [s["max_reward"] == 10.0 for s in replay_stats] == [True, False, False]
    with pytest.raises(ValueError, match="elite_replay"):
        ControllerConfig(elite_replay=-2)
