"""The lease: one measurement per phone, across processes and machines.

`Lease` is a distributed lock kept on the phone itself, as symbolic links that `ln -s` creates atomically;
see its docstring for the protocol. `AndroidLatency` takes one around each measurement.

Example:

```python
lease = Lease(phone, "/data/local/tmp", ttl_s=420.0, poll_s=5.0)
lease.acquire(wait_s=600.0)
try:
    ...  # measure, calling lease.renew() before each benchmark process
    lease.verify()
finally:
    lease.release()
```
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import socket
import time
import uuid

from keras_mnas.latency.android.adb import AND, THEN, Phone
from keras_mnas.latency.errors import DeviceBusyError, DeviceError

logger = logging.getLogger(__name__)

_LEASE_PREFIX = "keras_mnas.lease."
_LEASE_TAG = "keras_mnas-lease"
# The shortest time between two attempts to create a lease after losing a race, so that a phone whose lease
# links keep existing is polled at a bounded rate rather than in a busy loop.
_MIN_ATTEMPT_S = 0.1

#: Where files and the lease go on a phone by default: app-independent, writable by adb's shell user, and on a
#: file system with symbolic links.
DEFAULT_REMOTE_DIR = "/data/local/tmp"


@dataclasses.dataclass(frozen=True)
class _LeaseRecord:
    generation: int
    state: str
    expires: int
    owner: str


class Lease:
    """A lease on a phone, kept in symbolic links `DIR/keras_mnas.lease.N` on the phone itself.

    The lease of generation N is a symbolic link whose target text is
    `keras_mnas-lease|v1|STATE|EXPIRES|OWNER`: `ln -s` creates it atomically, content included, and fails if
    it exists. To take the phone a worker reads the highest generation: if it is released, or expired by the
    phone's own clock (the one clock all workers share), it creates generation N+1; of several workers
    trying, exactly one succeeds. Nothing is ever overwritten by anyone but its owner, so a stale lease is
    "broken" by superseding it, never by deleting it, and a worker that was presumed dead notices it lost
    the phone (a higher generation exists) before it trusts its figure. The holder renews the expiry before
    every benchmark process and releases the lease in `finally`; a killed worker's lease expires after
    `ttl_s`.
    """

    def __init__(self, phone: Phone, directory: str, ttl_s: float, poll_s: float):
        self.phone = phone
        self.directory = directory
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.generation: int | None = None
        self.broke: str | None = None
        # The phone's clock minus this machine's, measured when the lease is taken; renewals use it instead
        # of asking the phone for the time again.
        self._clock_offset = 0.0

    def _path(self, generation: int) -> str:
        return f"{self.directory}/{_LEASE_PREFIX}{generation}"

    def _tmp_path(self) -> str:
        return f"{self.directory}/keras_mnas.lease-tmp.{self.owner.rsplit(':', 1)[-1]}"

    def _target(self, state: str, expires: int) -> str:
        return f"{_LEASE_TAG}|v1|{state}|{expires}|{self.owner}"

    def _generations(self) -> list[int]:
        names = self.phone.list_names(self.directory)
        return sorted(
            int(n[len(_LEASE_PREFIX) :]) for n in names if re.fullmatch(r"keras_mnas\.lease\.\d+", n)
        )

    def _read(self, generation: int) -> _LeaseRecord | None:
        result = self.phone.shell(["readlink", self._path(generation)])
        parts = result.stdout.strip().split("|", 4)
        if result.exit_code != 0 or len(parts) != 5 or parts[0] != _LEASE_TAG or not parts[3].isdigit():
            return None
        return _LeaseRecord(generation, parts[2], int(parts[3]), parts[4])

    def acquire(self, wait_s: float) -> None:
        """Takes the phone, waiting up to `wait_s` seconds for another worker's lease to end.

        Raises:
            DeviceBusyError: another worker still holds the phone after `wait_s` seconds.
            DeviceError: the phone refuses the lease itself (a missing directory, a file system without
                symbolic links such as `/sdcard`, a full disk): adbd's message says why.
        """
        give_up = time.monotonic() + wait_s
        while True:
            attempt_started = time.monotonic()
            generations = self._generations()
            now = self.phone.device_time()
            self._clock_offset = now - time.time()
            candidate = 0
            if generations:
                top = generations[-1]
                record = self._read(top)
                free = record is None or record.state == "released" or record.expires < now
                if not free:
                    holder = f"{record.owner}, lease generation {top}, expires in {record.expires - now} s"
                    self._check_deadline(give_up, wait_s, holder)
                    time.sleep(min(self.poll_s, max(0.01, give_up - time.monotonic())))
                    continue
                if record is not None and record.state != "released":
                    self.broke = record.owner
                    logger.warning(
                        "Phone %s: taking over the expired lease of %s (expired %d s ago: did it die?).",
                        self.phone.serial,
                        record.owner,
                        now - record.expires,
                    )
                candidate = top + 1
            path = self._path(candidate)
            created = self.phone.shell(["ln", "-s", self._target("held", now + math.ceil(self.ttl_s)), path])
            if created.exit_code == 0:
                self.generation = candidate
                stale = [self._path(g) for g in generations if g < candidate]
                if stale:
                    # Superseded generations are dead; the highest stays, so numbers are never reused.
                    self.phone.shell(["rm", "-f", *stale])
                return
            message = created.output.strip()
            if "File exists" not in message:
                # Only an existing link means another worker won the race; anything else will not go away
                # by trying again.
                raise self._refused(path, message, created.exit_code)
            # Another worker created that generation first: look again, at a bounded rate.
            self._check_deadline(give_up, wait_s, f"it took generation {candidate} first")
            pause = _MIN_ATTEMPT_S - (time.monotonic() - attempt_started)
            time.sleep(max(0.0, min(pause, give_up - time.monotonic())))

    def _check_deadline(self, give_up: float, wait_s: float, holder: str) -> None:
        if time.monotonic() >= give_up:
            raise DeviceBusyError(
                f"Phone {self.phone.serial} is being used by another worker ({holder}); waited {wait_s:g} s.",
                serial=self.phone.serial,
            )

    def _refused(self, path: str, message: str, exit_code: int) -> DeviceError:
        reason = message or f"exit status {exit_code}, no message"
        text = f"Could not take the lease on phone {self.phone.serial}: `ln -s` at {path} failed ({reason})."
        lowered = message.lower()
        if "no space left" in lowered:
            report = self.phone.storage_report(self.directory)
            text += f" Free some space on the phone (storage full).{report}"
        elif "not permitted" in lowered or "read-only" in lowered:
            text += (
                f" {self.directory} does not allow symbolic links: pass a remote_dir such as "
                f"{DEFAULT_REMOTE_DIR}."
            )
        elif "no such file" in lowered:
            text += f" {self.directory} does not exist on the phone: create it or pass another remote_dir."
        return DeviceError(text, serial=self.phone.serial)

    def verify(self) -> None:
        """Raises `DeviceError` if another worker superseded this lease."""
        generations = self._generations()
        if (
            self.generation is None
            or self.generation not in generations
            or generations[-1] != self.generation
        ):
            raise DeviceError(
                f"Lost the lease on phone {self.phone.serial} (held generation {self.generation}, the phone "
                f"now has {generations}): another worker took it over after it expired, so this measurement "
                "may overlap with theirs and is discarded.",
                serial=self.phone.serial,
            )

    def _rewrite(self, state: str, expires: int) -> None:
        tmp = self._tmp_path()
        # One shell call: write the new text under a private name, then rename it over the lease (atomic).
        result = self.phone.shell(
            [
                *("rm", "-f", tmp, THEN),
                *("ln", "-s", self._target(state, expires), tmp, AND),
                *("mv", "-f", tmp, self._path(self.generation)),
            ]
        )
        if result.exit_code != 0:
            raise DeviceError(
                f"Could not update the lease on phone {self.phone.serial}: {result.output.strip()}",
                serial=self.phone.serial,
            )

    def _device_now(self) -> int:
        return int(time.time() + self._clock_offset)

    def renew(self) -> None:
        self.verify()
        self._rewrite("held", self._device_now() + math.ceil(self.ttl_s))

    def release(self, verified: bool = False) -> None:
        if self.generation is None:
            return
        try:
            if not verified:
                self.verify()
            self._rewrite("released", self._device_now())
        except DeviceError as e:
            # It expires on its own; nothing else to do.
            logger.info("Phone %s: could not release the lease cleanly: %s", self.phone.serial, e)
        finally:
            self.generation = None
