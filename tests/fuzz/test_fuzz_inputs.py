"""Seeded fuzzing of every public entry point that takes user input.

Each test draws at least 1,000 inputs, mostly near-valid ones with one thing wrong, and asserts that every
input is either accepted and round-trips, or refused with a `ValueError` or `TypeError` whose message names
what was wrong; never another exception, never a hang. Nothing is built or trained: construction only.
"""

import math
import random
import signal
import time

import numpy as np
import pytest

from keras_mnas.architecture import ArchSpec, BlockSpec, decode_block, encode_block, plan_layers
from keras_mnas.counting import count_cost
from keras_mnas.search.controller import ControllerConfig
from keras_mnas.search.hypermodel import MnasHyperModel
from keras_mnas.search.reward import MnasReward
from keras_mnas.search.space import MnasSearchSpace, SkeletonBlock
from keras_mnas.search.tuner import MnasTuner

COUNT = 1000
SECONDS_PER_INPUT = 2.0  # every check here takes milliseconds; a hang is what this catches

# Values that broke checks before: huge, negative, non-finite, of the wrong type, booleans, NumPy scalars.
ODD_VALUES = [
    0,
    -1,
    1,
    2,
    3,
    5,
    7,
    64,
    65,
    10**12,
    2**1100,
    -(10**9),
    0.5,
    1.5,
    -0.07,
    1e308,
    -1e308,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    None,
    "3",
    "no",
    "",
    [],
    {},
    (3,),
    np.int64(3),
    np.float32(0.25),
    np.float64(1e308),
    object(),
]


class HangError(Exception):
    pass


def _alarm(signum, frame):
    raise HangError()


@pytest.fixture(autouse=True)
def _time_limit():
    previous = signal.signal(signal.SIGALRM, _alarm)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def outcome(function, *args, **kwargs):
    """Runs one input: `("ok", result)` or `("refused", message)`; fails the test on anything else."""
    signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_INPUT)
    start = time.perf_counter()
    try:
        return "ok", function(*args, **kwargs)
    except (ValueError, TypeError) as error:
        return "refused", str(error)
    except HangError:
        pytest.fail(f"no answer within {SECONDS_PER_INPUT} s for {args!r} {kwargs!r}")
    except Exception as error:
        pytest.fail(
            f"{type(error).__name__} ({error}) instead of ValueError/TypeError for {args!r} {kwargs!r}"
        )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert time.perf_counter() - start < SECONDS_PER_INPUT


def pick(rng, valid, invalid, p_invalid=0.15):
    """Mostly a valid value; sometimes an invalid one."""
    return rng.choice(invalid if rng.random() < p_invalid else valid)


def assert_names(message, *names):
    assert any(name in message for name in names), f"{message!r} names none of {names}"


# ----------------------------------------------------------------------------------------------------------
# Block strings


def _block_string(rng):
    tokens = [
        f"r{rng.choice([1, 2, 4, 64])}",
        f"k{rng.choice([1, 3, 5, 31])}",
        f"s{rng.choice([1, 2, 9])}{rng.choice([1, 2])}",
        f"e{rng.choice([1, 3, 6, 64])}",
        f"i{rng.choice([8, 16, 16384])}",
        f"o{rng.choice([8, 24, 320])}",
    ]
    tokens += rng.sample(["se0.25", "se1", "se1e-05", "noskip", "poolskip"], rng.randint(0, 2))
    rng.shuffle(tokens)
    text = "_".join(tokens)
    for _ in range(rng.randint(0, 2)):
        position = rng.randrange(len(text) + 1)
        mutation = rng.choice(
            [
                " ",
                "\n",
                "\t",
                "_",
                "__",
                "0",
                "9",
                "99999",
                "1" * 4400,
                "-",
                ".",
                "e",
                "x",
                "\u0661",
                "\uff11",
                "\u00a0",
                "_conv",
                "_dconv",
                "_se",
                "_r2",
                "se0.5_",
            ]
        )
        if rng.random() < 0.3:
            text = text[:position] + text[position + 1 :]  # a deletion
        else:
            text = text[:position] + mutation + text[position:]
    return text


