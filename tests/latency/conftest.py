import pytest

from keras_mnas import tflite as tflite_lib


@pytest.fixture
def count_conversions(monkeypatch):
    """Records the quantization of each `convert_to_tflite` call: every source converts through it."""
    calls = []
    real = tflite_lib.convert_to_tflite

    def counting(model, **kwargs):
        calls.append(kwargs.get("quantization"))
        return real(model, **kwargs)

    monkeypatch.setattr(tflite_lib, "convert_to_tflite", counting)
    return calls
