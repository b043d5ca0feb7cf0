"""PyTorch weight import against checked-in timm / torchvision fixtures: runs without torch.

The fixtures are written by `tests/fixtures/torch/make_fixtures.py` (random weights, perturbed
BatchNorms, 10 classes, the PyTorch eval-mode logits of a seeded 2 x 3 x 64 x 64 batch).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import pickle
import struct
import warnings
import zipfile

import numpy as np
import pytest

from keras_mnas import build_model
from keras_mnas.weights import (
    TORCH_CONVENTIONS,
    TorchConventionWarning,
    UnsafeCheckpointError,
    convert_torch_checkpoint,
    load_torch_weights,
    read_torch_state_dict,
    torch_build_kwargs,
)

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "torch"
MANIFEST = json.loads((FIXTURES / "versions.json").read_text())
CASES = sorted(MANIFEST["models"])
TOLERANCE = 1e-4


def _build(arch, depth_multiplier, *, classes=10, include_top=True, **kwargs):
    options = {**TORCH_CONVENTIONS, **kwargs}
    return build_model(
        arch,
        input_shape=(64, 64, 3),
        classes=classes,
        include_top=include_top,
        depth_multiplier=depth_multiplier,
        classifier_activation=None,
        include_preprocessing=False,
        **options,
    )


@functools.cache
def _state(checkpoint: str) -> dict[str, np.ndarray]:
    return read_torch_state_dict(FIXTURES / checkpoint)


def _case(name):
    case = MANIFEST["models"][name]
    io = np.load(FIXTURES / case["io"])
    inputs = io["inputs"].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    return case, inputs, io["logits"]


def _max_diff(model, inputs, expected):
    return float(np.max(np.abs(np.asarray(model(inputs, training=False)) - expected)))


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


# -- outputs match PyTorch ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_fixture_logits_match_pytorch(name):
    case, inputs, expected = _case(name)
    model = _build(case["arch"], case["depth_multiplier"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TorchConventionWarning)  # the conventions are followed
        result = load_torch_weights(model, FIXTURES / case["checkpoint"])
    assert result.flavour == ("torchvision" if name.startswith("torchvision") else "timm")
    assert result.missing == () and result.unexpected == ()
    assert len(result.loaded) == len([layer for layer in model.layers if layer.weights])
    assert _max_diff(model, inputs, expected) <= TOLERANCE


def test_wrapped_and_dataparallel_state_dict_loads():
    case, inputs, expected = _case("timm_semnasnet_050")
    state = _state(case["checkpoint"])
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    model = _build(case["arch"], case["depth_multiplier"])
    load_torch_weights(model, wrapped)
    assert _max_diff(model, inputs, expected) <= TOLERANCE


def test_conventions_warning_names_the_fix():
    case, _, _ = _case("timm_mnasnet_small")
    model = build_model(case["arch"], input_shape=(64, 64, 3), classes=10)  # 'same', eps 1e-3
    with pytest.warns(TorchConventionWarning, match=r"padding='symmetric', bn_epsilon=1e-5"):
        load_torch_weights(model, _state(case["checkpoint"]))
    assert torch_build_kwargs() == TORCH_CONVENTIONS == {"padding": "symmetric", "bn_epsilon": 1e-5}
    assert torch_build_kwargs() is not TORCH_CONVENTIONS


# -- mismatches are clear errors ----------------------------------------------------------------------


def test_wrong_depth_multiplier_names_key_and_shapes():
    case, _, _ = _case("timm_semnasnet_050")
    model = _build("a1", 1.0)
    before = _weights(model)
    with pytest.raises(ValueError) as info:
        load_torch_weights(model, _state(case["checkpoint"]))
    message = str(info.value)
    for part in ("'conv_stem.weight'", "(16, 3, 3, 3)", "'stem_conv'", "(3, 3, 3, 32)", "depth_multiplier"):
        assert part in message
    # Every shape is checked before anything is written.
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model), strict=True))


def test_wrong_architecture_names_key_and_shapes():
    case, _, _ = _case("timm_semnasnet_050")
    model = _build("b1", 0.5)  # B1 expands block 2 by 3 where A1 expands by 6
    with pytest.raises(ValueError, match="architecture") as info:
        load_torch_weights(model, _state(case["checkpoint"]))
    message = str(info.value)
    for part in ("'blocks.1.0.conv_pw.weight'", "(48, 8, 1, 1)", "'block2a_expand_conv'", "(1, 1, 8, 24)"):
        assert part in message


def test_wrong_classes_names_the_classifier():
    case, _, _ = _case("torchvision_mnasnet0_5")
    model = _build(case["arch"], case["depth_multiplier"], classes=1000)
    with pytest.raises(ValueError, match=r"'classifier\.1\.weight'.*\(10, 1280\).*'predictions'"):
        load_torch_weights(model, _state(case["checkpoint"]), strict=False)


def test_wrong_flavour_layout_is_refused():
    # A torchvision B1 checkpoint has no squeeze-and-excitation: an A1 model cannot take it.
    case, _, _ = _case("torchvision_mnasnet0_5")
    with pytest.raises(ValueError, match="architecture"):
        load_torch_weights(_build("a1", 0.5), _state(case["checkpoint"]))


def test_unrecognised_checkpoint():
    with pytest.raises(ValueError, match=r"conv_stem\.weight.*layers\.0\.weight"):
        load_torch_weights(_build("small", 1.0), {"features.0.weight": np.zeros((3,))})


def test_strict_unexpected_keys_and_include_top_false():
    case, inputs, _ = _case("timm_mnasnet_small")
    state = _state(case["checkpoint"])
    features = _build(case["arch"], 1.0, include_top=False)
    with pytest.raises(ValueError, match=r"unused: \['classifier.bias', 'classifier.weight'\]"):
        load_torch_weights(features, state)
    result = load_torch_weights(features, state, strict=False)
    assert result.unexpected == ("classifier.bias", "classifier.weight")
    assert result.missing == ()
    # The features are those of the full model.
    import keras

    full = _build(case["arch"], 1.0)
    load_torch_weights(full, state)
    full_features = keras.Model(full.input, full.get_layer("top_activation").output)
    np.testing.assert_allclose(
        np.asarray(features(inputs)), np.asarray(full_features(inputs)), rtol=0, atol=1e-6
    )


def test_strict_missing_keys():
    case, _, _ = _case("timm_semnasnet_050")
    state = dict(_state(case["checkpoint"]))
    del state["blocks.2.0.se.conv_reduce.bias"]
    model = _build(case["arch"], case["depth_multiplier"])
    with pytest.raises(ValueError, match=r"'block3a_se_reduce'.*'blocks\.2\.0\.se\.conv_reduce\.bias'"):
        load_torch_weights(model, state)
    result = load_torch_weights(model, state, strict=False)
    assert result.missing == ("block3a_se_reduce",)
    assert result.unexpected == ("blocks.2.0.se.conv_reduce.weight",)


# -- the .pth reader ----------------------------------------------------------------------------------


def test_pth_reader_matches_reference_values():
    state = read_torch_state_dict(FIXTURES / "reader_tensors.pth")
    expected = np.load(FIXTURES / "reader_tensors.npz")
    assert sorted(state) == sorted(expected.files)
    for key in expected.files:
        value = state[key]
        assert value.dtype == expected[key].dtype and value.shape == expected[key].shape, key
        assert np.array_equal(value, expected[key]), key
        assert value.flags.c_contiguous and value.flags.owndata and value.dtype.isnative, key
    assert state["scalar_int64"].shape == () and state["scalar_int64"] == 7
    assert state["bfloat16"].dtype == np.float32


def test_pth_and_safetensors_read_the_same():
    from_pth = read_torch_state_dict(FIXTURES / "reader_tensors.pth")
    from_safetensors = read_torch_state_dict(FIXTURES / "reader_tensors.safetensors")
    assert sorted(from_safetensors) == sorted(k for k in from_pth if k != "bfloat16")
    for key, value in from_safetensors.items():
        assert value.dtype == from_pth[key].dtype and np.array_equal(value, from_pth[key]), key


def test_pth_reader_unwraps_training_checkpoints():
    state = read_torch_state_dict(FIXTURES / "reader_wrapped.pth")
    reference = read_torch_state_dict(FIXTURES / "reader_tensors.pth")
    assert list(state) == ["float32", "conv_weight", "scalar_int64"]
    for key, value in state.items():
        assert np.array_equal(value, reference[key])


def test_model_checkpoint_pth_reads_like_a_state_dict():
    state = _state("timm_mnasnet_small.pth")
    assert state["conv_stem.weight"].shape == (8, 3, 3, 3)
    assert state["bn1.num_batches_tracked"].shape == () and state["bn1.num_batches_tracked"] == 7
    assert all(v.dtype == np.float32 for k, v in state.items() if "num_batches" not in k)


def test_bfloat16_safetensors_are_widened(tmp_path):
    # safetensors.numpy cannot represent bfloat16: the reader parses such files itself.
    values = np.array([[1.0, -2.5, 3.140625], [0.0, 2.0**-10, 65280.0]], dtype=np.float32)
    words = (values.view(np.uint32) >> 16).astype("<u2")  # exact: these values fit in bfloat16
    counts = np.array([7], dtype="<i8")
    header = {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
        "n": {"dtype": "I64", "shape": [], "data_offsets": [12, 20]},
    }
    text = json.dumps(header).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + words.tobytes() + counts.tobytes())
    state = read_torch_state_dict(path)
    assert state["w"].dtype == np.float32  # also when ml_dtypes (imported by TF) defines bfloat16
    np.testing.assert_array_equal(state["w"], values)
    assert state["n"].shape == () and state["n"] == 7


def test_legacy_and_unknown_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="legacy"):
        read_torch_state_dict(FIXTURES / "reader_legacy.pth")
    other = tmp_path / "notes.pth"
    other.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="neither"):
        read_torch_state_dict(other)
    with pytest.raises(FileNotFoundError):
        read_torch_state_dict(tmp_path / "missing.pth")
    archive = tmp_path / "other.zip.pth"
    with zipfile.ZipFile(archive, "w") as file:
        file.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match=r"data\.pkl"):
        read_torch_state_dict(archive)


# Hand-written pickles: the reader must parse what torch writes, and refuse what it must not run.


def _torch_zip(path, pickle_bytes, storages=None, byteorder="little"):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        if byteorder:
            archive.writestr("archive/byteorder", byteorder)
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
    return path


class _Opcodes:
    """Just enough pickle opcodes to write torch's tensor records by hand."""

    @staticmethod
    def glob(module, name):
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    @staticmethod
    def text(value):
        data = value.encode()
        return b"X" + struct.pack("<I", len(data)) + data

    @staticmethod
    def int(value):
        return b"J" + struct.pack("<i", value)

    @classmethod
    def ints(cls, values):
        return b"(" + b"".join(cls.int(v) for v in values) + b"t"

    @classmethod
    def tensor(cls, storage_type, key, numel, offset, size, stride, rebuild="_rebuild_tensor_v2", extra=b""):
        persistent = (
            b"("
            + cls.text("storage")
            + cls.glob(*storage_type)
            + cls.text(key)
            + cls.text("cpu")
            + cls.int(numel)
            + b"tQ"
        )
        hooks = cls.glob("collections", "OrderedDict") + b")R"
        return (
            cls.glob("torch._utils", rebuild)
            + b"("
            + persistent
            + cls.int(offset)
            + cls.ints(size)
            + cls.ints(stride)
            + b"\x89"  # False: requires_grad
            + hooks
            + extra
            + b"tR"
        )

    @classmethod
    def state_dict(cls, entries):
        body = b"".join(cls.text(key) + value for key, value in entries.items())
        return b"\x80\x02}(" + body + b"u."


