"""The build settings recorded in or with Keras weights files (`keras_mnas.weights.saved`)."""

from __future__ import annotations

import pathlib

import keras
import pytest

from keras_mnas import build_model
from keras_mnas.weights import (
    TORCH_CONVENTIONS,
    convert_torch_checkpoint,
    record_build_config,
    saved_build_settings,
)

CHECKPOINT = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "torch" / "timm_mnasnet_small.pth"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    directory = tmp_path_factory.mktemp("converted")
    for suffix in (".weights.h5", ".keras"):
        convert_torch_checkpoint(CHECKPOINT, directory / f"small{suffix}", "small", input_shape=(64, 64, 3))
    return directory


def test_converted_weights_record_every_build_setting(converted):
    settings = saved_build_settings(converted / "small.weights.h5")
    assert settings["padding"] == "symmetric" and settings["bn_epsilon"] == 1e-5
    assert settings["arch"]["name"] == "mnasnet_small"
    assert settings["classes"] == 10 and settings["depth_multiplier"] == 1.0
    # The attribute does not get in Keras' way.
    model = build_model("small", input_shape=(64, 64, 3), classes=10, **TORCH_CONVENTIONS)
    model.load_weights(converted / "small.weights.h5")


def test_keras_files_tell_their_conventions_from_their_layers(converted):
    assert saved_build_settings(converted / "small.keras") == {
        "padding": "symmetric",
        "bn_epsilon": 1e-5,
        "bn_momentum": 0.99,
    }


def test_files_without_a_record(tmp_path):
    plain = build_model("small", input_shape=(64, 64, 3), classes=10)
    plain.save_weights(tmp_path / "plain.weights.h5")
    assert saved_build_settings(tmp_path / "plain.weights.h5") is None  # the defaults: nothing to say
    torch_like = build_model("small", input_shape=(64, 64, 3), classes=10, **TORCH_CONVENTIONS)
    torch_like.save_weights(tmp_path / "torch_like.weights.h5")
    assert saved_build_settings(tmp_path / "torch_like.weights.h5") == {
        "padding": "symmetric",
        "bn_epsilon": None,
        "bn_momentum": None,
    }
    record_build_config(tmp_path / "torch_like.weights.h5", torch_like)
    assert saved_build_settings(tmp_path / "torch_like.weights.h5")["bn_epsilon"] == 1e-5
    inputs = keras.Input((4,))
    other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    other.save(tmp_path / "other.keras")
    assert saved_build_settings(tmp_path / "other.keras") is None  # not a keras-mnas model
    (tmp_path / "garbage.weights.h5").write_bytes(b"not hdf5")
    assert saved_build_settings(tmp_path / "garbage.weights.h5") is None  # left to Keras to report