def test_block_strings_decode_round_trip_or_are_refused_by_name():
    rng = random.Random(20)
    accepted = 0
    for _ in range(6 * COUNT):
        text = _block_string(rng)
        kind, result = outcome(decode_block, text)
        if kind == "ok":
            accepted += 1
            canonical = encode_block(result)
            assert decode_block(canonical) == result
            assert encode_block(decode_block(canonical)) == canonical
        else:
            assert_names(result, "Malformed block string")
    assert accepted > COUNT // 2  # the fuzzer reaches valid strings too
    for value in ODD_VALUES:
        kind, message = outcome(decode_block, value)
        assert kind == "refused"
        assert_names(message, "block_string", "Malformed block string")


# ----------------------------------------------------------------------------------------------------------
# Architectures


_BLOCK_FIELDS = {
    "repeats": [1, 2, 64, 65, 0, -3, 10**9, 2.0, True],
    "kernel_size": [1, 3, 31, 33, 4, 0, np.int64(5)],
    "strides": [(1, 1), (2, 2), (9, 9), (10, 10), (0, 1), (2,), [2, 1], "22", (True, 1), (2.0, 2)],
    "input_filters": [1, 16, 16384, 16385, 0, -16],
    "output_filters": [8, 320, 16384, 16385, 0, 10**30],
    "expand_ratio": [1, 6, 64, 65, 0],
    "se_ratio": [None, 0.25, 1, 1e-300, 0, 1.5, math.nan, "0.25", True],
    "op": ["mbconv", "dconv", "conv", "sepconv", "mbconv\n", None],
    "skip": ["identity", "none", "pool", "poolskip", ""],
}


def _random_block(rng):
    fields = {name: rng.choice(values[:3]) for name, values in _BLOCK_FIELDS.items()}
    if fields["op"] != "mbconv":
        fields["expand_ratio"] = 1
    bad = rng.sample(list(_BLOCK_FIELDS), rng.choice([0, 0, 1, 2]))
    for name in bad:
        fields[name] = rng.choice(_BLOCK_FIELDS[name] + ODD_VALUES)
    return fields, bad


def test_architectures_round_trip_or_are_refused_by_name():
    rng = random.Random(21)
    accepted = 0
    for _ in range(COUNT):
        fields, bad = _random_block(rng)
        kind, block = outcome(BlockSpec, **fields)
        if kind == "refused":
            assert_names(block, *(f"BlockSpec.{name}" for name in bad), "BlockSpec.expand_ratio")
            continue
        assert decode_block(encode_block(block)) == block
        strings = encode_block(block)
        data = {
            "name": pick(rng, ["net", "a.b-c_1"], ["", "has space", "\u00e9", 3, "x" * 101]),
            "blocks": pick(rng, [[strings], [block], [strings] * 64], [[], None, "r1", [None], {"a": 1}]),
            "stem_filters": pick(rng, [8, 32, 16384], [0, 16385, 2.5, True]),
            "head_filters": pick(rng, [1280, 1], [0, -1, 10**12]),
            "dropout_rate": pick(rng, [0, 0.2, 0.99], [1, -0.1, math.nan, "0.2"]),
        }
        if rng.random() < 0.1:
            data["blocks"] = [encode_block(block)] * 65
        if rng.random() < 0.05:
            data["unknown_field"] = 1
        kind, arch = outcome(ArchSpec.from_dict, data)
        if kind == "refused":
            assert_names(arch, "name", "blocks", "stem_filters", "head_filters", "dropout_rate", "fields")
            continue
        accepted += 1
        assert ArchSpec.from_dict(arch.to_dict()) == arch
        multiplier = pick(rng, [1.0, 0.35, 16.0], [16.5, 0, -1, 1e308, math.nan, True, "1"])
        kind, result = outcome(plan_layers, arch, multiplier)
        if kind == "refused":
            assert_names(result, "depth_multiplier")
        else:
            kind, cost = outcome(
                count_cost, arch, input_shape=(32, 32, 3), classes=10, depth_multiplier=multiplier
            )
            assert kind == "ok" and cost.macs > 0
    assert accepted > COUNT // 10


