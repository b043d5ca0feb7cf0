"""Tests marked ``exclusive_cpu`` run while no other test does, though the suite runs on two workers."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = '''
import json
import time

import pytest


def record(name, start):
    with open("intervals.jsonl", "a") as log:
        log.write(json.dumps([name, start, time.monotonic()]) + "\\n")


@pytest.mark.exclusive_cpu
@pytest.mark.parametrize("index", range(2))
def test_timed(index):
    start = time.monotonic()
    time.sleep(1.0)
    record(f"timed{index}", start)


@pytest.mark.parametrize("index", range(8))
def test_other(index):
    start = time.monotonic()
    time.sleep(0.4)
    record(f"other{index}", start)
'''


def test_a_marked_test_overlaps_no_other_test(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_timing.py").write_text(TESTS)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "-c", "/dev/null"]
    run = subprocess.run(
        # A base temp directory of its own: pytest's default one prunes older runs', this suite's among them.
        [*command, "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "temp"), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    intervals = [json.loads(line) for line in (tmp_path / "intervals.jsonl").read_text().splitlines()]
    assert len(intervals) == 10
    for name, start, end in intervals:
        if name.startswith("timed"):
            overlapping = [other for other, s, e in intervals if other != name and s < end and e > start]
            assert not overlapping, (name, overlapping, intervals)
