import json
import pathlib

import keras
import numpy as np
import pytest

from keras_mnas import applications
from keras_mnas.architecture import ARCHITECTURES
from keras_mnas.builder import IMAGENET_MEAN, IMAGENET_STD
from keras_mnas.weights import convert_torch_checkpoint


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize(
    "constructor, kwargs, expected",
    [
        (applications.MnasNetA1, {}, 3_887_038),
        (applications.MnasNetB1, {}, 4_383_312),
        (applications.MnasNetSmall, {}, 2_030_264),
        (applications.MnasNetD1, {}, 3_638_404),
        (applications.MnasNetD1_320, {}, 6_932_240),
        (applications.MnasNetA1, {"depth_multiplier": 0.75}, 2_912_278),
        (applications.MnasNetA1, {"depth_multiplier": 1.4}, 6_105_992),
        (applications.MnasNetB1, {"depth_multiplier": 0.5}, 2_218_512),
    ],
)
def test_reference_models_have_the_published_parameter_counts(constructor, kwargs, expected):
    model = constructor(**kwargs)
    assert model.input.shape == (None, 224, 224, 3)
    assert model.output.shape == (None, 1000)
    assert _trainable(model) == expected


def test_generic_constructor_takes_a_searched_architecture():
    searched = {
        "name": "searched",
        "blocks": [
            "r1_k3_s11_i16_o16_dconv",
            "r2_k5_s22_e3_i16_o24_se0.25_poolskip",
            "r1_k3_s22_i24_o32_conv",
        ],
        "stem_filters": 16,
        "head_filters": 1280,
        "dropout_rate": 0.1,
    }
    model = applications.MnasNet(searched, input_shape=(64, 64, 3), classes=10, depth_multiplier=0.5)
    assert model.name == "searched"
    assert model.output.shape == (None, 10)
    assert model.get_layer("top_dropout").rate == 0.1
    x = np.random.RandomState(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    assert model.predict(x, verbose=0).shape == (2, 10)


def test_feature_extraction_contract():
    model = applications.MnasNetSmall(include_top=False, input_shape=(96, 96, 3))
    assert model.output.shape == (None, 3, 3, 1280)
    pooled = applications.MnasNetSmall(include_top=False, pooling="avg", input_shape=(96, 96, 3))
    assert pooled.output.shape == (None, 1280)
    flexible = applications.MnasNetSmall(include_top=False, input_shape=(None, None, 3))
    assert flexible.output.shape == (None, None, None, 1280)
    tensor = keras.Input((128, 128, 3))
    model = applications.MnasNetSmall(input_tensor=tensor, classes=4, classifier_activation=None)
    assert model.input.shape == (None, 128, 128, 3)
    assert model.get_layer("predictions").activation is keras.activations.linear


def test_preprocessing_is_inside_the_model():
    raw = np.random.RandomState(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    with_pre = applications.MnasNetSmall(input_shape=(64, 64, 3), classes=3)
    without = applications.MnasNetSmall(input_shape=(64, 64, 3), classes=3, include_preprocessing=False)
    without.set_weights(with_pre.get_weights())
    np.testing.assert_allclose(
        with_pre.predict(applications.preprocess_input(raw), verbose=0),
        without.predict(applications.normalize_input(raw), verbose=0),
        atol=1e-5,
    )


def test_preprocessing_defaults_on_for_rgb_only():
    # ImageNet's per-channel statistics fit RGB inputs only: grey images build without them by default.
    grey = applications.MnasNet("small", input_shape=(32, 32, 1), classes=10)
    assert "rescaling" not in [layer.name for layer in grey.layers]
    assert grey.input.shape == (None, 32, 32, 1)
    rgb = applications.MnasNetSmall(input_shape=(32, 32, 3), classes=10)
    assert "rescaling" in [layer.name for layer in rgb.layers]
    tensor_rgb = applications.MnasNetSmall(input_tensor=keras.Input((32, 32, 3)), classes=10)
    assert "rescaling" in [layer.name for layer in tensor_rgb.layers]
    # Asking for it explicitly on grey inputs is still an error that says why.
    with pytest.raises(ValueError, match="needs 3 input channels; received 1"):
        applications.MnasNetSmall(input_shape=(32, 32, 1), include_preprocessing=True)


def test_keras_weights_round_trip(tmp_path):
    model = applications.MnasNetSmall(input_shape=(64, 64, 3), classes=3)
    path = tmp_path / "small.weights.h5"
    model.save_weights(path)
    restored = applications.MnasNetSmall(input_shape=(64, 64, 3), classes=3, weights=str(path))
    x = np.random.RandomState(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), restored.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": "imagenet"}, "does not download pretrained weights"),
        ({"weights": "/nonexistent/w.weights.h5"}, "does not exist"),
        ({"input_shape": (224, 224)}, r"input_shape must be a tuple \(height, width, channels\)"),
        ({"input_shape": (16, 16, 3)}, "integer >= 32"),
        ({"input_shape": (224, 224, 0)}, "channels must be a positive integer"),
        ({"pooling": "mean", "include_top": False}, "pooling must be one of"),
        ({"classes": 0}, "classes must be a positive integer"),
        ({"depth_multiplier": -1}, "depth_multiplier must be a positive number"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        applications.MnasNetA1(**kwargs)


def test_unknown_weights_file_type(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="Unrecognised weights file"):
        applications.MnasNetA1(weights=str(path))


def test_decode_predictions_works_offline():
    preds = np.zeros((2, 1000), "float32")
    preds[0, 1] = 0.9  # goldfish
    preds[1, 999] = 0.8  # toilet tissue
    decoded = applications.decode_predictions(preds, top=3)
    assert decoded[0][0] == ("n01443537", "goldfish", pytest.approx(0.9))
    assert decoded[1][0][:2] == ("n15075141", "toilet_tissue")
    assert len(decoded[0]) == 3
    with pytest.raises(ValueError, match=r"\(samples, 1000\)"):
        applications.decode_predictions(np.zeros((2, 10)))


def test_constructors_document_their_architecture():
    assert applications.MnasNetA1.__name__ == "MnasNetA1"
    assert ARCHITECTURES["a1"].block_strings[2] in applications.MnasNetA1.__doc__


def test_pytorch_checkpoint_through_the_weights_argument():
    # A timm checkpoint (random weights, 10 classes, made by tests/fixtures/torch/make_fixtures.py):
    # weights=<path> builds with PyTorch's conventions and reproduces the PyTorch logits.
    import pathlib

    fixtures = pathlib.Path(__file__).parents[1] / "fixtures" / "torch"
    reference = np.load(fixtures / "timm_semnasnet_050.npz")
    model = applications.MnasNetA1(
        weights=str(fixtures / "timm_semnasnet_050.safetensors"),
        input_shape=(64, 64, 3),
        classes=10,
        depth_multiplier=0.5,
        classifier_activation=None,
        include_preprocessing=False,
    )
    assert model.get_layer("stem_conv_pad") is not None  # symmetric padding, as PyTorch pads
    logits = model.predict(reference["inputs"].transpose(0, 2, 3, 1), verbose=0)
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-4)


def test_input_tensor_from_unnamed_preprocessing_layers():
    # keras.applications.MobileNetV3Small takes this: unnamed layers are called "rescaling" and
    # "normalization", the names of the model's own preprocessing layers.
    inputs = keras.Input((64, 64, 3))
    tensor = keras.layers.Normalization(mean=0.0, variance=1.0)(keras.layers.Rescaling(1.0)(inputs))
    model = applications.MnasNetSmall(input_tensor=tensor, classes=3)
    assert model.input is inputs
    reference = applications.MnasNetSmall(input_shape=(64, 64, 3), classes=3)
    reference.set_weights(model.get_weights())
    x = np.random.RandomState(3).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    "input_shape, allowed",
    [((224, 224, 3), False), ((160, 160, 1), False), ((160, 160, 3), True), ((None, None, 3), True)],
)
def test_input_shape_must_agree_with_input_tensor(input_shape, allowed):
    # As keras.applications: the model is built on input_tensor, so a different input_shape is an error.
    tensor = keras.Input((160, 160, 3))
    if allowed:
        model = applications.MnasNetSmall(input_tensor=tensor, input_shape=input_shape)
        assert model.input.shape == (None, 160, 160, 3)
    else:
        match = r"input_shape must match the shape of input_tensor.*\(160, 160, 3\)"
        with pytest.raises(ValueError, match=match):
            applications.MnasNetSmall(input_tensor=tensor, input_shape=input_shape)


@pytest.mark.parametrize(
    "tensor, match",
    [
        (lambda: keras.Input((16, 16, 3)), r"input_tensor height must be None or an integer >= 32"),
        (lambda: keras.Input((64, 64)), r"input_tensor must be a 4D tensor.*\(None, 64, 64\)"),
    ],
)
def test_bad_input_tensor_gets_a_clear_error(tensor, match):
    with pytest.raises(ValueError, match=match):
        applications.MnasNetSmall(input_tensor=tensor())


def _b1_with_block6_repeats(repeats):
    blocks = list(ARCHITECTURES["b1"].block_strings)
    assert blocks[5].startswith("r4_")
    blocks[5] = f"r{repeats}_" + blocks[5].split("_", 1)[1]
    return blocks


@pytest.mark.parametrize("repeats, match", [(5, r"have no weights in the checkpoint"), (3, r"are unused")])
def test_include_top_false_skips_only_the_classifier(repeats, match):
    # A torchvision B1 checkpoint (width 0.5): 4 layers in block 6. With 5, one layer would stay random;
    # with 3, one layer's weights would be dropped. Both are refused, with or without the top.
    import pathlib

    checkpoint = pathlib.Path(__file__).parents[1] / "fixtures" / "torch" / "torchvision_mnasnet0_5.pth"
    for include_top in (False, True):
        with pytest.raises(ValueError, match=match):
            applications.MnasNet(
                _b1_with_block6_repeats(repeats),
                include_top=include_top,
                weights=str(checkpoint),
                input_shape=(64, 64, 3),
                classes=10,
                depth_multiplier=0.5,
            )
    features = applications.MnasNetB1(
        include_top=False, weights=str(checkpoint), input_shape=(64, 64, 3), depth_multiplier=0.5
    )
    full = applications.MnasNetB1(
        weights=str(checkpoint), input_shape=(64, 64, 3), classes=10, depth_multiplier=0.5
    )
    x = np.random.RandomState(4).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    full_features = keras.Model(full.input, full.get_layer("top_activation").output)
    np.testing.assert_allclose(features.predict(x, verbose=0), full_features.predict(x, verbose=0), atol=1e-5)


FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "torch"


def _fixture(name):
    case = json.loads((FIXTURES / "versions.json").read_text())["models"][name]
    reference = np.load(FIXTURES / case["io"])
    return case, reference["inputs"].transpose(0, 2, 3, 1), reference["logits"]


@pytest.mark.parametrize(
    "name, suffix",
    [
        ("timm_semnasnet_050", ".weights.h5"),
        ("torchvision_mnasnet0_5", ".keras"),
        ("timm_mnasnet_small", ".weights.h5"),
    ],
)
def test_a_converted_checkpoint_loads_through_the_weights_argument(tmp_path, name, suffix):
    # convert_torch_checkpoint builds with PyTorch's padding and BatchNorm epsilon; the constructor reads
    # them back from the file, so the logits are PyTorch's and not off by several units.
    case, inputs, expected = _fixture(name)
    path = tmp_path / f"{name}{suffix}"
    convert_torch_checkpoint(
        FIXTURES / case["checkpoint"],
        path,
        case["arch"],
        depth_multiplier=case["depth_multiplier"],
        input_shape=(64, 64, 3),
    )
    model = applications.MnasNet(
        case["arch"],
        weights=str(path),
        input_shape=(64, 64, 3),
        classes=10,
        depth_multiplier=case["depth_multiplier"],
        classifier_activation=None,
        include_preprocessing=False,
    )
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, atol=1e-4)
    # With its own preprocessing, the model takes the same images in [0, 255].
    raw = (inputs * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)) * 255.0
    with_preprocessing = applications.MnasNet(
        case["arch"],
        weights=str(path),
        input_shape=(64, 64, 3),
        classes=10,
        depth_multiplier=case["depth_multiplier"],
        classifier_activation=None,
    )
    np.testing.assert_allclose(with_preprocessing.predict(raw, verbose=0), expected, atol=1e-4)


