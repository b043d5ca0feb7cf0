"""Crash-safe file writes: a reader sees the old file or the new one, never a torn or empty one.

A search runs for days and may be killed at any instant. Every file keras-mnas writes goes through a temporary
file in the same directory, is flushed and fsynced, then renamed over the target (atomic on POSIX), and the
directory is fsynced so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically.

    Example:

    ```python
    atomic_write_bytes("model.tflite", tflite_bytes)
    ```
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # The temporary name never contains the target's name: a reader scanning the directory by pattern
    # (TensorBoard looks for "tfevents") must not pick up a partial file.
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> str:
    """Serialises `obj` as JSON and writes it atomically; returns the JSON text.

    Example:

    ```python
    atomic_write_json("state.json", {"step": 3})
    ```
    """
    text = json.dumps(obj)
    atomic_write_bytes(path, text.encode("utf-8"))
    return text


def read_json(path: str | os.PathLike) -> Any:
    """Reads a JSON file, naming the file in the error when it is not valid JSON."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{os.fspath(path)!r} is not valid JSON ({error}); it holds {len(text)} characters."
        ) from error