# ----------------------------------------------------------------------------------------------------------
# Search spaces


_SPACE_ARGUMENTS = {
    "skeleton": [
        [(1, 16, 1, 1), (6, 24, 2, 2)],
        [SkeletonBlock(1, 8, 1, 1), (6, 16, 64, 2)],
        [(1, -16, 1, 1), (6, 24, 2, 2)],
        [(1, 16, 1, 10), (6, 24, 2, 2)],
        [(6, 24, 2)],
        [(1, 16, 1, 1)] * 65,
        [(1, 16.0, 1, 1), (6, 24, 2, 2)],
        "mobilenet",
        [],
    ],
    "conv_ops": [
        ("mbconv6",),
        ("conv", "mbconv64"),
        ("mbconv6\n",),
        ("mbconv65",),
        ("mbconv0",),
        ("sepconv",),
        ("mbconv\uff16",),
        ("conv", "conv"),
        "conv",
    ],
    "kernel_sizes": [(3,), (3, 31), (33,), (4,), (3, True), (np.int64(5),), ()],
    "se_ratios": [(0.0,), (0.0, 0.25), (1.5,), (math.nan,), ("0.25",)],
    "skip_ops": [("none",), ("pool", "identity"), ("dense",), ([],)],
    "filter_multipliers": [(1.0,), (0.5, 1e308), (16.0,), (-1.0,), (math.inf,), (2**1100,), (True,)],
    "layer_deltas": [(0,), (-1, 0, 1), (10**12,), (63,), (-65,), (0.5,), (False,)],
    "fixed_blocks": [
        {},
        {0: "r1_k3_s11_e1_i32_o16_noskip"},
        {True: "r1_k3_s11_e1_i32_o16"},
        {"0": "r1"},
        {0: "r1_k3 _s11_e1_i32_o16"},
        {0: None},
        {5: "r1_k3_s11_i8_o8"},
        {-1: "r1_k3_s11_i8_o8"},
    ],
    "filter_divisor": [1, 4, 8, 0, -4, 10**6, 4.0],
    "input_shape": [(8, 8, 1), (32, 32, 3), (None, 8, 3), (8, 8), (8, 8, 10**5), (8, 8, True)],
    "classes": [2, 10, 1_000_000, 0, 10**7, 2.0],
    "depth_multiplier": [0.25, 1.0, 16.0, 1e308, 0, -1, math.nan, "1"],
    "stem_filters": [8, 32, 0, -5, 16385, None],
    "head_filters": [16, 1280, 0, 10**6],
    "dropout_rate": [0.0, 0.5, 1.0, -0.5, math.inf],
}


def test_space_configs_round_trip_or_are_refused_by_name():
    rng = random.Random(22)
    accepted = 0
    for _ in range(COUNT + 500):
        kwargs = {
            "skeleton": [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 2)],
            "fixed_blocks": {},
            "input_shape": (16, 16, 3),
            "classes": 4,
        }
        bad = rng.sample(list(_SPACE_ARGUMENTS), rng.choice([1, 1, 2]))
        for name in bad:
            kwargs[name] = rng.choice(_SPACE_ARGUMENTS[name] + ODD_VALUES[:: rng.choice([3, 5, 7])])
        kind, space = outcome(MnasSearchSpace, **kwargs)
        if kind == "refused":
            assert_names(space, *bad, "nothing is left to search")
            continue
        accepted += 1
        again = MnasSearchSpace.from_config(space.get_config())
        assert again.get_config() == space.get_config()
        values = (
            space.sample_values(1, seed=rng.randrange(100))[0]
            if accepted % 50 == 0
            else space.default_values()
        )
        kind, cost = outcome(space.cost, space.decode(values))
        assert kind == "ok" and cost.macs > 0
    assert accepted > COUNT // 5
    for config in [None, [], {"skeleton": None}, {"not_a_setting": 1}, {"fixed_blocks": {"x": "r1"}}]:
        kind, message = outcome(MnasSearchSpace.from_config, config)
        assert kind == "refused"
        assert_names(message, "config", "skeleton", "not_a_setting", "fixed_blocks")