def test_weights_files_that_cannot_rebuild_their_model_are_refused(tmp_path):
    case, _, _ = _fixture("timm_semnasnet_050")
    converted = tmp_path / "a1.weights.h5"
    model = convert_torch_checkpoint(
        FIXTURES / case["checkpoint"], converted, "a1", depth_multiplier=0.5, input_shape=(64, 64, 3)
    )
    small = {"input_shape": (64, 64, 3), "classes": 10}
    # Another architecture or width than the file's: named, with what the file holds.
    with pytest.raises(ValueError, match=r"'mnasnet_a1' model at depth_multiplier=0\.5.*'mnasnet_b1'"):
        applications.MnasNetB1(weights=str(converted), depth_multiplier=0.5, **small)
    with pytest.raises(ValueError, match=r"depth_multiplier=0\.5.*depth_multiplier=1\.0"):
        applications.MnasNetA1(weights=str(converted), **small)
    with pytest.raises(ValueError, match=r"classifier of 10 classes; received classes=1000"):
        applications.MnasNetA1(weights=str(converted), depth_multiplier=0.5)
    # Keras' save_weights of a model with PyTorch's padding does not say its BatchNorm epsilon.
    resaved = tmp_path / "resaved.weights.h5"
    model.save_weights(resaved)
    with pytest.raises(ValueError, match=r"symmetric padding but does not record its BatchNorm epsilon"):
        applications.MnasNetA1(weights=str(resaved), depth_multiplier=0.5, **small)
