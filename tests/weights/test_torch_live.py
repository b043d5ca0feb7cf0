"""PyTorch weight import against live timm / torchvision models, built at test time.

Skipped unless torch, timm and torchvision import (they are not test dependencies; the checked-in
fixtures of `test_torch_import.py` cover the import without them). CI (`CI=true`) installs the `torch` extra
and runs them: there a missing package fails instead of skipping. Every model is randomly initialised
with 1000 classes, its BatchNorms are given random statistics and affine parameters, and its eval-mode
logits on a 96 x 96 batch are compared with those of the keras_mnas model loaded from its state dict.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys

import numpy as np
import pytest


def _require(name):
    # CI installs the torch extra, so there a failed import is a broken install, not a reason to skip.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"live PyTorch comparisons need {name}")


# torch's CUDA builds bring triton, whose import crashes the process (segmentation fault) once TensorFlow is
# loaded, as it is when this file runs in the whole suite. These comparisons run on the CPU, without triton:
# torch treats a triton that fails to import as absent.
sys.modules.setdefault("triton", None)
torch = _require("torch")
timm = _require("timm")
torchvision = _require("torchvision")

from keras_mnas import build_model  # noqa: E402
from keras_mnas.weights import (  # noqa: E402
    TORCH_CONVENTIONS,
    load_torch_weights,
    read_torch_state_dict,
)

SIZE = 96


def _load_fixture_script():
    # The BatchNorm randomisation the checked-in fixtures were made with: one recipe for both.
    path = pathlib.Path(__file__).parents[1] / "fixtures" / "torch" / "make_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


perturb_batchnorm = _load_fixture_script().perturb_batchnorm

# name -> (constructor, keras_mnas arch, depth multiplier)
MODELS = {
    "timm/semnasnet_100": (lambda: timm.create_model("semnasnet_100"), "a1", 1.0),
    "timm/mnasnet_100": (lambda: timm.create_model("mnasnet_100"), "b1", 1.0),
    "timm/mnasnet_small": (lambda: timm.create_model("mnasnet_small"), "small", 1.0),
    "torchvision/mnasnet1_0": (lambda: torchvision.models.mnasnet1_0(weights=None), "b1", 1.0),
    "torchvision/mnasnet1_3": (lambda: torchvision.models.mnasnet1_3(weights=None), "b1", 1.3),
}


def _torch_model(name):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    model = MODELS[name][0]()
    perturb_batchnorm(model, generator, input_size=SIZE)
    model.eval()
    x = torch.randn(2, 3, SIZE, SIZE, generator=generator)
    with torch.no_grad():
        logits = model(x)
    return model, x.numpy().transpose(0, 2, 3, 1), logits.numpy()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_live_model_logits_match(name):
    torch_model, inputs, expected = _torch_model(name)
    _, arch, multiplier = MODELS[name]
    model = build_model(
        arch,
        input_shape=(SIZE, SIZE, 3),
        classes=1000,
        depth_multiplier=multiplier,
        classifier_activation=None,
        **TORCH_CONVENTIONS,
    )
    # torch tensors are accepted directly.
    result = load_torch_weights(model, torch_model.state_dict())
    assert result.missing == () and result.unexpected == ()
    outputs = np.asarray(model(inputs, training=False))
    # float32 rounding grows with the logits' magnitude: compare relative to their scale.
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(outputs - expected).max()) <= 1e-4 * scale


def test_reader_matches_torch_load(tmp_path):
    generator = torch.Generator().manual_seed(2)
    base = torch.randn(5, 7, generator=generator)
    tensors = {
        "model": torchvision.models.mnasnet0_5(weights=None).state_dict(),
        "views": {"t": base.t(), "slice": base[1:4, ::3], "b16": base.bfloat16()[2]},
        "half": torch.randn(4, generator=generator).half(),
        "u16": torch.arange(5).to(torch.uint16),  # written with _rebuild_tensor_v3 + UntypedStorage
    }
    path = tmp_path / "mixed.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _flatten(tensors).items()}}, path)
    ours = read_torch_state_dict(path)
    theirs = torch.load(path, weights_only=True)["state_dict"]
    assert list(ours) == [k[len("module.") :] for k in theirs]
    for key, value in theirs.items():
        value = value.float() if value.dtype == torch.bfloat16 else value
        reference = value.numpy()
        mine = ours[key[len("module.") :]]
        assert mine.dtype == reference.dtype and mine.shape == reference.shape, key
        assert np.array_equal(mine, reference), key


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
