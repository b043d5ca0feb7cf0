"""The supernet shares its weights: every path, extracted stand-alone, computes what the supernet computes."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_mnas.search.space import MnasSearchSpace
from keras_mnas.search.supernet import Supernet, plan_slots


def tiny_space(**kwargs):
    # Every kind of choice: three op kinds (mbconv1 without expansion among them), two kernels, SE, every
    # skip, three widths and layer counts, and one fixed block whose input width follows the search.
    settings = dict(
        fixed_blocks={0: "r1_k3_s11_e1_i8_o8_noskip"},
        conv_ops=("conv", "dconv", "mbconv1", "mbconv3", "mbconv6"),
        input_shape=(16, 16, 3),
        classes=4,
        stem_filters=8,
        head_filters=32,
    )
    settings.update(kwargs)
    return MnasSearchSpace(((1, 8, 1, 1), (6, 16, 2, 2), (6, 24, 2, 1)), **settings)


def extreme_values(space, end):
    """The smallest (`end=0`) or largest (`end=-1`) candidate: every decision at its first or last choice."""
    values = {}
    for index in space.searched_blocks:
        for decision, choices in space._choices().items():
            ordered = sorted(choices) if decision in ("filters", "layers", "kernel", "se") else choices
            values[space.hp_name(index, decision)] = ordered[end]
    return values


def scramble_statistics(model, seed=0):
    """Random BN statistics and biases, so that a weight copied to the wrong place shows."""
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        path = variable.path
        if "moving_variance" in path:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
        elif any(part in path for part in ("moving_mean", "gamma", "beta", "bias")):
            variable.assign(rng.normal(0.2, 0.3, variable.shape).astype("float32"))


@pytest.fixture(scope="module")
def supernet():
    supernet = Supernet(tiny_space())
    scramble_statistics(supernet.model)
    return supernet


def test_every_path_extracts_to_a_standalone_model_with_the_same_outputs(supernet):
    space = supernet.space
    images = np.random.default_rng(1).normal(size=(3, 16, 16, 3)).astype("float32")
    paths = [extreme_values(space, 0), extreme_values(space, -1), *space.sample_values(6, seed=3)]
    for values in paths:
        model = supernet.extract(values)
        assert model.count_params() == space.build(space.architecture(values)).count_params()
        expected = np.asarray(model(images, training=False))
        np.testing.assert_allclose(supernet.predict(images, values), expected, atol=1e-5)


def test_slots_hold_the_largest_sizes_and_trailing_layers_are_optional():
    slots = {slot.name: slot for slot in plan_slots(tiny_space())}
    # Block 2 has 1 to 3 layers (2 - 1 .. 2 + 1): its third layer is optional, its first is not.
    assert [name for name in slots if name.startswith("block2")] == ["block2a", "block2b", "block2c"]
    assert not slots["block2a"].optional and slots["block2c"].optional
    # Widest output of block 2: 16 x 1.25 = 20; mbconv6 of that: 120; kernel 5; SE 0.25 of 20 = 5.
    assert (slots["block2b"].output_filters, slots["block2b"].expanded) == (20, 120)
    assert slots["block2b"].kernel == 5 and slots["block2b"].se_filters == 5
    # A strided first layer can never add an identity residual.
    assert not slots["block2a"].identity and slots["block3a"].identity


def test_a_foreign_architecture_is_refused_by_name():
    supernet = Supernet(tiny_space(layer_deltas=(0,)))
    deeper = tiny_space().architecture({"block2_layers": 1})
    with pytest.raises(ValueError, match="does not have"):
        supernet.encode(deeper)
    with pytest.raises(TypeError, match=r"space.*MnasSearchSpace"):
        Supernet("tiny")


@pytest.mark.skipif(sys.platform == "win32", reason="a subprocess with another Keras backend")
def test_the_supernet_trains_and_shares_weights_on_the_jax_backend(tmp_path):
    pytest.importorskip("jax")
    script = textwrap.dedent(
        """
        import numpy as np, keras
        from keras_mnas.search.space import MnasSearchSpace
        from keras_mnas.search.supernet import Supernet
        assert keras.backend.backend() == "jax"
        space = MnasSearchSpace(((1, 8, 1, 1), (6, 16, 2, 2)), fixed_blocks={}, conv_ops=("dconv", "mbconv3"),
                                input_shape=(16, 16, 3), classes=3, stem_filters=8, head_filters=16)
        supernet = Supernet(space)
        supernet.model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=True)
        rng = np.random.default_rng(0)
        images = rng.normal(size=(4, 16, 16, 3)).astype("float32")
        paths = np.concatenate([supernet.paths(values, 2) for values in space.sample_values(2, seed=1)])
        labels = np.arange(4) % 3
        supernet.model.fit([images, paths], labels, batch_size=2, epochs=1, verbose=0, shuffle=False)
        values = space.sample_values(1, seed=2)[0]
        got = supernet.predict(images, values)
        want = supernet.extract(values).predict(images, verbose=0)
        print("max difference", float(np.abs(got - want).max()))
        # The compiled scorer (jax.jit here) gives the path what the re-estimated candidate computes.
        from keras_mnas.search.one_shot import PathScorer, reestimate_batch_norm
        scored = PathScorer(supernet, images, labels, calibration_batches=1, batch_size=4).score(values)
        model = supernet.extract(values)
        reestimate_batch_norm(model, images, batches=1, batch_size=4)
        print("scorer difference", float(np.abs(scored.predictions - model.predict(images, verbose=0)).max()))
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    difference = float(done.stdout.split("max difference")[-1].split()[0])
    assert difference < 1e-5
    assert float(done.stdout.split("scorer difference")[-1]) < 1e-5
