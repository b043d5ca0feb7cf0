import json
import os
import stat

import pytest

from keras_mnas.utils import io as io_lib
from keras_mnas.utils.io import atomic_write_bytes, atomic_write_json, read_json


@pytest.fixture
def umask():
    """Sets the process umask for one test and restores it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_umask(mask):
        os.umask(mask)

    yield set_umask
    os.umask(saved)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(directory):
    return [name for name in os.listdir(directory) if name.startswith(".partial-")]


@pytest.mark.parametrize(
    "mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)], ids=["022", "027", "002"]
)
def test_a_new_file_gets_the_permissions_open_would_give_it(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write_bytes(tmp_path / "model.tflite", b"\x00\x01")
    atomic_write_json(tmp_path / "arch.json", {"blocks": []})
    # What a plain open() creates under the same umask: the exported files must look like it.
    with open(tmp_path / "plain.bin", "wb"):
        pass
    assert mode_of(tmp_path / "model.tflite") == expected == mode_of(tmp_path / "plain.bin")
    assert mode_of(tmp_path / "arch.json") == expected
    assert (tmp_path / "model.tflite").read_bytes() == b"\x00\x01"
    assert read_json(tmp_path / "arch.json") == {"blocks": []}
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("existing_mode", [0o600, 0o664, 0o640], ids=["600", "664", "640"])
def test_replacing_a_file_keeps_its_mode(tmp_path, umask, existing_mode):
    umask(0o022)
    path = tmp_path / "state.json"
    path.write_text("{}")
    os.chmod(path, existing_mode)
    atomic_write_json(path, {"step": 3})
    assert mode_of(path) == existing_mode
    assert json.loads(path.read_text()) == {"step": 3}


def test_the_umask_is_read_without_proc_too(tmp_path, umask, monkeypatch):
    real_open = open

    def no_proc(file, *args, **kwargs):
        if os.fspath(file).startswith("/proc/"):
            raise OSError("no /proc here")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io_lib, "open", no_proc, raising=False)
    umask(0o027)
    assert io_lib._current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # reading it left the umask as it was
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert mode_of(tmp_path / "a.bin") == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_partial_file(tmp_path):
    path = tmp_path / "model.tflite"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")
    assert path.read_bytes() == b"old"
    assert not leftovers(tmp_path)