def test_hand_written_pickle_with_views_untyped_storage_and_big_endian(tmp_path):
    ops = _Opcodes
    values = np.arange(12, dtype=np.float32)
    words = np.array([1, 2, 65535], dtype=np.uint16)
    pickled = ops.state_dict(
        {
            # A 2 x 3 view at offset 1 with strides (4, 2) of a 12-element storage.
            "view": ops.tensor(("torch", "FloatStorage"), "0", 12, 1, (2, 3), (4, 2)),
            # torch >= 2 writes newer dtypes as an untyped byte storage plus a torch dtype.
            "uint16": ops.tensor(
                ("torch", "UntypedStorage"),
                "1",
                6,
                0,
                (3,),
                (1,),
                "_rebuild_tensor_v3",
                ops.glob("torch", "uint16"),
            ),
        }
    )
    little = _torch_zip(tmp_path / "little.pth", pickled, {"0": values.tobytes(), "1": words.tobytes()})
    big = _torch_zip(
        tmp_path / "big.pth",
        pickled,
        {"0": values.astype(">f4").tobytes(), "1": words.astype(">u2").tobytes()},
        byteorder="big",
    )
    for path in (little, big):
        state = read_torch_state_dict(path)
        # element [i, j] is values[1 + 4 * i + 2 * j]
        np.testing.assert_array_equal(state["view"], np.array([[1, 3, 5], [5, 7, 9]], np.float32))
        np.testing.assert_array_equal(state["uint16"], words)
        assert all(v.dtype.isnative for v in state.values())


