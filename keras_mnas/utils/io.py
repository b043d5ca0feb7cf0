"""Crash-safe file writes: a reader sees the old file or the new one, never a torn or empty one.

A search runs for days and may be killed at any instant. Every file keras-mnas writes goes through a temporary
file in the same directory, is flushed and fsynced, then renamed over the target (atomic on POSIX), and the
directory is fsynced so the rename itself survives a power cut.

A new file gets the permissions `open()` would give it (`0o666` less the umask), not the owner-only `0o600`
of temporary files, and a replaced file keeps its mode.

A process killed between the write and the rename leaves its temporary file behind. Every temporary file is
named `TEMP_PREFIX + <random> + TEMP_SUFFIX` (`TEMP_GLOB` matches them), so `remove_temp_files` can clear
what a killed writer left in a directory.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import stat
import tempfile
import threading
import time
from typing import Any

from keras_mnas.utils.checks import check_seconds

#: How every temporary file of this module is named: `TEMP_PREFIX`, random characters, `TEMP_SUFFIX`.
TEMP_PREFIX = ".partial-"
TEMP_SUFFIX = ".tmp"
#: The glob pattern that matches the temporary files, and only them (hidden, so `*` never matches them).
TEMP_GLOB = f"{TEMP_PREFIX}*{TEMP_SUFFIX}"

_UMASK_LOCK = threading.Lock()


def _current_umask() -> int:
    # Linux shows the umask without changing it; elsewhere it can only be read by setting it, which is briefly
    # process-wide, so a lock keeps two writers from reading each other's temporary value.
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _mode_for(path: str) -> int:
    """The permissions the written file should have: the replaced file's, or those of a new file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, sync: bool = True) -> None:
    """Writes `data` to `path` atomically.

    A new file is created with the usual permissions (`0o666` less the process umask, e.g. `0o644`); an
    existing file is replaced with its permissions kept.

    Args:
        path: The file to write.
        data: Its new contents.
        sync: Whether to flush the file and its directory to the disk (`fsync`) before returning. The rename
            alone makes the write atomic for any process, killed or not (SIGKILL included): a reader sees the
            old contents or the new. `fsync` adds durability across a crash of the whole machine, at a few
            milliseconds per write on a busy disk.

    Example:

    ```python
    atomic_write_bytes("model.tflite", tflite_bytes)
    ```
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    mode = _mode_for(path)
    # The temporary name never contains the target's name: a reader scanning the directory by pattern
    # (TensorBoard looks for "tfevents") must not pick up a partial file.
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp creates the file owner-only (0600); it gets its final permissions before the rename.
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            else:
                os.chmod(tmp, mode)
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not sync:
        return
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, sync: bool = True) -> str:
    """Serialises `obj` as JSON and writes it atomically (`sync` as in `atomic_write_bytes`); returns it.

    Example:

    ```python
    atomic_write_json("state.json", {"step": 3})
    ```
    """
    text = json.dumps(obj)
    atomic_write_bytes(path, text.encode("utf-8"), sync=sync)
    return text


def is_temp_file(path: str | os.PathLike) -> bool:
    """Whether `path` is named like a temporary file of `atomic_write_bytes`.

    Example:

    ```python
    is_temp_file("runs/search/.partial-k2j4_x.tmp")  # True
    ```
    """
    name = os.path.basename(os.fspath(path))
    shortest = len(TEMP_PREFIX) + len(TEMP_SUFFIX) + 1  # mkstemp always adds random characters
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and len(name) >= shortest


def remove_temp_files(directory: str | os.PathLike, *, min_age_seconds: float = 0.0) -> list[str]:
    """Removes the temporary files `atomic_write_bytes` left in `directory`, not below it.

    A writer leaves its temporary file only when it is killed between the write and the rename: the target
    still holds the previous contents, so the temporary file is garbage. Call this only when no other process
    may be writing in `directory`, or give `min_age_seconds`: files modified more recently are kept, since a
    live writer renames its file within moments.

    Args:
        directory: The directory to clean.
        min_age_seconds: Only files last modified at least this many seconds ago are removed.

    Returns:
        The paths removed.

    Raises:
        ValueError: for a negative or non-finite `min_age_seconds`.

    Example:

    ```python
    remove_temp_files("runs/search")  # after a kill, before resuming
    ```
    """
    min_age_seconds = check_seconds("min_age_seconds", min_age_seconds, allow_zero=True)
    removed = []
    now = time.time()
    for path in glob.glob(os.path.join(glob.escape(os.fspath(directory)), TEMP_GLOB)):
        with contextlib.suppress(OSError):  # already gone (another cleaner), or not ours to remove
            if min_age_seconds and now - os.stat(path).st_mtime < min_age_seconds:
                continue
            os.remove(path)
            removed.append(path)
    return removed


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