# ----------------------------------------------------------------------------------------------------------
# Rewards


def test_rewards_round_trip_or_are_refused_by_name():
    rng = random.Random(23)
    accepted = 0
    targets = [75.0, 1, 1e-9, 1e6, 1e6 + 1, 0, -5.0]
    exponents = [-0.07, 0.0, -1.0, 10, -10, 10.5, -200, 1e308]
    metrics = ["val_accuracy", "accuracy", "", " val_accuracy", "val\naccuracy", "\u00e9", "x" * 101]
    for _ in range(2 * COUNT):
        kwargs = {
            "target_latency_ms": pick(rng, targets[:4], targets[4:] + ODD_VALUES[::4]),
            "alpha": pick(rng, exponents[:5], exponents[5:] + ODD_VALUES[::6]),
            "beta": pick(rng, exponents[:5], exponents[5:]),
            "metric": pick(rng, metrics[:2], [*metrics[2:], 3, None]),
        }
        kind, reward = outcome(MnasReward, **kwargs)
        if kind == "refused":
            assert_names(reward, *kwargs)
            continue
        assert MnasReward.from_config(reward.get_config()) == reward
        accuracy = pick(rng, [0.0, 0.9, 1.0, 1e300, -1.0], [math.nan, True, "0.9"])
        latency = pick(rng, [1e-300, 0.001, 75.0, 1e300], [0.0, -1.0, math.inf, 2**1100, None])
        kind, value = outcome(reward, accuracy, latency)
        if kind == "refused":
            assert_names(value, "accuracy", "latency_ms")
        else:
            accepted += 1
            assert math.isfinite(value)
    assert accepted > COUNT // 10


# ----------------------------------------------------------------------------------------------------------
# MnasTuner (and the controller settings it takes)


class _DeclaresOnly(MnasHyperModel):
    """Declares the space's hyperparameters and builds nothing: the fuzz loop only constructs tuners."""

    def build(self, hp):
        self.space.declare(hp)


_TUNER_ARGUMENTS = {
    "chief_timeout": [0, 0.5, 300.0, -1, math.inf, math.nan, "300"],
    "executions_per_trial": [1, 3, 0, -1, 1.5, True],
    "max_consecutive_failed_trials": [1, 3, 0, -1, None],
    "max_retries_per_trial": [0, 2, -1, "1"],
    "skip_ruled_out": [True, False, "no", 0, 1, np.bool_(True)],
    "allow_config_change": [True, False, "yes", None],
    "overwrite": [True, False, "no", 1],
    "metric": ["val_accuracy", "accuracy", "val_loss", "bogus", "", 5],
    "max_trials": [1, 20, 0, -3, 2.0],
    "seed": [None, 0, 7, -1, "1", 1.5],
    "max_crashes_per_trial": [1, 2, 0, True],
    "trial_timeout": [None, "auto", 30.0, 0, -5, "soon"],
    "trial_deadline": [None, 0.5, 600, 0, -1, math.inf, "600", True],
    "pareto_every": [1, 10, 0, False],
    "prefilter_tolerance": [0.0, 0.25, -0.1, math.nan, True],
    "quantization": ["float32", "int8", "float16", None],
    "evaluate_int8": [False, True, "no"],
    "reward": ["soft", "hard", "medium", None],
    "alpha": [None, -0.07, 0.0, -200, math.nan],
    "beta": [None, -1.0, 11, "x"],
    "target_latency_ms": [1.0, 2**1100, 0, -1.0, None, math.inf],
    "tensorboard_dir": [None, "tb", 5],
    "controller": [
        None,
        "default",
        "nasnet",
        "random",
        "nope",
        {"units": 8},
        {"units": 10**9},
        {"units": -1},
        {"temperature": 1e-300},
        {"init_range": 1e308},
        {"learning_rate": math.inf},
        {"minibatch_size": 0},
        {"ppo_epochs": 10**6},
        {"nonsense": 1},
        {"advantage_normalization": "max"},
        {"num_layers": True},
        {"embedding_dim": 0},
        {"tanh_constant": -1},
        42,
    ],
}