def test_out_of_bounds_strides_are_refused(tmp_path):
    ops = _Opcodes
    pickled = ops.state_dict({"w": ops.tensor(("torch", "FloatStorage"), "0", 4, 0, (4,), (1000,))})
    path = _torch_zip(tmp_path / "corrupt.pth", pickled, {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(pickle.UnpicklingError, match="corrupt"):
        read_torch_state_dict(path)
    short = _torch_zip(
        tmp_path / "short.pth",
        ops.state_dict({"w": ops.tensor(("torch", "FloatStorage"), "0", 400, 0, (4,), (1,))}),
        {"0": np.zeros(4, np.float32).tobytes()},
    )
    with pytest.raises(ValueError, match="bytes"):
        read_torch_state_dict(short)


class _Payload:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "nested", "storage_type"])
def test_malicious_pickles_are_refused_without_running(tmp_path, payload):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    if payload == "os.system":
        pickled = pickle.dumps(_Payload(os.system, command), protocol=2)
        refused = "system"
    elif payload == "builtins.exec":
        code = f"open({str(marker)!r}, 'w').close()"
        pickled = pickle.dumps(_Payload(exec, code), protocol=2)
        refused = "exec"  # pickle protocol 2 spells builtins '__builtin__'
    elif payload == "nested":  # hidden among legitimate tensors
        ops = _Opcodes
        evil = pickle.dumps(_Payload(os.system, command), protocol=2)[2:-1]  # drop PROTO and STOP
        pickled = ops.state_dict(
            {"w": ops.tensor(("torch", "FloatStorage"), "0", 4, 0, (4,), (1,)), "evil": evil}
        )
        refused = "system"
    else:  # a global smuggled in where torch puts its storage class
        ops = _Opcodes
        pickled = ops.state_dict({"w": ops.tensor(("os", "system"), "0", 4, 0, (4,), (1,))})
        refused = "os.system"
    path = _torch_zip(tmp_path / "evil.pth", pickled, {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(UnsafeCheckpointError, match=refused) as info:
        read_torch_state_dict(path)
    assert "never runs code" in str(info.value)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        load_torch_weights(None, path)  # refused before the model is looked at


def test_tf_keras_models_load():
    pytest.importorskip("tf_keras", reason="framework='tf_keras' needs the tf_keras package")
    case, inputs, expected = _case("timm_mnasnet_small")
    model = _build(case["arch"], 1.0, framework="tf_keras")
    load_torch_weights(model, _state(case["checkpoint"]))
    assert _max_diff(model, inputs, expected) <= TOLERANCE


# -- conversion ---------------------------------------------------------------------------------------


def test_convert_torch_checkpoint_round_trips(tmp_path):
    case, inputs, expected = _case("timm_mnasnet_small")
    source = FIXTURES / case["checkpoint"]
    model = convert_torch_checkpoint(
        source, tmp_path / "out" / "small.weights.h5", case["arch"], input_shape=(64, 64, 3)
    )
    assert model.get_layer("predictions").units == 10  # inferred from the classifier
    assert _max_diff(model, inputs, expected) <= TOLERANCE
    fresh = _build(case["arch"], 1.0)
    fresh.load_weights(tmp_path / "out" / "small.weights.h5")
    assert _max_diff(fresh, inputs, expected) <= TOLERANCE


def test_convert_torch_checkpoint_to_keras_file(tmp_path):
    import keras

    case, inputs, expected = _case("timm_mnasnet_small")
    source = FIXTURES / case["checkpoint"]
    convert_torch_checkpoint(source, tmp_path / "small.keras", case["arch"], input_shape=(64, 64, 3))
    restored = keras.models.load_model(tmp_path / "small.keras")
    assert _max_diff(restored, inputs, expected) <= TOLERANCE

    with pytest.raises(ValueError, match=r"'\.weights\.h5' or '\.keras'"):
        convert_torch_checkpoint(source, tmp_path / "small.h5", case["arch"])
    with pytest.raises(ValueError, match="padding"):
        convert_torch_checkpoint(source, tmp_path / "x.keras", case["arch"], padding="same")


def test_skip_classifier_sets_aside_the_classifier_only():
    case, _, _ = _case("timm_mnasnet_small")
    state = _state(case["checkpoint"])
    features = _build(case["arch"], 1.0, include_top=False)
    result = load_torch_weights(features, state, skip_classifier=True)
    assert result.missing == () and result.unexpected == ()
    # Still strict everywhere else: a feature layer without weights is refused.
    partial = {k: v for k, v in state.items() if not k.startswith("conv_head.")}
    with pytest.raises(ValueError, match=r"'top_conv'.*'conv_head\.weight'"):
        load_torch_weights(_build(case["arch"], 1.0, include_top=False), partial, skip_classifier=True)
    # torchvision's classifier is classifier.1.
    tv_case, _, _ = _case("torchvision_mnasnet0_5")
    tv_features = _build(tv_case["arch"], tv_case["depth_multiplier"], include_top=False)
    tv_result = load_torch_weights(tv_features, _state(tv_case["checkpoint"]), skip_classifier=True)
    assert tv_result.unexpected == () and tv_result.missing == ()
