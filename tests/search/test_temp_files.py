"""Temporary files left by a kill between an atomic write and its rename are removed when the search resumes.

The files here are the real writer's: `atomic_write_bytes` runs up to the rename, then the process "dies"
(the rename and the writer's own clean-up never happen), which leaves exactly what a SIGKILL there leaves.
"""

from __future__ import annotations

import contextlib
import os
import time

import pytest
from _search_script import PROJECT, make_tuner

from keras_mnas.utils import io as io_lib
from keras_mnas.utils.io import TEMP_GLOB, atomic_write_json, is_temp_file, remove_temp_files


class Killed(BaseException):
    """The process dying between the write and the rename."""


@contextlib.contextmanager
def killed_before_rename(monkeypatch):
    """Within the block, every atomic write dies after its data is written and synced, before the rename."""

    def die(src, dst):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(io_lib.os, "replace", die)
        # A killed process runs no clean-up either: the writer's own unlink of its temporary file never runs.
        patch.setattr(io_lib.os, "unlink", lambda path: None)
        yield


def write_and_die(monkeypatch, path, obj) -> None:
    with killed_before_rename(monkeypatch), pytest.raises(Killed):
        atomic_write_json(path, obj)


def temp_files(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _, names in os.walk(root)
        for name in names
        if is_temp_file(name)
    )


def test_the_writer_names_its_temporary_files_as_the_cleaner_looks_for_them(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    atomic_write_json(target, {"step": 1})
    write_and_die(monkeypatch, target, {"step": 2})
    assert io_lib.read_json(target) == {"step": 1}, "the target keeps its previous contents"
    (left,) = temp_files(tmp_path)
    assert tmp_path.joinpath(left).match(TEMP_GLOB)
    (tmp_path / "notes.tmp").write_text("mine")  # not the writer's: kept
    assert remove_temp_files(tmp_path) == [str(tmp_path / left)]
    assert temp_files(tmp_path) == [] and (tmp_path / "notes.tmp").exists()


def test_young_files_are_kept_when_a_minimum_age_is_asked(tmp_path, monkeypatch):
    write_and_die(monkeypatch, tmp_path / "state.json", {"step": 1})
    (left,) = temp_files(tmp_path)
    assert remove_temp_files(tmp_path, min_age_seconds=60) == []
    old = time.time() - 120
    os.utime(tmp_path / left, (old, old))
    assert remove_temp_files(tmp_path, min_age_seconds=60) == [str(tmp_path / left)]
    with pytest.raises(ValueError, match="`min_age_seconds` must be a finite number of seconds >= 0"):
        remove_temp_files(tmp_path, min_age_seconds=-1)


def test_a_resumed_search_removes_what_kills_mid_write_left_behind(tmp_path, monkeypatch):
    config = {"directory": str(tmp_path), "max_trials": 3}
    make_tuner(config).search(verbose=0)
    project = tmp_path / PROJECT
    # Kills in the middle of each kind of write a search makes: oracle.json, the tuner file, a trial.json and
    # a trial's phase file.
    for path in (project / "oracle.json", project / "tuner0.json", project / "trial_1" / "trial.json"):
        write_and_die(monkeypatch, path, {"torn": True})
    write_and_die(monkeypatch, project / "trial_2" / "mnas_phase.json", {"phase": "training"})
    assert len(temp_files(project)) == 4
    resumed = make_tuner({**config, "max_trials": 4})
    assert temp_files(project) == [], "reload removes every temporary file the writer left"
    resumed.search(verbose=0)
    assert len(resumed.completed_trials()) == 4 and temp_files(project) == []