def test_tuner_argument_sets_construct_or_are_refused_by_name(tmp_path):
    rng = random.Random(24)
    space = MnasSearchSpace(
        skeleton=[(1, 8, 1, 1), (6, 8, 1, 2)], fixed_blocks={}, input_shape=(8, 8, 1), classes=2
    )
    accepted = 0
    for index in range(COUNT + 200):
        kwargs = {"target_latency_ms": 1.0, "directory": str(tmp_path), "project_name": f"p{index}"}
        bad = rng.sample(list(_TUNER_ARGUMENTS), rng.choice([1, 1, 2]))
        for name in bad:
            kwargs[name] = rng.choice(_TUNER_ARGUMENTS[name])
        kind, tuner = outcome(MnasTuner, _DeclaresOnly(space), **kwargs)
        if kind == "refused":
            controller = kwargs.get("controller")
            settings = list(controller) if isinstance(controller, dict) else []
            # A bad controller setting is named by itself ("`units` must be ..."), inside the controller.
            assert_names(tuner, *bad, *settings, "preset", "policy")
            continue
        accepted += 1
        assert MnasReward.from_config(tuner.reward.get_config()) == tuner.reward
        if isinstance(kwargs.get("controller"), dict):
            config = ControllerConfig.from_config(kwargs["controller"])
            assert ControllerConfig(**config.get_config()) == config
    assert accepted > COUNT // 5


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"chief_timeout": -1}, ValueError, "`chief_timeout` must be a finite number of seconds >= 0"),
        ({"executions_per_trial": 0}, ValueError, "`executions_per_trial` must be an integer >= 1"),
        (
            {"max_consecutive_failed_trials": 0},
            ValueError,
            "`max_consecutive_failed_trials` must be an integer >= 1",
        ),
        (
            {"max_consecutive_failed_trials": -1},
            ValueError,
            "`max_consecutive_failed_trials` must be an integer >= 1",
        ),
        ({"metric": "val_acc"}, ValueError, r"`metric` must be one the candidates log: one of \['accuracy'"),
        ({"skip_ruled_out": "no"}, TypeError, "`skip_ruled_out` must be True or False; received 'no'"),
        ({"overwrite": "no"}, TypeError, "`overwrite` must be True or False; received 'no'"),
        ({"allow_config_change": "no"}, TypeError, "`allow_config_change` must be True or False"),
        ({"controller": {"units": 10**9}}, ValueError, "`units` must be an integer >= 1 and <= 4096"),
        (
            {"controller": {"temperature": 1e-300}},
            ValueError,
            "`temperature` must be None or a finite number",
        ),
        (
            {"controller": {"init_range": 1e308}},
            ValueError,
            "`init_range` must be a finite number > 0 and <= 10",
        ),
    ],
)
def test_the_tuner_refuses_each_bad_setting_at_construction(tmp_path, kwargs, error, match):
    space = MnasSearchSpace(skeleton=[(1, 8, 1, 1), (6, 8, 1, 2)], fixed_blocks={}, input_shape=(8, 8, 1))
    with pytest.raises(error, match=match):
        MnasTuner(_DeclaresOnly(space), target_latency_ms=1.0, directory=str(tmp_path), **kwargs)
