"""`examples/search_digits.py` as a new user runs it: twice, in fresh interpreters, with tiny settings.

The first run searches two architectures for one epoch each; the second, with the same arguments, must
resume: read the target latency back, train nothing, and export again. Both start without TensorFlow's
start-up lines. The runs' printed lines, read as they arrive, show the progress a user sees.
"""

import itertools
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_mnas.builder import build_model
from keras_mnas.search.tuner import chance_threshold
from keras_mnas.utils.quiet import STARTUP_LINE

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = REPOSITORY / "examples" / "search_digits.py"
# The lines TensorFlow 2.21 prints at start-up when left alone, named by what they say.
NOISE = re.compile(r"oneDNN|cuda|cuInit|cpu_feature_guard|absl::InitializeLog", re.IGNORECASE)
TRIAL_LINE = re.compile(
    r"Trial (\d+) COMPLETED \(trial (\d+) of 2\) in ([\d a-z]+); ([\d a-z]+) elapsed, "
    r"(about [\d a-z]+ left|the last trial)"
)


def fresh_env():
    """The environment of a user's shell: this checkout's keras_mnas, no log level of their own."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # conftest sets it
    return {**env, "PYTHONPATH": str(REPOSITORY), "PYTHONUNBUFFERED": "1"}


def run_timed(argv, cwd):
    """Runs a command; returns (status, [(seconds since start, stdout line)], stderr)."""
    start = time.monotonic()
    process = subprocess.Popen(
        argv, cwd=cwd, env=fresh_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = [(time.monotonic() - start, line.rstrip("\n")) for line in process.stdout]
    stderr = process.stderr.read()
    status = process.wait(timeout=600)
    lines.append((time.monotonic() - start, "<exit>"))
    return status, lines, stderr


def seconds(duration):
    """ "1 min 05 s" -> 65."""
    total = 0
    for value, unit in re.findall(r"(\d+) (h|min|s)\b", duration):
        total += int(value) * {"h": 3600, "min": 60, "s": 1}[unit]
    return total


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("example")
    argv = [sys.executable, str(EXAMPLE), "--trials", "2", "--epochs", "1", "--directory", str(directory)]
    first = run_timed(argv, directory)
    assert first[0] == 0, first[2]
    checkpoints = {p: p.stat().st_mtime_ns for p in directory.glob("digits/trial_*/*")}
    second = run_timed(argv, directory)
    return {"directory": directory, "first": first, "second": second, "checkpoints": checkpoints}


def text(lines):
    return "\n".join(line for _, line in lines)


def test_a_rerun_resumes_the_search_without_training_anything(runs):
    status, lines, stderr = runs["second"]
    assert status == 0, stderr
    out = text(lines)
    assert "Refusing to resume" not in stderr
    assert "as measured when this search began" in out  # the target is read back, not measured again
    assert not TRIAL_LINE.search(out) and "Trial " not in out  # no trial ran
    # The trials' files are those of the first run: nothing was retrained or rewritten.
    files = runs["directory"].glob("digits/trial_*/*")
    assert {p: p.stat().st_mtime_ns for p in files} == runs["checkpoints"]
    first = text(runs["first"][1])
    pareto = lambda out: out[out.index("Pareto front") : out.index("Best architecture")]  # noqa: E731
    assert pareto(out) == pareto(first)


def test_the_example_and_the_command_start_without_tensorflow_chatter(runs):
    for key in ("first", "second"):
        stderr = runs[key][2]
        assert not [line for line in stderr.splitlines() if NOISE.search(line) or STARTUP_LINE.match(line)]
    tflite = runs["directory"] / "digits" / "best.tflite"
    status, lines, stderr = run_timed([sys.executable, "-m", "keras_mnas", "bench", str(tflite)], REPOSITORY)
    assert status == 0, stderr
    assert not [line for line in stderr.splitlines() if NOISE.search(line) or STARTUP_LINE.match(line)]
    # One spread statistic: the one the unstable flag judges, and no plain cv beside it.
    rows = dict(line.split(None, 1) for _, line in lines if line.strip() and line != "<exit>")
    assert "cv" not in rows
    assert re.match(r"\d+\.\d\d% \(5th-95th percentile range, as a cv; (stable|UNSTABLE)", rows["spread"])


def test_each_trial_line_says_where_the_search_is_and_nothing_is_silent_for_long(runs):
    _, lines, _ = runs["first"]
    out = text(lines)
    trials = TRIAL_LINE.findall(out)
    assert [ordinal for _, ordinal, *_ in trials] == ["1", "2"]
    assert trials[0][4].startswith("about ") and trials[1][4] == "the last trial"
    assert out.count("best so far: trial ") == 2
    longest_trial = max(seconds(duration) for _, _, duration, _, _ in trials)
    assert 0 < longest_trial <= seconds(trials[1][3])  # a trial takes no longer than the search so far
    # No stretch without a line lasts longer than a trial (plus the start of Python and the final export).
    times = [0.0, *(at for at, _ in lines)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) <= longest_trial + 15, list(zip(gaps, lines, strict=True))


def test_one_epoch_candidates_learn_well_above_chance_with_the_default_proxy_training(runs):
    accuracies = [float(a) for a in re.findall(r"val_accuracy (\d\.\d+)", text(runs["first"][1]))]
    assert len(accuracies) == 2
    assert min(accuracies) > chance_threshold(10)  # no candidate at chance level
    assert max(accuracies) > 0.5  # five times chance after 45 steps
    assert "chance level" not in text(runs["first"][1])


def test_the_exported_architecture_rebuilds_the_searched_model(runs):
    base = runs["directory"] / "digits" / "best"
    config = json.loads(base.with_suffix(".arch.json").read_text())
    searched = keras.saving.load_model(base.with_suffix(".keras"))
    rebuilt = build_model(**config)
    assert rebuilt.count_params() == searched.count_params()
    rebuilt.set_weights(searched.get_weights())
    x = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(rebuilt(x, training=False), searched(x, training=False), rtol=1e-5, atol=1e-6)
