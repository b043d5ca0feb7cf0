"""A pool of Android phones measuring latency together, robust to phones that fail.

`AndroidDevicePool` is a `LatencySource` backed by several phones. Each phone runs one measurement at a
time (in this process, and across processes and machines through the on-device lease of
`AndroidLatency`); several phones measure at once when several jobs are submitted (from several threads,
or with `measure_many` / `measure_many_tflite`).

When a phone fails mid-measurement (offline, unauthorized, unplugged, a hung command, a crash, cut-off
output, a full disk, too hot), the job is retried on another phone, up to `max_attempts` phones. A phone
that fails `quarantine_after` jobs in a row is quarantined; it is health-checked after `readmit_after_s`
(then after twice that, and so on) and re-admitted once healthy. A model the phone's runtime cannot run
(`ModelError`) is reported at once and not retried; a phone another worker is using (`DeviceBusyError`) is
skipped for a moment without counting as a failure; a phone that cannot be used at all with these settings
(`SetupError`: wrong ABI, refused core mask) is retired.

Workers on other machines share phones through the adb server of the machine each phone is plugged into:
give phones as `"SERIAL@HOST:PORT"`, or set `adb_host`/`adb_port` for the whole pool (see docs/phones.md).

Example:

```python
from keras_mnas.latency import AndroidDevicePool

pool = AndroidDevicePool(["R5CT1234ABC", "8A1X0B2C@lab-host:5037"], binary="android_aarch64_benchmark_model")
results = pool.measure_many([model_a, model_b, model_c])
print(pool.stats())
```
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from keras_mnas.latency.android import (
    DEFAULT_ADB_HOST,
    DEFAULT_ADB_PORT,
    AndroidDeviceInfo,
    AndroidLatency,
    list_states,
)
from keras_mnas.latency.base import QUANTIZATIONS, LatencyResult, TFLiteLatencySource
from keras_mnas.latency.errors import (
    DeviceBusyError,
    DeviceError,
    DeviceUnavailableError,
    LatencyMeasurementError,
    ModelError,
    SetupError,
)
from keras_mnas.utils.checks import check_choice, check_int, check_seconds

logger = logging.getLogger(__name__)

# The longest a quarantined phone waits between two health checks.
_MAX_READMIT_INTERVAL_S = 600.0


@dataclasses.dataclass
class PhoneStats:
    """What one phone of a pool has done.

    Attributes:
        serial: The phone's serial.
        adb_server: `"host:port"` of the adb server it is reached through.
        state: `"ready"`, `"quarantined"` or `"retired"` (unusable with the pool's settings).
        busy: Whether it is measuring (or being health-checked) right now.
        jobs: Measurements started on it.
        successes: Measurements that produced a figure.
        failures: Measurements that failed because of the phone (`DeviceError`).
        model_errors: Measurements the phone's runtime refused (`ModelError`, not the phone's fault).
        busy_elsewhere: Times it was skipped because another worker held its lease.
        measuring_seconds: Wall-clock time spent in its measurements.
        consecutive_failures: Failures since its last success.
        quarantines: Times it was quarantined.
        readmissions: Times it passed a health check and came back.
        last_error: The last problem seen, if any.
        identity: Its model and SoC, once known.
    """

    serial: str
    adb_server: str
    state: str = "ready"
    busy: bool = False
    jobs: int = 0
    successes: int = 0
    failures: int = 0
    model_errors: int = 0
    busy_elsewhere: int = 0
    measuring_seconds: float = 0.0
    consecutive_failures: int = 0
    quarantines: int = 0
    readmissions: int = 0
    last_error: str | None = None
    identity: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Slot:
    def __init__(self, source: AndroidLatency):
        self.source = source
        self.stats = PhoneStats(serial=source.serial, adb_server=f"{source.adb_host}:{source.adb_port}")
        self.not_before = 0.0  # skip until then (its lease was held elsewhere)
        self.readmit_at = 0.0
        self.readmit_interval = 0.0
        # Back from quarantine but not yet proven: one failure sends it back, for twice as long.
        self.probation = False
        self.quarantine_interval = 0.0
        self.checked_identity = False


def _parse_device(spec: str, default_host: str, default_port: int) -> tuple[str, str, int]:
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"A phone is given as 'SERIAL' or 'SERIAL@HOST:PORT'; received {spec!r}.")
    serial, at, address = spec.rpartition("@")
    if not at:
        return spec, default_host, default_port
    host, colon, port = address.rpartition(":")
    if not serial or not colon or not host or not port.isdigit():
        raise ValueError(
            f"A phone on another machine's adb server is given as 'SERIAL@HOST:PORT', e.g. "
            f"'R5CT1234ABC@lab-host:5037'; received {spec!r}."
        )
    return serial, host, int(port)


class AndroidDevicePool(TFLiteLatencySource):
    """Several Android phones measuring latency, with retries, quarantine and per-phone statistics.

    `measure` converts the model once (with the phones' `conversion` and `calibration_samples`) and times
    it on the first free phone, retrying on others on failure; the result's `provenance["pool"]` tells how
    many attempts it took and on which phones it failed. Like a single phone, a pool caches nothing unless
    asked (`cache=True`, or a `cache_dir`); a cached figure is reused for an identical model measured with
    the same pool `config()` (phones and their settings).

    Args:
        devices: The phones: serials (`"R5CT1234ABC"`, on the pool's adb server), `"SERIAL@HOST:PORT"`
            (on another machine's adb server), or `AndroidLatency` instances with their own settings.
            `None` uses every usable phone the adb server(s) list when the pool is first used.
        binary: The `benchmark_model` executable (not needed when `devices` are `AndroidLatency` instances).
        adb_host: Host of the default adb server.
        adb_port: Port of the default adb server.
        adb_servers: With `devices=None`: the adb servers to take phones from, as `"HOST:PORT"` strings
            (default: `adb_host:adb_port`).
        max_attempts: Phones a job may fail on before the pool gives up and raises.
        quarantine_after: Consecutive failures after which a phone is quarantined.
        readmit_after_s: Delay before a quarantined phone's first health check (doubling after each failed
            check, up to ten minutes).
        wait_for_device_s: How long a job may wait for a free, healthy phone.
        busy_retry_s: How long a phone whose lease another worker holds is skipped before trying it again.
        allow_mixed_devices: Allow phones of different models or SoCs in one pool. Off by default, because
            their figures are not comparable; a phone that differs from the first one is retired.
        cache: Whether `measure` and `measure_many` reuse the figures of identical models (off by default).
        cache_dir: Optional directory for an on-disk result cache; implies `cache=True`.
        **phone_options: Settings for every phone, as for `AndroidLatency` (`threads`, `core_mask`, `runs`,
            `warmup_runs`, `repeats`, `delegate`, `call_timeout_s`, `run_timeout_s`, `lease_ttl_s`, ...).

    Raises:
        ValueError: for invalid settings or device specifications.
        SetupError: when the binary is missing or not an Android executable.

    Example:

    ```python
    pool = AndroidDevicePool(binary="android_aarch64_benchmark_model", repeats=5)  # every phone plugged in
    tuner = keras_mnas.search.MnasTuner(space=space, latency=pool, target_latency_ms=75.0, max_trials=100)
    ```
    """

    name = "android-pool"

    def __init__(
        self,
        devices: Sequence[str | AndroidLatency] | None = None,
        *,
        binary: str | os.PathLike | None = None,
        adb_host: str = DEFAULT_ADB_HOST,
        adb_port: int = DEFAULT_ADB_PORT,
        adb_servers: Sequence[str] | None = None,
        max_attempts: int = 3,
        quarantine_after: int = 2,
        readmit_after_s: float = 60.0,
        wait_for_device_s: float = 600.0,
        busy_retry_s: float = 5.0,
        allow_mixed_devices: bool = False,
        cache: bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        **phone_options,
    ):
        super().__init__(cache=cache, cache_dir=cache_dir)
        check_int("max_attempts", max_attempts, minimum=1)
        check_int("quarantine_after", quarantine_after, minimum=1)
        for arg, value in (
            ("readmit_after_s", readmit_after_s),
            ("wait_for_device_s", wait_for_device_s),
            ("busy_retry_s", busy_retry_s),
        ):
            check_seconds(arg, value, allow_zero=True)
        for option in ("serial", "adb_host", "adb_port", "lease", "lease_wait_s"):
            if option in phone_options:
                raise ValueError(
                    f"`{option}` is not a per-phone option of a pool: give phones as 'SERIAL' or "
                    "'SERIAL@HOST:PORT', the default server as adb_host/adb_port; pools always lease phones."
                )
        self.max_attempts = max_attempts
        self.quarantine_after = quarantine_after
        self.readmit_after_s = float(readmit_after_s)
        self.wait_for_device_s = float(wait_for_device_s)
        self.busy_retry_s = float(busy_retry_s)
        self.allow_mixed_devices = allow_mixed_devices
        self.adb_host = adb_host
        self.adb_port = adb_port
        self._binary = binary
        self._options = dict(phone_options)
        self._cond = threading.Condition()
        self._slots: list[_Slot] | None = None
        self._reference_identity: dict[str, str] | None = None
        self._reference_serial: str | None = None
        self._identity_lock = threading.Lock()

        self._specs: list[tuple[str, str, int]] | None = None
        self._given_sources: list[AndroidLatency] = []
        if adb_servers is not None and devices is not None:
            raise ValueError("Pass either `devices` or `adb_servers` (to discover the phones), not both.")
        self.adb_servers = [
            _parse_device(f"x@{a}", adb_host, adb_port)[1:]
            for a in (adb_servers or [f"{adb_host}:{adb_port}"])
        ]
        if devices is not None:
            if isinstance(devices, (str, AndroidLatency)):
                devices = [devices]
            specs = []
            for device in devices:
                if isinstance(device, AndroidLatency):
                    if device.serial is None:
                        raise ValueError("An AndroidLatency given to a pool needs an explicit `serial`.")
                    self._given_sources.append(device)
                else:
                    specs.append(_parse_device(device, adb_host, adb_port))
            self._specs = specs
            keys = [(s, h, p) for s, h, p in specs] + [
                (d.serial, d.adb_host, d.adb_port) for d in self._given_sources
            ]
            if len(set(keys)) != len(keys):
                raise ValueError(f"A phone is listed twice in `devices`: {keys}.")
            if not keys:
                raise ValueError("`devices` is empty; pass phones or None to use every phone connected.")
        if binary is None and (devices is None or self._specs):
            raise SetupError(
                "AndroidDevicePool needs `binary=`: the benchmark_model executable built for the phones' ABI "
                "(see 'Measuring on your phone' in the keras-mnas documentation)."
            )
        # Validates the shared settings and the binary now rather than at the first measurement.
        self._template = (
            AndroidLatency("template", binary=binary, **self._options) if binary is not None else None
        )

    # ----------------------------------------------------------------------------------------------
    # Phones.

    def _make_source(self, serial: str, host: str, port: int) -> AndroidLatency:
        return AndroidLatency(serial, binary=self._binary, adb_host=host, adb_port=port, **self._options)

    def _ensure_slots(self) -> list[_Slot]:
        with self._cond:
            if self._slots is not None:
                return self._slots
        sources = list(self._given_sources)
        if self._specs is not None:
            sources += [self._make_source(*spec) for spec in self._specs]
        else:
            for host, port in self.adb_servers:
                for serial, state in list_states(host, port, self._options.get("call_timeout_s", 30.0)):
                    if state == "device":
                        sources.append(self._make_source(serial, host, port))
                    else:
                        logger.warning(
                            "Pool: skipping phone %s on %s:%d, which is %s.", serial, host, port, state
                        )
            if not sources:
                servers = ", ".join(f"{h}:{p}" for h, p in self.adb_servers)
                raise DeviceUnavailableError(
                    f"No usable phone on adb server(s) {servers}: plug phones in with USB debugging on and "
                    "accept the authorization prompt."
                )
        with self._cond:
            if self._slots is None:
                self._slots = [_Slot(source) for source in sources]
            return self._slots

    @property
    def serials(self) -> list[str]:
        """The phones of the pool (discovering them if needed)."""
        return [slot.stats.serial for slot in self._ensure_slots()]

    def stats(self) -> dict[str, PhoneStats]:
        """Per-phone counts of jobs, failures and time, by serial (copies).

        Example:

        ```python
        for serial, s in pool.stats().items():
            print(serial, s.state, s.jobs, s.failures, f"{s.measuring_seconds:.0f} s")
        ```
        """
        slots = self._ensure_slots()
        with self._cond:
            return {slot.stats.serial: dataclasses.replace(slot.stats) for slot in slots}

    def devices(self) -> list[AndroidDeviceInfo]:
        """Describes every phone of the pool (model, SoC, SDK, ABI, big cores, temperature, health).

        Example:

        ```python
        for info in pool.devices():
            print(info.serial, info.model, info.health)
        ```
        """
        return [slot.source.device_info() for slot in self._ensure_slots()]

    @property
    def conversion(self) -> str:
        """The `convert_to_tflite` method `measure` converts with: the phones' setting."""
        return self._settings_source().conversion

    @property
    def calibration_samples(self) -> int:
        """Samples of a representative array used for int8 calibration: the phones' setting."""
        return self._settings_source().calibration_samples

    def _settings_source(self) -> AndroidLatency:
        # The phones share the pool's options; phones given as instances are asked in their order.
        return self._template or self._ensure_slots()[0].source

    def config(self) -> dict[str, Any]:
        """The settings that change the measured figures.

        Example:

        ```python
        AndroidDevicePool(["A", "B"], binary="benchmark_model").config()["devices"]  # ["A", "B"]
        ```
        """
        if self._template is not None:
            settings = {k: v for k, v in self._template.config().items() if k not in ("name", "serial")}
        else:
            settings = {}
        devices = None
        if self._specs is not None:
            devices = sorted(
                [s if (h, p) == (self.adb_host, self.adb_port) else f"{s}@{h}:{p}" for s, h, p in self._specs]
                + [d.serial for d in self._given_sources]
            )
        return {
            **super().config(),
            "devices": devices,
            "adb_servers": None if devices is not None else [f"{h}:{p}" for h, p in self.adb_servers],
            "allow_mixed_devices": self.allow_mixed_devices,
            "phone_settings": settings or [d.config() for d in self._given_sources],
        }

    # ----------------------------------------------------------------------------------------------
    # Scheduling.

    def _acquire(self, give_up: float, avoid: set[str]) -> _Slot:
        slots = self._ensure_slots()
        while True:
            check: _Slot | None = None
            with self._cond:
                while True:
                    now = time.monotonic()
                    usable = [s for s in slots if s.stats.state != "retired"]
                    if not usable:
                        reasons = "; ".join(f"{s.stats.serial}: {s.stats.last_error}" for s in slots)
                        raise DeviceUnavailableError(f"No phone of the pool can measure: {reasons}")
                    due = [
                        s
                        for s in usable
                        if s.stats.state == "quarantined" and not s.stats.busy and s.readmit_at <= now
                    ]
                    if due:
                        # A due health check goes first: it is rare and short, and may bring a phone back.
                        check = due[0]
                        check.stats.busy = True
                        break
                    free = [
                        s
                        for s in usable
                        if s.stats.state == "ready" and not s.stats.busy and s.not_before <= now
                    ]
                    preferred = [s for s in free if s.stats.serial not in avoid]
                    if not preferred and free and all(s.stats.serial in avoid for s in usable):
                        preferred = free  # every phone failed this job once; try them again
                    if preferred:
                        # The least used phone first, so that work and wear spread evenly.
                        slot = min(preferred, key=lambda s: (s.stats.jobs, s.stats.measuring_seconds))
                        slot.stats.busy = True
                        return slot
                    if now >= give_up:
                        states = ", ".join(
                            f"{s.stats.serial}: {s.stats.state}{' (busy)' if s.stats.busy else ''}"
                            + (f", {s.stats.last_error}" if s.stats.last_error else "")
                            for s in slots
                        )
                        raise DeviceBusyError(
                            f"No phone of the pool became free within {self.wait_for_device_s:g} s "
                            f"({states})."
                        )
                    wakeups = [give_up]
                    wakeups += [
                        s.readmit_at for s in usable if s.stats.state == "quarantined" and not s.stats.busy
                    ]
                    wakeups += [
                        s.not_before for s in usable if s.stats.state == "ready" and s.not_before > now
                    ]
                    self._cond.wait(timeout=max(0.005, min(wakeups) - now))
            self._health_check(check)

    def _health_check(self, slot: _Slot) -> None:
        problem = slot.source.health_check()
        with self._cond:
            slot.stats.busy = False
            if problem is None:
                slot.stats.state = "ready"
                slot.stats.consecutive_failures = 0
                slot.stats.readmissions += 1
                slot.probation = True
                logger.info("Pool: phone %s passed its health check and is back.", slot.stats.serial)
            else:
                slot.stats.last_error = problem
                slot.readmit_interval = min(
                    _MAX_READMIT_INTERVAL_S, max(self.readmit_after_s, 2 * slot.readmit_interval)
                )
                slot.readmit_at = time.monotonic() + slot.readmit_interval
            self._cond.notify_all()

    def _release(self, slot: _Slot) -> None:
        with self._cond:
            slot.stats.busy = False
            self._cond.notify_all()

    @staticmethod
    def _identity(slot: _Slot) -> dict[str, str]:
        info = slot.source.device_info()
        if info.state != "device":
            raise DeviceUnavailableError(
                f"Phone {info.serial} is {info.state}: {info.error}", serial=info.serial
            )
        return {"model": info.model, "soc": info.soc, "abi": info.abi}

    def _reference(self) -> tuple[str | None, dict[str, str] | None]:
        """The kind of phone of the pool: that of the first phone of the list that can be described."""
        with self._identity_lock:
            if self._reference_identity is None:
                for slot in self._ensure_slots():
                    try:
                        self._reference_identity = self._identity(slot)
                    except DeviceError:
                        continue
                    self._reference_serial = slot.stats.serial
                    break
            return self._reference_serial, self._reference_identity

    def _check_identity(self, slot: _Slot) -> None:
        """Retires a phone that differs from the pool's first one (unless mixed phones are allowed)."""
        identity = self._identity(slot)
        reference_serial, reference = (None, None) if self.allow_mixed_devices else self._reference()
        with self._cond:
            slot.stats.identity = identity
            slot.checked_identity = True
        if reference is not None and (identity["model"], identity["soc"]) != (
            reference["model"],
            reference["soc"],
        ):
            raise SetupError(
                f"Phone {slot.stats.serial} is a {identity['model']} ({identity['soc']}), but the pool's "
                f"phone {reference_serial} is a {reference['model']} ({reference['soc']}): their latencies "
                "are not comparable. Use phones of one kind, or pass allow_mixed_devices=True.",
                serial=slot.stats.serial,
            )

    # ----------------------------------------------------------------------------------------------
    # Measuring.

    def measure_tflite(
        self,
        tflite_bytes: bytes,
        *,
        quantization: str = "float32",
        extra_provenance: dict[str, Any] | None = None,
    ) -> LatencyResult:
        """Times a ready-made TFLite model on the first free phone, retrying on other phones on failure.

        Safe to call from several threads at once: each call takes its own phone.

        Args:
            tflite_bytes: The model.
            quantization: What the model is: `"float32"` or `"int8"`.
            extra_provenance: Extra facts recorded in `provenance`.

        Returns:
            A `LatencyResult`.

        Raises:
            ModelError: the phones' runtime cannot run the model (not retried).
            DeviceError: every attempt failed, or no phone became free in time.
            ValueError: for bytes that are not a TFLite model.

        Example:

        ```python
        with open("model.tflite", "rb") as f:
            print(pool.measure_tflite(f.read()).median_ms)
        ```
        """
        give_up = time.monotonic() + self.wait_for_device_s
        failures: list[tuple[str, LatencyMeasurementError]] = []
        while True:
            slot = self._acquire(give_up, avoid={serial for serial, _ in failures})
            serial = slot.stats.serial
            start = time.monotonic()
            counted = False
            try:
                # The job counts from here: a phone that fails its identity check failed a job, so its
                # failures never outnumber its jobs.
                with self._cond:
                    slot.stats.jobs += 1
                    counted = True
                if not slot.checked_identity:
                    self._check_identity(slot)
                result = slot.source.measure_tflite(
                    tflite_bytes,
                    quantization=quantization,
                    extra_provenance=extra_provenance,
                    lease_wait_s=0.0,
                )
            except ModelError:
                with self._cond:
                    slot.stats.model_errors += 1
                    slot.stats.consecutive_failures = 0
                raise
            except DeviceBusyError as e:
                with self._cond:
                    if counted:
                        slot.stats.jobs -= 1
                    slot.stats.busy_elsewhere += 1
                    slot.not_before = time.monotonic() + self.busy_retry_s
                    slot.stats.last_error = str(e)
                continue
            except SetupError as e:
                with self._cond:
                    slot.stats.state = "retired"
                    slot.stats.last_error = str(e)
                logger.error("Pool: retiring phone %s: %s", serial, e)
                continue
            except DeviceError as e:
                failures.append((serial, e))
                self._record_failure(slot, e)
                if len(failures) >= self.max_attempts:
                    summary = "; ".join(f"{s}: {err}" for s, err in failures)
                    raise DeviceError(
                        f"The measurement failed on {len(failures)} attempt(s), giving up: {summary}",
                        serial=serial,
                    ) from e
                logger.warning("Pool: phone %s failed (%s); retrying the job on another phone.", serial, e)
                continue
            finally:
                with self._cond:
                    slot.stats.measuring_seconds += time.monotonic() - start
                self._release(slot)
            with self._cond:
                slot.stats.successes += 1
                slot.stats.consecutive_failures = 0
                slot.probation = False
                slot.quarantine_interval = 0.0
            pool_facts = {
                "attempts": len(failures) + 1,
                "failed_on": [s for s, _ in failures],
                "phones": len(self._slots or []),
            }
            return dataclasses.replace(result, provenance={**result.provenance, "pool": pool_facts})

    def _record_failure(self, slot: _Slot, error: DeviceError) -> None:
        with self._cond:
            stats = slot.stats
            stats.failures += 1
            stats.consecutive_failures += 1
            stats.last_error = str(error)
            if stats.state == "ready" and (
                slot.probation or stats.consecutive_failures >= self.quarantine_after
            ):
                # A phone that fails again right after a health check (which cannot run the benchmark) is kept
                # out twice as long each time, so a persistently broken phone costs few retries.
                interval = (
                    min(_MAX_READMIT_INTERVAL_S, 2 * slot.quarantine_interval)
                    if slot.probation
                    else self.readmit_after_s
                )
                stats.state = "quarantined"
                stats.quarantines += 1
                slot.probation = False
                slot.quarantine_interval = slot.readmit_interval = interval
                slot.readmit_at = time.monotonic() + interval
                logger.warning(
                    "Pool: quarantining phone %s after %d failure(s) in a row; health check in %.0f s.",
                    stats.serial,
                    stats.consecutive_failures,
                    interval,
                )
            self._cond.notify_all()

    def measure_many_tflite(
        self,
        models: Sequence[bytes],
        *,
        quantization: str = "float32",
        return_exceptions: bool = False,
    ) -> list[LatencyResult | Exception]:
        """Times several TFLite models, as many at once as the pool has phones.

        Args:
            models: TFLite flatbuffers.
            quantization: What they are: `"float32"` or `"int8"`.
            return_exceptions: Put a failed model's exception in its place in the list instead of raising the
                first one (after all jobs have finished).

        Returns:
            One `LatencyResult` (or exception) per model, in order.

        Example:

        ```python
        results = pool.measure_many_tflite([open(p, "rb").read() for p in paths])
        ```
        """
        return self._measure_all([(m, None) for m in models], quantization, return_exceptions)

    def measure_many(
        self,
        models: Sequence,
        *,
        quantization: str = "float32",
        representative_data=None,
        return_exceptions: bool = False,
    ) -> list[LatencyResult | Exception]:
        """Converts several Keras models (one after the other) and times them on the phones at once.

        Each model goes through the same conversion and cache as `measure`.

        Args:
            models: Built Keras models with fully defined input shapes.
            quantization: `"float32"` or `"int8"`.
            representative_data: For int8: calibration samples or a callable returning batches.
            return_exceptions: As for `measure_many_tflite`.

        Returns:
            One `LatencyResult` (or exception) per model, in order.

        Example:

        ```python
        results = pool.measure_many([model_a, model_b])
        ```
        """
        check_choice("quantization", quantization, QUANTIZATIONS)
        # Converted (or found in the cache) one after the other: the converter runs one model at a time.
        prepared = [self._prepare(model, quantization, representative_data) for model in models]
        misses = [p for p in prepared if p.cached is None]
        measured = iter(
            self._measure_all([(p.tflite_bytes, p.provenance) for p in misses], quantization, True)
            if misses
            else []
        )
        outcomes: list[LatencyResult | Exception] = []
        for p in prepared:
            outcome = p.cached if p.cached is not None else next(measured)
            if p.cached is None and isinstance(outcome, LatencyResult):
                self._remember(p.key, outcome)
            outcomes.append(outcome)
        if not return_exceptions:
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    raise outcome
        return outcomes

    def _measure_all(self, jobs, quantization, return_exceptions) -> list[LatencyResult | Exception]:
        workers = max(1, min(len(jobs), len(self._ensure_slots())))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="android-pool") as executor:
            futures = [
                executor.submit(self.measure_tflite, data, quantization=quantization, extra_provenance=extra)
                for data, extra in jobs
            ]
            concurrent.futures.wait(futures)
        outcomes: list[LatencyResult | Exception] = []
        for future in futures:
            error = future.exception()
            if error is not None and not return_exceptions:
                raise error
            outcomes.append(error if error is not None else future.result())
        return outcomes
