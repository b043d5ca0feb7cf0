"""Worker side of KerasTuner's distributed tuning (a chief oracle and workers over gRPC), made fault-aware.

KerasTuner's `OracleClient` waits up to an hour for every answer of the chief (`wait_for_ready` with a
one-hour deadline), so a worker whose chief has died hangs for an hour per call; and it reports nothing while
a trial trains, so the chief cannot tell a long trial from a dead worker. `ChiefOracleClient` wraps that
client (only through its public `stub` attribute and methods) to:

- bound every call by `chief_timeout` seconds and fail with a clear `keras_tuner.errors.FatalRuntimeError`
  naming the chief's address when it does not answer;
- send a heartbeat every `heartbeat_interval` seconds while a trial runs: an `update_trial` whose only metric
  is the worker's stamp (`durable.worker_stamp`: its tuner id, and the count of a `WorkProgress` that only
  the trial's work advances). `DurableOracle` records it as a sign of life, and as progress only when the
  count moved: a worker whose trial hangs while this thread goes on beating loses the trial after
  `trial_timeout` all the same;
- stamp every report (`update_trial`, `end_trial`) with the same tuner id, so that the chief ignores the
  reports of a worker its trial was taken from (the chief answers such a heartbeat STOPPED: the heartbeat
  thread then says so on stderr and stops);
- wait quietly (polling every `idle_poll` seconds) while the chief answers "IDLE" (all trials handed out,
  some still running elsewhere and maybe to be handed out again), instead of KerasTuner's busy loop;
- stop on `DurableOracle`'s quiet "stop" (an IDLE answer with trial id `STOP_WORKER`), which lets the chief
  exit as soon as the last worker stops rather than up to 20 s later.

A call that loses its connection is sent again until `chief_timeout`: a `DurableOracle` answers a repeated
call as the first one.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import time
from typing import Any

import keras_tuner

from keras_mnas.search.durable import IDLE, RUNNING, STOP_WORKER, STOPPED, worker_stamp

_RETRY_PAUSE = 0.5


class _DeadlineStub:
    """Calls the gRPC stub's methods with a bounded deadline and a clear error when the chief is gone."""

    def __init__(self, stub: Any, timeout: float, address: str):
        self._stub = stub
        self._timeout = timeout
        self._address = address

    def __getattr__(self, name: str):
        method = getattr(self._stub, name)

        def call(request, **kwargs):
            import grpc  # KerasTuner's distributed mode needs grpcio already

            deadline = time.monotonic() + self._timeout
            while True:
                kwargs["timeout"] = max(deadline - time.monotonic(), 0.001)
                try:
                    return method(request, **kwargs)
                except grpc.RpcError as error:
                    code = error.code() if callable(getattr(error, "code", None)) else None
                    if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() + _RETRY_PAUSE < deadline:
                        # Connection lost mid-call (chief restarting, network blip): send again. Safe with a
                        # DurableOracle: create_trial returns the worker's running trial, a second end_trial
                        # is ignored, a repeated update_trial repeats the same values at the same step.
                        time.sleep(_RETRY_PAUSE)
                        continue
                    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                        raise keras_tuner.errors.FatalRuntimeError(
                            f"The chief oracle at {self._address} did not answer {name} (gRPC {code.name} "
                            f"after {self._timeout:g} s, chief_timeout); is the chief process still running? "
                            "This worker stops. Restart the chief with overwrite=False, then the workers."
                        ) from error
                    raise

        return call


class WorkProgress:
    """A count that only the work of a trial advances: phases, training and validation batches, epochs.

    A worker's heartbeats carry it, so the chief tells a trial that hangs from one that runs slowly. Keras
    callbacks that hold it are deep-copied by KerasTuner for every execution: a copy is this same counter.

    Example:

    ```python
    progress = WorkProgress()
    progress.advance()
    progress.count  # 1
    ```
    """

    def __init__(self):
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """How many steps of work were done so far."""
        return self._count

    def advance(self) -> None:
        """Records one more step of work."""
        with self._lock:
            self._count += 1

    def __deepcopy__(self, memo) -> WorkProgress:
        return self  # one counter per worker, however often the callbacks that hold it are copied


