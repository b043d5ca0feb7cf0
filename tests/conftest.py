import fcntl
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Lets a test marked ``exclusive_cpu`` run while no other test does.

    The suite runs on two pytest-xdist workers; a test whose assertion is about timing (a latency table
    against a re-measurement, a trial deadline) can fail when the other worker starts a training in the
    middle of it. Every test, from its fixtures' setup to their teardown, holds a shared lock on a file both
    workers see; a marked test holds it exclusively. A turnstile lock, held by a marked test from before it
    waits until it ends, keeps the other worker from starting new tests meanwhile, so the marked test does
    not wait forever. A run without xdist has one test at a time already.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return (yield)
    # Each worker's base temp directory is a child of one directory of this run's own.
    shared = item.config._tmp_path_factory.getbasetemp().parent
    exclusive = item.get_closest_marker("exclusive_cpu") is not None
    with (
        open(shared / "keras-mnas-turnstile.lock", "a") as turnstile,
        open(shared / "keras-mnas-cpu.lock", "a") as cpu,
    ):
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if exclusive:
            fcntl.flock(cpu, fcntl.LOCK_EX)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(cpu, fcntl.LOCK_SH)
        try:
            return (yield)
        finally:
            fcntl.flock(cpu, fcntl.LOCK_UN)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
