import os
import shlex

import pytest

# Quiet TensorFlow's C++ logs in test output; set before any test imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture
def no_real_adb(monkeypatch, tmp_path):
    """Keeps adbutils from starting a real adb server; the returned path exists if it tried.

    adbutils runs `$ADBUTILS_ADB_PATH start-server` when no server answers: point it at a script that only
    leaves a trace.
    """
    marker = tmp_path / "adb-was-started"
    script = tmp_path / "fake-adb"
    script.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(marker))}\n")
    script.chmod(0o755)
    monkeypatch.setenv("ADBUTILS_ADB_PATH", str(script))
    return marker