class ChiefOracleClient:
    """Wraps KerasTuner's `OracleClient` on a worker: bounded calls, stamps, heartbeats, quiet waiting.

    Args:
        client: The `OracleClient` `keras_tuner.Tuner` put in `tuner.oracle` on a worker.
        chief_timeout: Seconds to wait for any answer of the chief before failing.
        heartbeat_interval: Seconds between heartbeats while a trial runs; `None` sends none.
        idle_poll: Seconds between two requests for a trial while the chief answers "IDLE".
        progress: The worker's `WorkProgress`, which its heartbeats carry (a new one by default: then the
            count never moves, and only the trial's own reports show progress).
    """

    def __init__(
        self,
        client: Any,
        *,
        chief_timeout: float,
        heartbeat_interval: float | None,
        idle_poll: float = 0.25,
        progress: WorkProgress | None = None,
    ):
        address = f"{os.environ.get('KERASTUNER_ORACLE_IP')}:{os.environ.get('KERASTUNER_ORACLE_PORT')}"
        client.stub = _DeadlineStub(client.stub, chief_timeout, address)
        self._client = client
        self.chief_timeout = chief_timeout
        self.heartbeat_interval = heartbeat_interval
        self.idle_poll = idle_poll
        self.progress = progress if progress is not None else WorkProgress()
        self._tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
        self._heartbeat: _Heartbeat | None = None

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def _stamp(self) -> dict[str, float]:
        return worker_stamp(self._tuner_id, self.progress.count)

    def create_trial(self, tuner_id: str):
        self._stop_heartbeat()
        self._tuner_id = tuner_id
        while True:
            trial = self._client.create_trial(tuner_id)
            if trial.status == IDLE and trial.trial_id == STOP_WORKER:
                trial.status = "STOPPED"  # the search is over; the chief waits for the last worker only
            if trial.status != IDLE:
                break
            time.sleep(self.idle_poll)
        if trial.status == RUNNING and self.heartbeat_interval:
            self._heartbeat = _Heartbeat(self._client, trial.trial_id, self.heartbeat_interval, self._stamp)
            self._heartbeat.start()
        return trial

    def update_trial(self, trial_id: str, metrics, step: int = 0):
        return self._client.update_trial(trial_id, {**metrics, **self._stamp()}, step=step)

    def end_trial(self, trial) -> None:
        self._stop_heartbeat()  # a heartbeat after the end would be ignored, but costs a call
        stamped = copy.deepcopy(trial)  # the stamp travels in the trial's metrics, which the chief strips
        for name, value in self._stamp().items():
            stamped.metrics.register(name)
            stamped.metrics.update(name, value)
        self._client.end_trial(stamped)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None


class _Heartbeat(threading.Thread):
    """Tells the chief every `interval` seconds that this worker runs `trial_id`, and how far its work is."""

    def __init__(self, client: Any, trial_id: str, interval: float, stamp):
        super().__init__(name=f"mnas-heartbeat-{trial_id}", daemon=True)
        self._client = client
        self._trial_id = trial_id
        self._interval = interval
        self._stamp = stamp
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                answer = self._client.update_trial(self._trial_id, self._stamp())
                if getattr(answer, "status", None) == STOPPED:
                    # The chief took the trial away (no progress for trial_timeout, or past trial_deadline):
                    # the main thread is stuck in its work, so this is the one place to say so.
                    print(
                        f"MnasTuner: the chief took trial {self._trial_id} from this worker (no progress for "
                        "trial_timeout, or past trial_deadline) and hands it to another; what this worker "
                        "reports for it is ignored. The worker asks for a new trial once its work returns.",
                        file=sys.stderr,
                        flush=True,
                    )
                    return
            except Exception as error:  # the main thread meets the same error at its next call
                if not self._stopped.is_set():
                    print(
                        f"MnasTuner: heartbeat of trial {self._trial_id} failed: {error}",
                        file=sys.stderr,
                        flush=True,
                    )
                return

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=self._interval + 1.0)
